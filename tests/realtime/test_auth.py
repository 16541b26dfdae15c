"""Socket checks asked together (editor/realtime/auth.py, ``_Together``): one trip to a check
thread for all the sockets that ask in the same turn of the event loop, each with its own
answer, on a real database."""

import asyncio

import pytest
from django.db import connection

from editor.realtime import auth, tickets
from editor.realtime.auth import Refused, authorize, current_role

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def ticket_scope(user_id, document_id) -> dict:
    token, _ = tickets.issue(user_id, document_id)
    return {"query_string": f"ticket={token}".encode(), "headers": []}


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


async def test_a_check_that_breaks_leaves_the_others_of_its_trip(document, viewer):
    doc = str(document.pk)
    broken = ticket_scope(viewer.pk, doc) | {"query_string": None}  # no bytes: it raises
    outcomes = await asyncio.gather(
        authorize(ticket_scope(viewer.pk, doc), doc),
        authorize(broken, doc),
        authorize(ticket_scope(viewer.pk, doc), doc),
        return_exceptions=True,
    )
    assert outcomes[0].role == outcomes[2].role == "viewer"
    assert isinstance(outcomes[1], AttributeError)


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
