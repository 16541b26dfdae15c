"""Presence across two live daphne processes sharing one Redis (real sockets, real Redis).

A small y-websocket peer on the `websockets` library stands in for browsers here, because
these tests need to read every awareness frame and to drop a socket without a goodbye.
"""

import asyncio
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
