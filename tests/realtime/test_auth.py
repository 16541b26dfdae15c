"""Socket checks asked together (editor/realtime/auth.py, ``_Together``): one trip to a check
thread for all the sockets that ask in the same turn of the event loop, each with its own
answer, and what the trip's checks ask the database read in one query each, on a real
database. Checks on the event loop: tests/realtime/test_auth_on_loop.py."""

import asyncio
import contextlib
import logging
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import DatabaseError, connection, connections
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from editor.models import Membership
from editor.realtime import auth, tickets
from editor.realtime.auth import Refused, authorize, current_role
from tests.conftest import make_user
from tests.realtime.conftest import HOST, ORIGIN
from tests.realtime.test_session_sockets import logged_in

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def checks_on_threads(settings):
    """The trips to the check threads: ticket sockets and logged-in session cookies are checked
    on the event loop unless ``CHECKS_ON_LOOP`` is off (tests/realtime/test_auth_on_loop.py);
    guests and anything the loop cannot check still take these trips."""
    settings.COLLAB = {**settings.COLLAB, "CHECKS_ON_LOOP": False}


def ticket_scope(user_id, document_id) -> dict:
    token, _ = tickets.issue(user_id, document_id)
    return {"query_string": f"ticket={token}".encode(), "headers": []}


def cookie_scope(session_key: str) -> dict:
    """What collab's middleware leaves for a browser's socket: the session's key, unread."""
    return {"query_string": b"", "headers": [ORIGIN, HOST], "session_key": session_key}


@pytest.fixture
def statements(monkeypatch):
    """The SQL statements sent to the database, from every thread."""
    sent = []
    execute = CursorWrapper.execute

    def counted(self, sql, params=None):
        sent.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counted)
    return sent


def reading(table: str, statements: list[str]) -> int:
    return sum(1 for sql in statements if f'FROM "{table}"' in sql)


only_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="reads ahead on PostgreSQL only"
)


@pytest.fixture
def trips(monkeypatch):
    """Counts the trips made to the check threads."""
    made = []
    submit = auth._checks.submit

    def counted(*args, **kwargs):
        made.append(1)
        return submit(*args, **kwargs)

    monkeypatch.setattr(auth._checks, "submit", counted)
    return made


async def test_sockets_that_connect_together_are_checked_in_one_trip(
    document, owner, viewer, stranger, trips
):
    doc = str(document.pk)
    scopes = [ticket_scope(viewer.pk, doc) for _ in range(10)]
    scopes += [ticket_scope(owner.pk, doc), ticket_scope(stranger.pk, doc)]
    scopes.append({"query_string": b"ticket=forged", "headers": []})

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert len(trips) == 1
    assert [(a.user.pk, a.role) for a in outcomes[:10]] == [(viewer.pk, "viewer")] * 10
    assert (outcomes[10].user.pk, outcomes[10].role) == (owner.pk, "owner")
    assert isinstance(outcomes[11], Refused) and outcomes[11].code == 4403
    assert isinstance(outcomes[12], Refused) and outcomes[12].code == 4401


async def test_a_crowd_is_spread_over_several_trips(document, viewer, trips):
    doc = str(document.pk)
    crowd = auth.TRIP_SIZE * 2 + 1
    outcomes = await asyncio.gather(
        *(authorize(ticket_scope(viewer.pk, doc), doc) for _ in range(crowd))
    )
    assert len(trips) == 3
    assert {access.role for access in outcomes} == {"viewer"}


async def test_sockets_that_connect_apart_are_not_held_for_each_other(document, viewer, trips):
    doc = str(document.pk)
    first = await authorize(ticket_scope(viewer.pk, doc), doc)
    second = await authorize(ticket_scope(viewer.pk, doc), doc)
    assert (first.role, second.role, len(trips)) == ("viewer", "viewer", 2)


async def one_check_breaks_among_three(document, viewer) -> None:
    """Three sockets check in one trip; the middle one's scope breaks its check. Each gets its
    own answer: the other two are let in, the broken one gets its own error."""
    doc = str(document.pk)
    broken = ticket_scope(viewer.pk, doc) | {"query_string": None}  # no bytes: it raises
    outcomes = await asyncio.gather(
        authorize(ticket_scope(viewer.pk, doc), doc),
        authorize(broken, doc),
        authorize(ticket_scope(viewer.pk, doc), doc),
        return_exceptions=True,
    )
    assert outcomes[0].role == outcomes[2].role == "viewer"
    assert isinstance(outcomes[1], TypeError)  # its own: None has no length


async def test_a_check_that_breaks_leaves_the_others_of_its_trip(document, viewer):
    await one_check_breaks_among_three(document, viewer)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="ends its own database session")
async def test_a_check_after_a_lost_database_connection_in_its_trip_still_gets_in(document, viewer):
    doc = str(document.pk)

    def lose_the_connection():
        # What a restarted or failed-over database does to the thread's connection.
        from django.db import connection as thread_connection

        with thread_connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    together = auth._Together(lambda work: work())
    outcomes = await asyncio.gather(
        together.ask(lose_the_connection),
        together.ask(lambda: auth.user_and_role(viewer.pk, doc)[1]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], Exception)
    assert outcomes[1] == "viewer"


async def test_one_socket_gone_before_its_answer_leaves_the_others_answered(document, viewer):
    doc = str(document.pk)
    gone = asyncio.ensure_future(authorize(ticket_scope(viewer.pk, doc), doc))
    staying = asyncio.ensure_future(authorize(ticket_scope(viewer.pk, doc), doc))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await staying).role == "viewer"
    assert gone.cancelled()


async def test_rechecks_of_a_documents_sockets_share_a_trip(document, owner, viewer, trips):
    doc = str(document.pk)
    accesses = await asyncio.gather(
        authorize(ticket_scope(viewer.pk, doc), doc),
        authorize(ticket_scope(owner.pk, doc), doc),
    )
    trips.clear()
    roles = await asyncio.gather(*(current_role(access) for access in accesses * 5))
    assert roles == ["viewer", "owner"] * 5
    assert len(trips) == 1


async def tickets_of_every_kind(document, owner, editor_user, viewer, stranger) -> list[dict]:
    """Nine ticket sockets' scopes for ``document``: its owner, editor and viewer (the viewer
    twice), then five refused: a stranger, a deactivated user, no such user, a ticket for
    another document, a forged ticket (``TICKETS_REFUSED``)."""
    doc = str(document.pk)
    gone = await sync_to_async(make_user)("gone", is_active=False)
    other = await sync_to_async(type(document).objects.create_for)(owner, "Other")
    return [
        ticket_scope(owner.pk, doc),
        ticket_scope(editor_user.pk, doc),
        ticket_scope(viewer.pk, doc),
        ticket_scope(viewer.pk, doc),  # the same person twice
        ticket_scope(stranger.pk, doc),
        ticket_scope(gone.pk, doc),
        ticket_scope(-5, doc),  # no such user
        ticket_scope(owner.pk, str(other.pk)),  # a ticket for another document
        {"query_string": b"ticket=forged", "headers": []},
    ]


TICKETS_REFUSED = [
    (4403, "no access to this document"),
    (4401, "ticket user no longer exists"),
    (4401, "ticket user no longer exists"),
    (4403, "ticket is for another document"),
    (4401, "ticket signature invalid"),
]


@only_postgresql
async def test_a_trips_checks_look_up_their_users_in_one_query(
    document, owner, editor_user, viewer, stranger, statements, trips
):
    doc = str(document.pk)
    scopes = await tickets_of_every_kind(document, owner, editor_user, viewer, stranger)
    statements.clear()

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert len(trips) == 1
    assert [(a.user.pk, a.role) for a in outcomes[:4]] == [
        (owner.pk, "owner"),
        (editor_user.pk, "editor"),
        (viewer.pk, "viewer"),
        (viewer.pk, "viewer"),
    ]
    assert outcomes[0].user.username == "olive"
    assert [(o.code, o.reason) for o in outcomes[4:]] == TICKETS_REFUSED
    assert reading("auth_user", statements) == 1


@only_postgresql
async def test_a_trips_cookie_sockets_read_their_sessions_in_one_query(
    document, owner, editor_user, viewer, stranger, statements
):
    doc = str(document.pk)
    keys = {
        user.username: await sync_to_async(logged_in)(user)
        for user in (owner, editor_user, viewer, stranger)
    }
    expired = await sync_to_async(logged_in)(owner)
    await sync_to_async(Session.objects.filter(session_key=expired).update)(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    # A password changed since the login ends the session (Django's rule).
    editor_user.set_password("changed-since")
    await sync_to_async(editor_user.save)()
    scopes = [cookie_scope(keys[name]) for name in ("olive", "vera", "sam", "eddie")]
    scopes += [cookie_scope(expired), cookie_scope("no-such-session-key")]
    statements.clear()

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert [(o.user.pk, o.role, o.via) for o in outcomes[:2]] == [
        (owner.pk, "owner", "session"),
        (viewer.pk, "viewer", "session"),
    ]
    assert [(o.code, o.reason) for o in outcomes[2:]] == [
        (4403, "no access to this document"),
        (4401, "session no longer valid: log in again"),
        (4401, "log in, or pass ?ticket="),
        (4401, "log in, or pass ?ticket="),
    ]
    assert reading("django_session", statements) == 1
    assert reading("auth_user", statements) == 1


async def test_a_trip_decodes_each_session_once(document, owner, viewer, monkeypatch):
    doc = str(document.pk)
    keys = [await sync_to_async(logged_in)(user) for user in (owner, viewer)]
    auth._decoded.cache_clear()
    decoded = []
    decode = SessionStore.decode
    monkeypatch.setattr(
        SessionStore, "decode", lambda store, data: decoded.append(data) or decode(store, data)
    )

    # Each browser tab of a user brings the same session: two tabs each, in one trip.
    outcomes = await asyncio.gather(*(authorize(cookie_scope(key), doc) for key in keys * 2))

    assert [(o.user.pk, o.role) for o in outcomes] == [
        (owner.pk, "owner"),
        (viewer.pk, "viewer"),
    ] * 2
    assert len(decoded) == 2  # the trip's read-ahead and its checks decoded 8 times
    await sync_to_async(Session.objects.filter(session_key=keys[1]).delete)()

    with pytest.raises(Refused) as refused:
        await authorize(cookie_scope(keys[1]), doc)
    assert refused.value.code == 4401  # the next trip reads the session again: gone, so refused


async def test_a_session_is_decoded_once_across_trips_until_it_changes(
    document, owner, monkeypatch
):
    doc = str(document.pk)
    key = await sync_to_async(logged_in)(owner)
    auth._decoded.cache_clear()
    decoded = []
    decode = SessionStore.decode
    monkeypatch.setattr(
        SessionStore, "decode", lambda store, data: decoded.append(data) or decode(store, data)
    )

    # A browser reconnecting its socket: one trip after another, the same session.
    for _ in range(3):
        assert (await authorize(cookie_scope(key), doc)).user.pk == owner.pk
    assert len(decoded) == 1  # once per trip before: 3

    # Anything written to the session stores it as other data, decoded anew (here the login
    # taken out of it); a session deleted (logging out) is not found, whatever was decoded.
    def take_the_login_out():
        store = SessionStore(session_key=key)
        del store[SESSION_KEY]
        store.save()

    await sync_to_async(take_the_login_out)()
    decoded.clear()  # the test's own load of it
    with pytest.raises(Refused) as refused:
        await authorize(cookie_scope(key), doc)
    assert refused.value.code == 4401
    assert len(decoded) == 1
    await sync_to_async(Session.objects.filter(session_key=key).delete)()
    with pytest.raises(Refused) as refused:
        await authorize(cookie_scope(key), doc)
    assert refused.value.code == 4401


async def test_a_trip_reads_each_ticket_once(document, owner, viewer, monkeypatch):
    doc = str(document.pk)
    owners, viewers = ticket_scope(owner.pk, doc), ticket_scope(viewer.pk, doc)
    forged = {"query_string": b"ticket=forged", "headers": []}
    read = []
    read_ticket = tickets.read
    monkeypatch.setattr(tickets, "read", lambda token: read.append(token) or read_ticket(token))

    # A script reconnecting its sockets with the same ticket, and a forged one twice.
    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in (owners, viewers, forged) * 2),
        return_exceptions=True,
    )

    assert [(o.user.pk, o.role) for o in outcomes[:2]] == [
        (owner.pk, "owner"),
        (viewer.pk, "viewer"),
    ]
    assert [(o.user.pk, o.role) for o in outcomes[3:5]] == [
        (owner.pk, "owner"),
        (viewer.pk, "viewer"),
    ]
    for refused in (outcomes[2], outcomes[5]):  # each refused with the reason, as before
        assert isinstance(refused, Refused)
        assert (refused.code, refused.reason) == (4401, "ticket signature invalid")
    assert len(read) == 3  # the trip's read-ahead and its checks read them 12 times

    await authorize(owners, doc)
    assert len(read) == 4  # the next trip reads its ticket again (it may have expired since)


async def test_a_trip_reads_who_each_socket_claims_to_be_once(document, owner, viewer, monkeypatch):
    doc = str(document.pk)
    keys = [await sync_to_async(logged_in)(user) for user in (owner, viewer)]
    scopes = [cookie_scope(key) for key in keys] + [
        ticket_scope(owner.pk, doc),
        ticket_scope(viewer.pk, doc),
        {"query_string": b"ticket=forged", "headers": []},
    ]
    claimed = []
    claim = auth._claimed
    monkeypatch.setattr(
        auth, "_claimed", lambda scope, document_id: claimed.append(1) or claim(scope, document_id)
    )

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert [(o.user.pk, o.role, o.via) for o in outcomes[:4]] == [
        (owner.pk, "owner", "session"),
        (viewer.pk, "viewer", "session"),
        (owner.pk, "owner", "ticket"),
        (viewer.pk, "viewer", "ticket"),
    ]
    assert (outcomes[4].code, outcomes[4].reason) == (4401, "ticket signature invalid")
    # The read-ahead and then each check claimed every socket (10 claims); a claim that
    # failed is asked once more by its own check, which gives its reason.
    assert len(claimed) == 6


async def test_checks_are_answered_one_by_one_when_reading_ahead_fails(
    document, owner, viewer, stranger, monkeypatch, caplog
):
    doc = str(document.pk)

    def broken(many):
        raise DatabaseError("the batch query failed")

    monkeypatch.setattr(auth._USER_AND_ROLE, "read_ahead", broken)
    with caplog.at_level(logging.WARNING, logger="collab.ws"):
        outcomes = await asyncio.gather(
            authorize(ticket_scope(owner.pk, doc), doc),
            authorize(ticket_scope(viewer.pk, doc), doc),
            authorize(ticket_scope(stranger.pk, doc), doc),
            return_exceptions=True,
        )

    assert [o.role for o in outcomes[:2]] == ["owner", "viewer"]
    assert isinstance(outcomes[2], Refused) and outcomes[2].code == 4403
    assert "socket checks could not read ahead" in caplog.text


@only_postgresql
async def test_rechecks_look_up_their_roles_in_one_query(document, owner, viewer, statements):
    doc = str(document.pk)
    accesses = await asyncio.gather(
        authorize(ticket_scope(viewer.pk, doc), doc),
        authorize(ticket_scope(owner.pk, doc), doc),
    )
    await sync_to_async(document.memberships.filter(user=viewer).delete)()
    statements.clear()

    roles = await asyncio.gather(*(current_role(access) for access in accesses * 5))

    assert roles == [None, "owner"] * 5
    assert reading("auth_user", statements) == 1


async def test_nothing_read_ahead_outlives_its_trip(document, viewer):
    doc = str(document.pk)
    scopes = [ticket_scope(viewer.pk, doc) for _ in range(3)]
    assert {a.role for a in await asyncio.gather(*(authorize(s, doc) for s in scopes))} == {
        "viewer"
    }
    await sync_to_async(document.memberships.filter(user=viewer).delete)()

    refused = await asyncio.gather(*(authorize(s, doc) for s in scopes), return_exceptions=True)

    assert {(r.code, r.reason) for r in refused} == {(4403, "no access to this document")}


@pytest.fixture
def trip_wait(settings):
    """Sets how long checks asked while a trip is out wait for it (seconds)."""

    def set_to(seconds: float) -> None:
        settings.COLLAB = {**settings.COLLAB, "AUTH_TRIP_WAIT": seconds}

    return set_to


@contextlib.asynccontextmanager
async def a_trip_held_out(together):
    """A trip of ``together`` that stays out, on its check thread, until the block ends; its
    answer ("first") is there after the block."""
    out, release = threading.Event(), threading.Event()

    def stay_out():
        out.set()
        release.wait(10)
        return "first"

    first = asyncio.ensure_future(together.ask(stay_out))
    while not out.is_set():
        await asyncio.sleep(0.001)
    try:
        yield first
    finally:
        release.set()
        await first


async def test_checks_asked_while_a_trip_is_out_wait_for_it_and_go_together(trips, trip_wait):
    trip_wait(5.0)
    together = auth._Together(lambda work: work())
    async with a_trip_held_out(together) as first:
        later = []
        for turn in range(3):  # asked on three different turns of the event loop
            later.append(asyncio.ensure_future(together.ask(lambda turn=turn: f"later {turn}")))
            await asyncio.sleep(0.01)
        assert len(trips) == 1 and not any(answer.done() for answer in later)

    assert first.result() == "first"
    assert await asyncio.gather(*later) == ["later 0", "later 1", "later 2"]
    assert len(trips) == 2  # the three went together, once the first trip was back


async def test_a_trip_out_too_long_holds_the_next_checks_only_that_long(trips, trip_wait):
    trip_wait(0.05)
    together = auth._Together(lambda work: work())
    async with a_trip_held_out(together) as first:
        # A stuck query (the first trip) does not keep the next socket out: its check goes on
        # another thread once the first trip has been out 50 ms.
        assert await asyncio.wait_for(together.ask(lambda: "next"), 5) == "next"
        assert not first.done() and len(trips) == 2
    assert first.result() == "first"


async def test_with_no_trip_wait_each_turns_checks_go_at_once(trips, trip_wait):
    trip_wait(0)
    together = auth._Together(lambda work: work())
    async with a_trip_held_out(together):
        for turn in range(2):
            assert await asyncio.wait_for(together.ask(lambda turn=turn: turn), 5) == turn
        assert len(trips) == 3


@only_postgresql
async def test_a_check_threads_queries_are_planned_once_per_connection(
    document, owner, editor_user, viewer
):
    # A user id past what a smallint holds: the statements' types must not follow the values.
    far = await sync_to_async(make_user)("farid", pk=70_000)
    await sync_to_async(Membership.objects.create)(document=document, user=far, role="viewer")
    doc = str(document.pk)
    owner_cookie = await sync_to_async(logged_in)(owner)
    viewer_cookie = await sync_to_async(logged_in)(viewer)
    trips = [
        [ticket_scope(viewer.pk, doc), ticket_scope(far.pk, doc)],
        [ticket_scope(far.pk, doc), ticket_scope(owner.pk, doc)],
        [cookie_scope(owner_cookie), cookie_scope(viewer_cookie)],
        [ticket_scope(editor_user.pk, doc)],
        [ticket_scope(far.pk, doc)],
    ]

    def on_one_thread() -> tuple[list[list[str]], list[str]]:
        answered = [
            [access.role for _, access in auth._checks_together._run([(s, doc) for s in trip])]
            for trip in trips
        ]
        with connection.cursor() as cursor:  # the same connection: only it sees its statements
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return answered, [statement for (statement,) in cursor.fetchall()]

    answered, prepared = await sync_to_async(on_one_thread)()

    assert answered == [
        ["viewer", "viewer"],
        ["viewer", "owner"],
        ["owner", "viewer"],
        ["editor"],
        ["viewer"],
    ]
    # Planned once each: the read-ahead of two sessions, of two users, and the single check.
    sessions = [statement for statement in prepared if "django_session" in statement]
    users = sorted("LATERAL" in statement for statement in prepared if "auth_user" in statement)
    assert len(prepared) == 3 and len(sessions) == 1 and users == [False, True]


@only_postgresql
async def test_a_statement_a_migration_made_stale_is_asked_again_on_a_new_connection(
    document, owner, viewer, caplog
):
    doc = str(document.pk)
    trip = [(ticket_scope(viewer.pk, doc), doc), (ticket_scope(owner.pk, doc), doc)]

    def migrate(column_type: str) -> None:
        # As a deploy's migration would, from another connection: a column the checks read.
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute(f"ALTER TABLE auth_user ALTER COLUMN first_name TYPE {column_type}")
        finally:
            other.close()

    def one_trip() -> list[str]:
        try:
            return [access.role for _, access in auth._checks_together._run(trip)]
        finally:
            connection.close()  # given back: the pool hands its connections round in turn

    def on_one_thread() -> list[list[str]]:
        # Only this test's connections: earlier tests' pooled ones hold the statements too.
        connection.close()
        if connection.settings_dict["OPTIONS"].get("pool"):
            connection.close_pool()
        answered = [one_trip()]
        migrate("varchar(151)")
        try:
            answered += [one_trip() for _ in range(12)]
        finally:
            migrate("varchar(150)")
        return answered

    with caplog.at_level(logging.WARNING, logger="collab.ws"):
        answered = await sync_to_async(on_one_thread)()

    assert answered == [["viewer", "owner"]] * 13
    # The first query after the migration failed on its stale statement and was asked again on a
    # new connection; the connection that kept the statement was dropped, not given back.
    warned = [r.getMessage() for r in caplog.records if r.name == "collab.ws"]
    assert len(warned) == 1 and "cached plan must not change result type" in warned[0]
