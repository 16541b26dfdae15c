"""One socket's session with one document: what it may do, the awareness client ids it
introduced, the limits on what it sends and receives, and the dispatch of its decoded messages
to the room and the presence.

A ``Connection`` is plain Python: the consumer (Channels plumbing) builds one when a socket has
been authorised and hands it every frame; the room sends to it through ``send_frame``. It never
sees Channels or the server, only a ``Socket`` (editor/realtime/sockets.py), so it can be
driven in tests without any.

Messages are handled in order by one task of the connection's own (``_work``): updates a client
sent in a row are applied as one batch, and a clean close still applies everything received
before it (daphne kills a consumer that takes longer than 10 s to finish).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import functools
import logging
import time
import typing
import uuid
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from prometheus_client import Gauge

from editor import metrics
from editor.realtime import auth, limits, protocol, store
from editor.realtime.auth import Access
from editor.realtime.codes import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_MALFORMED,
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_READER,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHENTICATED,
)
from editor.realtime.limits import Budget, Refusal, Sockets
from editor.realtime.presence import Entry, Presence, get_presence, identity
from editor.realtime.room import InvalidUpdate, Room, get_rooms
from editor.realtime.sockets import Socket

logger = logging.getLogger("collab.ws")

_UPDATES = (protocol.SyncStep2, protocol.SyncUpdate)
# Most updates applied as one batch: merging is fast up to about a thousand (pycrdt 0.14: 1,000
# small updates in 4 ms) and then grows much faster than linearly (5,000: 87 ms; 50,000: 9 s).
MAX_BATCH = 256


def _socket_rates() -> limits.Rates:
    c = settings.COLLAB
    return limits.rates(
        c["RATE_MESSAGES"], c["RATE_MESSAGE_BURST"], c["RATE_BYTES"], c["RATE_BYTE_BURST"]
    )


# This process's sockets, counted for the connection caps; each user's share one budget on top
# of their own.
sockets = Sockets(lambda: limits.doubled(_socket_rates()), time.monotonic)


@dataclass(frozen=True, slots=True)
class _Stop:
    """In a connection's inbox: close after the messages before it."""

    code: int
    reason: str
    tell: bool


class Connection:
    """One socket's session with one document (see the module docstring)."""

    __slots__ = (
        "__dict__",  # functools.cached_property (identity, conn_id) keeps its value there
        "access",
        "socket",
        "client",
        "document_id",
        "room",
        "client_ids",
        "inbox",
        "answered_step1",
        "answered_out",
        "frames_out",
        "opened",
        "bytes_in",
        "bytes_out",
        "budget",
        "user_budget",
        "close_code",
        "gauge",
        "gone",
        "stopping",
        "_left",
        "_worker",
        "_eager_this_turn",
    )

    def __init__(self, access: Access, socket: Socket, client: str = "?") -> None:
        self.access = access
        self.socket = socket
        self.client = client
        self.document_id = access.document_id
        self.room: Room | None = None
        # Awareness client ids this connection introduced, with their last clock.
        self.client_ids: dict[int, int] = {}
        # Decoded messages waiting for ``_work``, in the order they came; made with the first
        # and let go when ``_work`` has emptied it (an empty deque is 760 bytes, and most
        # sockets are idle most of the time).
        self.inbox: collections.deque[protocol.Message | _Stop] | None = None
        # The last state vector answered with a sync step 2 (duplicates are not re-answered
        # while the answer is still on its way).
        self.answered_step1: bytes | None = None
        # ``bytes_out`` and ``frames_out`` when that answer had been sent: what was sent after
        # it tells whether the answer itself is still queued (``answer_step1``).
        self.answered_out = (0, 0)
        self.frames_out = 0
        self.opened = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        # What this socket, and this user's sockets together, may still send (limits.py).
        self.budget = Budget(_socket_rates(), self.opened)
        # Taken when the socket is admitted (``open``), given back when it ends.
        self.user_budget: Budget | None = None
        # The close code this side sent, once it did.
        self.close_code: int | None = None
        # This socket's place in collab_websocket_connections while it is open (metrics.py).
        self.gauge: Gauge | None = None
        # The client has gone (its disconnect came, or a send found the socket closing).
        self.gone = False
        # A frame that cannot be taken came: nothing after it is read.
        self.stopping = False
        self._left = False
        self._worker: asyncio.Future[None] | None = None
        # This turn of the event loop already started the work at once (``_queue``).
        self._eager_this_turn = False

    # -- what the room asks ---------------------------------------------------------------

    @property
    def user_id(self) -> int:
        return self.access.user.pk

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """The ``user`` field the server writes into this socket's awareness states. Made on
        first use: sockets that never send awareness (readers, scripts) keep none."""
        return identity(self.access.user)

    @functools.cached_property
    def conn_id(self) -> str:
        """Identifies this socket's presence entries in Redis, across processes. Drawn on first
        use, with ``identity``: a socket that never sends awareness draws no random id (a
        system call and 0.1 KB on every connect; docs/BENCHMARKS.md, change 64)."""
        return uuid.uuid4().hex

    @property
    def scope_name(self) -> str:
        """What this socket may do, as the auth message names it."""
        return protocol.SCOPE_READ_WRITE if self.access.can_edit else protocol.SCOPE_READ_ONLY

    # -- life -----------------------------------------------------------------------------

    async def open(self, upgraded: float | None = None) -> bool:
        """Admits the socket, joins the document's room and runs the server's half of the
        handshake: sync step 1, the socket's scope, everyone's presence. False (the socket
        closed with 1011) when
        the document could not be loaded; False (closed with 1013) past a connection cap.
        ``upgraded``: when the socket asked to open (``time.monotonic()``), to time the
        connect (``collab_websocket_connect_seconds``)."""
        collab = settings.COLLAB
        refusal = sockets.admit(
            self.user_id, collab["MAX_CONNECTIONS"], collab["MAX_CONNECTIONS_PER_USER"]
        )
        if refusal is not None:
            full = collab["MAX_CONNECTIONS"] and sockets.total >= collab["MAX_CONNECTIONS"]
            metrics.LIMIT["connections" if full else "connections_per_user"].inc()
            metrics.refused(refusal.code)
            await self.refuse_now(refusal)
            return False
        self.user_budget = sockets.acquire(self.user_id)
        if not self.user_budget.spend(0, time.monotonic()):
            # This user's sockets used up their budget (a flood, reconnecting): refused before
            # the document is loaded or anything is sent.
            metrics.LIMIT["rate"].inc()
            metrics.refused(CLOSE_RATE_LIMITED)
            await self.refuse_now(limits.over_rate("user's sockets", 0))
            return False
        try:
            self.room = await get_rooms().join(self.document_id, self)
        except Exception:
            logger.exception(
                "ws could not load document=%s user=%s client=%s",
                self.document_id,
                self.access.user,
                self.client,
                extra={
                    "event": "ws.load_failed",
                    "user": str(self.access.user),
                    "document": self.document_id,
                    "client": self.client,
                },
            )
            metrics.DATABASE["load"].inc()
            metrics.refused(CLOSE_INTERNAL)
            await self.refuse(CLOSE_INTERNAL, "document could not be loaded; retry shortly")
            return False
        self.gauge = metrics.connections(self.access.role, self.access.via)
        self.gauge.inc()
        metrics.CONNECTS.inc()
        store.install_shutdown_flush()
        logger.info(
            "ws open user=%s document=%s role=%s via=%s client=%s",
            self.access.user,
            self.document_id,
            self.access.role,
            self.access.via,
            self.client,
            extra={
                "event": "ws.open",
                "user": str(self.access.user),
                "document": self.document_id,
                "role": self.access.role,
                "via": self.access.via,
                "client": self.client,
            },
        )
        await self.send_own(
            protocol.sync_step1(self.room.doc), protocol.authenticated(self.scope_name)
        )
        if upgraded is not None:
            metrics.CONNECT_TIME.observe(time.monotonic() - upgraded)
        await self.send_presence()
        return True

    def receive(self, frame: bytes | None) -> None:
        """Checks and decodes a frame (None: a text frame), and queues it for ``_work``. A
        frame that cannot be taken ends the socket, after what was received before it has been
        handled."""
        metrics.frame_in(frame)
        if self.room is None or self.close_code is not None or self.stopping:
            return  # refused or closing: nothing more is read
        if frame is None:
            self.stop(CLOSE_MALFORMED, "text frames are not part of the protocol")
            return
        self.bytes_in += len(frame)
        limit = settings.COLLAB["MAX_INCOMING_FRAME"]
        if len(frame) > limit:
            reason = (
                f"this change is too large to save ({_mb(len(frame))} MB;"
                f" the limit is {_mb(limit)} MB)"
            )
            metrics.LIMIT["frame_size"].inc()
            self.stop(CLOSE_TOO_LARGE, reason, tell=True)
            return
        now = time.monotonic()
        if not self.budget.spend(len(frame), now):
            metrics.LIMIT["rate"].inc()
            self.refuse_later(limits.over_rate("socket", len(frame)))
            return
        if self.user_budget is not None and not self.user_budget.spend(len(frame), now):
            metrics.LIMIT["rate"].inc()
            self.refuse_later(limits.over_rate("user's sockets", len(frame)))
            return
        try:
            message = protocol.parse_message(frame)
        except protocol.ProtocolError as exc:
            self.stop(CLOSE_MALFORMED, f"malformed frame: {exc}")
            return
        self._queue(message)

    def refuse_later(self, refusal: Refusal) -> None:
        """Stops reading; once what came before is handled, tells the client why and closes."""
        self.stop(refusal.code, refusal.reason, tell=True)

    def stop(self, code: int, reason: str, tell: bool = False) -> None:
        """Reads nothing more, and closes with ``code`` once the messages queued before are
        handled; ``tell`` sends the reason first, in an auth message the client can show."""
        self.stopping = True
        self._queue(_Stop(code, reason, tell))

    async def finish(self, code: int | None) -> None:
        """Called when the socket has closed (``code``: the client's): applies what the client
        sent before closing, then leaves the room and the presence, and logs the close."""
        self.gone = True
        if self._worker is not None:
            await self._worker
        self._release()
        await self.leave()
        self._count_end(self.close_code or code or 1005)
        logger.info(
            "ws close user=%s document=%s duration=%.1fs code=%s bytes_in=%d bytes_out=%d"
            " client=%s",
            self.access.user,
            self.document_id,
            time.monotonic() - self.opened,
            # 1005 is "no status": the client closed without giving a code.
            self.close_code or code or 1005,
            self.bytes_in,
            self.bytes_out,
            self.client,
            extra={
                "event": "ws.close",
                "user": str(self.access.user),
                "document": self.document_id,
                "duration": round(time.monotonic() - self.opened, 3),
                "code": self.close_code or code or 1005,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "client": self.client,
            },
        )

    def abandon(self) -> None:
        """Called when the socket's consumer ended without ``finish`` (daphne kills consumers
        that take too long to shut down; a crash): leaves the room now, so it does not keep
        sending to a dead socket, and removes the presence in a task of its own, which no
        cancellation of the consumer can stop."""
        self._release()
        if self.room is None or self._left:
            return
        logger.warning(
            "ws cleaned up after an abrupt end user=%s document=%s duration=%.1fs bytes_in=%d"
            " bytes_out=%d client=%s",
            self.access.user,
            self.document_id,
            time.monotonic() - self.opened,
            self.bytes_in,
            self.bytes_out,
            self.client,
            extra={
                "event": "ws.abandoned",
                "user": str(self.access.user),
                "document": self.document_id,
                "duration": round(time.monotonic() - self.opened, 3),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "client": self.client,
            },
        )
        self._count_end(1006)
        self._leave_room()
        in_background(self._remove_presence(self.room))

    async def leave(self) -> None:
        """Leaves the room at once (no frame is sent to this socket after it), then removes
        this socket's presence and tells the others. Runs once."""
        if self.room is None or self._left:
            return
        self._leave_room()
        await self._remove_presence(self.room)

    def _release(self) -> None:
        """Gives back this socket's place in the caps and its share of the user's budget."""
        if self.user_budget is not None:
            self.user_budget = None
            sockets.release(self.user_id)

    def _count_end(self, code: int) -> None:
        """Takes an opened socket out of the gauges, once, and counts how it ended."""
        if self.gauge is None:
            return
        self.gauge.dec()
        self.gauge = None
        metrics.disconnected(code)
        if self.client_ids:
            metrics.PRESENCE_ENTRIES.dec(len(self.client_ids))

    def _leave_room(self) -> None:
        assert self.room is not None
        self._left = True
        get_rooms().leave(self.room, self)

    async def _remove_presence(self, room: Room) -> None:
        if not self.client_ids:
            return
        try:
            await get_presence().remove(self.document_id, list(self.client_ids))
            await room.announce_removal(self.client_ids)
        except redis.RedisError as exc:
            # The entries expire by themselves; the sweep will announce them.
            self._presence_failed("not removed", exc)

    async def recheck_access(self) -> None:
        """Called when this user's membership changed: reads the role again and applies it."""
        if self.gone or self.close_code is not None:
            return
        await self.apply_role(await auth.current_role(self.access))

    async def sessions_ended(
        self, ended: str | None, kept: str | None, renamed: str | None
    ) -> None:
        """Called when sessions of this socket's user ended: ``ended`` names one (a logout), or
        None for all but ``kept`` (a password change, made by that session, which Django gave
        the key ``renamed``). A socket that logged in with an ended session is closed with
        4401, as its next connect would be; a ticket's socket is no session's."""
        session = self.access.session
        if session is None or self.gone or self.close_code is not None:
            return
        if ended is None and kept is not None and session == kept:
            self.access = dataclasses.replace(self.access, session=renamed)
            return
        if ended is not None and session != ended:
            return
        why = "logged out" if ended is not None else "password changed"
        logger.info(
            "ws session ended user=%s document=%s reason=%s",
            self.access.user,
            self.document_id,
            why,
            extra={
                "event": "ws.session_ended",
                "user": str(self.access.user),
                "document": self.document_id,
                "reason": why,
            },
        )
        await self.refuse(CLOSE_UNAUTHENTICATED, f"{why}: log in again")

    async def apply_role(self, role: str | None) -> None:
        """A removed member (or a deleted document: ``None``) is closed with 4403; a new role
        applies at once and the client is told (``authenticated``), followed by a fresh sync
        step 1: a demoted client learns what the server has, so it can tell its user what was
        not saved; a promoted one answers with what it holds, which is now accepted."""
        if role is None:
            logger.info(
                "ws access revoked user=%s document=%s",
                self.access.user,
                self.document_id,
                extra={
                    "event": "ws.revoked",
                    "user": str(self.access.user),
                    "document": self.document_id,
                },
            )
            await self.refuse(CLOSE_FORBIDDEN, "access removed")
        elif role != self.access.role:
            self.access = dataclasses.replace(self.access, role=role)
            if self.gauge is not None:
                self.gauge.dec()
                self.gauge = metrics.connections(role, self.access.via)
                self.gauge.inc()
            logger.info(
                "ws role changed user=%s document=%s role=%s",
                self.access.user,
                self.document_id,
                role,
                extra={
                    "event": "ws.role_changed",
                    "user": str(self.access.user),
                    "document": self.document_id,
                    "role": role,
                },
            )
            await self.send_own(protocol.authenticated(self.scope_name))
            if self.room is not None:
                await self.send_own(protocol.sync_step1(self.room.doc))

    # -- dispatch -------------------------------------------------------------------------

    def _queue(self, message: protocol.Message | _Stop) -> None:
        if self.inbox is None:
            self.inbox = collections.deque()
        self.inbox.append(message)
        if self._worker is None:
            if settings.SERVE["EAGER_WORK"] and not self._eager_this_turn:
                # Once a turn: the frames that come after it in the same turn (a backlog, a
                # flood) wait for a task and are applied together, as before.
                self._eager_this_turn = True
                asyncio.get_running_loop().call_soon(self._next_turn)
                # Set while the work's first step runs; ``_work`` sets it back to None if it
                # finishes there.
                self._worker = _STARTING
                try:
                    carrying_on = _Eager.start(self._work())
                except BaseException:
                    self._worker = None  # no work under way: the next frame starts its own
                    raise
                if carrying_on is not None:
                    self._worker = carrying_on
            else:
                self._worker = asyncio.ensure_future(self._work())

    def _next_turn(self) -> None:
        self._eager_this_turn = False

    async def _work(self) -> None:
        """Handles queued messages in order until none is left. Updates that follow each other
        in the queue (the client got ahead) are applied as one batch, up to a frame's worth."""
        limit = settings.COLLAB["MAX_INCOMING_FRAME"]
        inbox = self.inbox
        assert inbox is not None  # _queue made it before it started this
        try:
            while inbox and self.close_code is None:
                message = inbox.popleft()
                if isinstance(message, _Stop):
                    if message.tell:
                        await self.refuse_now(Refusal(message.code, message.reason))
                    else:
                        await self.fail(message.code, message.reason)
                    break
                if not isinstance(message, _UPDATES):
                    await self.handle(message)
                    continue
                updates = [message.update]
                size = len(message.update)
                while (
                    inbox
                    and isinstance(inbox[0], _UPDATES)
                    and size < limit
                    and len(updates) < MAX_BATCH
                ):
                    update = inbox.popleft().update  # type: ignore[union-attr]
                    updates.append(update)
                    size += len(update)
                await self.apply_updates(updates)
        except Exception:
            logger.exception(
                "ws failed user=%s document=%s",
                self.access.user,
                self.document_id,
                extra={
                    "event": "ws.failed",
                    "user": str(self.access.user),
                    "document": self.document_id,
                },
            )
            await self.fail(CLOSE_INTERNAL, "internal error")
        finally:
            self._worker = None
            if not inbox:
                self.inbox = None

    async def handle(self, message: protocol.Message) -> None:
        """The one dispatch point for a decoded client message."""
        if isinstance(message, protocol.SyncStep1):
            await self.answer_step1(message.state_vector)
        elif isinstance(message, _UPDATES):
            await self.apply_updates([message.update])
        elif isinstance(message, protocol.Awareness):
            await self.update_presence(message.entries)
        elif isinstance(message, protocol.QueryAwareness):
            await self.send_presence()
        # Auth and stateless messages flow from server to client only; from a client, ignored.

    async def answer_step1(self, state_vector: bytes) -> None:
        """Sends what the client is missing (sync step 2)."""
        assert self.room is not None
        if state_vector == self.answered_step1 and self._answer_queued():
            # The same question while the answer is still queued for this socket: the answer,
            # and every update sent after it, will bring the client up to date.
            return
        try:
            reply = self.room.sync_step2(state_vector)
        except protocol.ProtocolError as exc:
            await self.fail(CLOSE_MALFORMED, f"bad state vector: {exc}")
            return
        self.answered_step1 = state_vector
        await self.send_own(reply)
        self.answered_out = (self.bytes_out, self.frames_out)

    def _answer_queued(self) -> bool:
        """Whether the last sync step 2 has not all been taken by the client yet: more bytes are
        queued for the socket than were sent after it (with each of those frames' header, at
        most 14 bytes). A broadcast queued behind an answer the client has read (a 16 MB paste)
        does not count: a question asked then is answered."""
        queued = self.socket.queued()
        if not queued:
            return False
        bytes_out, frames_out = self.answered_out
        return queued > self.bytes_out - bytes_out + 14 * (self.frames_out - frames_out)

    async def apply_updates(self, updates: list[bytes]) -> None:
        """Applies the client's updates through the room, if its role lets it edit."""
        assert self.room is not None
        if not self.access.can_edit:
            # A viewer's client answers our sync step 1 with an empty step 2: that is no write.
            if any(update != b"\x00\x00" for update in updates):
                await self.send_own(protocol.permission_denied("view only"))
            return
        try:
            await self.room.apply_client_updates(updates, origin=self, author_id=self.user_id)
        except InvalidUpdate as exc:
            await self.fail(CLOSE_MALFORMED, f"update does not apply: {exc}")

    async def update_presence(self, entries: Iterable[protocol.AwarenessEntry]) -> None:
        """Records and relays awareness, with two rules: the ``user`` field is the server's
        (identity comes from the account, never the client), and a connection speaks only
        for client ids it introduced; entries about anyone else's are dropped."""
        assert self.room is not None
        presence = get_presence()
        user = self.access.user
        accepted = []
        # What the room's kept presence read takes (``Room.presence``): as stored, or gone.
        changes: list[Entry | protocol.AwarenessEntry] = []
        collab = settings.COLLAB
        for entry in entries:
            known = entry.client_id in self.client_ids
            if not known:
                if entry.state is None:
                    continue  # nobody removes another connection's presence
                if len(self.client_ids) >= collab["MAX_AWARENESS_CLIENTS"]:
                    metrics.LIMIT["awareness_clients"].inc()
                    await self.refuse_now(
                        limits.too_many_client_ids(collab["MAX_AWARENESS_CLIENTS"])
                    )
                    return
            if entry.state is None:
                if entry.client_id in self.client_ids and self.gauge is not None:
                    metrics.PRESENCE_ENTRIES.dec()
                self.client_ids.pop(entry.client_id, None)
                await _quietly(presence.remove(self.document_id, [entry.client_id]))
                accepted.append(entry)
                changes.append(entry)
                continue
            refusal = limits.check_awareness_state(entry.state, collab["MAX_AWARENESS_BYTES"])
            if refusal is not None:
                metrics.LIMIT["awareness_size"].inc()
                await self.refuse_now(refusal)
                return
            state, dropped = limits.clean_cursor(entry.state)
            if dropped:
                logger.info(
                    "ws malformed cursor dropped user=%s document=%s client_id=%s",
                    user,
                    self.document_id,
                    entry.client_id,
                    extra={
                        "event": "ws.cursor_dropped",
                        "user": str(user),
                        "document": self.document_id,
                        "client_id": entry.client_id,
                    },
                )
            state = {**state, "user": self.identity}
            stored = Entry(
                client_id=entry.client_id,
                clock=entry.clock,
                state=state,
                user_id=user.pk,
                conn=self.conn_id,
                deadline=presence.deadline(),
            )
            if known:
                presence.renew(self.document_id, stored)
            elif not await self._claim(presence, stored):
                logger.warning(
                    "ws awareness ignored user=%s document=%s client_id=%s: not theirs",
                    user,
                    self.document_id,
                    entry.client_id,
                    extra={
                        "event": "ws.awareness_ignored",
                        "user": str(user),
                        "document": self.document_id,
                        "client_id": entry.client_id,
                    },
                )
                continue
            elif self.gauge is not None:
                metrics.PRESENCE_ENTRIES.inc()
            self.client_ids[entry.client_id] = entry.clock
            accepted.append(stored.awareness())
            changes.append(stored)
        if accepted:
            await self.room.relay_awareness(protocol.encode_awareness(accepted), changes)

    async def _claim(self, presence: Presence, stored: Entry) -> bool:
        """Writes a client id's first state unless it is someone else's (``Presence.claim``:
        one round trip). With Redis down the state is relayed unwritten: identity is still the
        server's, so a client can at worst reuse an id, and presence heals once Redis is back
        (clients renew every 15 s)."""
        try:
            return await presence.claim(self.document_id, stored)
        except redis.RedisError as exc:
            self._presence_failed("not written", exc)
            return True

    def _presence_failed(self, what: str, exc: redis.RedisError) -> None:
        """Counts and logs a presence call that Redis failed; editing goes on."""
        metrics.REDIS["presence"].inc()
        logger.warning(
            "ws presence %s document=%s: %s",
            what,
            self.document_id,
            exc,
            extra={"event": "ws.presence_failed", "document": self.document_id},
        )

    async def send_presence(self) -> None:
        """Sends every live awareness state of the document, from all processes (as the room
        last read them, while that read holds: ``Room.presence``)."""
        assert self.room is not None
        try:
            entries = await self.room.presence()
        except redis.RedisError as exc:
            self._presence_failed("unavailable", exc)
            return
        if entries:
            payload = protocol.encode_awareness(entry.awareness() for entry in entries)
            await self.send_own(protocol.awareness(payload))

    # -- sending --------------------------------------------------------------------------

    async def send_frame(self, frame: bytes) -> bool:
        """Sends one y-websocket message, or nothing once the socket is closing: a send never
        raises, so a socket closing under a broadcast is its own business only. Says whether
        it was sent: the room counts each broadcast once (metrics.py), ``send_own`` the rest.

        A client that does not read, with more than ``WS_MAX_SEND_BUFFER`` bytes queued for
        it, is closed with 4408 (its buffer is freed when the server drops it). The message is
        then written straight to the socket when the socket allows (encoded once per
        broadcast), or sent the ordinary way."""
        if self.gone or self.close_code is not None:
            return False
        socket = self.socket
        queued = socket.queued()
        if queued and queued + len(frame) > settings.COLLAB["MAX_SEND_BUFFER"]:
            metrics.LIMIT["slow_reader"].inc()
            await self.fail(
                CLOSE_SLOW_READER,
                f"client is not reading: {queued} bytes queued, a {len(frame)}-byte"
                f" message would pass WS_MAX_SEND_BUFFER",
            )
            return False
        if not socket.write(frame):
            try:
                await socket.send(frame)
            except Exception as exc:
                # autobahn's Disconnected ("Attempt to send on a closed protocol"): the socket
                # closed between its last message and this send. Its disconnect is on the way.
                self.gone = True
                logger.info(
                    "ws send to a closing socket dropped user=%s document=%s: %s",
                    self.access.user,
                    self.document_id,
                    exc,
                    extra={
                        "event": "ws.send_dropped",
                        "user": str(self.access.user),
                        "document": self.document_id,
                    },
                )
                return False
        self.bytes_out += len(frame)
        self.frames_out += 1
        return True

    async def send_own(self, *frames: bytes) -> None:
        """Sends messages of this socket's own (a handshake step, an answer, presence) and
        counts them; the room counts its broadcasts once each. Several are written in one piece
        when the socket allows it and has nothing queued (the server's half of the handshake:
        one send, one TCP segment); otherwise each is sent as ``send_frame`` sends it."""
        if len(frames) > 1 and not self.gone and self.close_code is None:
            socket = self.socket
            if not socket.queued() and socket.write_together(frames):
                for frame in frames:
                    self.bytes_out += len(frame)
                    self.frames_out += 1
                    metrics.frames_out(frame)
                return
        for frame in frames:
            if await self.send_frame(frame):
                metrics.frames_out(frame)

    async def refuse_now(self, refusal: Refusal) -> None:
        """Logs the refusal, tells the client why, and closes. A client over the rate limit is
        not read any more: what it goes on sending would cost the others (bench: flood)."""
        logger.warning(
            "ws closing user=%s document=%s code=%s reason=%s client=%s",
            self.access.user,
            self.document_id,
            refusal.code,
            refusal.reason,
            self.client,
            extra={
                "event": "ws.closing",
                "user": str(self.access.user),
                "document": self.document_id,
                "code": refusal.code,
                "reason": refusal.reason,
                "client": self.client,
            },
        )
        await self.refuse(refusal.code, refusal.reason)
        if refusal.code == CLOSE_RATE_LIMITED and not self.gone:
            self.socket.hang_up()

    async def refuse(self, code: int, reason: str) -> None:
        """Tells the client why in a y-websocket auth message, then closes with ``code``."""
        self.close_code = code
        await self._close_quietly(code, protocol.permission_denied(reason))

    async def fail(self, code: int, reason: str) -> None:
        """Closes with ``code`` and logs ``reason`` (the client is not told more)."""
        logger.warning(
            "ws closing user=%s document=%s code=%s reason=%s client=%s",
            self.access.user,
            self.document_id,
            code,
            reason,
            self.client,
            extra={
                "event": "ws.closing",
                "user": str(self.access.user),
                "document": self.document_id,
                "code": code,
                "reason": reason,
                "client": self.client,
            },
        )
        self.close_code = code
        await self._close_quietly(code)

    async def _close_quietly(self, code: int, last_frame: bytes | None = None) -> None:
        """Sends a last frame if given, then the close; a socket already closing is left be.
        autobahn drops a peer that does not answer the close within a second, freeing what
        was queued for it."""
        if self.gone:
            return
        try:
            if last_frame is not None:
                await self.socket.send(last_frame)
                metrics.frames_out(last_frame)
            await self.socket.close(code)
        except Exception as exc:
            self.gone = True
            logger.info(
                "ws close of a closing socket skipped document=%s: %s",
                self.document_id,
                exc,
                extra={"event": "ws.close_skipped", "document": self.document_id},
            )


# Tasks started by ``in_background``: the event loop keeps only weak references to tasks.
_background: set[asyncio.Future[Any]] = set()


# ``Connection._worker`` while the work's first step runs (``_Eager``): never awaited, since
# nothing else runs meanwhile.
_STARTING: asyncio.Future[None] = typing.cast("asyncio.Future[None]", object())


class _Eager:
    """Runs a connection's work (``_work``) at once, in the frame's own turn of the event loop,
    up to its first wait; a task carries on from there. As a task from the start, the work
    of every frame read in one turn waited until the loop had read all of them: a burst of
    updates from many sockets (writers typing at once) was applied and passed on only after
    the last of them was read, about 2.5 ms later in the bench's throughput mode, where the
    reference passes each one on as it reads it (docs/BENCHMARKS.md, change 52). Python
    3.12's eager tasks do this; this runs on 3.11. Once a turn per connection (``_queue``):
    the frames of a backlog after the first still wait for a task, and go together.

    ``start`` returns the task that carries on, or None when the work did not wait. The work
    runs in a context of its own from its first step on, as a task's does. An exception out
    of its first step (``_work`` lets none out but a cancellation's) is raised to the caller,
    as ``receive``'s callers already expect of a frame that cannot be taken."""

    @staticmethod
    def start(work: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        context = contextvars.copy_context()
        try:
            waiting = context.run(work.send, None)
        except StopIteration:
            return None
        loop = asyncio.get_running_loop()
        return loop.create_task(_Eager._carry_on(work, waiting), context=context)

    @staticmethod
    async def _carry_on(work: Coroutine[Any, Any, None], waiting: Any) -> None:
        """Drives the rest of ``work`` as a task would: awaits the future it waits for (so
        this task wakes in the turn after it is done, as the work's own task would), then
        resumes the work, throwing into it what the wait raised: the future's exception,
        or a cancellation (cancelling this task cancels the future awaited, as for a task)."""
        while True:
            try:
                if waiting is None:  # a bare yield: asyncio.sleep(0)
                    await asyncio.sleep(0)
                else:
                    # Taken, as a task takes the future its coroutine yields; still marked
                    # as yielded, awaiting it again would raise.
                    waiting._asyncio_future_blocking = False
                    await waiting
            except BaseException as exc:
                try:
                    waiting = work.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting = work.send(None)
            except StopIteration:
                return


def in_background(operation: Awaitable[Any]) -> None:
    """Runs ``operation`` in a task that outlives whoever started it."""
    task = asyncio.ensure_future(operation)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"


async def _quietly(operation: Awaitable[Any]) -> None:
    """Runs a presence write; with Redis down, editing goes on and presence heals later
    (entries expire, clients renew every 15 s)."""
    try:
        await operation
    except redis.RedisError as exc:
        metrics.REDIS["presence"].inc()
        logger.warning(
            "ws presence not written (Redis: %s)", exc, extra={"event": "ws.presence_failed"}
        )
