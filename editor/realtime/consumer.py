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
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

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
    # The server's queue of messages for this consumer (None: ``receive`` is not an asyncio
    # queue's), from which frames may be taken as they are put (``_take_frames_directly``);
    # and whether a message taken the ordinary way is being handled.
    _inbox: asyncio.Queue[Any] | None = None
    _dispatching = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` for a consumer without a layer channel, reading
        with a plain loop: Channels' ``await_many_dispatch`` makes a task per message, so a
        backlog is read one message per turn of the event loop; this reads everything queued
        at once, and the connection gets it as one batch. However the socket ends (close,
        abort, daphne's kill, shutdown) its connection leaves the room and the presence."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        if getattr(receive, "__func__", None) is asyncio.Queue.get:
            self._inbox = receive.__self__  # daphne's, or Channels' test communicator's
        try:
            while True:
                message = await receive()
                self._dispatching = True
                try:
                    await self.dispatch(message)
                finally:
                    self._dispatching = False
        except StopConsumer:
            pass
        finally:
            if self._inbox is not None:
                # The queue's own put_nowait again: no cycle left through this consumer.
                vars(self._inbox).pop("put_nowait", None)
            if self.connection is not None:
                self.connection.abandon()  # nothing to do after a clean finish()

    def _take_frames_directly(self) -> None:
        """From now on, a frame the server puts in this consumer's queue goes to the connection
        there and then, when nothing is queued before it and no message is being handled.
        The ordinary way, the frame waited in the queue for the consumer's task, woken on the
        event loop's next turn after every other socket's work of that turn (tens of
        milliseconds while thousands of sockets connect), and each wake-up cost the task's
        step and the queue's future (docs/BENCHMARKS.md, change 47). Anything else (the
        disconnect, a frame from ``PARSE_ON_A_LATER_TURN`` up, a frame behind another) takes
        the queue as before. Only where ``receive`` is an asyncio queue's ``get``, as daphne's
        and Channels' test communicator's are."""
        if settings.SERVE["DIRECT_FRAMES"] and type(self._inbox) is asyncio.Queue:
            self._inbox.put_nowait = self._put_nowait  # type: ignore[method-assign,assignment]

    def _put_nowait(self, message: dict[str, Any]) -> None:
        inbox, connection = self._inbox, self.connection
        assert inbox is not None
        if (
            connection is not None
            and not self._dispatching
            and not inbox.qsize()
            and message.get("type") == "websocket.receive"
        ):
            frame = message.get("bytes")
            if frame is None or len(frame) < PARSE_ON_A_LATER_TURN:
                try:
                    connection.receive(frame)
                except Exception:
                    # As the ordinary way would, had the consumer's task met it: the socket is
                    # closed, the others go on.
                    logger.exception("ws frame could not be taken")
                    connection.stop(CLOSE_INTERNAL, "internal error")
                return
        asyncio.Queue.put_nowait(inbox, message)

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
        self._take_frames_directly()

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
