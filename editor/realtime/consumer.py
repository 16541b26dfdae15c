"""DocumentConsumer: one WebSocket speaking y-websocket for one document. Transport only.

It authenticates and authorises before any document byte, hands decoded messages to the room,
enforces the frame cap, and cleans up. The close codes and their reasons are listed in
docs/protocol.md. Closing *before* accept() would turn into a bare HTTP 403 and the client
would never learn why, so refusals accept, send a y-websocket permission-denied message with
the reason, then close with a 44xx code.
"""

from __future__ import annotations

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
CLOSE_TOO_LARGE = 4413
CLOSE_INTERNAL = 1011


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
    """Serves /ws/documents/<uuid> with the y-websocket protocol."""

    # No layer channel per connection: the room holds the process's group membership, and a
    # channel per socket would cost a Redis subscription each. An alias that names no layer
    # makes Channels skip it.
    channel_layer_alias = "none: rooms hold the group membership"

    async def connect(self) -> None:
        self.opened = time.monotonic()
        self.bytes_in = self.bytes_out = 0
        self.room = None
        self.access: Access | None = None
        # Awareness client ids this connection introduced, with their last clock.
        self.client_ids: dict[int, int] = {}
        self.conn_id = uuid.uuid4().hex
        self.close_code_sent: int | None = None
        # The route admits either case; tickets and rooms use the canonical lower-case form.
        self.document_id = str(uuid.UUID(self.scope["url_route"]["kwargs"]["document_id"]))
        await self.accept()
        # daphne's socket, for frames written without the per-message ASGI trip (None: no).
        self.socket = (
            transport.websocket_of(self.base_send) if settings.SERVE["RAW_FRAMES"] else None
        )
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

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.room is None or self.close_code_sent is not None:
            return  # refused or closing: nothing more is read
        if bytes_data is None:
            await self.fail(CLOSE_MALFORMED, "text frames are not part of the protocol")
            return
        self.bytes_in += len(bytes_data)
        limit = settings.COLLAB["MAX_INCOMING_FRAME"]
        if len(bytes_data) > limit:
            await self.fail(CLOSE_TOO_LARGE, f"frame of {len(bytes_data)} bytes exceeds {limit}")
            return
        try:
            message = protocol.parse_message(bytes_data)
        except protocol.ProtocolError as exc:
            await self.fail(CLOSE_MALFORMED, f"malformed frame: {exc}")
            return
        await self.dispatch_message(message)

    @property
    def user_id(self) -> int | None:
        return self.access.user.pk if self.access else None

    async def recheck_access(self) -> None:
        """Called when this user's membership changed: a new role applies at once, and a
        removed member (or a deleted document) is closed with 4403."""
        role = await _current_role(self.document_id, self.access.user.pk)
        if role is None:
            logger.info("ws access revoked user=%s document=%s", self.access.user, self.document_id)
            await self.refuse(CLOSE_FORBIDDEN, "access removed")
        elif role != self.access.role:
            self.access = dataclasses.replace(self.access, role=role)

    async def dispatch_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.SyncStep1):
            try:
                reply = protocol.sync_step2(self.room.doc, message.state_vector)
            except protocol.ProtocolError as exc:
                await self.fail(CLOSE_MALFORMED, f"bad state vector: {exc}")
                return
            await self.send_frame(reply)
        elif isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            await self.apply_update(message.update)
        elif isinstance(message, protocol.Awareness):
            await self.update_presence(message.entries)
        elif isinstance(message, protocol.QueryAwareness):
            await self.send_presence()
        # Auth messages flow from server to client only; one from a client is ignored.

    async def apply_update(self, update: bytes) -> None:
        if not self.access.can_edit:
            # A viewer's client answers our sync step 1 with an empty step 2: that is no write.
            if update != b"\x00\x00":
                await self.send_frame(protocol.permission_denied("view only"))
            return
        try:
            await self.room.apply_client_update(update, origin=self, author_id=self.access.user.pk)
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

    async def disconnect(self, code) -> None:
        if self.room is not None:
            try:
                if self.client_ids:
                    await get_presence().remove(self.document_id, list(self.client_ids))
                    await self.room.announce_removal(self.client_ids)
            except redis.RedisError as exc:
                # The entries expire by themselves; the sweep will announce them.
                logger.warning("ws presence not removed document=%s: %s", self.document_id, exc)
            finally:
                get_rooms().leave(self.room, self)
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

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: bytes) -> None:
        """Sends one y-websocket message. Under daphne it is written to the socket directly
        (collab/transport.py: encoded once per broadcast, not once per socket); whenever the
        socket is not plainly open that says no, and the message takes the ASGI path."""
        self.bytes_out += len(frame)
        if self.socket is not None and transport.write_message(self.socket, frame):
            return
        await self.send(bytes_data=frame)

    async def refuse(self, code: int, reason: str) -> None:
        """Tells the client why in a y-websocket auth message, then closes with ``code``."""
        self.close_code_sent = code
        await self.send(bytes_data=protocol.permission_denied(reason))
        await self.close(code=code)

    async def fail(self, code: int, reason: str) -> None:
        logger.warning(
            "ws closing user=%s document=%s code=%s reason=%s",
            self.access.user if self.access else None,
            self.document_id,
            code,
            reason,
        )
        self.close_code_sent = code
        await self.close(code=code)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Answers WebSocket paths that are not a document with 4404 instead of a dropped socket."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(bytes_data=protocol.permission_denied("no such endpoint"))
        await self.close(code=CLOSE_NOT_FOUND)


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
