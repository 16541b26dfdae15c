"""Connection: one socket's session with one document, driven without any socket (a recording
``Socket`` of the tests' own), on the real room, store, Redis and database."""

import asyncio
import contextlib
import types
import uuid

import pytest
from asgiref.sync import sync_to_async
from pycrdt import Doc, Text

from editor.realtime import connection as connection_module
from editor.realtime import protocol, store
from editor.realtime.auth import Access, Person
from editor.realtime.connection import Connection, _Eager, sockets
from editor.realtime.presence import get_presence

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


class RecordingSocket:
    """A socket that keeps what it is sent. ``backlog`` stands for bytes the peer has not read
    yet; ``closing`` for a socket that has started to close (sends raise, as autobahn's do)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.close_code: int | None = None
        self.backlog: int | None = None
        self.closing = False
        self.hung_up = False

    def queued(self) -> int | None:
        return self.backlog

    def write(self, frame: bytes) -> bool:
        return False

    def write_together(self, frames) -> bool:
        return False

    async def send(self, frame: bytes) -> None:
        if self.closing:
            raise ConnectionError("Attempt to send on a closed protocol")
        self.frames.append(frame)

    async def close(self, code: int) -> None:
        if self.closing:
            raise ConnectionError("Attempt to close a closed protocol")
        self.close_code = code

    def hang_up(self) -> None:
        self.hung_up = True

    def messages(self) -> list[protocol.Message]:
        return [protocol.parse_message(frame) for frame in self.frames]

    def take(self) -> list[protocol.Message]:
        messages = self.messages()
        self.frames.clear()
        return messages


def access_of(user, document, role: str) -> Access:
    return Access(user=Person.of(user), document_id=str(document.pk), role=role, via="session")


async def opened(user, document, role: str) -> tuple[Connection, RecordingSocket]:
    socket = RecordingSocket()
    connection = Connection(access_of(user, document, role), socket)
    assert await connection.open()
    socket.frames.clear()
    return connection, socket


async def until(condition, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def edit(doc: Doc, text: str) -> bytes:
    before = doc.get_state()
    doc.get("codemirror", type=Text).insert(len(doc.get("codemirror", type=Text)), text)
    return doc.get_update(before)


def awareness(*entries: protocol.AwarenessEntry) -> protocol.Message:
    return protocol.parse_message(protocol.awareness(protocol.encode_awareness(entries)))


def text_of(doc: Doc) -> str:
    return str(doc.get("codemirror", type=Text))


async def test_it_opens_with_sync_step1_and_the_sockets_scope(document, owner, viewer):
    for user, role, scope in (
        (owner, "owner", protocol.SCOPE_READ_WRITE),
        (viewer, "viewer", protocol.SCOPE_READ_ONLY),
    ):
        socket = RecordingSocket()
        connection = Connection(access_of(user, document, role), socket)
        assert await connection.open()

        first, second = socket.messages()[:2]
        assert isinstance(first, protocol.SyncStep1)
        assert second == protocol.Authenticated(scope)
        await connection.finish(1000)


class TogetherSocket(RecordingSocket):
    """A socket that takes several messages in one write, as daphne's does (raw frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []

    def write_together(self, frames) -> bool:
        self.writes.append(list(frames))
        return True


async def test_the_servers_half_of_the_handshake_is_written_in_one_piece(document, owner):
    socket = TogetherSocket()
    connection = Connection(access_of(owner, document, "owner"), socket)

    assert await connection.open()

    [handshake] = socket.writes
    first, second = [protocol.parse_message(frame) for frame in handshake]
    assert isinstance(first, protocol.SyncStep1)
    assert second == protocol.Authenticated(protocol.SCOPE_READ_WRITE)
    assert socket.frames == []  # nothing went the one-by-one way
    assert connection.frames_out == 2
    assert connection.bytes_out == sum(len(frame) for frame in handshake)
    await connection.finish(1000)


async def test_an_editors_update_reaches_the_others_and_not_the_sender(
    document, owner, editor_user
):
    writer, writer_socket = await opened(owner, document, "owner")
    reader, reader_socket = await opened(editor_user, document, "editor")
    client = Doc()

    update = edit(client, "hello")
    writer.receive(protocol.sync_update(update))

    await until(lambda: reader_socket.frames)
    assert reader_socket.messages() == [protocol.SyncUpdate(update)]
    assert writer_socket.frames == []
    assert text_of(writer.room.doc) == "hello"
    await writer.finish(1000)
    await reader.finish(1000)
    await store.get_writer().flush()
    updates, _ = await sync_to_async(store.load)(document.pk)
    stored = Doc()
    for row in updates:
        stored.apply_update(row)
    assert text_of(stored) == "hello"


async def test_an_update_is_passed_on_in_the_turn_its_frame_was_read(document, owner, editor_user):
    """Many writers' frames read in one turn of the event loop were each passed on only after
    the loop had read all of them: with WS_EAGER_WORK (the default), the work of a frame starts
    as the frame is read."""
    writer, _ = await opened(owner, document, "owner")
    reader, reader_socket = await opened(editor_user, document, "editor")

    update = edit(Doc(), "at once")
    writer.receive(protocol.sync_update(update))

    assert reader_socket.messages() == [protocol.SyncUpdate(update)]  # no await in between
    await writer.finish(1000)
    await reader.finish(1000)


async def test_without_eager_work_an_update_is_passed_on_a_turn_later(
    document, owner, editor_user, settings
):
    """WS_EAGER_WORK=false: the work is a task of its own, as before."""
    settings.SERVE = {**settings.SERVE, "EAGER_WORK": False}
    writer, _ = await opened(owner, document, "owner")
    reader, reader_socket = await opened(editor_user, document, "editor")

    update = edit(Doc(), "later")
    writer.receive(protocol.sync_update(update))
    assert reader_socket.frames == []

    await until(lambda: reader_socket.frames)
    assert reader_socket.messages() == [protocol.SyncUpdate(update)]
    await writer.finish(1000)
    await reader.finish(1000)


async def test_eager_work_that_waits_is_carried_on_with_what_it_waited_for():
    """What the work awaits hands it its result or its exception, and a cancellation of the
    task that carries it on reaches it, as in a task of its own."""
    loop = asyncio.get_running_loop()
    seen = []
    answer = loop.create_future()
    failure = loop.create_future()
    forever = loop.create_future()

    async def work():
        seen.append("started")
        seen.append(await answer)
        try:
            await failure
        except ValueError as exc:
            seen.append(f"raised {exc}")
        await asyncio.sleep(0)
        try:
            await forever
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    carrying_on = _Eager.start(work())
    assert seen == ["started"]  # its first step ran at once
    answer.set_result(42)
    failure.set_exception(ValueError("no"))
    await until(lambda: len(seen) == 3)
    assert seen == ["started", 42, "raised no"]
    await asyncio.sleep(0.05)
    carrying_on.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await carrying_on
    assert seen[-1] == "cancelled"

    async def at_once():
        seen.append("done at once")

    assert _Eager.start(at_once()) is None
    assert seen[-1] == "done at once"


async def test_eager_work_resumes_in_the_same_turn_as_a_task_would():
    """Carried on through a wait of its own, the work woke a turn after a task would have:
    each of its waits cost every frame a turn of the event loop."""
    loop = asyncio.get_running_loop()
    turn = 0
    resumed = {}

    async def work(name, future):
        await future
        resumed[name] = turn

    eager_future, task_future = loop.create_future(), loop.create_future()
    carrying_on = _Eager.start(work("eager", eager_future))
    task = asyncio.ensure_future(work("task", task_future))
    await asyncio.sleep(0)  # both are waiting now
    eager_future.set_result(None)
    task_future.set_result(None)
    while len(resumed) < 2 and turn < 10:
        await asyncio.sleep(0)
        turn += 1

    assert resumed == {"eager": resumed["task"], "task": resumed["task"]}
    await asyncio.gather(carrying_on, task)


async def test_a_viewers_update_is_refused_and_changes_nothing(document, viewer):
    connection, socket = await opened(viewer, document, "viewer")

    await connection.handle(protocol.SyncUpdate(edit(Doc(), "sneaky")))
    await connection.handle(protocol.SyncStep2(b"\x00\x00"))  # the handshake's empty answer

    assert socket.messages() == [protocol.Auth("view only")]
    assert text_of(connection.room.doc) == ""
    await connection.finish(1000)


async def test_a_frame_over_the_limit_is_refused_once_after_what_came_before(
    document, owner, settings
):
    settings.COLLAB = {**settings.COLLAB, "MAX_INCOMING_FRAME": 1000}
    connection, socket = await opened(owner, document, "owner")
    client = Doc()

    connection.receive(protocol.sync_update(edit(client, "kept")))
    connection.receive(protocol.sync_update(edit(client, "x" * 2000)))
    connection.receive(protocol.sync_update(edit(client, "after")))

    await until(lambda: socket.close_code is not None)
    assert socket.close_code == 4413
    assert socket.messages() == [
        protocol.Auth("this change is too large to save (0.0 MB; the limit is 0.0 MB)")
    ]
    assert text_of(connection.room.doc) == "kept"
    await connection.finish(None)


async def test_a_malformed_frame_closes_with_4400_and_keeps_the_document(document, owner):
    connection, socket = await opened(owner, document, "owner")
    await connection.handle(protocol.SyncUpdate(edit(Doc(), "safe")))

    connection.receive(b"\x00\x02\xff\xff\xff")
    await until(lambda: socket.close_code is not None)

    assert socket.close_code == 4400
    assert text_of(connection.room.doc) == "safe"
    connection.receive(protocol.sync_update(edit(Doc(), "ignored")))  # nothing more is read
    await asyncio.sleep(0.05)
    assert text_of(connection.room.doc) == "safe"
    await connection.finish(None)


async def test_a_text_frame_closes_with_4400(document, owner):
    connection, socket = await opened(owner, document, "owner")
    connection.receive(None)
    await until(lambda: socket.close_code is not None)
    assert socket.close_code == 4400
    await connection.finish(None)


async def test_a_client_that_does_not_read_is_closed_with_4408(document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_SEND_BUFFER": 10_000}
    connection, socket = await opened(owner, document, "owner")

    socket.backlog = 9_990
    await connection.send_frame(b"x" * 100)

    assert socket.frames == []
    assert socket.close_code == 4408
    await connection.send_frame(b"later")
    assert socket.frames == []
    await connection.finish(None)


async def test_a_socket_closing_under_a_send_is_skipped_quietly(document, owner, editor_user):
    closing, closing_socket = await opened(owner, document, "owner")
    writer, _ = await opened(editor_user, document, "editor")
    closing_socket.closing = True

    await writer.handle(protocol.SyncUpdate(edit(Doc(), "typed")))  # must not raise

    assert closing.gone
    assert text_of(writer.room.doc) == "typed"
    await closing.finish(1001)
    await writer.finish(1000)


async def test_the_same_sync_step1_is_not_answered_again_while_the_answer_is_queued(
    document, owner
):
    connection, socket = await opened(owner, document, "owner")
    state_vector = Doc().get_state()

    await connection.handle(protocol.SyncStep1(state_vector))
    socket.backlog = 5_000  # the answer is still on its way
    await connection.handle(protocol.SyncStep1(state_vector))
    socket.backlog = 0  # read: a new question is answered
    await connection.handle(protocol.SyncStep1(state_vector))

    assert [type(message) for message in socket.messages()] == [protocol.SyncStep2] * 2
    await connection.finish(1000)


async def test_the_same_sync_step1_is_answered_when_only_a_broadcast_is_queued(
    document, owner, editor_user
):
    """A big paste queued for the socket after the answer was read is not the answer: the
    same question asked meanwhile gets its answer (a client waiting for it waited for ever)."""
    connection, socket = await opened(owner, document, "owner")
    writer, _ = await opened(editor_user, document, "editor")
    state_vector = Doc().get_state()
    await connection.handle(protocol.SyncStep1(state_vector))
    paste = Doc()
    paste["codemirror"] = Text("x" * 100_000)
    await writer.apply_updates([paste.get_update()])

    socket.backlog = len(socket.frames[-1]) + 4  # the paste, with its frame's header
    await connection.handle(protocol.SyncStep1(state_vector))  # answered
    socket.backlog = 10  # part of that second answer: the same question again is not
    await connection.handle(protocol.SyncStep1(state_vector))

    kinds = [type(message) for message in socket.messages()]
    assert kinds == [protocol.SyncStep2, protocol.SyncUpdate, protocol.SyncStep2]
    await writer.finish(1000)
    await connection.finish(1000)


async def test_awareness_carries_the_servers_identity_and_only_the_senders_ids(
    document, owner, editor_user
):
    alice, alice_socket = await opened(owner, document, "owner")
    bob, bob_socket = await opened(editor_user, document, "editor")
    forged = {"user": {"name": "Mallory", "id": 999}, "cursor": None}

    await alice.handle(awareness(protocol.AwarenessEntry(11, 1, forged)))
    # Bob speaks for Alice's client id: ignored.
    await bob.handle(awareness(protocol.AwarenessEntry(11, 2, {"cursor": 5})))

    received = bob_socket.take()
    assert len(received) == 1
    (entry,) = received[0].entries
    assert entry.client_id == 11
    assert entry.state["user"]["name"] == "olive"
    assert entry.state["user"]["id"] == owner.pk
    entries = await get_presence().entries(str(document.pk))
    assert [(e.client_id, e.user_id, e.clock) for e in entries] == [(11, owner.pk, 1)]

    await alice.finish(1000)
    assert await get_presence().entries(str(document.pk)) == []
    (removal,) = bob_socket.take()
    assert [(e.client_id, e.state) for e in removal.entries] == [(11, None)]
    # Her own state comes back to her too: the stock client needs to hear its renewals.
    (echo,) = alice_socket.messages()
    assert echo == received[0]
    await bob.finish(1000)


async def test_only_a_socket_that_sends_awareness_draws_a_presence_id(
    document, owner, editor_user, monkeypatch
):
    drawn = []

    def counted_uuid4() -> uuid.UUID:
        drawn.append(1)
        return uuid.uuid4()

    # The connection's own draws only (the room draws its channel's name when it opens).
    monkeypatch.setattr(connection_module, "uuid", types.SimpleNamespace(uuid4=counted_uuid4))
    silent, _ = await opened(editor_user, document, "editor")
    speaking, _ = await opened(owner, document, "owner")
    assert drawn == []  # two sockets opened, synced, and no random id drawn for either

    await speaking.handle(awareness(protocol.AwarenessEntry(21, 1, {"cursor": None})))
    await speaking.handle(awareness(protocol.AwarenessEntry(21, 2, {"cursor": 3})))
    assert len(drawn) == 1  # one id, kept for every later state
    (entry,) = await get_presence().entries(str(document.pk))
    assert entry.conn == speaking.conn_id
    assert len(drawn) == 1
    assert silent.conn_id != speaking.conn_id  # asked for, the silent socket draws its own

    await silent.finish(1000)
    await speaking.finish(1000)
    assert await get_presence().entries(str(document.pk)) == []


async def test_a_new_role_applies_at_once_and_the_client_is_told(document, editor_user):
    connection, socket = await opened(editor_user, document, "editor")

    await connection.apply_role("viewer")
    told, resync = socket.take()
    assert told == protocol.Authenticated(protocol.SCOPE_READ_ONLY)
    assert isinstance(resync, protocol.SyncStep1)
    await connection.handle(protocol.SyncUpdate(edit(Doc(), "too late")))
    assert socket.take() == [protocol.Auth("view only")]

    await connection.apply_role("editor")
    assert socket.take()[0] == protocol.Authenticated(protocol.SCOPE_READ_WRITE)
    await connection.handle(protocol.SyncUpdate(edit(Doc(), "welcome back")))
    assert text_of(connection.room.doc) == "welcome back"

    await connection.apply_role(None)
    assert socket.take() == [protocol.Auth("access removed")]
    assert socket.close_code == 4403
    await connection.finish(None)


async def test_finish_applies_what_came_before_the_close_then_leaves(document, owner):
    connection, _ = await opened(owner, document, "owner")
    client = Doc()
    for word in ("one ", "two ", "three"):
        connection.receive(protocol.sync_update(edit(client, word)))
    room = connection.room

    await connection.finish(1000)

    assert text_of(room.doc) == "one two three"
    assert connection not in room.connections


async def test_an_abandoned_connection_leaves_its_room_and_presence(document, owner):
    connection, _ = await opened(owner, document, "owner")
    await connection.handle(awareness(protocol.AwarenessEntry(7, 1, {"a": 1})))
    room = connection.room

    connection.abandon()

    assert connection not in room.connections
    for _ in range(100):
        if not await get_presence().entries(str(document.pk)):
            break
        await asyncio.sleep(0.02)
    assert await get_presence().entries(str(document.pk)) == []


# -- limits -----------------------------------------------------------------------------------


async def test_a_flood_is_closed_with_4429_after_what_came_before(document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "RATE_MESSAGES": 1.0, "RATE_MESSAGE_BURST": 5.0}
    connection, socket = await opened(owner, document, "owner")
    client = Doc()

    for n in range(50):
        connection.receive(protocol.sync_update(edit(client, f"{n} ")))

    await until(lambda: socket.close_code is not None)
    assert socket.close_code == 4429
    (told,) = socket.messages()
    assert told.reason.startswith("too many messages from this socket")
    assert text_of(connection.room.doc) == "0 1 2 3 4 "  # the burst was applied, no more
    assert socket.hung_up  # what it sends after this is not read
    await connection.finish(None)


async def test_a_user_whose_sockets_used_up_their_budget_cannot_reconnect_at_once(
    document, owner, settings
):
    settings.COLLAB = {**settings.COLLAB, "RATE_MESSAGES": 0.001, "RATE_MESSAGE_BURST": 3.0}
    # A socket may send 3, the user's sockets 6 (a connect costs one): two floods drain it.
    for _ in range(2):
        flooder, flooder_socket = await opened(owner, document, "owner")
        for n in range(10):
            flooder.receive(protocol.sync_update(edit(Doc(), f"{n}")))
        await until(lambda s=flooder_socket: s.close_code is not None)
        await flooder.finish(None)

    socket = RecordingSocket()
    again = Connection(access_of(owner, document, "owner"), socket)
    assert not await again.open()
    assert socket.close_code == 4429
    assert socket.messages()[0].reason.startswith("too many messages from this user's sockets")
    await again.finish(None)


async def test_a_users_sockets_share_a_budget(document, owner, settings):
    # One socket may send 5 in a burst; the user's sockets together 10, a connect costing one:
    # 7 left for three sockets, 3 each is one too many for the last.
    settings.COLLAB = {**settings.COLLAB, "RATE_MESSAGES": 0.001, "RATE_MESSAGE_BURST": 5.0}
    sockets = [await opened(owner, document, "owner") for _ in range(3)]
    client = Doc()

    for connection, _ in sockets:
        for n in range(3):
            connection.receive(protocol.sync_update(edit(client, f"{n}")))
        await until(lambda c=connection: not c.inbox)

    (*_, (last, last_socket)) = sockets
    await until(lambda: last_socket.close_code is not None)
    assert last_socket.close_code == 4429
    assert "user's sockets" in last_socket.messages()[-1].reason
    assert [s.close_code for _, s in sockets[:2]] == [None, None]
    for connection, _ in sockets:
        await connection.finish(None)


async def test_a_socket_may_speak_for_a_few_client_ids_only(document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_AWARENESS_CLIENTS": 2}
    connection, socket = await opened(owner, document, "owner")

    for client_id in (1, 2):
        await connection.handle(awareness(protocol.AwarenessEntry(client_id, 1, {})))
    assert socket.close_code is None
    await connection.handle(awareness(protocol.AwarenessEntry(3, 1, {})))

    assert socket.close_code == 4400
    assert socket.messages()[-1] == protocol.Auth(
        "too many awareness client ids on one socket (the limit is 2)"
    )
    await connection.finish(None)


async def test_an_awareness_state_too_large_is_refused_with_4413(document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_AWARENESS_BYTES": 1000}
    connection, socket = await opened(owner, document, "owner")

    await connection.handle(awareness(protocol.AwarenessEntry(1, 1, {"name": "x" * 2000})))

    assert socket.close_code == 4413
    assert socket.messages()[-1].reason.startswith("awareness state too large")
    assert await get_presence().entries(str(document.pk)) == []
    await connection.finish(None)


async def test_a_malformed_cursor_is_not_passed_on(document, owner, editor_user):
    sender, _ = await opened(owner, document, "owner")
    _, reader_socket = await opened(editor_user, document, "editor")

    bad = {"cursor": {"anchor": {"item": "oops"}, "head": 3}, "status": "typing"}
    await sender.handle(awareness(protocol.AwarenessEntry(1, 1, bad)))

    (relayed,) = reader_socket.messages()
    (entry,) = relayed.entries
    assert entry.state["cursor"] is None
    assert entry.state["status"] == "typing"
    await sender.finish(1000)


async def test_a_socket_over_a_connection_cap_is_told_and_closed_with_1013(
    document, owner, editor_user, settings
):
    # Sockets left open by other tests of this process count too: room for two more.
    room_for_two = sockets.total + 2
    settings.COLLAB = {
        **settings.COLLAB,
        "MAX_CONNECTIONS_PER_USER": 1,
        "MAX_CONNECTIONS": room_for_two,
    }
    first, _ = await opened(owner, document, "owner")

    socket = RecordingSocket()
    second = Connection(access_of(owner, document, "owner"), socket)
    assert not await second.open()
    assert socket.close_code == 1013
    assert socket.messages() == [
        protocol.Auth(
            "too many open connections for this user (1); close some tabs or try again later"
        )
    ]
    await second.finish(None)

    other, _ = await opened(editor_user, document, "editor")  # another user: admitted
    socket = RecordingSocket()
    third = Connection(access_of(editor_user, document, "editor"), socket)
    assert not await third.open()  # two sockets in all: the process is full
    assert socket.messages() == [protocol.Auth("the server is at capacity; try again later")]
    await third.finish(None)

    await first.finish(1000)  # a place is free again
    again, _ = await opened(owner, document, "owner")
    for connection in (other, again):
        await connection.finish(1000)
