"""DocumentConsumer through channels' WebsocketCommunicator, on real Redis and a real database."""

import asyncio
import contextlib
import logging
import random
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from pycrdt import Doc, Text

from editor.models import Document, Membership
from editor.realtime import auth, protocol, store, tickets
from editor.realtime import consumer as consumer_module
from editor.realtime.auth import Refused, authorize
from editor.realtime.consumer import DocumentConsumer
from editor.realtime.room import get_rooms

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def stored_text(document_id) -> str:
    await store.get_writer().flush()
    updates, _ = await sync_to_async(store.load)(document_id)
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("codemirror", type=Text))


async def test_it_syncs_and_persists_an_editors_update(peer_for, document, owner):
    peer = peer_for(owner, document.id)
    assert await peer.connect()
    await peer.handshake()

    await peer.send(protocol.sync_update(peer.type("hello")))
    await peer.settle()

    assert await stored_text(document.id) == "hello"
    await peer.close()


async def test_it_relays_an_update_to_others_exactly_and_not_back(
    peer_for, document, owner, editor_user
):
    alice, bob = peer_for(owner, document.id), peer_for(editor_user, document.id)
    for peer in (alice, bob):
        assert await peer.connect()
        await peer.handshake()

    update = alice.type("hi bob")
    await alice.send(protocol.sync_update(update))

    received = await bob.recv()
    assert received == protocol.SyncUpdate(update)
    assert await alice.ws.receive_nothing(timeout=0.3)
    bob.doc.apply_update(received.update)
    assert str(bob.text) == "hi bob"
    await alice.close()
    await bob.close()


async def test_it_gives_a_late_joiner_the_whole_document(peer_for, document, owner, viewer):
    writer = peer_for(owner, document.id)
    assert await writer.connect()
    await writer.handshake()
    await writer.send(protocol.sync_update(writer.type("first ")))
    await writer.send(protocol.sync_update(writer.type("second")))
    await writer.settle()
    await store.get_writer().flush()

    late = peer_for(viewer, document.id)
    assert await late.connect()
    await late.handshake()

    assert str(late.text) == "first second"
    await writer.close()
    await late.close()


async def test_it_merges_edits_a_client_made_offline(peer_for, document, owner):
    peer = peer_for(owner, document.id)
    offline_update = peer.type("typed on a train")  # before connecting at all
    assert offline_update
    assert await peer.connect()
    await peer.handshake()  # our step 2 carries what the server lacks
    await peer.settle()

    assert await stored_text(document.id) == "typed on a train"
    await peer.close()


# -- who may connect ------------------------------------------------------------------------


async def refused(peer) -> tuple[protocol.Message, int]:
    assert await peer.connect()  # accepted so that the reason can be sent
    message = await peer.recv()
    return message, await peer.expect_close()


async def test_it_refuses_anonymous_sockets_with_4401(peer_for, document):
    message, code = await refused(peer_for(AnonymousUser(), document.id))
    assert message == protocol.Auth("log in, or pass ?ticket=")
    assert code == 4401


async def test_it_refuses_a_stranger_with_4403_before_any_document_byte(
    peer_for, document, stranger
):
    message, code = await refused(peer_for(stranger, document.id))
    assert isinstance(message, protocol.Auth)
    assert code == 4403


async def test_it_answers_a_missing_document_like_a_forbidden_one(peer_for, owner):
    import uuid

    message, code = await refused(peer_for(owner, uuid.uuid4()))
    assert message == protocol.Auth("no access to this document")
    assert code == 4403


async def test_it_refuses_a_cookie_socket_from_a_foreign_origin(peer_for, document, owner):
    peer = peer_for(owner, document.id, headers=[(b"origin", b"https://evil.example")])
    message, code = await refused(peer)
    assert message == protocol.Auth("origin not allowed")
    assert code == 4403


async def test_it_accepts_a_ticket_without_a_session_or_origin(peer_for, document, editor_user):
    token, _ = tickets.issue(editor_user.pk, document.pk)
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={token}", headers=())
    assert await peer.connect()
    await peer.handshake()
    await peer.send(protocol.sync_update(peer.type("via ticket")))
    await peer.settle()

    assert await stored_text(document.id) == "via ticket"
    await peer.close()


async def test_it_refuses_a_ticket_for_another_document(peer_for, document, owner):
    other = await sync_to_async(type(document).objects.create_for)(owner, "Other")
    token, _ = tickets.issue(owner.pk, other.pk)
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={token}", headers=())

    message, code = await refused(peer)
    assert message == protocol.Auth("ticket is for another document")
    assert code == 4403


async def test_it_refuses_a_forged_ticket(peer_for, document, owner):
    token, _ = tickets.issue(owner.pk, document.pk)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={forged}", headers=())

    message, code = await refused(peer)
    assert message == protocol.Auth("ticket signature invalid")
    assert code == 4401


async def test_it_refuses_an_expired_ticket(peer_for, document, owner, settings):
    token, _ = tickets.issue(owner.pk, document.pk)
    settings.COLLAB = {**settings.COLLAB, "TICKET_TTL": -1}
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={token}", headers=())

    message, code = await refused(peer)
    assert message == protocol.Auth("ticket expired")
    assert code == 4401


async def test_it_refuses_a_ticket_of_someone_who_lost_access(peer_for, document, viewer):
    token, _ = tickets.issue(viewer.pk, document.pk)
    await sync_to_async(document.memberships.filter(user=viewer).delete)()
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={token}", headers=())

    _, code = await refused(peer)
    assert code == 4403


async def test_it_refuses_a_ticket_of_a_deactivated_user(peer_for, document, editor_user):
    token, _ = tickets.issue(editor_user.pk, document.pk)
    editor_user.is_active = False
    await sync_to_async(editor_user.save)()
    peer = peer_for(AnonymousUser(), document.id, query=f"ticket={token}", headers=())

    message, code = await refused(peer)
    assert message == protocol.Auth("ticket user no longer exists")
    assert code == 4401


@pytest.mark.parametrize("who", ["owner", "editor_user", "viewer", "stranger"])
async def test_a_ticket_gets_the_role_the_access_policy_gives(
    document, owner, editor_user, viewer, stranger, who
):
    user = {"owner": owner, "editor_user": editor_user, "viewer": viewer, "stranger": stranger}[who]
    expected = await sync_to_async(document.role_of)(user)
    token, _ = tickets.issue(user.pk, document.pk)
    scope = {"query_string": f"ticket={token}".encode(), "headers": []}

    if expected is None:
        with pytest.raises(Refused) as refusal:
            await authorize(scope, str(document.pk))
        assert refusal.value.code == 4403
    else:
        access = await authorize(scope, str(document.pk))
        assert (access.role, access.user.pk, access.via) == (expected, user.pk, "ticket")


async def test_a_connect_reads_access_in_one_query(document, viewer, django_assert_num_queries):
    token, _ = tickets.issue(viewer.pk, document.pk)
    scope = {"query_string": f"ticket={token}".encode(), "headers": []}

    def check():
        # The check itself, as its thread runs it (queries are counted per thread).
        with django_assert_num_queries(1):
            return auth._authorize(scope, str(document.pk))

    access = await sync_to_async(check, thread_sensitive=False)()
    assert access.role == "viewer"


@contextlib.asynccontextmanager
async def orm_thread_held():
    """Holds the process's one ORM thread (Channels' ``database_sync_to_async``, as a long
    batch write would) until the block ends; gives the task that holds it."""
    held, release = threading.Event(), threading.Event()

    def busy():
        held.set()
        release.wait(30)

    blocker = asyncio.ensure_future(sync_to_async(busy, thread_sensitive=True)())
    await asyncio.to_thread(held.wait, 10)
    try:
        yield blocker
    finally:
        release.set()
        await blocker


async def test_a_connect_does_not_wait_for_the_orm_thread(document, viewer):
    # The process's one ORM thread is held: sockets still get in.
    async with orm_thread_held() as blocker:
        token, _ = tickets.issue(viewer.pk, document.pk)
        scope = {"query_string": f"ticket={token}".encode(), "headers": []}
        access = await asyncio.wait_for(authorize(scope, str(document.pk)), 10)
        assert access.role == "viewer"
        assert not blocker.done()


async def test_a_disconnect_does_not_wait_for_the_orm_thread(peer_for, document, owner, caplog):
    # With the one ORM thread held, a socket that closes still finishes and says goodbye.
    caplog.set_level(logging.INFO, logger="collab.ws")
    peer = await connected(peer_for, owner, document)
    async with orm_thread_held() as blocker:
        await peer.ws.send_input({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(asyncio.shield(peer.ws.future), 10)
        assert not blocker.done()
    assert any(r.getMessage().startswith("ws close user=olive") for r in caplog.records)


async def test_it_answers_an_unknown_path_with_4404(peer_for, owner):
    peer = peer_for(owner, None, path="/ws/elsewhere")
    _, code = await refused(peer)
    assert code == 4404


# -- viewers ----------------------------------------------------------------------------------


async def test_it_lets_a_viewer_watch_but_not_write(peer_for, document, owner, viewer):
    writer, watcher = peer_for(owner, document.id), peer_for(viewer, document.id)
    for peer in (writer, watcher):
        assert await peer.connect()
        await peer.handshake()

    await watcher.send(protocol.sync_update(watcher.type("vandalism")))
    assert await watcher.settle() == [protocol.Auth("view only")]
    assert await writer.ws.receive_nothing(timeout=0.3)

    update = writer.type("real text")
    await writer.send(protocol.sync_update(update))
    await writer.settle()
    assert await watcher.recv() == protocol.SyncUpdate(update)
    assert await stored_text(document.id) == "real text"
    await writer.close()
    await watcher.close()


# -- bad input --------------------------------------------------------------------------------


async def connected(peer_for, user, document):
    peer = peer_for(user, document.id)
    assert await peer.connect()
    await peer.handshake()
    return peer


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x09",
        b"\x00\x07\x00",
        b"\x00\x02\x05\x01",  # update announces 5 bytes, carries 1
        b"\x00\x02\x03\xff\xff\xff",  # complete frame, bytes are no Yjs update
        b"\x01\x05\x01\x01\x01\x03{x}",  # awareness with invalid JSON
    ],
)
async def test_it_closes_on_a_malformed_frame_and_keeps_the_document(
    peer_for, document, owner, frame
):
    good = await connected(peer_for, owner, document)
    await good.send(protocol.sync_update(good.type("kept")))
    await good.settle()
    bad = await connected(peer_for, owner, document)

    await bad.send(frame)

    assert await bad.expect_close() == 4400
    assert str(get_rooms().get(str(document.id)).doc.get("codemirror", type=Text)) == "kept"
    assert await stored_text(document.id) == "kept"
    await good.close()


async def test_it_survives_random_frames(peer_for, document, owner):
    rng = random.Random(1234)
    for _ in range(20):
        peer = await connected(peer_for, owner, document)
        await peer.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
        output = await peer.ws.receive_output(timeout=5)
        # Either closed as malformed, or (rarely) the bytes were a harmless valid message.
        assert output["type"] in ("websocket.close", "websocket.send")
        if output["type"] == "websocket.close":
            assert output["code"] == 4400
        await peer.close()
    survivor = await connected(peer_for, owner, document)
    await survivor.send(protocol.sync_update(survivor.type("still fine")))
    await survivor.settle()
    assert "still fine" in str(get_rooms().get(str(document.id)).doc.get("codemirror", type=Text))


async def test_it_closes_on_a_text_frame(peer_for, document, owner):
    peer = await connected(peer_for, owner, document)
    await peer.ws.send_to(text_data="hello")
    assert await peer.expect_close() == 4400


async def test_it_refuses_a_change_over_the_limit_once_with_a_reason(
    peer_for, document, owner, settings
):
    settings.COLLAB = {**settings.COLLAB, "MAX_INCOMING_FRAME": 2 * 1024 * 1024}
    peer = await connected(peer_for, owner, document)
    await peer.send(protocol.sync_update(peer.type("x" * (3 * 1024 * 1024))))

    assert await peer.recv() == protocol.Auth(
        "this change is too large to save (3.0 MB; the limit is 2.0 MB)"
    )
    assert await peer.expect_close() == 4413
    assert await stored_text(document.id) == ""


async def test_what_came_before_a_refused_frame_is_kept(peer_for, document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_INCOMING_FRAME": 64 * 1024}
    peer = await connected(peer_for, owner, document)
    await peer.send(protocol.sync_update(peer.type("typed first")))
    await peer.send(protocol.sync_update(peer.type("x" * 100_000)))

    assert isinstance(await until(peer, protocol.Auth), protocol.Auth)
    assert await peer.expect_close() == 4413
    assert await stored_text(document.id) == "typed first"


async def test_it_takes_a_paste_of_several_megabytes(peer_for, document, owner, editor_user):
    writer = await connected(peer_for, owner, document)
    reader = await connected(peer_for, editor_user, document)
    paste = "lorem ipsum " * (3 * 1024 * 1024 // 12)  # 3 MiB, once the limit was 1 MiB
    update = writer.type(paste)
    await writer.send(protocol.sync_update(update))

    assert await until(reader, protocol.SyncUpdate) == protocol.SyncUpdate(update)
    assert await stored_text(document.id) == paste


# -- heartbeat --------------------------------------------------------------------------------


async def test_it_echoes_awareness_renewals_to_a_lone_client(peer_for, document, owner):
    # The stock client reconnects after 30 s without a message; its own renewal, echoed every
    # 15 s, is what keeps a lone client connected.
    peer = await connected(peer_for, owner, document)
    entry = protocol.AwarenessEntry(client_id=11, clock=1, state={"cursor": None})
    await peer.send(protocol.awareness(protocol.encode_awareness([entry])))
    echo = await peer.recv()
    assert isinstance(echo, protocol.Awareness)
    assert [e.client_id for e in echo.entries] == [11]

    renewal = protocol.AwarenessEntry(client_id=11, clock=2, state={"cursor": None})
    await peer.send(protocol.awareness(protocol.encode_awareness([renewal])))
    assert (await peer.recv()).entries[0].clock == 2
    await peer.close()


# -- logs, rooms -----------------------------------------------------------------------------


async def test_it_logs_one_line_at_connect_and_one_at_disconnect(peer_for, document, owner, caplog):
    caplog.set_level(logging.INFO, logger="collab.ws")
    peer = await connected(peer_for, owner, document)
    await peer.send(protocol.sync_update(peer.type("abc")))
    await peer.settle()
    await peer.close()

    lines = [r.getMessage() for r in caplog.records if r.name == "collab.ws"]
    assert any(line.startswith(f"ws open user=olive document={document.id}") for line in lines)
    close = [line for line in lines if line.startswith("ws close")]
    assert len(close) == 1
    assert f"user=olive document={document.id}" in close[0]
    assert "duration=" in close[0] and "code=1000" in close[0]
    assert "bytes_in=" in close[0] and "bytes_in=0" not in close[0]


async def test_it_shares_one_room_per_document_and_evicts_it_after_the_grace(
    peer_for, document, owner, editor_user, settings
):
    settings.COLLAB = {**settings.COLLAB, "ROOM_GRACE": 0.1}
    alice = await connected(peer_for, owner, document)
    bob = await connected(peer_for, editor_user, document)
    room = get_rooms().get(str(document.id))
    assert len(room.connections) == 2

    await alice.close()
    await bob.close()
    for _ in range(50):
        if get_rooms().get(str(document.id)) is None:
            break
        await asyncio.sleep(0.05)
    assert get_rooms().get(str(document.id)) is None


# -- membership changes while connected ----------------------------------------------------------


async def test_it_disconnects_a_member_removed_while_connected(peer_for, document, viewer):
    watcher = await connected(peer_for, viewer, document)

    await sync_to_async(document.memberships.filter(user=viewer).delete)()

    assert await watcher.recv() == protocol.Auth("access removed")
    assert await watcher.expect_close() == 4403


async def test_it_disconnects_a_user_deactivated_while_connected_from_every_document(
    peer_for, document, owner, viewer
):
    other = await sync_to_async(Document.objects.create)(title="Other", owner=owner)
    await sync_to_async(Membership.objects.create)(document=other, user=viewer, role="editor")
    watching = [await connected(peer_for, viewer, doc) for doc in (document, other)]
    stays = await connected(peer_for, owner, document)

    viewer.is_active = False
    await sync_to_async(viewer.save)()

    for peer in watching:
        assert await peer.recv() == protocol.Auth("access removed")
        assert await peer.expect_close() == 4403
    await stays.send(protocol.sync_update(stays.type("still here")))
    assert await stays.settle() == []
    assert await stored_text(document.id) == "still here"


async def test_it_disconnects_a_deleted_user(peer_for, document, owner, viewer):
    watcher = await connected(peer_for, viewer, document)

    await sync_to_async(viewer.delete)()

    assert await watcher.recv() == protocol.Auth("access removed")
    assert await watcher.expect_close() == 4403


async def until(peer, kind, timeout: float = 15):
    """Reads messages until one of ``kind`` comes, and returns it."""
    while not isinstance(message := await peer.recv(timeout), kind):
        pass
    return message


async def test_it_tells_a_client_its_scope_at_connect(peer_for, document, owner, viewer):
    writer, watcher = peer_for(owner, document.id), peer_for(viewer, document.id)
    for peer in (writer, watcher):
        assert await peer.connect()
        assert isinstance(await peer.recv(), protocol.SyncStep1)
    assert await writer.recv() == protocol.Authenticated("read-write")
    assert await watcher.recv() == protocol.Authenticated("readonly")


async def test_it_applies_a_new_role_at_once_and_says_so(peer_for, document, owner, viewer):
    promoted = await connected(peer_for, viewer, document)
    membership = await sync_to_async(document.memberships.get)(user=viewer)
    membership.role = "editor"
    await sync_to_async(membership.save)()

    # Told at once, with the server's state vector to answer with what the client holds.
    assert await until(promoted, protocol.Authenticated) == protocol.Authenticated("read-write")
    assert isinstance(await promoted.recv(), protocol.SyncStep1)
    await promoted.send(protocol.sync_update(promoted.type("now I can")))
    assert await promoted.settle() == []  # no permission denied
    assert await stored_text(document.id) == "now I can"


async def test_a_demoted_editor_is_told_and_its_edits_refused(peer_for, document, editor_user):
    demoted = await connected(peer_for, editor_user, document)
    await demoted.send(protocol.sync_update(demoted.type("saved ")))
    await demoted.settle()
    membership = await sync_to_async(document.memberships.get)(user=editor_user)
    membership.role = "viewer"
    await sync_to_async(membership.save)()

    assert await until(demoted, protocol.Authenticated) == protocol.Authenticated("readonly")
    step1 = await demoted.recv()
    assert isinstance(step1, protocol.SyncStep1)
    # What the server has: the client can tell what of its own it did not save.
    server = Doc()
    server.apply_update(demoted.doc.get_update())
    assert step1.state_vector == server.get_state()
    await demoted.send(protocol.sync_update(demoted.type("lost")))
    assert await demoted.settle() == [protocol.Auth("view only")]
    assert await stored_text(document.id) == "saved "


async def test_it_disconnects_everyone_when_the_document_is_deleted(
    peer_for, document, owner, editor_user
):
    alice = await connected(peer_for, owner, document)
    bob = await connected(peer_for, editor_user, document)

    await sync_to_async(document.delete)()

    for peer in (alice, bob):
        assert await peer.recv() == protocol.Auth("access removed")
        assert await peer.expect_close() == 4403


# -- however a socket ends ------------------------------------------------------------------------


async def test_a_consumer_killed_by_the_server_leaves_its_room_and_presence(
    peer_for, document, owner, editor_user
):
    from editor.realtime.presence import get_presence

    gone = await connected(peer_for, owner, document)
    stays = await connected(peer_for, editor_user, document)
    entry = protocol.AwarenessEntry(client_id=71, clock=1, state={"cursor": None})
    await gone.send(protocol.awareness(protocol.encode_awareness([entry])))
    await until(stays, protocol.Awareness)
    room = get_rooms().get(str(document.id))
    assert len(room.connections) == 2

    # What daphne does to a consumer that takes too long to shut down (application_checker).
    gone.ws.future.cancel()

    removal = await until(stays, protocol.Awareness)
    assert [(e.client_id, e.state) for e in removal.entries] == [(71, None)]
    assert len(room.connections) == 1
    assert [e.client_id for e in await get_presence().entries(str(document.id))] == []
    await stays.send(protocol.sync_update(stays.type("still here")))
    await stays.settle()
    assert await stored_text(document.id) == "still here"


async def test_what_a_client_sent_before_closing_is_applied(peer_for, document, owner, settings):
    # daphne waits application_close_timeout (10 s) for a closed socket's consumer, then kills
    # it (what the communicator's wait does too): a backlog of 50,000 updates, of which 24,005
    # were applied one at a time, is now applied in batches well within that. (The rate limit
    # would refuse such a flood: lifted here, it has tests of its own.)
    settings.COLLAB = {**settings.COLLAB, "RATE_MESSAGES": 1e6, "RATE_MESSAGE_BURST": 1e6}
    peer = await connected(peer_for, owner, document)
    updates = []
    peer.doc.observe(lambda event: updates.append(event.update))
    for n in range(50_000):
        peer.text += f"{n} "
    for update in updates:
        await peer.send(protocol.sync_update(update))
    await peer.ws.send_input({"type": "websocket.disconnect", "code": 1000})
    await peer.ws.wait(timeout=10)

    assert await stored_text(document.id) == str(peer.text)


@pytest.mark.parametrize("size, order", [(10, "at once"), (1 << 20, "on a later turn")])
async def test_a_big_frame_is_handed_over_a_turn_after_it_came(size, order):
    """autobahn has just joined a 16 MB frame's pieces (one copy); cutting the update out of it
    is another: the work that came meanwhile (other sockets) runs between the two."""
    events: list[str] = []

    class Connection:
        def receive(self, frame: bytes) -> None:
            events.append("handed over")

    consumer = DocumentConsumer()
    consumer.connection = Connection()  # type: ignore[assignment]
    asyncio.get_running_loop().call_soon(events.append, "other work")
    await consumer.receive(bytes_data=b"\x00" * size)
    await asyncio.sleep(0)

    expected = {
        "at once": ["handed over", "other work"],
        "on a later turn": ["other work", "handed over"],
    }
    assert events == expected[order]


async def test_a_frame_on_an_open_socket_goes_to_its_connection_as_it_comes(
    peer_for, document, owner
):
    """Not a turn of the event loop later through the consumer's queue: while thousands of
    sockets connect, each turn takes tens of milliseconds (docs/BENCHMARKS.md, change 47)."""
    peer = await connected(peer_for, owner, document)

    await peer.send(protocol.sync_update(peer.type("at once")))

    assert peer.ws.input_queue.qsize() == 0  # the connection has it; nothing waits
    await peer.settle()
    assert await stored_text(document.id) == "at once"


async def test_frames_take_the_queue_when_direct_frames_are_off(
    peer_for, document, owner, settings
):
    settings.SERVE = {**settings.SERVE, "DIRECT_FRAMES": False}
    peer = await connected(peer_for, owner, document)

    await peer.send(protocol.sync_update(peer.type("a turn later")))

    assert peer.ws.input_queue.qsize() == 1
    await peer.settle()
    assert await stored_text(document.id) == "a turn later"


async def test_a_question_after_a_big_update_is_answered_with_it(
    peer_for, document, owner, monkeypatch
):
    """A frame held for a later turn (``PARSE_ON_A_LATER_TURN``) keeps its place: what comes
    after it waits in the queue behind it, never overtakes it."""
    monkeypatch.setattr(consumer_module, "PARSE_ON_A_LATER_TURN", 64)
    writer = await connected(peer_for, owner, document)
    big = writer.type("a paste of more than sixty-four bytes, held for a later turn " * 2)

    await writer.send(protocol.sync_update(big))
    for _ in range(3):  # the consumer has taken the big frame and waits out its turn
        await asyncio.sleep(0)
    await writer.send(protocol.sync_step1(Doc()))  # asks for everything

    while not isinstance(reply := await writer.recv(), protocol.SyncStep2):
        pass
    fresh = Doc()
    fresh.apply_update(reply.update)
    assert str(fresh.get("codemirror", type=Text)) == str(writer.text)


async def test_frames_take_the_queue_when_the_direct_frames_check_failed(
    peer_for, document, owner, unchecked
):
    from collab import transport

    transport._checked[transport.DIRECT_FRAMES] = False  # as after a failed check at load
    peer = await connected(peer_for, owner, document)

    await peer.send(protocol.sync_update(peer.type("a turn later")))

    assert peer.ws.input_queue.qsize() == 1
    await peer.settle()
    assert await stored_text(document.id) == "a turn later"
