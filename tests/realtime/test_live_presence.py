"""Presence across two live daphne processes sharing one Redis (real sockets, real Redis).

A small y-websocket peer on the `websockets` library stands in for browsers here, because
these tests need to read every awareness frame and to drop a socket without a goodbye.
"""

import asyncio
import signal
import socket
import time

import pytest
import websockets
from asgiref.sync import async_to_sync

from editor.realtime import protocol
from tests import live

pytestmark = pytest.mark.django_db(transaction=True)

# A short TTL and sweep, so a SIGKILLed process's users expire within seconds, yet long
# enough to tell an abrupt close (immediate) apart from expiry.
FAST_PRESENCE = {"PRESENCE_TTL": 6, "PRESENCE_SWEEP_INTERVAL": 1, "PRESENCE_FLUSH_INTERVAL": 0.2}


class Peer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws = None
        self.awareness: dict[int, dict | None] = {}

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None, open_timeout=10)
        first = protocol.parse_message(await asyncio.wait_for(self.ws.recv(), 10))
        assert isinstance(first, protocol.SyncStep1)

    async def say(self, client_id: int, clock: int, state) -> None:
        entry = protocol.AwarenessEntry(client_id=client_id, clock=clock, state=state)
        await self.ws.send(protocol.awareness(protocol.encode_awareness([entry])))

    async def until(self, predicate, timeout: float) -> float:
        """Reads awareness until ``predicate(self.awareness)`` holds; returns the time taken."""
        started = time.monotonic()
        deadline = started + timeout
        while not predicate(self.awareness):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"presence never matched; last seen {self.awareness}")
            try:
                frame = await asyncio.wait_for(self.ws.recv(), remaining)
            except TimeoutError:
                continue
            message = protocol.parse_message(frame)
            if isinstance(message, protocol.Awareness):
                for entry in message.entries:
                    self.awareness[entry.client_id] = entry.state
        return time.monotonic() - started

    async def close(self) -> None:
        await self.ws.close()


def names(awareness: dict) -> set[str]:
    return {state["user"]["name"] for state in awareness.values() if state}


def url(servers, index: int, user, document) -> str:
    return f"{servers.ws(index)}/{document.pk}?ticket={live.ticket_for(user, document)}"


@pytest.fixture
def servers(transactional_db, tmp_path):
    with live.LiveServers(2, tmp_path / "servers", **FAST_PRESENCE) as started:
        yield started
        print(started.log_tails(lines=60))


def test_a_late_joiner_on_one_process_sees_users_on_the_other(
    servers, document, owner, editor_user, viewer
):
    async def scenario():
        alice = Peer(url(servers, 0, owner, document))
        await alice.open()
        await alice.say(101, 1, {"user": {"name": "not olive"}, "cursor": None})
        await alice.until(lambda seen: "olive" in names(seen), 10)  # the echo

        late = Peer(url(servers, 1, viewer, document))
        await late.open()
        await late.until(lambda seen: names(seen) == {"olive"}, 10)
        assert late.awareness[101]["user"]["name"] == "olive"  # the server's, not the claim
        await alice.close()
        await late.close()

    async_to_sync(scenario)()


def test_a_killed_processes_users_vanish_within_ttl_and_sweep(
    servers, document, owner, editor_user
):
    async def scenario():
        doomed = Peer(url(servers, 0, owner, document))
        await doomed.open()
        await doomed.say(201, 1, {"cursor": None})
        watcher = Peer(url(servers, 1, editor_user, document))
        await watcher.open()
        await watcher.until(lambda seen: seen.get(201) is not None, 10)

        servers.kill(0)  # SIGKILL: no goodbye, no clean-up code runs

        ttl_plus_sweep = FAST_PRESENCE["PRESENCE_TTL"] + FAST_PRESENCE["PRESENCE_SWEEP_INTERVAL"]
        await watcher.until(lambda seen: seen.get(201, "gone") is None, ttl_plus_sweep + 5)
        await watcher.close()

    async_to_sync(scenario)()


def test_a_socket_that_drops_without_goodbye_disappears_at_once(
    servers, document, owner, editor_user
):
    async def scenario():
        dropper = Peer(url(servers, 0, owner, document))
        await dropper.open()
        await dropper.say(301, 1, {"cursor": None})
        watcher = Peer(url(servers, 1, editor_user, document))
        await watcher.open()
        await watcher.until(lambda seen: seen.get(301) is not None, 10)

        # Cut the TCP connection: no WebSocket close frame, no awareness removal.
        raw = dropper.ws.transport.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        dropper.ws.transport.abort()

        waited = await watcher.until(lambda seen: seen.get(301, "gone") is None, 10)
        # Well inside the TTL (6 s): the server noticed the closed socket, not the expiry.
        assert waited < FAST_PRESENCE["PRESENCE_TTL"]
        await watcher.close()

    async_to_sync(scenario)()


def test_a_spoofed_name_and_a_foreign_client_id_are_ignored(
    servers, document, owner, editor_user, viewer
):
    async def scenario():
        alice = Peer(url(servers, 0, owner, document))
        await alice.open()
        await alice.say(401, 1, {"cursor": None})
        mallory = Peer(url(servers, 1, editor_user, document))
        await mallory.open()
        await mallory.until(lambda seen: seen.get(401) is not None, 10)

        await mallory.say(401, 9, {"user": {"name": "olive"}, "cursor": {"anchor": 0}})
        await mallory.say(402, 1, {"user": {"name": "olive"}, "cursor": None})
        watcher = Peer(url(servers, 0, viewer, document))
        await watcher.open()
        await watcher.until(lambda seen: {401, 402} <= set(seen), 10)

        assert watcher.awareness[401]["user"]["name"] == "olive"
        assert watcher.awareness[401]["cursor"] is None  # Mallory's overwrite was dropped
        assert watcher.awareness[402]["user"]["name"] == "eddie"  # her own id, her own name
        for peer in (alice, mallory, watcher):
            await peer.close()

    async_to_sync(scenario)()


# A peer that stops answering (a laptop lid closed, a dead NAT) sends no FIN and no RST; only
# daphne's pings find it. The script runs in its own process so that it can be frozen.
FROZEN_PEER = """
import asyncio, sys, websockets
from editor.realtime import protocol

async def main():
    ws = await websockets.connect(sys.argv[1], max_size=None)
    await ws.recv()
    entry = protocol.AwarenessEntry(client_id=501, clock=1, state={"cursor": None})
    await ws.send(protocol.awareness(protocol.encode_awareness([entry])))
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_peer_that_stops_answering_is_dropped_by_the_pings(
    transactional_db, tmp_path, document, owner, editor_user
):
    import subprocess
    import sys

    # Pings every 1 s, 2 s to answer; presence TTL far longer, so only the ping can explain
    # a quick removal.
    options = {"WS_PING_INTERVAL": 1, "WS_PING_TIMEOUT": 2, "PRESENCE_TTL": 120}
    with live.LiveServers(1, tmp_path / "servers", **options) as servers:
        frozen = subprocess.Popen(
            [sys.executable, "-c", FROZEN_PEER, url(servers, 0, owner, document)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=live.ROOT,
        )
        try:
            assert frozen.stdout.readline().strip() == "ready"

            async def scenario():
                watcher = Peer(url(servers, 0, editor_user, document))
                await watcher.open()
                await watcher.until(lambda seen: seen.get(501) is not None, 10)
                frozen.send_signal(signal.SIGSTOP)
                await watcher.until(lambda seen: seen.get(501, "gone") is None, 30)
                await watcher.close()

            async_to_sync(scenario)()
        finally:
            frozen.kill()
            frozen.wait()
        [closed] = [line for line in servers.log(0).splitlines() if "ws close user=olive" in line]
        assert "code=1006" in closed  # dropped by the server, not closed by the peer
