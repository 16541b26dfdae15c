"""Socket checks on the event loop (editor/realtime/auth.py, ``_checks_on_loop``,
``CHECKS_ON_LOOP``): ticket sockets, and cookie sockets of Django's database sessions, are
checked with queries through the loop's own asynchronous connection, with no trip to a check
thread; the answers are the threads' answers. Guests, sockets that claim nobody, a failing loop
connection and the switch turned off take the threads. On a real PostgreSQL database."""

import asyncio
import logging
import urllib.parse
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from collab.middleware import SessionUnlessTicket
from editor import links
from editor.models import Membership, ShareLink
from editor.realtime import auth
from editor.realtime.auth import Refused, authorize
from tests.conftest import make_user
from tests.realtime.conftest import HOST
from tests.realtime.test_auth import (
    TICKETS_REFUSED,
    cookie_scope,
    one_check_breaks_among_three,
    ticket_scope,
    tickets_of_every_kind,
)
from tests.realtime.test_session_sockets import logged_in

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="checks on the loop: PostgreSQL"),
]


@pytest.fixture
def trips(monkeypatch):
    """Counts the trips made to the check threads, and the queries sent on the loop."""
    made = {"threads": 0, "loop": 0}
    submit = auth._checks.submit
    rows = auth._LoopDatabase.rows

    def to_a_thread(*args, **kwargs):
        made["threads"] += 1
        return submit(*args, **kwargs)

    async def on_the_loop(self, statements):
        made["loop"] += len(statements)
        return await rows(self, statements)

    monkeypatch.setattr(auth._checks, "submit", to_a_thread)
    monkeypatch.setattr(auth._LoopDatabase, "rows", on_the_loop)
    return made


async def compiled(document, viewer) -> None:
    """A process's first check goes on a thread, which compiles the queries (compiling may ask
    the database, which the loop must not); this makes sure it has."""
    await sync_to_async(auth._USER_AND_ROLE.compile_many)()
    await sync_to_async(auth._SESSION.compile_many)()


async def test_ticket_sockets_are_checked_on_the_loop_with_the_threads_answers(
    document, owner, editor_user, viewer, stranger, trips
):
    await compiled(document, viewer)
    doc = str(document.pk)
    scopes = await tickets_of_every_kind(document, owner, editor_user, viewer, stranger)

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert trips == {"threads": 0, "loop": 1}  # one query for the trip, no thread
    assert [(a.user.username, a.role, a.via) for a in outcomes[:4]] == [
        ("olive", "owner", "ticket"),
        ("eddie", "editor", "ticket"),
        ("vera", "viewer", "ticket"),
        ("vera", "viewer", "ticket"),
    ]
    assert [(o.code, o.reason) for o in outcomes[4:]] == TICKETS_REFUSED
    assert all(isinstance(o, Refused) for o in outcomes[4:])


async def test_a_change_of_access_is_seen_by_the_next_check(document, viewer, trips):
    await compiled(document, viewer)
    doc = str(document.pk)
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"

    await sync_to_async(Membership.objects.filter(document=document, user=viewer).delete)()
    with pytest.raises(Refused) as refused:
        await authorize(ticket_scope(viewer.pk, doc), doc)
    assert refused.value.code == 4403
    assert trips["threads"] == 0 and trips["loop"] == 2


async def test_cookie_sockets_are_checked_on_the_loop_with_the_threads_answers(
    document, owner, editor_user, viewer, stranger, trips
):
    await compiled(document, viewer)
    doc = str(document.pk)
    keys = {
        user.username: await sync_to_async(logged_in)(user)
        for user in (owner, editor_user, viewer, stranger)
    }
    # A password changed since the login ends the session (Django's rule).
    editor_user.set_password("changed-since")
    await sync_to_async(editor_user.save)()
    scopes = [cookie_scope(keys[name]) for name in ("olive", "vera", "vera", "sam", "eddie")]
    scopes.append({**cookie_scope(keys["olive"]), "headers": [HOST]})  # no origin

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert trips == {"threads": 0, "loop": 2}  # the sessions, then the users: no thread
    assert [(o.user.username, o.role, o.via, o.session) for o in outcomes[:3]] == [
        ("olive", "owner", "session", keys["olive"]),
        ("vera", "viewer", "session", keys["vera"]),
        ("vera", "viewer", "session", keys["vera"]),
    ]
    assert [(o.code, o.reason) for o in outcomes[3:]] == [
        (4403, "no access to this document"),
        (4401, "session no longer valid: log in again"),
        (4403, "origin not allowed"),
    ]


async def test_tickets_and_cookies_of_one_trip_are_checked_together_on_the_loop(
    document, owner, viewer, trips
):
    await compiled(document, viewer)
    doc = str(document.pk)
    cookie = await sync_to_async(logged_in)(owner)

    outcomes = await asyncio.gather(
        authorize(ticket_scope(viewer.pk, doc), doc),
        authorize(cookie_scope(cookie), doc),
        authorize(ticket_scope(viewer.pk, doc), doc),
    )

    assert [(a.user.username, a.role, a.via) for a in outcomes] == [
        ("vera", "viewer", "ticket"),
        ("olive", "owner", "session"),
        ("vera", "viewer", "ticket"),
    ]
    assert trips == {"threads": 0, "loop": 2}  # one query of users for tickets and session


async def test_cookies_that_claim_nobody_take_a_thread_and_get_its_answer(
    document, owner, viewer, trips
):
    await compiled(document, viewer)
    doc = str(document.pk)
    expired = await sync_to_async(logged_in)(owner)
    await sync_to_async(Session.objects.filter(session_key=expired).update)(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    link = await sync_to_async(ShareLink.objects.create)(
        document=document, role="viewer", anyone=True, created_by=owner
    )
    guest = SessionStore()
    guest[links.SESSION_KEY] = {doc: link.token}
    await sync_to_async(guest.save)()
    scopes = [cookie_scope(key) for key in (expired, "no-such-session-key", guest.session_key)]

    outcomes = await asyncio.gather(
        *(authorize(scope, doc) for scope in scopes), return_exceptions=True
    )

    assert [(o.code, o.reason) for o in outcomes[:2]] == [(4401, "log in, or pass ?ticket=")] * 2
    assert (outcomes[2].via, outcomes[2].role) == ("link", "viewer")
    # Their sessions were read on the loop; a guest's link is read on a thread.
    assert trips == {"threads": 1, "loop": 1}


async def test_a_session_ended_between_two_checks_is_seen_by_the_second(
    document, owner, viewer, trips
):
    await compiled(document, viewer)
    doc = str(document.pk)
    key = await sync_to_async(logged_in)(owner)
    assert (await authorize(cookie_scope(key), doc)).role == "owner"

    await sync_to_async(Session.objects.filter(session_key=key).delete)()  # a logout
    with pytest.raises(Refused) as refused:
        await authorize(cookie_scope(key), doc)
    assert (refused.value.code, refused.value.reason) == (4401, "log in, or pass ?ticket=")


async def test_sockets_that_come_one_at_a_time_are_checked_on_the_loop_from_the_second(
    document, owner, viewer, trips, monkeypatch
):
    """A process whose first checks came alone never compiled the loop's queries: a thread's
    trip of one socket compiles them now."""
    monkeypatch.setattr(auth._USER_AND_ROLE, "_compiled_many", {})
    monkeypatch.setattr(auth._SESSION, "_compiled_many", {})
    doc = str(document.pk)
    cookie = await sync_to_async(logged_in)(owner)

    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips == {"threads": 1, "loop": 0}  # the first: on a thread, which compiles
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert (await authorize(cookie_scope(cookie), doc)).role == "owner"
    assert trips == {"threads": 1, "loop": 3}


async def test_a_lost_loop_connection_sends_the_checks_to_the_threads_then_comes_back(
    document, viewer, trips, monkeypatch, caplog
):
    await compiled(document, viewer)
    doc = str(document.pk)
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    database = auth._loop_database()
    pid = database.connection.info.backend_pid

    def terminate() -> None:
        # What a restarted or failed-over database does to the loop's connection.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    await sync_to_async(terminate)()
    with caplog.at_level(logging.WARNING, logger="collab.ws"):
        assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips["threads"] == 1  # answered all the same, on a thread
    assert "could not read on the event loop" in caplog.text

    # While the loop's connection rests, the threads take the checks...
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips["threads"] == 2
    # ...and after the rest a new connection is opened on the loop.
    database.resting_until = 0.0
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips["threads"] == 2
    assert database.connection.info.backend_pid != pid


async def test_with_the_switch_off_every_check_takes_a_thread(document, viewer, trips, settings):
    settings.COLLAB = {**settings.COLLAB, "CHECKS_ON_LOOP": False}
    await compiled(document, viewer)
    doc = str(document.pk)
    assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips == {"threads": 1, "loop": 0}


async def test_a_check_that_breaks_leaves_the_others_of_its_trip_on_the_loop(
    document, viewer, trips
):
    await compiled(document, viewer)
    await one_check_breaks_among_three(document, viewer)
    assert trips == {"threads": 1, "loop": 1}  # the broken one's answer came from its thread


async def statements_prepared_on_the_loop() -> list[str]:
    """What PostgreSQL holds prepared for the loop's connection (only that session sees them)."""
    async with auth._loop_database().connection.cursor() as cursor:
        await cursor.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
        return [statement for (statement,) in await cursor.fetchall()]


async def test_the_loops_query_is_planned_once_whatever_the_values(document, owner, viewer, trips):
    await compiled(document, viewer)
    doc = str(document.pk)
    # A user id past what a smallint holds: the statement's types must not follow the values.
    far = await sync_to_async(make_user)("farid", pk=70_000)
    await sync_to_async(Membership.objects.create)(document=document, user=far, role="viewer")

    answered = [
        (await authorize(ticket_scope(user.pk, doc), doc)).user.username
        for user in (viewer, far, owner, far, viewer)
    ]

    assert answered == ["vera", "farid", "olive", "farid", "vera"]
    assert trips == {"threads": 0, "loop": 5}
    prepared = await statements_prepared_on_the_loop()
    assert len(prepared) == 1 and "LATERAL" in prepared[0]  # one trip's size, one plan


async def test_with_preparing_off_the_loop_prepares_nothing(document, viewer, trips, settings):
    settings.COLLAB = {**settings.COLLAB, "CHECKS_PREPARED": False}
    await compiled(document, viewer)
    doc = str(document.pk)
    for _ in range(3):
        assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert trips == {"threads": 0, "loop": 3}
    assert await statements_prepared_on_the_loop() == []


async def test_a_sockets_query_string_is_parsed_once_for_its_ticket(
    document, owner, editor_user, viewer, monkeypatch, trips
):
    """The middleware asks whether a socket brings a ticket, and its check on the loop asks
    twice more (which sockets the loop checks; the ticket itself): one parse of the query string
    serves all three."""
    await compiled(document, viewer)
    doc = str(document.pk)
    parsed = []
    parse_qsl = urllib.parse.parse_qsl

    def counted(query, *args, **kwargs):
        parsed.append(query)
        return parse_qsl(query, *args, **kwargs)

    monkeypatch.setattr(urllib.parse, "parse_qsl", counted)
    scopes = [ticket_scope(user.pk, doc) for user in (owner, editor_user, viewer)]
    checked = {}

    async def check(scope, receive, send):
        checked[scope["query_string"]] = await authorize(scope, doc)

    await asyncio.gather(*(SessionUnlessTicket(check)(scope, None, None) for scope in scopes))

    assert trips == {"threads": 0, "loop": 1}
    assert [checked[scope["query_string"]].role for scope in scopes] == [
        "owner",
        "editor",
        "viewer",
    ]
    assert sorted(parsed) == sorted(scope["query_string"].decode() for scope in scopes)


async def test_a_compile_that_failed_is_tried_again(document, viewer, trips, monkeypatch):
    """A compile that fails (it may ask the database, which may be away) is not remembered as
    "cannot be built": the next trip compiles, and the loop checks from then on."""
    monkeypatch.setattr(auth._USER_AND_ROLE, "_compiled_many", {})
    monkeypatch.setattr(auth._USER_AND_ROLE, "_compiled", {})
    compile_once = auth._USER_AND_ROLE._compile
    failures = []

    def failing_once(alias):
        if not failures:
            failures.append(alias)
            raise RuntimeError("the database went away while compiling")
        return compile_once(alias)

    monkeypatch.setattr(auth._USER_AND_ROLE, "_compile", failing_once)
    doc = str(document.pk)

    # The first trip's read-ahead meets the failure (a warning), and is answered all the same;
    # the second trip, still on a thread, compiles; the third is checked on the loop.
    for _ in range(3):
        assert (await authorize(ticket_scope(viewer.pk, doc), doc)).role == "viewer"
    assert failures == ["default"]
    assert trips == {"threads": 2, "loop": 1}
