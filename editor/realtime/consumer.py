"""DocumentConsumer: the Channels plumbing of /ws/documents/<uuid>.

It accepts the socket, has it authorised (editor/realtime/auth.py), builds the socket's
``Connection`` (editor/realtime/connection.py: everything that happens after) with the way to
write to it chosen once (editor/realtime/sockets.py), hands it every frame, and tells it when
the socket has gone. Closing *before* accept() would turn into a bare HTTP 403 and the client
would never learn why, so refusals accept, send a y-websocket permission-denied message with
the reason, then close with a 44xx code (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from collab import transport
from editor import metrics
from editor.realtime import auth, protocol
from editor.realtime.codes import CLOSE_INTERNAL, CLOSE_NOT_FOUND
from editor.realtime.connection import Connection
from editor.realtime.sockets import socket_of

logger = logging.getLogger("collab.ws")

# From this size a frame is parsed a turn of the event loop after it came (``receive``).
PARSE_ON_A_LATER_TURN = 1 << 20


class DocumentConsumer(AsyncWebsocketConsumer):
    """Serves /ws/documents/<uuid> with the y-websocket protocol."""

    # No layer channel per connection: the room holds the process's group membership, and a
    # channel per socket would cost a Redis subscription each. An alias that names no layer
    # makes Channels skip it.
    channel_layer_alias = "none: rooms hold the group membership"

    connection: Connection | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` for a consumer without a layer channel, reading
        with a plain loop: Channels' ``await_many_dispatch`` makes a task per message, so a
        backlog is read one message per turn of the event loop; this reads everything queued
        at once, and the connection gets it as one batch. Once the connection is open, frames
        may reach it without the queue (``_DirectInbox``). However the socket ends (close,
        abort, daphne's kill, shutdown) its connection leaves the room and the presence."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        # daphne's queue (or Channels' test communicator's) when ``receive`` is its ``get``.
        queue = (
            receive.__self__ if getattr(receive, "__func__", None) is asyncio.Queue.get else None
        )
        direct = None
        try:
            while True:
                await self.dispatch(await receive())
                if queue is not None and self.connection is not None:
                    direct = _DirectInbox.take_over(queue, self)
                    queue = None
        except StopConsumer:
            pass
        finally:
            if direct is not None:
                direct.give_back()
            if self.connection is not None:
                self.connection.abandon()  # nothing to do after a clean finish()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch first hops to the database thread to close stale connections
        (``aclose_old_connections``), before every message. Nothing here touches the ORM on
        the event loop (auth and the store go through ``database_sync_to_async``, which does
        that clean-up itself), so messages skip the hop: it cost a thread round trip per
        update, and 8 % of a process's time while sockets connect (docs/BENCHMARKS.md)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Called when the socket asks to open: accepts it, then authorises it, then opens its
        connection to the document."""
        # The route admits either case; tickets and rooms use the canonical lower-case form.
        upgraded = time.monotonic()
        document_id = str(uuid.UUID(self.scope["url_route"]["kwargs"]["document_id"]))
        await self.accept()
        try:
            access = await auth.authorize(self.scope, document_id)
        except auth.Refused as refused:
            logger.warning(
                "ws refused document=%s code=%s reason=%s client=%s",
                document_id,
                refused.code,
                refused.reason,
                _client(self.scope),
                extra={
                    "event": "ws.refused",
                    "document": document_id,
                    "code": refused.code,
                    "reason": refused.reason,
                    "client": _client(self.scope),
                },
            )
            denied = protocol.permission_denied(refused.reason)
            await self.send(bytes_data=denied)
            await self.close(code=refused.code)
            metrics.frames_out(denied)
            metrics.refused(refused.code)
            return
        connection = Connection(access, socket_of(self), client=_client(self.scope))
        self.connection = connection
        await connection.open(upgraded)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame; a text frame comes as ``bytes_data=None``. A frame from
        ``PARSE_ON_A_LATER_TURN`` up is handed over a turn of the event loop after it came:
        autobahn has just joined its pieces (a 16 MB paste: one 16 MB copy, 4,096 first touches
        of memory) and cutting the update out of it is another; the other sockets are served
        between the two (docs/BENCHMARKS.md, change 37)."""
        if self.connection is not None:
            if bytes_data is not None and len(bytes_data) >= PARSE_ON_A_LATER_TURN:
                # A timer, not sleep(0): a sleep(0)'s step would run before the other sockets'.
                await asyncio.sleep(0.001)
            self.connection.receive(bytes_data)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Called when the socket has closed; no frame is sent to it after this.

        Channels' own ``websocket_disconnect`` leaves the consumer's layer groups (it has
        none: no layer channel), then hops to the database thread to close stale connections
        (``aclose_old_connections``), as its ``dispatch`` does before every message. That hop
        is skipped here for the reason ``dispatch`` skips it: 5,000 sockets closing at once
        queued 5,000 no-op trips on the process's one ORM thread, ahead of the store's writes,
        and took a quarter of the process's time while they closed (docs/BENCHMARKS.md)."""
        if self.connection is not None:
            self.connection.gone = True
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called after ``websocket_disconnect``: the connection finishes its work and leaves."""
        if self.connection is not None:
            await self.connection.finish(code)


class _DirectInbox(asyncio.Queue[Any]):
    """A consumer's queue of messages from the server, once its connection is open
    (``WS_DIRECT_FRAMES``): a frame put in it goes to the connection there and then, when the
    consumer's task is waiting for its next message and nothing is queued before the frame.
    The ordinary way, the frame waited in the queue for the consumer's task, woken on the
    event loop's next turn after every other socket's work of that turn (tens of milliseconds
    while thousands of sockets connect), and each wake-up cost the task's step and the queue's
    future (docs/BENCHMARKS.md, change 47). Anything else (the disconnect, a frame from
    ``PARSE_ON_A_LATER_TURN`` up, a frame while a message is being handled or behind another)
    is queued as before, so the connection gets every frame in order.

    The queue becomes one of these (its class changed; nothing else of it) and holds its
    consumer, the one attribute it gains: a flag or a method bound on the consumer cost about
    0.3 KB a socket. It reads two attributes of asyncio's queue (``_getters``, ``_queue``) and
    relies on daphne putting frames with ``put_nowait``: checked once per process with the
    transport tunings (collab/transport.py, ``DIRECT_FRAMES``, at load); where the check fails,
    or with the switch off, the queue stays as it is."""

    __slots__ = ()
    _collab_consumer: DocumentConsumer

    @classmethod
    def take_over(
        cls, queue: asyncio.Queue[Any], consumer: DocumentConsumer
    ) -> _DirectInbox | None:
        if not settings.SERVE["DIRECT_FRAMES"] or type(queue) is not asyncio.Queue:
            return None
        if not transport.available(transport.DIRECT_FRAMES):
            return None
        queue.__class__ = cls
        direct = typing.cast(_DirectInbox, queue)
        direct._collab_consumer = consumer
        return direct

    def give_back(self) -> None:
        """The queue as it was, with no reference to the consumer left."""
        self.__class__ = asyncio.Queue  # type: ignore[assignment]
        vars(self).pop("_collab_consumer", None)

    def put_nowait(self, item: Any) -> None:
        getters = self._getters  # type: ignore[attr-defined]
        if getters and not self._queue and item.get("type") == "websocket.receive":  # type: ignore[attr-defined]
            frame = item.get("bytes")
            connection = self._collab_consumer.connection
            if connection is not None and (frame is None or len(frame) < PARSE_ON_A_LATER_TURN):
                try:
                    connection.receive(frame)
                except Exception:
                    # As the ordinary way would, had the consumer's task met it: the socket is
                    # closed, the others go on.
                    logger.exception("ws frame could not be taken")
                    connection.stop(CLOSE_INTERNAL, "internal error")
                return
        super().put_nowait(item)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Answers WebSocket paths that are not a document with 4404 instead of a dropped socket."""

    async def connect(self) -> None:
        await self.accept()
        denied = protocol.permission_denied("no such endpoint")
        await self.send(bytes_data=denied)
        await self.close(code=CLOSE_NOT_FOUND)
        metrics.frames_out(denied)
        metrics.refused(CLOSE_NOT_FOUND)


def _client(scope: Any) -> str:
    client = scope.get("client") or ("?", 0)
    return f"{client[0]}:{client[1]}"
