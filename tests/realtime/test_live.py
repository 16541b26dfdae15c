"""Two live daphne processes sharing one Redis and one database, with stock Node clients.

What a deployment behind a load balancer depends on: peers on different processes converge,
a process that dies mid-edit loses nothing the clients hold, and a graceful stop writes what
it had queued. Servers are real `manage.py serve` processes (tests/live.py).
"""

import socket
import time

import pytest

from tests import live

pytestmark = pytest.mark.django_db(transaction=True)


def test_clients_on_different_processes_converge(
    start_servers, node, document, owner, editor_user, viewer
):
    servers = start_servers(2)
    a_ticket = live.ticket_for(owner, document)
    b_ticket = live.ticket_for(editor_user, document)
    markers = ["<A on process 0>", "<B on process 1>"]

    def editing(index: int, ticket: str, insert: str) -> dict:
        return live.scenario(
            live.connect(servers.ws(index), document.pk, ticket),
            {"do": "synced"},
            {"do": "insert", "text": insert},
            {"do": "wait_text", "contains": markers},
            live.confirm(servers.ws(index), document.pk, ticket),
            {"do": "print"},
        )

    a = node.start(editing(0, a_ticket, markers[0]), "A on process 0")
    b = node.start(editing(1, b_ticket, markers[1]), "B on process 1")
    a.finish()
    b.finish()

    assert a.text() == b.text()
    assert all(marker in a.text() for marker in markers)
    # A newcomer on either process sees the same document.
    for index in (0, 1):
        reader = node.run(
            live.scenario(
                live.connect(servers.ws(index), document.pk, live.ticket_for(viewer, document)),
                {"do": "synced"},
                {"do": "print"},
            ),
            f"reader on process {index}",
        )
        assert reader.text() == a.text()
    assert live.wait_stored(document.pk, markers) == a.text()


def test_a_document_one_process_had_alone_reaches_a_second_process_at_once(
    start_servers, node, document, owner, editor_user
):
    """A room no other process has open publishes nothing to Redis (LAYER_ONLY_WHEN_SHARED).
    Once a second process opens the document the two rooms find each other (the newcomer's
    hello and its answer, or the first message either publishes: the stock client's awareness),
    and edits cross both ways through the channel layer: with catch-ups once a minute, nothing
    else could bring them within the scenario's 30 s."""
    servers = start_servers(2, CATCHUP_INTERVAL=60)
    alone = node.start(
        live.scenario(
            live.connect(servers.ws(0), document.pk, live.ticket_for(owner, document)),
            {"do": "synced"},
            {"do": "insert", "text": "<A alone>"},
            {"do": "wait_line"},
            {"do": "insert", "text": "<A after B>"},
            {"do": "wait_text", "contains": ["<B>"]},
            {"do": "print"},
        ),
        "A on process 0",
    )
    alone.wait_for("waiting")
    time.sleep(3)  # past the room's hello window: it publishes nothing now
    second = node.start(
        live.scenario(
            live.connect(servers.ws(1), document.pk, live.ticket_for(editor_user, document)),
            {"do": "synced"},
            {"do": "wait_text", "contains": ["<A alone>"]},
            {"do": "wait_text", "contains": ["<A after B>"]},  # A's room knows B's
            {"do": "insert", "text": "<B>"},  # and B's knows A's
            {"do": "print"},
        ),
        "B on process 1",
    )
    second.wait_for("synced")
    time.sleep(3)  # past the second room's catch-ups after its load and its hello window
    alone.send()
    alone.finish()
    second.finish()
    assert alone.text() == second.text()


def test_a_paste_of_megabytes_reaches_a_reader_on_another_process(
    start_servers, node, document, owner, viewer
):
    """From 1 MB an update goes to the other processes through the log, with a notice once it
    is committed, not through the channel layer (editor/realtime/room.py, THROUGH_THE_LOG)."""
    servers = start_servers(2)
    size = 2_000_000
    reader = node.start(
        live.scenario(
            live.connect(servers.ws(1), document.pk, live.ticket_for(viewer, document)),
            {"do": "synced"},
            {"do": "wait_line"},
            {"do": "wait_text", "length": size},
            {"do": "print"},
            timeout=60,
        ),
        "reader on process 1",
    )
    reader.wait_for("synced")
    reader.send()  # the reader's room on process 1 is loaded and in the group
    writer = node.run(
        live.scenario(
            live.connect(servers.ws(0), document.pk, live.ticket_for(owner, document)),
            {"do": "synced"},
            {"do": "bulk_insert", "total": size, "chunk": size},
            live.confirm(servers.ws(0), document.pk, live.ticket_for(owner, document)),
            timeout=60,
        ),
        "writer on process 0",
    )
    reader.finish()

    text = reader.last("text")
    assert (text["length"], text["sha256"]) == (size, writer.last("inserted")["sha256"])


def test_a_process_killed_mid_edit_loses_nothing_the_client_holds(
    start_servers, node, document, owner, viewer
):
    servers = start_servers(2)
    ticket = live.ticket_for(owner, document)
    writer = node.start(
        live.scenario(
            live.connect(servers.ws(0), document.pk, ticket),
            {"do": "synced"},
            # Types a token every 25 ms; goes on through the kill and 10 tokens past it.
            {
                "do": "type_until_close",
                "prefix": "a",
                "interval_ms": 25,
                "announce_after": 20,
                "after_close": 10,
            },
            # The stock provider would retry the dead address forever: a load balancer would
            # send the retry elsewhere, so the same Y.Doc reconnects to process 1.
            {"do": "destroy"},
            live.connect(servers.ws(1), document.pk, ticket, provider="p1"),
            {"do": "synced", "provider": "p1"},
            live.confirm(servers.ws(1), document.pk, ticket),
            {"do": "print", "provider": "p1"},
            timeout=30,
        ),
        "writer",
    )
    writer.wait_for("typing", timeout=60)
    servers.kill(0)
    writer.finish()

    tokens = writer.last("typed")["tokens"]
    text = writer.text()
    assert text == "".join(f"{token} " for token in tokens)
    # Everything the client typed, before, during and after the kill, is on process 1 ...
    reader = node.run(
        live.scenario(
            live.connect(servers.ws(1), document.pk, live.ticket_for(viewer, document)),
            {"do": "synced"},
            {"do": "print"},
        ),
        "reader on process 1",
    )
    assert reader.text() == text
    # ... and in the database.
    assert live.wait_stored(document.pk, tokens) == text


def test_a_stop_cancels_every_socket_while_a_request_is_still_arriving(
    start_servers, node, document, owner
):
    # daphne's own shutdown trigger gave up on the first connection without an application (a
    # request whose head is still arriving, or one just upgraded to a WebSocket): no socket
    # was closed, the writer kept typing, and the shutdown flush waited 8 s for a pause that
    # never came, then gave up on what it held.
    servers = start_servers(1)
    writer = node.start(
        live.scenario(
            live.connect(servers.ws(0), document.pk, live.ticket_for(owner, document)),
            {"do": "synced"},
            {"do": "type_until_close", "prefix": "w", "interval_ms": 25, "announce_after": 20},
            timeout=30,
        ),
        "writer",
    )
    writer.wait_for("typing", timeout=60)
    arriving = socket.create_connection(("127.0.0.1", servers.ports[0]))
    try:
        arriving.sendall(b"GET /healthz HTTP/1.1\r\n")  # the rest of the head never comes
        time.sleep(0.5)  # for daphne to read the request line
        status = servers.terminate(0)
    finally:
        arriving.close()
    writer.finish()

    assert status == 0, servers.log_tail(0)
    log = servers.log(0)
    assert "Killed 1 pending application instances" in log, servers.log_tail(0)
    assert "not written" not in log, servers.log_tail(0)
    tokens = writer.last("typed")["tokens"]
    stored = live.stored_text(document.pk)
    assert len(stored.split()) >= 20
    assert stored == "".join(f"{token} " for token in tokens[: len(stored.split())])


def test_a_graceful_stop_flushes_queued_updates(start_servers, node, document, owner):
    # Updates wait up to 5 s for their batch: SIGTERM comes well before that.
    servers = start_servers(1, STORE_FLUSH_INTERVAL=5)
    ticket = live.ticket_for(owner, document)
    client = node.start(
        live.scenario(
            live.connect(servers.ws(0), document.pk, ticket),
            {"do": "synced"},
            {"do": "insert", "text": "written just before the stop"},
            live.confirm(servers.ws(0), document.pk, ticket),
            {"do": "wait_line"},  # stays connected while the server stops
            {"do": "print"},
        ),
        "client",
    )
    client.wait_for("confirmed")
    client.wait_for("waiting")

    status = servers.terminate(0)
    client.send("go")
    client.finish()

    assert status == 0, servers.log_tail(0)
    assert live.stored_text(document.pk) == "written just before the stop"
