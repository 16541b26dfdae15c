"""Who is this socket, and what may it do: a session cookie (from one of our own origins) or a
ticket, turned into an ``Access`` before any document byte is sent.

The role rule itself is ``editor.access``; this module only reads what that rule needs, in one
query, and says why when the answer is no (``Refused``: a close code and a reason the client
can show, docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import importlib
import logging
import threading
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends import db as _db_sessions
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, close_old_connections, connections
from django.db.models import OuterRef, Subquery
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from editor import access, links
from editor.models import Document, Membership
from editor.realtime import tickets
from editor.realtime.codes import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from editor.realtime.loops import per_event_loop

logger = logging.getLogger("collab.ws")


@dataclass(frozen=True, slots=True)
class Person:
    """What a socket keeps of its user for its whole life: a model instance costs about a
    kilobyte more per connection (docs/BENCHMARKS.md). It answers what ``identity()`` asks."""

    pk: int
    username: str
    full_name: str

    @classmethod
    def of(cls, user: Any) -> Person:
        return cls(pk=user.pk, username=user.get_username(), full_name=user.get_full_name())

    def get_username(self) -> str:
        return self.username

    def get_full_name(self) -> str:
        return self.full_name

    def __str__(self) -> str:
        return self.username


@dataclass(frozen=True, slots=True)
class Access:
    """Who a socket is, in which document, with which role, and how it proved it."""

    user: Person
    document_id: str
    role: str
    via: str  # "session", "ticket", or "link" (a guest's "anyone" link, editor/links.py)
    link: str | None = None  # a guest's link token, read again when access changes
    # The key of the session a browser's socket logged in with: its sockets close when it logs
    # out or a new password ends it (``Connection.sessions_ended``). None for tickets, guests.
    session: str | None = None

    @property
    def can_edit(self) -> bool:
        return access.may_edit(self.role)


class Refused(Exception):
    """The socket may not open this document: ``code`` to close with, ``reason`` to tell."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None if malformed."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS[scheme]
    except (KeyError, ValueError):
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    return scheme, parts.hostname, port


def _page_origin(
    host: str,
    forwarded: str | None,
    allowed_hosts: tuple[str, ...],
    proxy_header: tuple[str, ...] | None,
) -> tuple[str, str, int] | None:
    """The origin of our own pages on the host this socket asked for: the Host header (one of
    ALLOWED_HOSTS, port included) and the scheme, which behind nginx comes from the header
    named by SECURE_PROXY_SSL_HEADER (``forwarded``: its value), as for HTTP requests; daphne's
    sockets carry no scheme."""
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    scheme = "http"
    if proxy_header and (forwarded or "").split(",")[0].strip() == proxy_header[1]:
        scheme = "https"
    return _origin(scheme, host)


def _trusted(origin: tuple[str, str, int], trusted_origins: tuple[str, ...]) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lists the origin (``https://*.example.com`` as Django reads
    it: any subdomain, same scheme and port)."""
    scheme, host, port = origin
    for entry in trusted_origins:
        entry_scheme, _, netloc = entry.partition("://")
        wildcard = netloc.startswith("*.")
        trusted = _origin(entry_scheme.lower(), netloc[1:] if wildcard else netloc)
        if trusted is None or trusted[0] != scheme or trusted[2] != port:
            continue
        if host == trusted[1] or (wildcard and host.endswith(trusted[1])):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin names one of our own origins, scheme, host and port alike:
    the page's own (the Host it asked for) or one in CSRF_TRUSTED_ORIGINS. No Origin: no.

    A host-only comparison let any page on the same host reach the socket with the user's
    cookie: another port (a different application) or plain http beside https.
    """
    headers = dict(scope.get("headers", []))
    raw = headers.get(b"origin")
    if raw is None:
        return False
    proxy_header: tuple[str, ...] | None = None
    forwarded = None
    if settings.SECURE_PROXY_SSL_HEADER:
        proxy_header = tuple(settings.SECURE_PROXY_SSL_HEADER)
        forwarded = headers.get(_header_name(proxy_header[0]))
    return _origin_is_ours(
        raw,
        headers.get(b"host", b""),
        forwarded,
        tuple(settings.ALLOWED_HOSTS),
        tuple(settings.CSRF_TRUSTED_ORIGINS),
        proxy_header,
    )


@functools.lru_cache(maxsize=512)
def _origin_is_ours(
    raw: bytes,
    host: bytes,
    forwarded: bytes | None,
    allowed_hosts: tuple[str, ...],
    trusted_origins: tuple[str, ...],
    proxy_header: tuple[str, ...] | None,
) -> bool:
    """``origin_allowed``'s answer for these headers and settings. Every browser socket of a
    site asks it with the same few values (the site's Origin and Host), and parsing them took
    about 9 µs a socket (docs/BENCHMARKS.md, change 46): remembered, for the last 512
    combinations, so that made-up headers cannot grow it. The settings it reads are part of
    what it remembers by, so a changed setting is asked afresh."""
    scheme, _, netloc = raw.decode("latin1").partition("://")
    origin = _origin(scheme.lower(), netloc)
    if origin is None or "/" in netloc:
        return False
    page = _page_origin(
        host.decode("latin1"),
        None if forwarded is None else forwarded.decode("latin1"),
        allowed_hosts,
        proxy_header,
    )
    return origin == page or _trusted(origin, trusted_origins)


@functools.lru_cache(maxsize=8)
def _header_name(meta_name: str) -> bytes:
    """The header a request.META name (SECURE_PROXY_SSL_HEADER's ``HTTP_X_FORWARDED_PROTO``)
    stands for, as daphne's scope spells it (``x-forwarded-proto``)."""
    return meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")


def user_and_role(
    user_id: int, document_id: str, session_hash: str | None = None
) -> tuple[Person | None, str | None]:
    """The active user and their role in the document, read in ONE query (it took three: user,
    document with its snapshot, membership); every connect runs it. Returns (None, None) for no
    such active user; the role is None for no such document or no access.

    With ``session_hash`` (a session's login), the user must also be the one that session
    logged in, as Django's own ``get_user`` checks: a password changed since ends the session.
    """
    row = _USER_AND_ROLE.fetch(user_id, document_id)
    if row is None:
        return None, None
    pk, username, first_name, last_name, password, owner_id, member_role = row
    if session_hash is not None and not _session_hash_matches(pk, password, session_hash):
        return None, None
    user = Person(pk=pk, username=username, full_name=f"{first_name} {last_name}".strip())
    role = access.role_from(pk, owner_id, member_role)
    return user, role if access.may_view(role) else None


def _session_hash_matches(pk: int, password: str, session_hash: str) -> bool:
    """Django's check of a session's login against the user's password (``get_user``), the
    hashes made by the user model's own methods, SECRET_KEY_FALLBACKS included."""
    user = _login_user(pk, password)
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )


def _login_user(pk: int, password: str) -> Any:
    """An instance of the user model holding only ``pk`` and ``password``, for the model's own
    session hash methods: one per check thread, given each check's values. A model's
    ``__init__`` (every field's default) took about 9 µs a socket, more than the hash itself
    (docs/BENCHMARKS.md, change 46)."""
    model = get_user_model()
    user = getattr(_trip, "login_user", None)
    if type(user) is not model:
        user = _trip.login_user = model()
    user.pk = pk
    user.password = password
    return user


def _logged_in(session: Any) -> tuple[int | None, str]:
    """Who the session logged in (Django's login: user id, backend, hash), without loading the
    user: (None, "") for nobody. Reading it loads the session (one query), on this thread."""
    if session is None or not session.session_key:
        return None, ""
    try:
        raw_id = session[SESSION_KEY]
        backend = session[BACKEND_SESSION_KEY]
    except KeyError:
        return None, ""
    session_hash = session.get(HASH_SESSION_KEY) or ""
    if backend not in settings.AUTHENTICATION_BACKENDS or not session_hash:
        return None, ""
    try:
        return int(get_user_model()._meta.pk.to_python(raw_id)), session_hash
    except (TypeError, ValueError, ValidationError):
        return None, ""


def _bigints(params: list[Any]) -> list[Any]:
    """The values, each integer to be sent as a bigint: psycopg otherwise picks the smallest
    type that holds each value, and a statement prepared for one trip's types would not serve
    the next trip's (user ids on either side of 32,767, say)."""
    from psycopg.types.numeric import Int8

    return [Int8(value) if type(value) is int else value for value in params]


def _checks_rows(connection: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of one of the socket checks' queries, asked on this thread's Django connection.

    With ``CHECKS_PREPARED`` on PostgreSQL (psycopg 3), the values are bound by the server and
    the statement is prepared on the connection: PostgreSQL plans each of these few fixed
    queries once per connection instead of on every trip (planning was most of their time in
    the database, docs/BENCHMARKS.md, change 67). The cursor is still Django's (its error
    translation, its query log, its execute wrappers); Django's own queries on the connection
    are bound and prepared as Django set them (by default: by the client, never prepared).

    A prepared query that fails drops its connection and is asked once more, unprepared, on a
    fresh one (one warning): psycopg keeps a statement it prepared even when PostgreSQL can no
    longer run it (a migration changed the type of a column it reads: "cached plan must not
    change result type"; a pooler that lost it), so that connection would fail every check."""
    import psycopg

    if settings.COLLAB["CHECKS_PREPARED"] and connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        if isinstance(raw, psycopg.Connection):
            threshold = raw.prepare_threshold
            raw.prepare_threshold = 0  # prepared on its first run (Django's default: never)
            try:
                with connection.wrap_database_errors:
                    bound_by_the_server = psycopg.Cursor(raw)
                if connection.queries_logged:
                    cursor = connection.make_debug_cursor(bound_by_the_server)
                else:
                    cursor = connection.make_cursor(bound_by_the_server)
                with cursor:
                    cursor.execute(sql, _bigints(params))
                    return cursor.fetchall()
            except (DatabaseError, psycopg.Error) as exc:
                logger.warning(
                    "a socket check's prepared query failed; asked again, unprepared, on a new"
                    " database connection: %r",
                    exc,
                )
                raw.close()
                connection.close()
            finally:
                raw.prepare_threshold = threshold
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class _CompiledOnce:
    """A query built with the ORM and compiled to SQL once per database (with placeholder
    values), then run with each connect's values. Building and compiling a query took most of
    a socket check's CPU (py-spy, docs/BENCHMARKS.md changes 16 and 24): these queries never
    change, only their values.

    ``build`` makes the queryset from one value per entry of ``slots``; each slot is the model
    field the value is compared with and a placeholder value no real one equals. The values
    are prepared for the database by those fields, as the ORM prepares them."""

    def __init__(
        self, build: Any, slots: list[tuple[Any, Any]], key_size: int | None = None
    ) -> None:
        self._build = build
        self._slots = slots
        # Per database alias: the SQL, and its parameters (a _Slot marks where a value goes).
        self._compiled: dict[str, tuple[str, list[Any]]] = {}
        # Per database alias: the SQL that runs the query for many value tuples at once.
        # (The SQL, its constant parameters, and the text of one row of values.)
        self._compiled_many: dict[str, tuple[str, list[Any], str] | None] = {}
        # How many leading values name a row read ahead (``read_ahead``): the others are
        # conditions the same for a whole trip (the time a session must outlive).
        self._key_size = len(slots) if key_size is None else key_size
        # Rows read ahead for this thread's current trip (``reading_ahead``), by key.
        self._ahead = threading.local()

    def _compile(self, alias: str) -> tuple[str, list[Any]]:
        connection = connections[alias]
        query = self._build(*(placeholder for _, placeholder in self._slots)).query
        sql, params = query.get_compiler(using=alias).as_sql()
        prepared = [
            field.get_db_prep_value(placeholder, connection) for field, placeholder in self._slots
        ]
        marked: list[Any] = []
        for param in params:
            index = next((i for i, value in enumerate(prepared) if param == value), None)
            marked.append(_Slot(index) if index is not None else param)
        for index in range(len(self._slots)):
            if _Slot(index) not in marked:
                raise RuntimeError(f"placeholder {index} not found in {sql!r}")
        return sql, marked

    def fetch(self, *values: Any) -> tuple[Any, ...] | None:
        ahead = getattr(self._ahead, "rows", None)
        if ahead is not None:
            key = values[: self._key_size]
            if key in ahead:
                return ahead[key]
        alias = DEFAULT_DB_ALIAS
        compiled = self._compiled.get(alias)
        if compiled is None:
            compiled = self._compiled[alias] = self._compile(alias)
        sql, marked = compiled
        connection = connections[alias]
        prepared = [
            field.get_db_prep_value(value, connection)
            for (field, _), value in zip(self._slots, values, strict=True)
        ]
        params = [prepared[m.index] if type(m) is _Slot else m for m in marked]
        rows = _checks_rows(connection, sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def reading_ahead(self) -> Iterator[None]:
        """Within it, ``fetch`` on this thread first looks among the rows ``read_ahead`` read;
        they are let go at its end, so nothing read ahead outlives one trip."""
        self._ahead.rows = {}
        try:
            yield
        finally:
            self._ahead.rows = None

    def read_ahead(self, many: Iterable[tuple[Any, ...]]) -> None:
        """Reads the rows of many value tuples in one query (``reading_ahead`` must be on), for
        ``fetch`` to find: one round trip, and one parse and plan, instead of one per tuple.
        Only PostgreSQL runs them together (a LATERAL join); elsewhere nothing is read ahead,
        and each ``fetch`` asks on its own, as without this."""
        built = self.statements(many, least=2)
        if built is None:
            return
        keys, statements = built
        connection = connections[DEFAULT_DB_ALIAS]
        rows_of: dict[int, tuple[Any, ...]] = {}
        for sql, params in statements:
            for n, *row in _checks_rows(connection, sql, params):
                rows_of[n] = tuple(row)
        self.take_ahead(keys, rows_of)

    def statements(
        self,
        many: Iterable[tuple[Any, ...]],
        least: int,
        compile: bool = True,
        connection: Any = None,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, list[Any]]]] | None:
        """The keys of ``many`` (each once, in order) and the statements that read their rows,
        each row numbered by its key's place; None for fewer than ``least`` keys, or where
        reading ahead cannot be done. ``compile=False``: only if the query was compiled already
        (compiling may ask the database, which a caller on the event loop must not).
        ``connection``: the Django connection whose fields prepare the values (this thread's)."""
        keys: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for values in many:
            keys.setdefault(values[: self._key_size], values)
        alias = DEFAULT_DB_ALIAS
        if len(keys) < least:
            return None
        compiled = self._compile_many(alias) if compile else self._compiled_many.get(alias)
        if compiled is None:
            return None
        sql, constants, values_row = compiled
        if connection is None:
            connection = connections[alias]
        asked = list(keys.values())
        statements = []
        for start in range(0, len(asked), READ_AHEAD_MAX):
            batch = asked[start : start + READ_AHEAD_MAX]
            params: list[Any] = []
            for n, values in enumerate(batch):
                params.append(start + n)
                params += [
                    field.get_db_prep_value(value, connection)
                    for (field, _), value in zip(self._slots, values, strict=True)
                ]
            params += constants
            listed = ", ".join([values_row] * len(batch))
            statements.append((sql.replace(_ROWS, listed, 1), params))
        return list(keys), statements

    def compile_many(self) -> None:
        """Compiles the query for many values now, if it was not (``statements`` with
        ``compile=False`` finds it from then on)."""
        self._compile_many(DEFAULT_DB_ALIAS)

    def take_ahead(self, keys: list[tuple[Any, ...]], rows_of: dict[int, tuple[Any, ...]]) -> None:
        """Keeps the rows ``statements``' statements read (``reading_ahead`` must be on); a key
        without one has no row, and ``fetch`` then finds None without asking."""
        ahead = self._ahead.rows
        for n, key in enumerate(keys):
            ahead[key] = rows_of.get(n)

    def _compile_many(self, alias: str) -> tuple[str, list[Any], str] | None:
        """The query run for many value tuples at once: each tuple a row of a VALUES list
        (numbered), and the one-tuple query joined to each as a LATERAL subquery reading the
        row's values where it read its placeholders. None where that cannot be built (not
        PostgreSQL; SQL whose placeholders cannot be told apart)."""
        if alias in self._compiled_many:
            return self._compiled_many[alias]
        connection = connections[alias]
        if connection.vendor != "postgresql":
            self._compiled_many[alias] = None
            return None
        # A compile that fails (it may ask the database) is tried again by the next caller.
        compiled = self._compiled.get(alias) or self._compile(alias)
        self._compiled[alias] = compiled
        sql, marked = compiled
        pieces = sql.split("%s")
        if "%%" in sql or len(pieces) != len(marked) + 1:
            self._compiled_many[alias] = None
            return None
        lateral = pieces[0]
        constants: list[Any] = []
        for mark, piece in zip(marked, pieces[1:], strict=True):
            if type(mark) is _Slot:
                lateral += f"asked.v{mark.index}"
            else:
                lateral += "%s"
                constants.append(mark)
            lateral += piece
        columns = ", ".join(f"v{i}" for i in range(len(self._slots)))
        many = (
            f"SELECT asked.n, one.* FROM (VALUES {_ROWS}) AS asked(n, {columns})"
            f" CROSS JOIN LATERAL ({lateral}) AS one"
        )
        casts = [field.cast_db_type(connection) for field, _ in self._slots]
        values_row = "(%s, " + ", ".join(f"CAST(%s AS {cast})" for cast in casts) + ")"
        self._compiled_many[alias] = (many, constants, values_row)
        return self._compiled_many[alias]


# Where ``read_ahead``'s query lists its value rows, and the most rows it lists in one query.
_ROWS = "<<collab: rows>>"
READ_AHEAD_MAX = 256


@dataclass(frozen=True)
class _Slot:
    index: int


def _user_and_role_query(user_id: Any, document_id: Any) -> Any:
    owner = Document.objects.filter(pk=document_id).values("owner_id")[:1]
    membership = Membership.objects.filter(document_id=document_id, user_id=OuterRef("pk"))
    return (
        get_user_model()
        .objects.filter(pk=user_id, is_active=True)
        .annotate(
            document_owner_id=Subquery(owner),
            member_role=Subquery(membership.values("role")[:1]),
        )
        .values_list(
            "pk",
            "username",
            "first_name",
            "last_name",
            "password",
            "document_owner_id",
            "member_role",
        )[:1]
    )


_USER_AND_ROLE = _CompiledOnce(
    _user_and_role_query,
    [
        (get_user_model()._meta.pk, -2_146_000_001),  # no such user id, in the column's range
        (Document._meta.pk, uuid.UUID("5e171ae1-0000-4000-8000-00000000d0c5")),
    ],
)


def _session_query(session_key: str, now: datetime.datetime) -> Any:
    # What django.contrib.sessions.backends.db.SessionStore.load asks.
    return Session.objects.filter(session_key=session_key, expire_date__gt=now).values_list(
        "session_data"
    )[:1]


_SESSION = _CompiledOnce(
    _session_query,
    [
        (Session._meta.get_field("session_key"), "collab-placeholder-session-key"),
        (
            Session._meta.get_field("expire_date"),
            datetime.datetime(1970, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC),
        ),
    ],
    key_size=1,  # read ahead by key: a trip's sessions must all outlive its start
)


class _StoredSession:
    """A session of the database engine, read for a socket check in one compiled query
    (``_SESSION``) and decoded by Django's own ``SessionStore.decode``: what the check reads
    of a ``SessionStore`` (``[]``, ``get``, ``session_key``: None when there is no such live
    session), read-only."""

    def __init__(self, session_key: str) -> None:
        row = _SESSION.fetch(session_key, timezone.now())
        self.session_key: str | None = session_key if row is not None else None
        self._data: Mapping[str, Any] = _decoded(row[0]) if row else {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)


@functools.lru_cache(maxsize=4096)
def _decoded(session_data: str) -> Mapping[str, Any]:
    """A stored session's data decoded by Django (a signature check, a decompression, a JSON
    parse), read-only. Decoding is a function of the data as stored alone (and of the keys the
    process started with), so it is kept, by that data, for the next socket that brings the
    same session: the same trip's read-ahead and check (docs/BENCHMARKS.md, change 41), a
    browser's other tabs, a reconnect. A session that changes (a login, a logout, anything
    written to it) is stored as other data and decoded anew; whether it still exists, and has
    not expired, is the query's (``_SESSION``), asked every time."""
    return types.MappingProxyType(_db_sessions.SessionStore().decode(session_data))


def _read_ticket(token: str) -> tickets.Ticket:
    """A ticket read (its signature checked, its payload parsed), once per trip of socket
    checks, for the reason sessions are decoded once (``_decoded``; docs/BENCHMARKS.md,
    change 44). A ticket refused is refused again with the same reason. Outside a trip, read
    each time."""
    memo = getattr(_trip, "tickets", None)
    if memo is None:
        return tickets.read(token)
    read = memo.get(token)
    if read is None:
        try:
            read = tickets.read(token)
        except tickets.TicketError as exc:
            read = exc
        memo[token] = read
    if isinstance(read, tickets.TicketError):
        raise tickets.TicketError(str(read))
    return read


# This thread's current trip of socket checks: its tickets, read (``_read_ticket``), and its
# sockets' claims (``_claimed_once``); and the thread's user instance for session hashes
# (``_login_user``).
_trip = threading.local()


@contextlib.contextmanager
def _reading_once() -> Iterator[None]:
    _trip.tickets = {}
    _trip.claims = {}
    try:
        yield
    finally:
        _trip.tickets = None
        _trip.claims = None


def _authorize(scope: dict[str, Any], document_id: str) -> Access:
    user_id, session_hash, via, session = _claimed_once(scope, document_id)
    if user_id is None:
        return _guest(scope, session, document_id)
    if via == "session" and not origin_allowed(scope):
        raise Refused(CLOSE_FORBIDDEN, "origin not allowed")
    user, role = user_and_role(user_id, document_id, session_hash)
    if user is None and session_hash:
        raise Refused(CLOSE_UNAUTHENTICATED, "session no longer valid: log in again")
    if user is None:
        raise Refused(CLOSE_UNAUTHENTICATED, f"{via} user no longer exists")
    if role is None:
        # The same answer for "does not exist" and "not yours": nothing leaks.
        raise Refused(CLOSE_FORBIDDEN, "no access to this document")
    key = session.session_key if session is not None else None
    return Access(user=user, document_id=document_id, role=role, via=via, session=key or None)


def _claimed(scope: dict[str, Any], document_id: str) -> tuple[int | None, str | None, str, Any]:
    """Who the socket says it is, before the user and the document are looked up: (user id,
    None for nobody logged in; the session login's hash, None for a ticket; "ticket" or
    "session"; the session, None for a ticket). Reading a stored session is one query."""
    token = _ticket_of(scope)
    if token:
        try:
            ticket = _read_ticket(token)
        except tickets.TicketError as exc:
            raise Refused(CLOSE_UNAUTHENTICATED, str(exc)) from None
        if ticket.document_id != document_id:
            raise Refused(CLOSE_FORBIDDEN, "ticket is for another document")
        return ticket.user_id, None, "ticket", None
    # collab's own middleware (collab/middleware.py) leaves the session's key, unread, for
    # this thread to read; a stack that resolved the user itself (Channels' AuthMiddleware,
    # the tests' scopes) leaves it as "user".
    session_user = scope.get("user")
    session = _session_of(scope)
    if session_user is not None:
        return (
            (session_user.pk if session_user.is_authenticated else None),
            None,
            "session",
            session,
        )
    user_id, session_hash = _logged_in(session)
    return user_id, session_hash or None, "session", session


def _claimed_once(scope: dict[str, Any], document_id: str) -> tuple[Any, ...]:
    """``_claimed``, once per socket in a trip of socket checks: the trip's read-ahead asks it
    for every socket, then each check did again, reading the ticket, or the session and who it
    logged in, twice (docs/BENCHMARKS.md, change 46). A claim that failed is asked again, and
    fails again with its own reason. Outside a trip, asked each time."""
    claims = getattr(_trip, "claims", None)
    if claims is None:
        return _claimed(scope, document_id)
    key = (id(scope), document_id)
    claim = claims.get(key)
    if claim is None:
        claim = claims[key] = (scope, _claimed(scope, document_id))
    return claim[1]


def _ticket_of(scope: dict[str, Any]) -> str | None:
    return tickets.in_query(scope.get("query_string", b""))


def _session_of(scope: dict[str, Any]) -> Any:
    """The socket's session: the one a middleware put in the scope, or the one its cookie names
    (``session_key``, from collab/middleware.py), read here, off the event loop; None for none."""
    session = scope.get("session")
    if session is None and scope.get("session_key"):
        if settings.SESSION_ENGINE == _DB_SESSIONS:  # Django's default engine
            return _StoredSession(scope["session_key"])
        session = _session_engine().SessionStore(scope["session_key"])
    return session


_DB_SESSIONS = "django.contrib.sessions.backends.db"


def _session_engine() -> Any:
    return importlib.import_module(settings.SESSION_ENGINE)  # imported once, then looked up


def _guest(scope: dict[str, Any], session: Any, document_id: str) -> Access:
    """Someone not logged in whose session holds an "anyone" link to this document reads it as
    a guest (editor/links.py); anyone else is told to log in."""
    role, token = links.guest_role(session, document_id)
    if role is None or session is None or not session.session_key:
        raise Refused(CLOSE_UNAUTHENTICATED, "log in, or pass ?ticket=")
    if not origin_allowed(scope):
        raise Refused(CLOSE_FORBIDDEN, "origin not allowed")
    guest = links.Guest.of(session.session_key)
    person = Person(pk=guest.pk, username=guest.username, full_name=guest.full_name)
    return Access(user=person, document_id=document_id, role=role, via="link", link=token)


def _current_role(access: Access) -> str | None:
    if access.link is not None:
        return links.guest_role_by_token(access.document_id, access.link)
    return user_and_role(access.user.pk, access.document_id)[1]


def _read_ahead_checks(calls: list[tuple[Any, ...]]) -> None:
    """What a trip's socket checks will ask the database, read in one query each: the stored
    sessions of cookie sockets, then every claimed user with their role in the document.
    Asked for every trip, of one socket too (nothing is read ahead for one): the trip compiles
    the queries the event loop's checks read with (``_checks_on_loop``), which the loop does
    not do itself, so a process whose sockets come one at a time checks them on the loop from
    its second on."""
    if settings.COLLAB["CHECKS_ON_LOOP"]:
        _SESSION.compile_many()
        _USER_AND_ROLE.compile_many()
    keys = [
        scope["session_key"]
        for scope, _ in calls
        if scope.get("session") is None
        and scope.get("session_key")
        and settings.SESSION_ENGINE == _DB_SESSIONS
        and not _ticket_of(scope)
    ]
    if keys:
        now = timezone.now()
        _SESSION.read_ahead((key, now) for key in keys)
    asked = []
    for scope, document_id in calls:
        try:
            user_id = _claimed_once(scope, document_id)[0]
        except Exception:  # its own check will meet this again, and answer it
            continue
        if user_id is not None:
            asked.append((user_id, document_id))
    _USER_AND_ROLE.read_ahead(asked)


def _read_ahead_roles(calls: list[tuple[Any, ...]]) -> None:
    """The rechecks' users and roles, in one query."""
    _USER_AND_ROLE.read_ahead(
        (access.user.pk, access.document_id) for (access,) in calls if access.link is None
    )


# Socket checks run on a few threads of their own rather than on the process's one ORM thread
# (Channels' default, thread_sensitive): there every connect's query waited for the previous
# one's round trip, so a reconnect storm queued behind a single thread (docs/BENCHMARKS.md,
# change 15). The checks only read, each in its own autocommit query, so nothing needs them
# on one thread; DatabaseSyncToAsync still returns each thread's connection after every trip.
_checks = ThreadPoolExecutor(
    max_workers=settings.COLLAB["AUTH_THREADS"], thread_name_prefix="collab-auth"
)

# At most this many calls share one trip to a check thread; more go on other threads at once.
TRIP_SIZE = 32


class _Together:
    """Calls of ``work`` asked in the same turn of the event loop go to a check thread together,
    and run there one after another: one thread trip (and one database connection taken from
    the pool) for all of them instead of one each. A connect storm paid per socket for the
    hop: the hand-over of the GIL to the thread and back, the wake-up of the loop, the pooled
    connection's checkout and return (docs/BENCHMARKS.md, change 25).

    While a trip is out, the calls asked meanwhile wait for it to come back and then go
    together, unless it has been out ``COLLAB["AUTH_TRIP_WAIT"]`` (20 ms); then they go on
    another thread, so a slow query holds the others that long at most. In a connect storm the
    trips were otherwise a few sockets each, one per turn of the event loop, and each thread
    that woke for one fought the loop for the GIL: the checks' part of a connect's server CPU
    went from about a third to about a fifth (docs/BENCHMARKS.md, change 49).

    Each call gets its own answer or its own exception: one that fails (a bad ticket, a
    dropped database connection) leaves the others of its trip as they would have been, and a
    caller that stops waiting leaves the rest to be answered."""

    def __init__(
        self,
        work: Callable[..., Any],
        read_ahead: Callable[[list[tuple[Any, ...]]], None] | None = None,
        on_loop: Callable[[Any, list[tuple[Any, ...]]], Any] | None = None,
    ) -> None:
        self._work = work
        self._read_ahead = read_ahead
        # Takes the calls it can check on the event loop (``_checks_on_loop``).
        self._on_loop = on_loop
        self._trip = database_sync_to_async(self._run, thread_sensitive=False, executor=_checks)
        self._asked = per_event_loop(_Asked)

    async def ask(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        asked = self._asked()
        answer = loop.create_future()
        asked.calls.append((args, answer))
        if len(asked.calls) == 1:
            # Runs on the loop's next turn: whatever is asked during this one goes along.
            loop.call_soon(self._send, asked)
        return await answer

    def _send(self, asked: _Asked) -> None:
        if not asked.calls:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait = settings.COLLAB["AUTH_TRIP_WAIT"]
        if asked.trips and now < asked.sent_at + wait:
            # Sent when the trip comes back (``_back``), or when it has been out too long.
            if asked.timer is None:
                asked.timer = loop.call_at(asked.sent_at + wait, self._waited, asked)
            return
        if asked.timer is not None:
            asked.timer.cancel()
            asked.timer = None
        asked.sent_at = now
        calls, asked.calls = asked.calls, []
        for start in range(0, len(calls), TRIP_SIZE):
            trip = asyncio.ensure_future(self._deliver(calls[start : start + TRIP_SIZE]))
            asked.trips.add(trip)  # held until done: the loop keeps only weak references
            trip.add_done_callback(functools.partial(self._back, asked))

    def _waited(self, asked: _Asked) -> None:
        asked.timer = None
        self._send(asked)

    def _back(self, asked: _Asked, trip: asyncio.Future[None]) -> None:
        asked.trips.discard(trip)
        if not asked.trips:
            self._send(asked)

    async def _deliver(self, calls: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            if self._on_loop is not None:
                outcomes = await self._on_loop(self, [args for args, _ in calls])
            else:
                outcomes = await self._trip([args for args, _ in calls])
        except asyncio.CancelledError:  # the loop is shutting down
            for _, answer in calls:
                answer.cancel()
            raise
        except Exception as exc:  # the trip itself failed: every call of it is told
            for _, answer in calls:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), (ok, value) in zip(calls, outcomes, strict=True):
            if answer.done():  # its caller stopped waiting
                continue
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

    def _run(self, calls: list[tuple[Any, ...]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with _SESSION.reading_ahead(), _USER_AND_ROLE.reading_ahead(), _reading_once():
            if self._read_ahead is not None:
                try:
                    self._read_ahead(calls)
                except Exception as exc:
                    # Each call then asks on its own, and meets whatever this met on its own.
                    logger.warning("socket checks could not read ahead: %r", exc)
                    close_old_connections()
            for args in calls:
                try:
                    outcomes.append((True, self._work(*args)))
                except Exception as exc:
                    outcomes.append((False, exc))
                    if not isinstance(exc, Refused):
                        # Whatever broke may have left this thread's connection unusable:
                        # closed (given back to the pool), the next call starts on a fresh one.
                        close_old_connections()
        return outcomes


class _Asked:
    """One event loop's calls waiting to be sent, its trips under way, when it last sent one,
    and the timer that sends the waiting calls if the trips out take too long."""

    __slots__ = ("calls", "sent_at", "timer", "trips")

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.trips: set[asyncio.Future[None]] = set()
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


# -- checks on the event loop ----------------------------------------------------------------

# After the loop's connection failed, the checks take the threads for this long before it is
# tried again (a database restarting is not asked once per trip).
LOOP_DATABASE_REST = 5.0


class _LoopDatabase:
    """An event loop's own connection to PostgreSQL for the socket checks it makes there
    (``CHECKS_ON_LOOP``): asynchronous (psycopg's ``AsyncConnection``), so the loop goes on with
    other sockets while a query is out. Opened with Django's parameters for the default database
    on first use; checks of several trips at once take turns on it (psycopg's own lock). One
    per loop (``per_event_loop``): one per daphne process; a test's goes with its loop, and
    ``close_loop_databases`` closes what is left."""

    def __init__(self) -> None:
        # Django's connection object for the default database, never connected: its settings,
        # its parameters and its fields' preparation of values. ``connections[...]`` on the
        # loop would make a new one in every task (asgiref's context-local storage), 15 µs each.
        self.django = connections.create_connection(DEFAULT_DB_ALIAS)
        self.connection: Any = None
        self.lock = asyncio.Lock()
        self.resting_until = 0.0
        _loop_databases.add(self)

    @property
    def usable(self) -> bool:
        """Whether checks can be read here: the switch is on, the database is PostgreSQL, and
        Django sets nothing up per connection that this one would lack (a role)."""
        return (
            settings.COLLAB["CHECKS_ON_LOOP"]
            and self.django.vendor == "postgresql"
            and not self.django.settings_dict["OPTIONS"].get("assume_role")
        )

    async def rows(
        self, statements: list[tuple[str, list[Any]]]
    ) -> dict[int, tuple[Any, ...]] | None:
        """The statements' rows by number; None when the database could not be asked here (it
        is resting after a failure, or this failed: one warning), and the caller asks on a check
        thread, which meets and reports whatever is wrong as before."""
        loop = asyncio.get_running_loop()
        if loop.time() < self.resting_until:
            return None
        import psycopg

        try:
            async with self.lock:
                if self.connection is None or self.connection.closed:
                    self.connection = await _connect_on_loop(self.django)
                connection = self.connection
            rows_of: dict[int, tuple[Any, ...]] = {}
            # Prepared (``CHECKS_PREPARED``): PostgreSQL plans each size of the trip's query
            # once per connection, not on every trip; planning was most of its time
            # (docs/BENCHMARKS.md, change 67). A statement gone stale fails here like any
            # other error: a warning, the threads for a while, then a new connection.
            prepare = settings.COLLAB["CHECKS_PREPARED"]
            async with connection.cursor() as cursor:
                for sql, params in statements:
                    await cursor.execute(sql, _bigints(params), prepare=prepare)
                    for n, *row in await cursor.fetchall():
                        rows_of[n] = tuple(row)
            return rows_of
        except (psycopg.Error, OSError) as exc:
            logger.warning(
                "socket checks could not read on the event loop; the check threads take them"
                " for %.0f s: %r",
                LOOP_DATABASE_REST,
                exc,
            )
            self.close()
            self.resting_until = loop.time() + LOOP_DATABASE_REST
            return None
        except BaseException:
            self.close()  # cancelled mid-query: the connection's state is unknown
            raise

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.closed:
            connection.pgconn.finish()  # libpq's close, which needs no event loop


# Every loop's, held until closed: a test's loop may be gone before its connection is closed.
_loop_databases: set[_LoopDatabase] = set()
_loop_database = per_event_loop(_LoopDatabase)


def close_loop_databases() -> None:
    """Closes every event loop's check connection (tests, before their database is dropped)."""
    while _loop_databases:
        _loop_databases.pop().close()


async def _connect_on_loop(django: Any) -> Any:
    """The loop's connection, with Django's parameters. With ``CHECKS_PREPARED`` its values are
    bound by the server whatever Django's ``server_side_binding`` (the statements' text then
    repeats from trip to trip, and can be prepared: bound by the client, each trip's values are
    written into its text); without, they are bound as Django binds them."""
    import psycopg

    params = django.get_connection_params()
    synchronous = params.pop("cursor_factory", None)
    if settings.COLLAB["CHECKS_PREPARED"]:
        params["cursor_factory"] = psycopg.AsyncCursor
    elif synchronous is None or issubclass(synchronous, psycopg.ClientCursor):
        params["cursor_factory"] = psycopg.AsyncClientCursor
    else:
        params["cursor_factory"] = psycopg.AsyncCursor
    connection = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    if connection.prepare_threshold is None:
        # Django turns psycopg's preparing off (its default, for poolers), which would refuse
        # even a statement asked for by name; nothing but the checks' queries run here.
        connection.prepare_threshold = 5
    return connection


def _checked_on_loop(scope: dict[str, Any]) -> str | None:
    """How the event loop can check this socket: "ticket", "session" (the key of a stored
    session of Django's database engine, as collab's middleware leaves it, unread), or None,
    for a check thread (a session or user some other middleware put in the scope, another
    session engine, no credentials, a scope this cannot read: its own check meets that)."""
    try:
        if _ticket_of(scope):
            return "ticket"
        if (
            scope.get("session_key")
            and scope.get("session") is None
            and scope.get("user") is None
            and settings.SESSION_ENGINE == _DB_SESSIONS
        ):
            return "session"
    except Exception:
        pass
    return None


async def _checks_on_loop(
    together: _Together, calls: list[tuple[Any, ...]]
) -> list[tuple[bool, Any]]:
    """A trip of socket checks, made on the event loop where it can be: what the checks ask of
    the database is read ahead, through the loop's own connection (``_LoopDatabase``), in the
    queries a thread's trip reads ahead with (``_read_ahead_checks``): the cookie sockets'
    stored sessions in one, then the users and roles that the tickets and sessions claim in
    another; the checks then run here on the rows read, as they run on a thread. A ticket is
    read without the database. The rest goes on a check thread as before: guests and sockets
    that claim nobody (a guest's link is read from the database), what ``_checked_on_loop``
    leaves out, a query not compiled yet (compiling may ask the database: a thread's trip
    compiles it), a failure of the loop's connection. The hand-over to a thread and back
    (asgiref's, the pooled connection's checkout and return, the thread's wake-up and its
    fight for the GIL) cost more than the check itself (docs/BENCHMARKS.md, changes 66 and
    80)."""
    database = _loop_database()
    outcomes: dict[int, tuple[bool, Any]] = {}
    if database.usable:
        await _check_on_loop(database, together, calls, outcomes)
    rest = [args for args in calls if id(args) not in outcomes]
    if rest:
        for args, outcome in zip(rest, await together._trip(rest), strict=True):
            outcomes[id(args)] = outcome
    return [outcomes[id(args)] for args in calls]


async def _check_on_loop(
    database: _LoopDatabase,
    together: _Together,
    calls: list[tuple[Any, ...]],
    outcomes: dict[int, tuple[bool, Any]],
) -> None:
    """``_checks_on_loop``'s part on the loop: puts in ``outcomes`` the answers of the calls it
    could check here. Each block that holds rows read ahead is free of awaits, so other trips
    on the loop never see this one's."""
    kinds = {id(args): _checked_on_loop(args[0]) for args in calls}
    here = [args for args in calls if kinds[id(args)] is not None]
    cookies = [args for args in here if kinds[id(args)] == "session"]
    sessions: tuple[list[tuple[Any, ...]], dict[int, tuple[Any, ...]]] | None = None
    if cookies:
        now = timezone.now()
        asked = [(scope["session_key"], now) for scope, _ in cookies]
        built = _SESSION.statements(asked, least=0, compile=False, connection=database.django)
        rows_of = await database.rows(built[1]) if built is not None else None
        if built is None or rows_of is None:
            here = [args for args in here if kinds[id(args)] == "ticket"]
        else:
            sessions = (built[0], rows_of)
    claims: dict[tuple[int, str], tuple[Any, Any]] = {}
    with _SESSION.reading_ahead():
        if sessions is not None:
            _SESSION.take_ahead(*sessions)
        for args in here:
            scope, document_id = args
            try:
                claim = _claimed(scope, document_id)
            except Refused as exc:  # a ticket refused before the database is asked
                outcomes[id(args)] = (False, exc)
                continue
            except Exception:  # its own check on a thread meets this again, and answers it
                continue
            if claim[0] is not None:  # a guest's link, or nobody: a thread's
                claims[(id(scope), document_id)] = (scope, claim)
    here = [args for args in here if (id(args[0]), args[1]) in claims]
    if not here:
        return
    users = [(claim[0], document_id) for (_, document_id), (_, claim) in claims.items()]
    built = _USER_AND_ROLE.statements(users, least=0, compile=False, connection=database.django)
    if built is None:
        return
    rows_of = await database.rows(built[1])
    if rows_of is None:
        return
    with _USER_AND_ROLE.reading_ahead(), _reading_once():
        _trip.claims.update(claims)
        _USER_AND_ROLE.take_ahead(built[0], rows_of)
        for args in here:
            try:
                outcomes[id(args)] = (True, together._work(*args))
            except Refused as exc:
                outcomes[id(args)] = (False, exc)
            except Exception:  # not expected here: the thread's check meets it again
                logger.exception("a socket check failed on the event loop; retried")


_checks_together = _Together(_authorize, _read_ahead_checks, _checks_on_loop)
_roles_together = _Together(_current_role, _read_ahead_roles)


async def authorize(scope: dict[str, Any], document_id: str) -> Access:
    """Decides who this socket is and what it may do, from a ticket or the session cookie;
    raises ``Refused`` otherwise.

    A ticket is a bearer credential and needs no origin check; a cookie is sent by the browser
    to any page's socket, so cookie sockets must come from one of our own origins.
    """
    return await _checks_together.ask(scope, document_id)


async def current_role(access: Access) -> str | None:
    """The role this socket's person has in its document now (None: no access any more): a
    member's from the database, a guest's from their link, which may have been revoked."""
    return await _roles_together.ask(access)
