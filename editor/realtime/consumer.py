"""DocumentConsumer: one WebSocket speaking y-websocket for one document. Transport only.

It authenticates and authorises before any document byte, hands decoded messages to the room,
enforces the frame cap, and cleans up. The close codes and their reasons are listed in
docs/protocol.md. Closing *before* accept() would turn into a bare HTTP 403 and the client
would never learn why, so refusals accept, send a y-websocket permission-denied message with
the reason, then close with a 44xx code.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import redis
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery

from collab import transport
from editor.models import Document, Membership, Role, role_from
from editor.realtime import protocol, store, tickets
from editor.realtime.presence import Entry, get_presence, identity
from editor.realtime.room import InvalidUpdate, get_rooms

logger = logging.getLogger("collab.ws")

CLOSE_MALFORMED = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW_READER = 4408
CLOSE_TOO_LARGE = 4413
CLOSE_INTERNAL = 1011

_UPDATES = (protocol.SyncStep2, protocol.SyncUpdate)
# Most updates applied as one batch: merging is fast up to about a thousand (pycrdt 0.14: 1,000
# small updates in 4 ms) and then grows much faster than linearly (5,000: 87 ms; 50,000: 9 s).
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Person:
    """What a socket keeps of its user for its whole life: a model instance costs about a
    kilobyte more per connection (docs/BENCHMARKS.md). It answers what ``identity()`` asks."""

    pk: int
    username: str
    full_name: str

    @classmethod
    def of(cls, user) -> Person:
        return cls(pk=user.pk, username=user.get_username(), full_name=user.get_full_name())

    def get_username(self) -> str:
        return self.username

    def get_full_name(self) -> str:
        return self.full_name

    def __str__(self) -> str:
        return self.username


@dataclass(frozen=True, slots=True)
class Access:
    user: Person
    document_id: str
    role: str
    via: str

    @property
    def can_edit(self) -> bool:
        return self.role in (Role.OWNER, Role.EDITOR)


@dataclass(frozen=True, slots=True)
class _Stop:
    """In a socket's inbox: close after the messages before it."""

    code: int
    reason: str
    tell: bool


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# Channels' own origin rules (ALLOWED_HOSTS), applied only to cookie-authenticated sockets.
_origin_validator = AllowedHostsOriginValidator(None)


def _origin_allowed(scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            try:
                return _origin_validator.valid_origin(urlparse(value.decode("latin1")))
            except (UnicodeDecodeError, ValueError):
                return False
    return False


def _user_and_role(user_id: int, document_id: str):
    """The active user (what a socket keeps of it) and their role in the document, read in ONE
    query (it took three: user, document with its snapshot, membership); every connect runs it
    on the process's single database thread. The role rule is ``editor.models.role_from``, the
    one ``Document.role_of`` uses. Returns (None, None) for no such active user; the role is
    None for no such document or no access."""
    owner = Document.objects.filter(pk=document_id).values("owner_id")[:1]
    membership = Membership.objects.filter(document_id=document_id, user_id=OuterRef("pk"))
    user = (
        get_user_model()
        .objects.filter(pk=user_id, is_active=True)
        .only("pk", "username", "first_name", "last_name")
        .annotate(
            document_owner_id=Subquery(owner),
            member_role=Subquery(membership.values("role")[:1]),
        )
        .first()
    )
    if user is None:
        return None, None
    return user, role_from(user.pk, user.document_owner_id, user.member_role)


@database_sync_to_async
def authorize(scope, document_id: str) -> Access:
    """Decides who this socket is and what it may do, from a ticket or the session cookie.

    A ticket is a bearer credential and needs no origin check; a cookie is sent by the browser
    to any page's socket, so cookie sockets must come from one of our own origins.
    """
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    token = query.get("ticket", [None])[0]
    if token:
        try:
            ticket = tickets.read(token)
        except tickets.TicketError as exc:
            raise Refused(CLOSE_UNAUTHENTICATED, str(exc)) from None
        if ticket.document_id != document_id:
            raise Refused(CLOSE_FORBIDDEN, "ticket is for another document")
        user_id = ticket.user_id
        via = "ticket"
    else:
        session_user = scope.get("user")
        if session_user is None or not session_user.is_authenticated:
            raise Refused(CLOSE_UNAUTHENTICATED, "log in, or pass ?ticket=")
        if not _origin_allowed(scope):
            raise Refused(CLOSE_FORBIDDEN, "origin not allowed")
        user_id = session_user.pk
        via = "session"
    user, role = _user_and_role(user_id, document_id)
    if user is None:
        raise Refused(CLOSE_UNAUTHENTICATED, f"{via} user no longer exists")
    if role is None:
        # The same answer for "does not exist" and "not yours": nothing leaks.
        raise Refused(CLOSE_FORBIDDEN, "no access to this document")
    return Access(user=Person.of(user), document_id=document_id, role=role, via=via)


@database_sync_to_async
def _current_role(document_id: str, user_id: int) -> str | None:
    return _user_and_role(user_id, document_id)[1]


class DocumentConsumer(AsyncWebsocketConsumer):
    """Serves /ws/documents/<uuid> with the y-websocket protocol.

    Messages are read as fast as they come and handled in order by one task of the socket's
    own (``_work``), so that updates a client sent in a row are applied as one batch, and a
    clean close still applies everything received before it (daphne kills a consumer that
    takes longer than 10 s to finish). However the socket ends (close, abort, daphne's kill,
    shutdown) it leaves its room and its presence (``__call__``)."""

    # No layer channel per connection: the room holds the process's group membership, and a
    # channel per socket would cost a Redis subscription each. An alias that names no layer
    # makes Channels skip it.
    channel_layer_alias = "none: rooms hold the group membership"

    # Class defaults, so that clean-up after a failed or killed connect finds every attribute.
    room = None
    access: Access | None = None
    close_code_sent: int | None = None
    # The client has gone (websocket.disconnect) or a send found the socket closing.
    gone = False
    # A frame that cannot be taken came: nothing after it is read.
    stopping = False
    _left = False
    _worker: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        """Channels' ``AsyncConsumer.__call__`` for a consumer without a layer channel, reading
        with a plain loop: Channels' ``await_many_dispatch`` makes a task per message, so a
        backlog is read one message per turn of the event loop; this reads everything queued
        at once, and ``_work`` gets it as one batch."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            if self.room is not None and not self._left:
                # Cancelled (daphne kills consumers that take too long to shut down) or
                # crashed before disconnect() finished: leave the room now, so it does not
                # keep sending to a dead socket, and remove the presence in a task of its own,
                # which no cancellation of this one can stop.
                logger.warning(
                    "ws cleaned up after an abrupt end user=%s document=%s",
                    self.access.user if self.access else None,
                    self.document_id,
                )
                _in_background(self.leave())

    async def connect(self) -> None:
        self.opened = time.monotonic()
        self.bytes_in = self.bytes_out = 0
        # Awareness client ids this connection introduced, with their last clock.
        self.client_ids: dict[int, int] = {}
        self.conn_id = uuid.uuid4().hex
        # Decoded messages waiting for ``_work``, in the order they came.
        self.inbox: collections.deque[protocol.Message] = collections.deque()
        # The last state vector answered with a sync step 2 (duplicates are not re-answered
        # while the answer is still on its way).
        self.answered_step1: bytes | None = None
        # The route admits either case; tickets and rooms use the canonical lower-case form.
        self.document_id = str(uuid.UUID(self.scope["url_route"]["kwargs"]["document_id"]))
        await self.accept()
        # daphne's socket: for the bytes queued to it, and for frames written without the
        # per-message ASGI trip (None under any other server).
        self.socket = transport.websocket_of(self.base_send)
        self.raw_frames = self.socket is not None and settings.SERVE["RAW_FRAMES"]
        try:
            self.access = await authorize(self.scope, self.document_id)
        except Refused as refused:
            logger.warning(
                "ws refused document=%s code=%s reason=%s client=%s",
                self.document_id,
                refused.code,
                refused.reason,
                _client(self.scope),
            )
            await self.refuse(refused.code, refused.reason)
            return
        try:
            self.room = await get_rooms().join(self.document_id, self)
        except Exception:
            logger.exception("ws could not load document=%s", self.document_id)
            await self.refuse(CLOSE_INTERNAL, "document could not be loaded; retry shortly")
            return
        store.install_shutdown_flush()
        logger.info(
            "ws open user=%s document=%s role=%s via=%s client=%s",
            self.access.user,
            self.document_id,
            self.access.role,
            self.access.via,
            _client(self.scope),
        )
        await self.send_frame(protocol.sync_step1(self.room.doc))
        await self.send_frame(protocol.authenticated(self.scope_name))
        await self.send_presence()

    async def dispatch(self, message) -> None:
        """Channels' dispatch first hops to the database thread to close stale connections
        (``aclose_old_connections``), before every message. This consumer never touches the ORM
        on the event loop: ``authorize``, the membership re-check and the store go through
        ``database_sync_to_async``, which does that clean-up itself. So messages skip the hop:
        it cost a thread round trip per update, queued behind the store's writes, and 8 % of a
        process's time while sockets connect (docs/BENCHMARKS.md)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    @functools.cached_property
    def identity(self) -> dict:
        """The ``user`` field the server writes into this socket's awareness states. Made on
        first use: sockets that never send awareness (readers, scripts) keep none."""
        return identity(self.access.user)

    @property
    def scope_name(self) -> str:
        """What this socket may do, as the auth message names it."""
        return protocol.SCOPE_READ_WRITE if self.access.can_edit else protocol.SCOPE_READ_ONLY

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Checks and decodes a frame, and queues it for ``_work``. A frame that cannot be
        taken ends the socket, after what was received before it has been handled."""
        if self.room is None or self.close_code_sent is not None or self.stopping:
            return  # refused or closing: nothing more is read
        if bytes_data is None:
            self.stop(CLOSE_MALFORMED, "text frames are not part of the protocol")
            return
        self.bytes_in += len(bytes_data)
        limit = settings.COLLAB["MAX_INCOMING_FRAME"]
        if len(bytes_data) > limit:
            reason = (
                f"this change is too large to save ({_mb(len(bytes_data))} MB;"
                f" the limit is {_mb(limit)} MB)"
            )
            self.stop(CLOSE_TOO_LARGE, reason, tell=True)
            return
        try:
            message = protocol.parse_message(bytes_data)
        except protocol.ProtocolError as exc:
            self.stop(CLOSE_MALFORMED, f"malformed frame: {exc}")
            return
        self._queue(message)

    def stop(self, code: int, reason: str, tell: bool = False) -> None:
        """Reads nothing more, and closes with ``code`` once the messages queued before are
        handled; ``tell`` sends the reason first, in an auth message the client can show."""
        self.stopping = True
        self._queue(_Stop(code, reason, tell))

    def _queue(self, message) -> None:
        self.inbox.append(message)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        """Handles queued messages in order until none is left. Updates that follow each other
        in the queue (the client got ahead) are applied as one batch, up to a frame's worth."""
        limit = settings.COLLAB["MAX_INCOMING_FRAME"]
        try:
            while self.inbox and self.close_code_sent is None:
                message = self.inbox.popleft()
                if isinstance(message, _Stop):
                    if message.tell:
                        logger.warning(
                            "ws closing user=%s document=%s code=%s reason=%s",
                            self.access.user,
                            self.document_id,
                            message.code,
                            message.reason,
                        )
                        await self.refuse(message.code, message.reason)
                    else:
                        await self.fail(message.code, message.reason)
                    break
                if not isinstance(message, _UPDATES):
                    await self.dispatch_message(message)
                    continue
                updates = [message.update]
                size = len(message.update)
                while (
                    self.inbox
                    and isinstance(self.inbox[0], _UPDATES)
                    and size < limit
                    and len(updates) < MAX_BATCH
                ):
                    update = self.inbox.popleft().update
                    updates.append(update)
                    size += len(update)
                await self.apply_updates(updates)
        except Exception:
            logger.exception("ws failed user=%s document=%s", self.access.user, self.document_id)
            await self.fail(CLOSE_INTERNAL, "internal error")
        finally:
            self._worker = None

    @property
    def user_id(self) -> int | None:
        return self.access.user.pk if self.access else None

    async def recheck_access(self) -> None:
        """Called when this user's membership changed: a removed member (or a deleted
        document) is closed with 4403; a new role applies at once and the client is told
        (``authenticated``), followed by a fresh sync step 1: a demoted client learns what the
        server has, so it can tell its user what was not saved; a promoted one answers with
        what it holds, which is now accepted."""
        if self.gone or self.close_code_sent is not None:
            return
        role = await _current_role(self.document_id, self.access.user.pk)
        if role is None:
            logger.info("ws access revoked user=%s document=%s", self.access.user, self.document_id)
            await self.refuse(CLOSE_FORBIDDEN, "access removed")
        elif role != self.access.role:
            self.access = dataclasses.replace(self.access, role=role)
            logger.info(
                "ws role changed user=%s document=%s role=%s",
                self.access.user,
                self.document_id,
                role,
            )
            await self.send_frame(protocol.authenticated(self.scope_name))
            await self.send_frame(protocol.sync_step1(self.room.doc))

    async def dispatch_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.SyncStep1):
            queued = transport.queued_bytes(self.socket) if self.socket is not None else None
            if message.state_vector == self.answered_step1 and queued:
                # The same question while the answer is still queued for this socket: the
                # answer, and every update sent after it, will bring the client up to date.
                return
            try:
                reply = protocol.sync_step2(self.room.doc, message.state_vector)
            except protocol.ProtocolError as exc:
                await self.fail(CLOSE_MALFORMED, f"bad state vector: {exc}")
                return
            self.answered_step1 = message.state_vector
            await self.send_frame(reply)
        elif isinstance(message, _UPDATES):
            await self.apply_updates([message.update])
        elif isinstance(message, protocol.Awareness):
            await self.update_presence(message.entries)
        elif isinstance(message, protocol.QueryAwareness):
            await self.send_presence()
        # Auth messages flow from server to client only; one from a client is ignored.

    async def apply_updates(self, updates: list[bytes]) -> None:
        if not self.access.can_edit:
            # A viewer's client answers our sync step 1 with an empty step 2: that is no write.
            if any(update != b"\x00\x00" for update in updates):
                await self.send_frame(protocol.permission_denied("view only"))
            return
        try:
            await self.room.apply_client_updates(
                updates, origin=self, author_id=self.access.user.pk
            )
        except InvalidUpdate as exc:
            await self.fail(CLOSE_MALFORMED, f"update does not apply: {exc}")

    async def update_presence(self, entries) -> None:
        """Records and relays awareness, with two rules: the ``user`` field is the server's
        (identity comes from the account, never the client), and a connection speaks only
        for client ids it introduced; entries about anyone else's are dropped."""
        presence = get_presence()
        user = self.access.user
        accepted = []
        for entry in entries:
            known = entry.client_id in self.client_ids
            if not known:
                if entry.state is None:
                    continue  # nobody removes another connection's presence
                try:
                    allowed = await presence.owner_allows(
                        self.document_id, entry.client_id, self.conn_id, user.pk
                    )
                except redis.RedisError as exc:
                    # Identity is still the server's, so a client can at worst reuse an id.
                    logger.warning("ws presence check skipped (Redis: %s)", exc)
                    allowed = True
                if not allowed:
                    logger.warning(
                        "ws awareness ignored user=%s document=%s client_id=%s: not theirs",
                        user,
                        self.document_id,
                        entry.client_id,
                    )
                    continue
            if entry.state is None:
                self.client_ids.pop(entry.client_id, None)
                await _quietly(presence.remove(self.document_id, [entry.client_id]))
                accepted.append(entry)
                continue
            state = {**entry.state, "user": self.identity}
            stored = Entry(
                client_id=entry.client_id,
                clock=entry.clock,
                state=state,
                user_id=user.pk,
                conn=self.conn_id,
                deadline=presence.deadline(),
            )
            self.client_ids[entry.client_id] = entry.clock
            if known:
                presence.renew(self.document_id, stored)
            else:
                await _quietly(presence.put(self.document_id, stored))
            accepted.append(stored.awareness())
        if accepted:
            await self.room.relay_awareness(protocol.encode_awareness(accepted))

    async def send_presence(self) -> None:
        """Sends every live awareness state of the document, from all processes."""
        try:
            entries = await get_presence().entries(self.document_id)
        except redis.RedisError as exc:
            logger.warning("ws presence unavailable document=%s: %s", self.document_id, exc)
            return
        if entries:
            payload = protocol.encode_awareness(entry.awareness() for entry in entries)
            await self.send_frame(protocol.awareness(payload))

    async def websocket_disconnect(self, message) -> None:
        self.gone = True
        await super().websocket_disconnect(message)

    async def disconnect(self, code) -> None:
        """Called when the socket has closed: applies what the client sent before closing,
        then leaves the room and the presence."""
        worker = self._worker
        if worker is not None:
            await worker
        await self.leave()
        if self.access is not None:
            logger.info(
                "ws close user=%s document=%s duration=%.1fs code=%s bytes_in=%d bytes_out=%d",
                self.access.user,
                self.document_id,
                time.monotonic() - self.opened,
                # 1005 is "no status": the client closed without giving a code.
                self.close_code_sent or code or 1005,
                self.bytes_in,
                self.bytes_out,
            )

    async def leave(self) -> None:
        """Leaves the room at once (no frame is sent to this socket after it), then removes
        this socket's presence and tells the others. Runs once."""
        if self.room is None or self._left:
            return
        self._left = True
        get_rooms().leave(self.room, self)
        if not self.client_ids:
            return
        try:
            await get_presence().remove(self.document_id, list(self.client_ids))
            await self.room.announce_removal(self.client_ids)
        except redis.RedisError as exc:
            # The entries expire by themselves; the sweep will announce them.
            logger.warning("ws presence not removed document=%s: %s", self.document_id, exc)

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: bytes) -> None:
        """Sends one y-websocket message, or nothing once the socket is closing: a send never
        raises, so a socket closing under a broadcast is its own business only.

        Under daphne the bytes already queued for the socket are checked first: a client that
        does not read past ``WS_MAX_SEND_BUFFER`` is closed with 4408 and its buffer freed. The
        message is then written to the socket directly (collab/transport.py: encoded once per
        broadcast, not once per socket); whenever the socket is not plainly open that says no,
        and the message takes the ASGI path."""
        if self.gone or self.close_code_sent is not None:
            return
        if self.socket is not None:
            queued = transport.queued_bytes(self.socket)
            if queued and queued + len(frame) > settings.COLLAB["MAX_SEND_BUFFER"]:
                await self.fail(
                    CLOSE_SLOW_READER,
                    f"client is not reading: {queued} bytes queued, a {len(frame)}-byte"
                    f" message would pass WS_MAX_SEND_BUFFER",
                )
                return
            if self.raw_frames and transport.write_message(self.socket, frame):
                self.bytes_out += len(frame)
                return
        try:
            await self.send(bytes_data=frame)
        except Exception as exc:
            # autobahn's Disconnected ("Attempt to send on a closed protocol"): the socket closed
            # between its last message and this send. Its disconnect is on the way.
            self.gone = True
            logger.info(
                "ws send to a closing socket dropped user=%s document=%s: %s",
                self.access.user if self.access else None,
                self.document_id,
                exc,
            )
            return
        self.bytes_out += len(frame)

    async def refuse(self, code: int, reason: str) -> None:
        """Tells the client why in a y-websocket auth message, then closes with ``code``."""
        self.close_code_sent = code
        await self._close_quietly(code, protocol.permission_denied(reason))

    async def fail(self, code: int, reason: str) -> None:
        logger.warning(
            "ws closing user=%s document=%s code=%s reason=%s",
            self.access.user if self.access else None,
            self.document_id,
            code,
            reason,
        )
        self.close_code_sent = code
        await self._close_quietly(code)

    async def _close_quietly(self, code: int, last_frame: bytes | None = None) -> None:
        """Sends a last frame if given, then the close; a socket already closing is left be.
        autobahn drops a peer that does not answer the close within a second, freeing what
        was queued for it."""
        if self.gone:
            return
        try:
            if last_frame is not None:
                await self.send(bytes_data=last_frame)
            await self.close(code=code)
        except Exception as exc:
            self.gone = True
            logger.info(
                "ws close of a closing socket skipped document=%s: %s", self.document_id, exc
            )


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Answers WebSocket paths that are not a document with 4404 instead of a dropped socket."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(bytes_data=protocol.permission_denied("no such endpoint"))
        await self.close(code=CLOSE_NOT_FOUND)


# Tasks started by ``_in_background``: the event loop keeps only weak references to tasks.
_background: set[asyncio.Task] = set()


def _in_background(operation) -> None:
    task = asyncio.ensure_future(operation)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"


async def _quietly(operation) -> None:
    """Runs a presence write; with Redis down, editing goes on and presence heals later
    (entries expire, clients renew every 15 s)."""
    try:
        await operation
    except redis.RedisError as exc:
        logger.warning("ws presence not written (Redis: %s)", exc)


def _client(scope) -> str:
    client = scope.get("client") or ("?", 0)
    return f"{client[0]}:{client[1]}"
