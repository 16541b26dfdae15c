"""Rooms: one Doc per document per process, group fan-out across processes, catch-up.

Two ``Rooms`` registries in one event loop stand for two processes: each room has its own
layer channel in the document group, exactly as in two daphne processes sharing Redis.
"""

import asyncio
import contextlib
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from pycrdt import Doc, Text

from editor.models import DocumentUpdate
from editor.realtime import protocol, store
from editor.realtime import room as room_module
from editor.realtime.room import (
    InvalidUpdate,
    Rooms,
    publish_access_change,
    publish_sessions_ended,
    publish_title,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


class Sink:
    """A connection that keeps what it is sent, and counts the access re-checks it is asked."""

    def __init__(self, user_id: int = 0) -> None:
        self.user_id = user_id
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.rechecks = 0
        self.ended: list[tuple[str | None, str | None, str | None]] = []

    async def send_frame(self, frame: bytes) -> None:
        await self.frames.put(frame)

    async def recheck_access(self) -> None:
        self.rechecks += 1

    async def sessions_ended(self, ended, kept, renamed) -> None:
        self.ended.append((ended, kept, renamed))

    async def next(self, timeout: float = 5) -> protocol.Message:
        return protocol.parse_message(await asyncio.wait_for(self.frames.get(), timeout))


def edit(text: str) -> bytes:
    doc = Doc()
    doc["codemirror"] = Text(text)
    return doc.get_update()


async def two_processes(document) -> tuple[Rooms, Rooms, Sink, Sink]:
    """Two processes' rooms of the document (``here``, ``there``), each with one connection
    (``sender`` here, ``far`` there)."""
    here, there = Rooms(), Rooms()
    sender, far = Sink(), Sink()
    await here.join(document.id, sender)
    await there.join(document.id, far)
    return here, there, sender, far


def text_of(room) -> str:
    return str(room.doc.get("codemirror", type=Text))


async def test_it_loads_a_document_once_for_concurrent_joins(document):
    rooms = Rooms()
    a, b = Sink(), Sink()
    room_a, room_b = await asyncio.gather(rooms.join(document.id, a), rooms.join(document.id, b))

    assert room_a is room_b
    assert room_a.connections == {a, b}
    await room_a.close()


async def test_it_fans_out_to_another_process_once(document, owner):
    here, there = Rooms(), Rooms()
    sender, neighbour = Sink(), Sink()
    far_1, far_2 = Sink(), Sink()
    room = await here.join(document.id, sender)
    await here.join(document.id, neighbour)
    remote = await there.join(document.id, far_1)
    await there.join(document.id, far_2)

    update = edit("across processes")
    await room.apply_client_updates([update], origin=sender, author_id=owner.pk)

    assert await neighbour.next() == protocol.SyncUpdate(update)
    assert await far_1.next() == protocol.SyncUpdate(update)
    assert await far_2.next() == protocol.SyncUpdate(update)
    assert sender.frames.empty()
    assert text_of(remote) == "across processes"
    await room.close()
    await remote.close()


async def test_it_rejects_an_update_that_does_not_apply_without_changing_anything(document, owner):
    rooms = Rooms()
    sender, other = Sink(), Sink()
    room = await rooms.join(document.id, sender)
    await rooms.join(document.id, other)

    with pytest.raises(InvalidUpdate):
        await room.apply_client_updates([b"\xff\xff\xff"], origin=sender, author_id=owner.pk)

    await store.get_writer().flush()
    assert text_of(room) == ""
    assert other.frames.empty()
    assert await sync_to_async(DocumentUpdate.objects.count)() == 0
    await room.close()


async def test_it_recovers_an_update_the_channel_layer_lost(document, owner):
    rooms = Rooms()
    watcher = Sink()
    room = await rooms.join(document.id, watcher)
    # Another process committed this, but its group message never arrived (a Redis blip).
    update = edit("from the log")
    await sync_to_async(DocumentUpdate.objects.create)(document=document, data=update, author=owner)

    await rooms.catch_up_once()
    assert await watcher.next() == protocol.SyncUpdate(update)
    assert text_of(room) == "from the log"
    await rooms.catch_up_once()
    assert watcher.frames.empty()  # seen once, not sent twice
    await room.close()


async def test_it_recovers_an_update_compacted_away_before_it_read_the_log(document, owner):
    rooms = Rooms()
    watcher = Sink()
    room = await rooms.join(document.id, watcher)
    await rooms.catch_up_once()  # the room has looked at the log (and the snapshot) once
    # Lost on the channel layer, then folded into the snapshot (its row deleted) by a
    # compaction before this room's next catch-up: a busy document compacts every few seconds.
    update = edit("only in the snapshot")
    await sync_to_async(DocumentUpdate.objects.create)(document=document, data=update, author=owner)
    assert (await sync_to_async(store.compact)(document.id)).folded == 1

    await rooms.catch_up_once()
    message = await watcher.next()
    assert isinstance(message, protocol.SyncUpdate)
    assert text_of(room) == "only in the snapshot"
    await rooms.catch_up_once()
    assert watcher.frames.empty()
    await room.close()


async def test_it_integrates_updates_a_doc_left_parked(document, owner):
    rooms = Rooms()
    watcher = Sink()
    room = await rooms.join(document.id, watcher)
    first = edit("parked")
    doc = Doc()
    doc.apply_update(first)
    before = doc.get_state()
    doc.get("codemirror", type=Text).insert(6, " for good")
    second = doc.get_update(before)
    # pycrdt 0.14 sometimes leaves an update parked although its dependency has arrived: the
    # room has applied (and remembered) both, but its Doc holds only the first.
    room.doc.apply_update(first)
    room._remember(first)
    room._remember(second)
    for update in (first, second):
        await sync_to_async(DocumentUpdate.objects.create)(
            document=document, data=update, author=owner
        )

    await rooms.catch_up_once()
    assert text_of(room) == "parked for good"
    assert isinstance(await watcher.next(), protocol.SyncUpdate)
    await room.close()


async def test_it_does_not_resend_what_it_already_relayed(document, owner):
    here, there = Rooms(), Rooms()
    sender, far = Sink(), Sink()
    room = await here.join(document.id, sender)
    remote = await there.join(document.id, far)
    update = edit("once")
    await room.apply_client_updates([update], origin=sender, author_id=owner.pk)
    assert await far.next() == protocol.SyncUpdate(update)
    await store.get_writer().flush()

    await there.catch_up_once()
    assert far.frames.empty()
    await room.close()
    await remote.close()


@pytest.fixture
def reads(monkeypatch) -> list[list[int]]:
    """The ids of the log rows each catch-up read, in order."""
    reads: list[list[int]] = []
    read_log = room_module._read_log

    def counted(*args):
        rows, snapshots = read_log(*args)
        reads.append([pk for _, pk, _ in rows])
        return rows, snapshots

    monkeypatch.setattr(room_module, "_read_log", counted)
    return reads


async def test_catch_ups_do_not_read_again_a_big_update_the_room_holds(document, owner, reads):
    """A 16 MB paste stays in the catch-ups' window for seconds: each one read it back from
    the database and diffed it against the Doc, on every process. Rows the Doc holds all of
    (its own big updates once written, what a catch-up read) are left out; others still come."""
    here, there, sender, far = await two_processes(document)
    room, remote = here.get(document.id), there.get(document.id)
    big = edit("x" * room_module.HOLD_FROM)
    await room.apply_client_updates([big], origin=sender, author_id=owner.pk)
    assert await far.next() == protocol.SyncUpdate(big)
    await store.get_writer().flush()
    [row] = await sync_to_async(list)(
        DocumentUpdate.objects.filter(document=document).values_list("id", flat=True)
    )
    small = edit("y")
    await room.apply_client_updates([small], origin=sender, author_id=owner.pk)
    assert await far.next() == protocol.SyncUpdate(small)
    await store.get_writer().flush()

    await here.catch_up_once()  # wrote the big one itself: reads only the small one
    await there.catch_up_once()  # got both through the layer: reads both, holds both
    await there.catch_up_once()

    assert len(reads) == 3
    assert row not in reads[0] and len(reads[0]) == 1
    assert sorted(reads[1]) == sorted([row, *reads[0]])
    assert reads[2] == []
    assert far.frames.empty()  # nothing sent twice
    await room.close()
    await remote.close()


async def test_a_catch_up_forgets_held_rows_older_than_its_window(document):
    rooms = Rooms()
    room = await rooms.join(document.id, Sink())
    room.held = {1: time.monotonic() - 3600, 2: time.monotonic()}

    await rooms.catch_up_once()

    assert list(room.held) == [2]
    await room.close()


async def test_catch_ups_read_again_an_update_the_doc_holds_parked(document, owner, reads):
    """An update whose dependency has not come is parked in the Doc; catch-ups keep reading it
    (and apply it again once the dependency is there, ``_integrate_parked``)."""
    rooms = Rooms()
    watcher = Sink()
    room = await rooms.join(document.id, watcher)
    doc = Doc()
    doc["codemirror"] = Text("first")
    first = doc.get_update()
    before = doc.get_state()
    doc.get("codemirror", type=Text).insert(5, " then second")
    second = doc.get_update(before)
    created = await sync_to_async(DocumentUpdate.objects.create)(
        document=document, data=second, author=owner
    )

    await rooms.catch_up_once()
    await rooms.catch_up_once()
    assert reads == [[created.pk], [created.pk]]  # parked: not held
    await sync_to_async(DocumentUpdate.objects.create)(document=document, data=first, author=owner)
    await rooms.catch_up_once()
    await rooms.catch_up_once()

    assert text_of(room) == "first then second"
    assert reads[3] == []
    await room.close()


async def test_it_relays_awareness_across_processes_and_announces_removal(document):
    here, there = Rooms(), Rooms()
    local, far = Sink(), Sink()
    room = await here.join(document.id, local)
    remote = await there.join(document.id, far)
    entry = protocol.AwarenessEntry(client_id=5, clock=2, state={"user": {"name": "olive"}})

    await room.relay_awareness(protocol.encode_awareness([entry]))
    assert (await local.next()).entries == (entry,)  # the echo
    assert (await far.next()).entries == (entry,)

    await room.announce_removal({5: 2})
    removal = protocol.Awareness
    assert (await local.next()).entries == (protocol.AwarenessEntry(5, 3, None),)
    message = await far.next()
    assert isinstance(message, removal)
    assert message.entries == (protocol.AwarenessEntry(client_id=5, clock=3, state=None),)
    await room.close()
    await remote.close()


class Closing(Sink):
    """A connection whose socket closed under the room, as autobahn says it."""

    async def send_frame(self, frame: bytes) -> None:
        from autobahn.exception import Disconnected

        raise Disconnected("Attempt to send on a closed protocol")


async def test_a_send_that_fails_for_one_connection_spares_the_others_and_the_sender(
    document, owner
):
    rooms = Rooms()
    sender, before, after = Sink(), Sink(), Sink()
    room = await rooms.join(document.id, sender)
    await rooms.join(document.id, before)
    await rooms.join(document.id, Closing())
    await rooms.join(document.id, after)

    update = edit("typed while a tab closes")
    await room.apply_client_updates([update], origin=sender, author_id=owner.pk)

    for connection in (before, after):
        assert await connection.next() == protocol.SyncUpdate(update)
    assert text_of(room) == "typed while a tab closes"
    await room.close()


async def test_updates_sent_in_a_row_pass_on_as_one(document, owner):
    here, there = Rooms(), Rooms()
    sender, neighbour, far = Sink(), Sink(), Sink()
    room = await here.join(document.id, sender)
    await here.join(document.id, neighbour)
    remote = await there.join(document.id, far)
    doc = Doc()
    text = doc.get("codemirror", type=Text)
    updates = []
    for word in ("one ", "two ", "three"):
        before = doc.get_state()
        text += word
        updates.append(doc.get_update(before))

    await room.apply_client_updates(updates, origin=sender, author_id=owner.pk)

    merged = await neighbour.next()
    assert (await far.next()) == merged
    assert sender.frames.empty()
    check = Doc()
    check.apply_update(merged.update)
    assert str(check.get("codemirror", type=Text)) == "one two three" == text_of(remote)
    await store.get_writer().flush()
    assert await sync_to_async(DocumentUpdate.objects.filter(document=document).count)() == 1
    await room.close()
    await remote.close()


async def test_a_bad_update_in_a_row_keeps_the_good_ones_before_it(document, owner):
    rooms = Rooms()
    sender, neighbour = Sink(), Sink()
    room = await rooms.join(document.id, sender)
    await rooms.join(document.id, neighbour)

    with pytest.raises(InvalidUpdate):
        await room.apply_client_updates(
            [edit("kept"), b"\xff\xff\xff", edit("never")], origin=sender, author_id=owner.pk
        )

    assert isinstance(await neighbour.next(), protocol.SyncUpdate)
    assert text_of(room) == "kept"
    await room.close()


async def test_it_asks_the_connections_of_a_user_to_recheck_access_when_it_changes(document):
    here, there = Rooms(), Rooms()
    olive, eddie, far_eddie = Sink(user_id=1), Sink(user_id=2), Sink(user_id=2)
    room = await here.join(document.id, olive)
    await here.join(document.id, eddie)
    remote = await there.join(document.id, far_eddie)

    await publish_access_change(document.id, 2)
    await publish_access_change(document.id, None)  # everyone's (the document was deleted)

    for _ in range(100):  # polls; the deadline is generous, not a performance claim
        if (olive.rechecks, eddie.rechecks, far_eddie.rechecks) == (1, 2, 2):
            break
        await asyncio.sleep(0.05)
    assert (olive.rechecks, eddie.rechecks, far_eddie.rechecks) == (1, 2, 2)
    await room.close()
    await remote.close()


class Broken(Sink):
    async def sessions_ended(self, ended, kept, renamed) -> None:
        raise RuntimeError("test: this connection fails")


async def test_it_tells_the_connections_of_a_user_that_sessions_ended_one_failing_or_not(
    document,
):
    here, there = Rooms(), Rooms()
    # Eddie's tabs and one that fails: a room's connections are a set, so the failing one comes
    # before most of the others whatever their order.
    olive, eddies, far_eddie = Sink(user_id=1), [Sink(user_id=2) for _ in range(8)], Sink(2)
    room = await here.join(document.id, Broken(user_id=2))
    for sink in (olive, *eddies):
        await here.join(document.id, sink)
    remote = await there.join(document.id, far_eddie)

    await publish_sessions_ended(document.id, 2, "laptop")
    await publish_sessions_ended(document.id, 2, None, "phone", "phone, renamed")

    told = [("laptop", None, None), (None, "phone", "phone, renamed")]
    for _ in range(100):  # polls; the deadline is generous, not a performance claim
        if all(sink.ended == told for sink in (*eddies, far_eddie)):
            break
        await asyncio.sleep(0.05)
    assert [sink.ended for sink in (*eddies, far_eddie)] == [told] * 9
    assert olive.ended == []
    await room.close()
    await remote.close()


async def test_clients_joining_together_share_one_encoding_of_the_document(document, owner):
    rooms = Rooms()
    writer = Sink(owner.pk)
    room = await rooms.join(document.id, writer)
    await room.apply_client_updates(
        [edit("a long meeting agenda")], origin=writer, author_id=owner.pk
    )
    fresh = Doc().get_state()

    first, second = room.sync_step2(fresh), room.sync_step2(fresh)
    assert first is second  # encoded once, the same bytes for every joiner
    joined = Doc()
    joined.apply_update(protocol.parse_message(first).update)
    assert str(joined.get("codemirror", type=Text)) == "a long meeting agenda"

    # A change in between: the next joiner is answered with the document as it is now.
    await room.apply_client_updates([edit("!")], origin=writer, author_id=owner.pk)
    after = room.sync_step2(fresh)
    assert after is not first
    joined = Doc()
    joined.apply_update(protocol.parse_message(after).update)
    assert "!" in str(joined.get("codemirror", type=Text))
    # A different question gets its own answer.
    assert room.sync_step2(joined.get_state()) != after
    await room.close()


async def test_it_tells_every_connection_of_a_document_its_new_title(document, owner):
    here, there = Rooms(), Rooms()
    olive, eddie, far = Sink(), Sink(), Sink()
    room = await here.join(document.id, olive)
    await here.join(document.id, eddie)
    remote = await there.join(document.id, far)

    await publish_title(document.id, "Plan ✓")

    expected = protocol.Stateless('{"type": "title", "title": "Plan ✓"}')
    for sink in (olive, eddie, far):
        assert await sink.next() == expected
    await room.close()
    await remote.close()


async def test_a_rename_anywhere_reaches_the_open_sockets(document, owner):
    rooms = Rooms()
    olive = Sink()
    room = await rooms.join(document.id, olive)

    def rename(title: str) -> None:  # as the title form, the API and the admin do: save()
        document.title = title
        document.save()

    await sync_to_async(rename)("Renamed")
    assert await olive.next() == protocol.Stateless('{"type": "title", "title": "Renamed"}')
    await room.close()


async def test_a_large_update_is_hashed_off_the_event_loop_here_and_in_other_processes(
    document, owner, monkeypatch
):
    """hashlib lets go of the GIL while it hashes: a big paste's digest (28 ms for 16 MB) is
    taken in a thread, so every other socket of the process is served meanwhile."""
    hashed_on: list[tuple[int, bool]] = []
    real_digest = room_module._digest

    def digest(update: bytes) -> bytes:
        hashed_on.append((len(update), threading.current_thread() is threading.main_thread()))
        return real_digest(update)

    monkeypatch.setattr(room_module, "_digest", digest)
    here, there = Rooms(), Rooms()
    sender, far = Sink(), Sink()
    room = await here.join(document.id, sender)
    remote = await there.join(document.id, far)
    hashed_on.clear()

    big = edit("x" * room_module.DIGEST_OFF_LOOP)
    small = edit("y")
    await room.apply_client_updates([big], origin=sender, author_id=owner.pk)
    await room.apply_client_updates([small], origin=sender, author_id=owner.pk)

    assert await far.next() == protocol.SyncUpdate(big)
    assert await far.next() == protocol.SyncUpdate(small)
    on_the_loop = {size: main for size, main in hashed_on}
    assert on_the_loop == {len(big): False, len(small): True}
    assert [size for size, _ in hashed_on].count(len(big)) == 2  # here, and in the other process
    await room.close()
    await remote.close()


async def test_a_big_update_reaches_other_processes_through_the_log_not_the_layer(
    document, owner, monkeypatch
):
    """A 16 MB paste through the channel layer was copied four times on the sender's event loop
    (msgpack, the Redis send, and both again on its way back): from ``THROUGH_THE_LOG`` up only a
    notice goes through the layer, once the log holds the update, and the other processes read
    it there. The sender's neighbours get it at once, and smaller updates still go by the layer
    without waiting for it."""
    monkeypatch.setattr(room_module, "_CATCHUP_AFTER_LOAD", ())  # only the notice reads the log
    here, there = Rooms(), Rooms()
    sender, neighbour, far = Sink(), Sink(), Sink()
    room = await here.join(document.id, sender)
    await here.join(document.id, neighbour)
    remote = await there.join(document.id, far)
    published: list[tuple[str, int, bool]] = []
    publish = room._publish

    async def noted_publish(message: dict) -> None:
        logged = await database_sync_to_async(
            DocumentUpdate.objects.filter(document_id=document.id, data=big).exists
        )()
        published.append((message["type"], len(message.get("update", b"")), logged))
        await publish(message)

    monkeypatch.setattr(room, "_publish", noted_publish)
    big = edit("x" * room_module.THROUGH_THE_LOG)
    small = edit("y")
    await room.apply_client_updates([big], origin=sender, author_id=owner.pk)
    assert await neighbour.next(timeout=0.5) == protocol.SyncUpdate(big)  # before any flush
    await room.apply_client_updates([small], origin=sender, author_id=owner.pk)

    received = {await far.next(), await far.next()}
    assert received == {protocol.SyncUpdate(big), protocol.SyncUpdate(small)}
    assert text_of(remote) == text_of(room)
    assert published == [("doc.update", len(small), False), ("doc.logged", 0, True)]
    await room.close()
    await remote.close()


async def test_notices_that_come_during_a_read_of_the_log_make_one_more_read(
    document, owner, monkeypatch
):
    """Two big pastes in a row: the second one's notice may come while the first one's read is
    under way, and that read may have missed it. One more read follows; none run at once."""
    monkeypatch.setattr(room_module, "_CATCHUP_AFTER_LOAD", ())  # only the notices read the log
    here, there, sender, far = await two_processes(document)
    room, remote = here.get(document.id), there.get(document.id)
    reads, running, overlapped = [], [], []
    catch_up = there.catch_up_once

    async def counted(document_ids=None):
        overlapped.append(bool(running))
        running.append(1)
        reads.append(document_ids)
        try:
            await asyncio.sleep(0.1)
            await catch_up(document_ids)
        finally:
            running.pop()

    monkeypatch.setattr(there, "catch_up_once", counted)
    first = edit("a" * room_module.THROUGH_THE_LOG)
    second = edit("b" * room_module.THROUGH_THE_LOG)
    await room.apply_client_updates([first], origin=sender, author_id=owner.pk)
    await room.apply_client_updates([second], origin=sender, author_id=owner.pk)

    received = {await far.next(), await far.next()}
    assert received == {protocol.SyncUpdate(first), protocol.SyncUpdate(second)}
    assert 1 <= len(reads) <= 2
    assert reads[0] == [str(document.id)]
    assert overlapped == [False] * len(reads)
    await room.close()
    await remote.close()


async def test_a_big_update_the_log_cannot_take_goes_through_the_layer_after_all(
    document, owner, monkeypatch, caplog
):
    """The database is slow (or down): other processes' clients must not wait for it. After
    ``LOG_WAIT`` the update is published the old way; the log takes it when it can."""
    monkeypatch.setattr(room_module, "LOG_WAIT", 0.2)
    # No catch-up of the rooms' own after their load (0.5 s): this test outlives it, and only
    # the update's own path is looked at.
    monkeypatch.setattr(room_module, "_CATCHUP_AFTER_LOAD", ())
    original = store._write_batch

    def slow(batch):
        time.sleep(0.6)
        return original(batch)

    monkeypatch.setattr(store, "_write_batch", slow)
    here, there, sender, far = await two_processes(document)
    room, remote = here.get(document.id), there.get(document.id)

    big = edit("z" * room_module.THROUGH_THE_LOG)
    await room.apply_client_updates([big], origin=sender, author_id=owner.pk)

    assert await far.next() == protocol.SyncUpdate(big)
    assert text_of(remote) == text_of(room)
    [line] = [r for r in caplog.records if "not in the log" in r.getMessage()]
    assert f"a {len(big)}-byte update is not in the log after 0.2 s" in line.getMessage()
    await store.get_writer().flush(timeout=30)
    # Channels' wrapper: it closes the thread's connection after (the test database is
    # dropped at the end of the run).
    stored = await database_sync_to_async(
        DocumentUpdate.objects.filter(document_id=document.id, data=big).exists
    )()
    assert stored
    await room.close()
    await remote.close()


# -- a room alone publishes nothing (LAYER_ONLY_WHEN_SHARED) ------------------------------------


async def listening_in(room) -> tuple[object, str]:
    """A channel in the room's document group that is no room: it hears what the room
    publishes and never says hello."""
    layer = get_channel_layer()
    channel = await layer.new_channel("listener.")
    await layer.group_add(room.group, channel)
    return layer, channel


async def heard(layer, channel: str, timeout: float = 0.5) -> list[str]:
    """What the listener heard of updates and awareness (the room's hello may come first)."""
    kinds = []
    with contextlib.suppress(TimeoutError):
        while True:
            kinds.append((await asyncio.wait_for(layer.receive(channel), timeout))["type"])
    return [kind for kind in kinds if kind != "doc.hello"]


async def test_a_room_no_other_process_has_open_publishes_nothing(document, owner, monkeypatch):
    """Behind nginx's routing by document, a document's sockets are all on one process: every
    keystroke and cursor move was a Redis PUBLISH that only its sender heard."""
    monkeypatch.setattr(room_module, "HELLO_WINDOW", 0.0)
    rooms = Rooms()
    sender, neighbour = Sink(), Sink()
    room = await rooms.join(document.id, sender)
    await rooms.join(document.id, neighbour)
    layer, channel = await listening_in(room)

    update = edit("alone")
    await room.apply_client_updates([update], origin=sender, author_id=owner.pk)
    await room.relay_awareness(
        protocol.encode_awareness([protocol.AwarenessEntry(5, 1, {"user": {"name": "olive"}})])
    )

    assert await neighbour.next() == protocol.SyncUpdate(update)  # its own sockets get all
    assert isinstance(await neighbour.next(), protocol.Awareness)
    assert await heard(layer, channel) == []
    await store.get_writer().flush()
    assert await sync_to_async(DocumentUpdate.objects.count)() == 1  # and the log has it
    await room.close()


async def test_with_the_switch_off_a_room_alone_publishes_as_before(
    document, owner, monkeypatch, settings
):
    settings.COLLAB = {**settings.COLLAB, "LAYER_ONLY_WHEN_SHARED": False}
    monkeypatch.setattr(room_module, "HELLO_WINDOW", 0.0)
    rooms = Rooms()
    sender = Sink()
    room = await rooms.join(document.id, sender)
    layer, channel = await listening_in(room)

    await room.apply_client_updates([edit("alone")], origin=sender, author_id=owner.pk)

    assert await heard(layer, channel) == ["doc.update"]
    await room.close()


async def test_rooms_of_a_document_in_two_processes_find_each_other(
    document, owner, monkeypatch, settings
):
    """The first room, alone, publishes nothing; the second says hello when it opens and gets,
    in answer, what the first did not publish lately, though the log does not have it yet.
    From then on both publish, until one says goodbye."""
    monkeypatch.setattr(room_module, "HELLO_WINDOW", 0.0)
    monkeypatch.setattr(room_module, "_CATCHUP_AFTER_LOAD", ())
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60.0}  # not in the log
    here, there = Rooms(), Rooms()
    sender, far = Sink(), Sink()
    room = await here.join(document.id, sender)
    first = edit("before")
    await room.apply_client_updates([first], origin=sender, author_id=owner.pk)
    assert not room.shared()

    remote = await there.join(document.id, far)
    assert await far.next() == protocol.SyncUpdate(first)  # the answer to its hello
    later = edit("after")
    await room.apply_client_updates([later], origin=sender, author_id=owner.pk)
    assert await far.next() == protocol.SyncUpdate(later)
    reply = edit("reply")
    await remote.apply_client_updates([reply], origin=far, author_id=owner.pk)
    assert await sender.next() == protocol.SyncUpdate(reply)
    assert text_of(remote) == text_of(room)

    await remote.close()
    for _ in range(50):  # the goodbye's way through Redis
        if not room.shared():
            break
        await asyncio.sleep(0.02)
    assert not room.shared()
    await store.get_writer().flush()
    await room.close()


async def test_a_room_that_missed_a_hello_is_found_by_the_other_rooms_catch_up(
    document, owner, monkeypatch
):
    """A lost hello (a Redis blip) leaves a room thinking itself alone: the other room's
    catch-up finds in the log what it did not hear, and says hello again."""
    monkeypatch.setattr(room_module, "HELLO_WINDOW", 0.0)
    monkeypatch.setattr(room_module, "_CATCHUP_AFTER_LOAD", ())
    here, there = Rooms(), Rooms()
    sender, far = Sink(), Sink()
    room = await here.join(document.id, sender)
    remote = await there.join(document.id, far)
    await asyncio.sleep(0.2)  # the hello and its answer
    room._others.clear()  # as if the hello had not come
    unheard = edit("unheard")
    await room.apply_client_updates([unheard], origin=sender, author_id=owner.pk)
    await store.get_writer().flush()
    assert far.frames.empty()

    await there.catch_up_once()
    assert await far.next() == protocol.SyncUpdate(unheard)
    await asyncio.sleep(0.2)  # the new hello
    later = edit("heard")
    await room.apply_client_updates([later], origin=sender, author_id=owner.pk)
    assert await far.next() == protocol.SyncUpdate(later)
    await room.close()
    await remote.close()


async def test_what_a_room_alone_keeps_for_a_newcomer_stays_small(document, owner, monkeypatch):
    """Kept for a hello that may come: two seconds of small updates, at most 256 KB; a big
    update is only noted (the newcomer is sent to the log for it)."""
    monkeypatch.setattr(room_module, "HELLO_WINDOW", 0.0)
    rooms = Rooms()
    sender = Sink()
    room = await rooms.join(document.id, sender)
    for n in range(12):
        await room.apply_client_updates([edit(f"{n}" * 40_000)], origin=sender, author_id=owner.pk)
    assert 0 < room._unpublished_bytes <= room_module.UNPUBLISHED_KEEP_BYTES
    assert room._unpublished_bytes == sum(len(update) for _, update in room._unpublished)

    await room.apply_client_updates(
        [edit("x" * room_module.HOLD_FROM)], origin=sender, author_id=owner.pk
    )
    assert room._unpublished[-1][1] is None  # noted, not kept

    monkeypatch.setattr(room_module, "UNPUBLISHED_KEEP", 0.0)
    await room.apply_client_updates([edit("late")], origin=sender, author_id=owner.pk)
    assert len(room._unpublished) == 1  # older ones forgotten
    await store.get_writer().flush()
    await room.close()


class Stuck(Sink):
    """A connection whose send never returns (a send that waits, cancelled at a shutdown)."""

    async def send_frame(self, frame: bytes) -> None:
        await asyncio.Event().wait()


async def test_an_update_is_logged_even_when_its_sends_are_cancelled(document, owner):
    rooms = Rooms()
    sender, stuck = Sink(), Stuck()
    room = await rooms.join(document.id, sender)
    await rooms.join(document.id, stuck)
    update = edit("kept")

    applying = asyncio.ensure_future(
        room.apply_client_updates([update], origin=sender, author_id=owner.pk)
    )
    await asyncio.sleep(0.05)
    applying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await applying

    await store.get_writer().flush()
    rows = await sync_to_async(list)(DocumentUpdate.objects.values_list("data", flat=True))
    assert [bytes(row) for row in rows] == [update]
    await room.close()
