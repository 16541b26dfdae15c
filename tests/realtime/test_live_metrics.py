"""GET /metrics of a real daphne process (tests/live.py) after known activity, figure by figure.

Each test starts its own process, so every counter starts at zero and the values asserted are
exact: two sockets, N updates, an awareness state and a refusal give these frames, bytes,
gauges and counts, and nothing else. Clients are plain WebSocket clients (the `websockets`
package) speaking the y-websocket protocol, as in test_live_protection.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from editor.realtime import census, protocol
from tests import live
from tests.realtime.test_live_protection import synced, updates_for, url

pytestmark = pytest.mark.django_db(transaction=True)

PRESENCE_PREFIX = f"collab-test:metrics-{uuid.uuid4().hex[:8]}:presence"
PER_USER = 2  # WS_MAX_CONNECTIONS_PER_USER of the servers under test
MAX_FRAME = 65536  # WS_MAX_INCOMING_FRAME of the servers under test


@pytest.fixture
def server(transactional_db, tmp_path, settings):
    # The census is read from the test process: same Redis, same key prefix.
    settings.PRESENCE_PREFIX = PRESENCE_PREFIX
    with live.LiveServers(
        1,
        tmp_path / "servers",
        PRESENCE_PREFIX=PRESENCE_PREFIX,
        WS_PING_INTERVAL=1,  # daphne checks every 2 s: a ping round trip within seconds
        ROOM_GRACE=1,
        WS_MAX_CONNECTIONS_PER_USER=PER_USER,
        WS_MAX_INCOMING_FRAME=MAX_FRAME,
    ) as servers:
        yield servers
        live.wait_quiet_database()
    print(servers.log_tails(lines=80))


# -- reading /metrics -----------------------------------------------------------------------------


def scrape(server) -> dict[tuple[str, frozenset], float]:
    """Every sample of the process's /metrics, by name and labels."""
    with urllib.request.urlopen(server.http() + "/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def m(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


async def expect(server, expected: dict, timeout: float = 10.0) -> dict:
    """Scrapes until every sample in ``expected`` has exactly its value (a counter the server
    bumps just after the client saw the close may take a moment); fails naming the others."""
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(scrape, server)
        wrong = {key: found.get(key) for key, value in expected.items() if found.get(key) != value}
        if not wrong:
            return found
        if time.monotonic() > deadline:
            lines = [
                f"{name}{dict(labels)}: {value} (expected {expected[(name, labels)]})"
                for (name, labels), value in wrong.items()
            ]
            raise AssertionError("/metrics differs:\n" + "\n".join(lines))
        await asyncio.sleep(0.2)


def zero(name: str, label: str, values) -> dict:
    return {m(name, **{label: value}): 0 for value in values}


# -- clients ---------------------------------------------------------------------------------------


async def until(ws, kind: type) -> protocol.Message:
    """Reads until a message of this type comes."""
    while True:
        message = protocol.parse_message(await asyncio.wait_for(ws.recv(), 10))
        if isinstance(message, kind):
            return message


async def close_code(ws) -> int:
    """Reads until the server closes the socket; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "the server closed without a close frame"
    return closed.value.rcvd.code


def cursor(client_id: int, clock: int) -> bytes:
    entry = protocol.AwarenessEntry(client_id=client_id, clock=clock, state={"cursor": None})
    return protocol.awareness(protocol.encode_awareness([entry]))


# -- the tests -------------------------------------------------------------------------------------

N = 5


def test_it_reports_two_sockets_n_updates_and_a_refusal_exactly(
    server, document, owner, editor_user, stranger
):
    updates = [protocol.sync_update(update) for update in updates_for([f"<{n}>" for n in range(N)])]
    update_bytes = sum(len(frame) for frame in updates)

    async def scenario() -> None:
        a = await connect(url(server, document, owner))
        b = await connect(url(server, document, editor_user))
        await synced(a)
        await synced(b)
        await a.send(cursor(4242, 1))
        await until(a, protocol.Awareness)  # relayed to everyone, its sender included
        await until(b, protocol.Awareness)
        for frame in updates:  # one at a time: each is its own fan-out to B
            await a.send(frame)
            await until(b, protocol.SyncUpdate)
        async with connect(url(server, document, stranger)) as outsider:
            assert await close_code(outsider) == 4403

        await expect(
            server,
            {
                m("collab_websocket_connections", role="owner", via="ticket"): 1,
                m("collab_websocket_connections", role="editor", via="ticket"): 1,
                m("collab_websocket_connections", role="viewer", via="ticket"): 0,
                m("collab_websocket_connections", role="owner", via="session"): 0,
                m("collab_websocket_connects_total"): 2,
                m("collab_websocket_refusals_total", code="4403"): 1,
                m("collab_websocket_refusals_total", code="4401"): 0,
                m("collab_websocket_disconnects_total", code="1000"): 0,
                # In: each client's handshake (step 1, then step 2 answering the server's), A's
                # cursor and updates. Out: each socket's handshake and scope, the stranger's
                # refusal, the cursor to both, each update to B once.
                m("collab_websocket_frames_total", direction="in", type="sync_step1"): 2,
                m("collab_websocket_frames_total", direction="in", type="sync_step2"): 2,
                m("collab_websocket_frames_total", direction="in", type="awareness"): 1,
                m("collab_websocket_frames_total", direction="in", type="update"): N,
                m("collab_websocket_frames_total", direction="in", type="text"): 0,
                m("collab_websocket_frames_total", direction="out", type="sync_step1"): 2,
                m("collab_websocket_frames_total", direction="out", type="sync_step2"): 2,
                m("collab_websocket_frames_total", direction="out", type="auth"): 3,
                m("collab_websocket_frames_total", direction="out", type="awareness"): 2,
                m("collab_websocket_frames_total", direction="out", type="update"): N,
                m("collab_websocket_bytes_total", direction="in", type="update"): update_bytes,
                m("collab_websocket_bytes_total", direction="out", type="update"): update_bytes,
                m("collab_updates_applied_total"): N,
                m("collab_remote_updates_total"): 0,
                m("collab_rooms_loaded"): 1,
                m("collab_presence_entries"): 1,
                m("collab_websocket_connect_seconds_count"): 2,
                m("collab_fanout_seconds_count", source="client"): N,
                m("collab_fanout_seconds_count", source="layer"): 0,
                # Every update written, in however many batches.
                m("collab_store_batch_updates_sum"): N,
                **zero("collab_catchup_recovered_total", "source", ("log", "parked", "snapshot")),
                **zero("collab_limit_closes_total", "limit", ("frame_size", "rate", "slow_reader")),
                **zero("collab_redis_errors_total", "operation", ("group_send", "presence")),
                **zero("collab_database_errors_total", "operation", ("write", "load", "catchup")),
            },
        )

        # Figures that take the server's own time: daphne pings every ~2 s here, the stall
        # probe wakes every 50 ms, the census is written every 10 s.
        deadline = time.monotonic() + 20
        while True:
            found = await asyncio.to_thread(scrape, server)
            processes = await asyncio.to_thread(census.read_all)
            mine = [p for p in processes if p.name == f"{socket.gethostname()}:{server.ports[0]}"]
            if (
                found.get(m("collab_websocket_ping_rtt_seconds_count"), 0) >= 2
                and mine
                and (mine[0].sockets, mine[0].rooms) == (2, 1)
            ) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert found[m("collab_websocket_ping_rtt_seconds_count")] >= 2  # both sockets, at least
        assert 0 < found[m("collab_websocket_ping_rtt_seconds_sum")] < 2
        assert found[m("collab_event_loop_lag_seconds_count")] > 0
        assert sum(found[m("collab_gc_pause_seconds_count", generation=g)] for g in "012") > 0
        assert found[m("collab_store_flush_lag_seconds_count")] >= 1
        assert found[m("process_resident_memory_bytes")] > 0
        assert (mine[0].sockets, mine[0].rooms) == (2, 1), processes

        # A leaves first and B hears its cursor go; then B leaves.
        await a.close()
        removal = await until(b, protocol.Awareness)
        assert [entry.state for entry in removal.entries] == [None]
        await b.close()
        await expect(
            server,
            {
                m("collab_websocket_connections", role="owner", via="ticket"): 0,
                m("collab_websocket_connections", role="editor", via="ticket"): 0,
                m("collab_websocket_disconnects_total", code="1000"): 2,
                m("collab_websocket_frames_total", direction="out", type="awareness"): 3,
                m("collab_presence_entries"): 0,
                m("collab_rooms_loaded"): 0,  # ROOM_GRACE later
                m("collab_websocket_connects_total"): 2,
            },
        )

    asyncio.run(scenario())


def test_it_counts_limit_closes_and_refusals_by_code(server, document, owner, viewer):
    async def scenario() -> None:
        async with connect(url(server, document, owner), max_size=None) as big:
            await synced(big)
            await big.send(b"\x00\x02" + b"x" * MAX_FRAME)
            assert await close_code(big) == 4413
        async with connect(url(server, document, owner)) as texting:
            await synced(texting)
            await texting.send("hello")
            assert await close_code(texting) == 4400
        forged = f"{server.ws()}/{document.pk}?ticket={live.forged_ticket(owner, document)}"
        async with connect(forged) as impostor:
            assert await close_code(impostor) == 4401
        async with connect(f"ws://127.0.0.1:{server.ports[0]}/ws/elsewhere") as lost:
            assert await close_code(lost) == 4404
        readers = [await connect(url(server, document, viewer)) for _ in range(PER_USER)]
        for reader in readers:
            await synced(reader)
        async with connect(url(server, document, viewer)) as one_too_many:
            assert await close_code(one_too_many) in (1013, 4013)

        await expect(
            server,
            {
                m("collab_websocket_connections", role="viewer", via="ticket"): PER_USER,
                m("collab_websocket_connects_total"): 2 + PER_USER,
                m("collab_limit_closes_total", limit="frame_size"): 1,
                m("collab_limit_closes_total", limit="connections_per_user"): 1,
                m("collab_limit_closes_total", limit="connections"): 0,
                m("collab_limit_closes_total", limit="rate"): 0,
                m("collab_websocket_disconnects_total", code="4413"): 1,
                m("collab_websocket_disconnects_total", code="4400"): 1,
                m("collab_websocket_refusals_total", code="4401"): 1,
                m("collab_websocket_refusals_total", code="4404"): 1,
                m("collab_websocket_refusals_total", code="1013"): 1,
                m("collab_websocket_refusals_total", code="4403"): 0,
                m("collab_websocket_frames_total", direction="in", type="text"): 1,
                m("collab_updates_applied_total"): 0,
            },
        )
        for reader in readers:
            await reader.close()
        await expect(
            server,
            {
                m("collab_websocket_connections", role="viewer", via="ticket"): 0,
                m("collab_websocket_disconnects_total", code="1000"): PER_USER,
            },
        )

    asyncio.run(scenario())
