"""The stock npm y-websocket client (tests/interop) against one live `manage.py serve`.

Each test drives `tests/interop/client.mjs` (WebsocketProvider from y-websocket 1.5.4, Yjs and
ws, unchanged) through a scenario; see tests/live.py. The server runs once for the module, on the
test database and the session's Redis; every test makes its own document.
"""

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from editor.models import Document, Membership
from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

BIG = 16 * 1024 * 1024
BIG_CHUNK = 512 * 1024  # under WS_MAX_INCOMING_FRAME (1 MiB) with the update's overhead


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    live.ensure_node_modules()
    with live.LiveServers(1, tmp_path_factory.mktemp("interop-servers")) as servers:
        yield servers


@pytest.fixture(autouse=True)
def around_each_test(transactional_db, server):
    """After the test (and before its database is emptied): lets the server finish writing,
    and prints the server log written during the test (pytest shows it only on failure)."""
    start = server.logs[0].stat().st_size
    yield
    live.wait_quiet_database()
    with open(server.logs[0], errors="replace") as log:
        log.seek(start)
        print(f"--- server log during this test ({server.logs[0]}) ---\n{log.read()[-20000:]}")


def reader(server, document, ticket, **wait) -> dict:
    """A fresh client that syncs, optionally waits for some text, and prints it."""
    return live.scenario(
        live.connect(server.ws(), document.pk, ticket),
        {"do": "synced"},
        [{"do": "wait_text", **wait}] if wait else [],
        {"do": "print"},
    )


def editing(server, document, ticket, insert: str, expect: list[str]) -> dict:
    """Sync, append `insert`, wait until the text holds all of `expect`, confirm, print."""
    return live.scenario(
        live.connect(server.ws(), document.pk, ticket),
        {"do": "synced"},
        {"do": "insert", "text": insert},
        {"do": "wait_text", "contains": expect},
        live.confirm(server.ws(), document.pk, ticket),
        {"do": "print"},
    )


def assert_refused(client: live.NodeClient, code: int) -> None:
    close = client.last("close")
    assert close["code"] == code, client.describe()
    # The auth message came first and named the reason.
    denied = client.all("permission-denied")
    assert denied and denied[0]["reason"], client.describe()
    # Not a byte of the document, not even its state vector: only auth messages came.
    frames = client.last("text")["frames"]
    assert set(frames) == {"auth"}, frames
    assert client.text() == ""


def refused_scenario(server, document, ticket: str | None) -> dict:
    return live.scenario(
        live.connect(server.ws(), document.pk, ticket),
        {"do": "wait_close"},
        {"do": "sleep", "ms": 300},  # anything sent after the close would show up in print
        {"do": "print"},
    )


def test_two_clients_co_edit_and_converge(server, node, document, owner, editor_user):
    a_ticket = live.ticket_for(owner, document)
    b_ticket = live.ticket_for(editor_user, document)
    markers = ["[alpha by A]", "[beta by B]"]

    a = node.start(editing(server, document, a_ticket, markers[0], markers), "A")
    b = node.start(editing(server, document, b_ticket, markers[1], markers), "B")
    a.finish()
    b.finish()

    assert a.text() == b.text()
    assert all(marker in a.text() for marker in markers)
    assert live.wait_stored(document.pk, markers) == a.text()


def test_a_late_joiner_gets_the_whole_document(server, node, document, owner, viewer):
    ticket = live.ticket_for(owner, document)
    writer = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, ticket),
            {"do": "synced"},
            [{"do": "insert", "text": f"line {n}\n"} for n in range(20)],
            {"do": "insert", "text": "# Title\n", "index": 0},
            live.confirm(server.ws(), document.pk, ticket),
            {"do": "print"},
        ),
        "writer",
    )
    written = writer.text()
    assert written.startswith("# Title\nline 0\n") and written.endswith("line 19\n")

    late = node.run(reader(server, document, live.ticket_for(viewer, document)), "late joiner")

    assert late.text() == written


def test_the_endpoint_also_takes_a_trailing_slash(server, node, document, owner):
    ticket = live.ticket_for(owner, document)
    # The provider appends "/" + room to the server URL: the room "<uuid>/" gives the slash.
    client = node.run(
        live.scenario(
            {**live.connect(server.ws(), document.pk, ticket), "room": f"{document.pk}/"},
            {"do": "synced"},
            {"do": "insert", "text": "slash"},
            live.confirm(server.ws(), document.pk, ticket),
            {"do": "print"},
        )
    )
    assert client.text() == "slash"


def test_an_offline_edit_syncs_on_reconnect(server, node, document, owner, editor_user):
    mine = live.ticket_for(owner, document)
    theirs = live.ticket_for(editor_user, document)
    url = server.ws()
    client = node.run(
        live.scenario(
            live.connect(url, document.pk, mine),
            {"do": "synced"},
            {"do": "insert", "text": "online. "},
            live.confirm(url, document.pk, mine),
            {"do": "disconnect"},
            {"do": "insert", "text": "typed offline. "},
            # Meanwhile another peer (its own doc and socket) edits through the server.
            live.connect(url, document.pk, theirs, provider="other", doc="other"),
            {"do": "synced", "provider": "other"},
            {"do": "insert", "doc": "other", "text": "while you were away. "},
            live.confirm(url, document.pk, theirs, doc="other"),
            {"do": "reconnect"},
            {"do": "synced"},
            {"do": "wait_text", "contains": ["online.", "typed offline.", "while you were away."]},
            live.confirm(url, document.pk, mine),
            {
                "do": "wait_text",
                "doc": "other",
                "contains": ["online.", "typed offline.", "while you were away."],
            },
            {"do": "print"},
            {"do": "print", "doc": "other", "provider": "other"},
        ),
        "offline",
    )
    mine_text, other_text = (event["text"] for event in client.all("text"))
    assert mine_text == other_text

    fresh = node.run(reader(server, document, theirs), "fresh")
    assert fresh.text() == mine_text
    assert live.wait_stored(document.pk, ["typed offline."]) == mine_text


def test_a_ticket_for_another_document_is_refused_with_4403(server, node, document, owner):
    node.run(
        editing(server, document, live.ticket_for(owner, document), "secret plans", [])
    )  # the document has content that must not leak
    other = Document.objects.create_for(owner, "Other")

    client = node.run(refused_scenario(server, document, live.ticket_for(owner, other)))

    assert_refused(client, 4403)


@pytest.mark.parametrize("kind", ["expired", "forged"])
def test_an_expired_or_forged_ticket_is_refused_with_4401(server, node, document, owner, kind):
    make = live.expired_ticket if kind == "expired" else live.forged_ticket
    node.run(editing(server, document, live.ticket_for(owner, document), "secret plans", []))

    client = node.run(refused_scenario(server, document, make(owner, document)))

    assert_refused(client, 4401)


def test_no_ticket_and_no_session_is_refused_with_4401(server, node, document):
    client = node.run(refused_scenario(server, document, None))

    assert_refused(client, 4401)


def test_a_viewers_edit_does_not_reach_anyone(server, node, document, editor_user, viewer):
    url = server.ws()
    editor_ticket = live.ticket_for(editor_user, document)
    viewer_ticket = live.ticket_for(viewer, document)
    client = node.run(
        live.scenario(
            live.connect(url, document.pk, editor_ticket, provider="e", doc="e"),
            {"do": "synced", "provider": "e"},
            live.connect(url, document.pk, viewer_ticket, provider="v", doc="v"),
            {"do": "synced", "provider": "v"},
            {"do": "insert", "doc": "v", "text": "[VIEWER WAS HERE]"},
            # The server drops the update and tells the viewer why (docs/protocol.md).
            {"do": "wait_denied", "provider": "v"},
            {"do": "insert", "doc": "e", "text": "[editor]"},
            # The viewer receives the editor's edit: the server is relaying to it.
            {"do": "wait_text", "doc": "v", "contains": ["[editor]"]},
            live.confirm(url, document.pk, editor_ticket, doc="e"),
            {"do": "sleep", "ms": 500},
            {"do": "print", "doc": "v", "provider": "v"},
            {"do": "print", "doc": "e", "provider": "e"},
        ),
        "viewer and editor",
    )
    viewer_text, editor_text = (event["text"] for event in client.all("text"))

    # The viewer's own copy diverged: it keeps what it typed, and was told why it went nowhere.
    assert "[VIEWER WAS HERE]" in viewer_text and "[editor]" in viewer_text
    assert [event["provider"] for event in client.all("permission-denied")] == ["v"]
    # Nobody else ever saw it: not the editor, not a fresh client, not the database.
    assert editor_text == "[editor]"
    fresh = node.run(reader(server, document, editor_ticket), "fresh")
    assert fresh.text() == "[editor]"
    assert live.wait_stored(document.pk, ["[editor]"]) == "[editor]"


def test_a_ticket_from_the_http_api_works(server, node, document, editor_user):
    # The server runs with Django's default hashers; the suite's fast MD5 is not among them.
    editor_user.password = PBKDF2PasswordHasher().encode(PASSWORD, "interopsalt", iterations=1000)
    editor_user.save(update_fields=["password"])
    browser = live.Browser(server.http())
    browser.login(editor_user.username, PASSWORD)

    ticket = browser.ticket(document)

    client = node.run(editing(server, document, ticket, "via the API", ["via the API"]))
    assert client.text() == "via the API"
    assert live.wait_stored(document.pk, ["via the API"]) == "via the API"


def test_a_stranger_cannot_get_a_ticket_from_the_http_api(server, document, stranger):
    stranger.password = PBKDF2PasswordHasher().encode(PASSWORD, "interopsalt", iterations=1000)
    stranger.save(update_fields=["password"])
    browser = live.Browser(server.http())
    browser.login(stranger.username, PASSWORD)

    status, _ = browser.post_json(f"/api/documents/{document.pk}/ticket/")

    assert status == 404


def test_a_16_mb_document_syncs_to_a_new_client(server, node, document, owner, editor_user):
    ticket = live.ticket_for(owner, document)
    writer = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, ticket),
            {"do": "synced"},
            {"do": "bulk_insert", "total": BIG, "chunk": BIG_CHUNK},
            live.confirm(server.ws(), document.pk, ticket),
            timeout=90,
        ),
        "writer",
    )
    inserted = writer.last("inserted")
    assert inserted["length"] == BIG

    new = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, live.ticket_for(editor_user, document)),
            {"do": "synced"},
            {"do": "wait_text", "length": BIG},
            {"do": "print"},
            timeout=90,
        ),
        "new client",
    )

    text = new.last("text")
    assert (text["length"], text["sha256"]) == (BIG, inserted["sha256"])
    assert len(live.wait_stored(document.pk, length=BIG, timeout=60)) == BIG


def test_membership_is_read_at_connect(server, node, document, owner, editor_user):
    """A ticket outlives a membership only on paper: the role is read at every connect."""
    ticket = live.ticket_for(editor_user, document)
    Membership.objects.filter(document=document, user=editor_user).delete()

    client = node.run(refused_scenario(server, document, ticket))

    assert_refused(client, 4403)


@pytest.mark.parametrize("size", [2_000_000, 16_000_000], ids=["2MB", "16MB"])
def test_a_single_update_of_megabytes_syncs(server, node, document, owner, editor_user, size):
    # One paste (or an offline batch) is one update; it was refused over 1 MiB (4413) while
    # documents may hold 16 MiB.
    writer = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, live.ticket_for(owner, document)),
            {"do": "synced"},
            {"do": "bulk_insert", "total": size, "chunk": size},
            live.confirm(server.ws(), document.pk, live.ticket_for(owner, document)),
            timeout=90,
        ),
        "writer",
    )
    inserted = writer.last("inserted")
    assert not writer.all("close"), writer.describe()

    new = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, live.ticket_for(editor_user, document)),
            {"do": "synced"},
            {"do": "wait_text", "length": size},
            {"do": "print"},
            timeout=90,
        ),
        "new client",
    )
    text = new.last("text")
    assert (text["length"], text["sha256"]) == (size, inserted["sha256"])
    assert len(live.wait_stored(document.pk, length=size, timeout=60)) == size


def test_an_update_over_the_limit_is_refused_with_a_reason(server, node, document, owner):
    writer = node.run(
        live.scenario(
            live.connect(server.ws(), document.pk, live.ticket_for(owner, document)),
            {"do": "synced"},
            {"do": "bulk_insert", "total": 17_000_000, "chunk": 17_000_000},
            {"do": "wait_denied"},
            # The close follows the message, but the client's close event waits for the TCP
            # connection to end: destroyed at once, it never saw it (a CI run, 2026-12-04).
            {"do": "wait_close"},
            {"do": "destroy"},
            timeout=90,
        ),
        "writer",
    )
    denied = writer.all("permission-denied")
    assert denied[0]["reason"] == "this change is too large to save (16.2 MB; the limit is 16.1 MB)"
    assert 4413 in [close["code"] for close in writer.all("close")], writer.describe()
    assert live.stored_text(document.pk) == ""
