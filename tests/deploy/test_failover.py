"""Losing and restarting processes behind nginx while people type (tests/deploy/cluster.py).

Clients are y-websocket peers on pycrdt that reconnect through nginx and re-sync, as the
browser's provider does. What must hold: they are back on a live process within 5 s, on one
process per document again, nothing anyone typed is lost (in every client and in the database),
and the users of a dead process vanish from everyone's presence.
"""

import asyncio
import time
import urllib.error
import urllib.request

import pytest
import websockets
from asgiref.sync import async_to_sync

from editor.models import Document, Membership, Role
from tests import live
from tests.deploy.cluster import Backends, Nginx, Peer, converged, typing, until

pytestmark = pytest.mark.django_db(transaction=True)

RECONNECT_WITHIN = 5.0
# Short, so that a killed process's users expire within seconds (tests/realtime/test_live_presence).
FAST_PRESENCE = {"PRESENCE_TTL": 4, "PRESENCE_SWEEP_INTERVAL": 1, "PRESENCE_FLUSH_INTERVAL": 0.2}


@pytest.fixture
def start_cluster(transactional_db, tmp_path):
    """start_cluster(count) -> (Backends, Nginx); stopped, logs printed, at the end."""
    started = []

    def start(count: int):
        backends = Backends(count, tmp_path / "servers", **FAST_PRESENCE)
        started.append(backends.start())
        nginx = Nginx(backends)
        started.append(nginx.start())
        return backends, nginx

    yield start
    live.wait_quiet_database()
    logs = []
    for part in reversed(started):
        if isinstance(part, Nginx):
            logs.append(part.logs())  # before it stops: stopping removes its directory
        part.stop()
    for part in started:
        if isinstance(part, Backends):
            logs.append(part.log_tails(lines=60))
    print("\n".join(logs))


def peer(nginx: Nginx, name: str, user, document, reconnect: bool = True) -> Peer:
    ticket = live.ticket_for(user, document)
    return Peer(name, lambda: nginx.ws(document.pk, ticket), reconnect=reconnect)


def assert_quick_reconnects(peers: list[Peer]) -> None:
    print("reconnect times:", {p.name: [round(t, 2) for t in p.reconnect_times] for p in peers})
    slow = {
        p.name: p.reconnect_times
        for p in peers
        if any(t > RECONNECT_WITHIN for t in p.reconnect_times)
    }
    assert not slow, f"reconnects slower than {RECONNECT_WITHIN} s: {slow}"


def test_clients_of_a_killed_backend_reconnect_to_one_live_backend_and_lose_nothing(
    start_cluster, document, owner, editor_user, viewer
):
    backends, nginx = start_cluster(3)
    typists = [peer(nginx, f"t{n}", (owner, editor_user)[n % 2], document) for n in range(3)]
    # Someone whose laptop closes as the process dies: their presence must expire, and
    # everyone must be told.
    ghost = peer(nginx, "ghost", viewer, document, reconnect=False)
    everyone = [*typists, ghost]

    async def scenario():
        for p in everyone:
            p.start()
        await until(lambda: all(p.synced.is_set() for p in everyone), 20, "all synced")
        await until(lambda: all(ghost.client_id in p.awareness for p in typists), 10, "ghost seen")
        [home] = [i for i, count in enumerate(backends.opened(document.pk)) if count]
        before = backends.opened(document.pk)

        typing_task = asyncio.ensure_future(typing(typists, seconds=6))
        await asyncio.sleep(2)
        # SIGKILL: nothing flushed, no goodbye. The ghost's socket dies with the process and it
        # does not come back, so only expiry can remove its presence.
        await asyncio.to_thread(backends.kill, home)
        killed_at = time.monotonic()

        await until(
            lambda: all(p.connections >= 2 and p.synced.is_set() for p in typists),
            RECONNECT_WITHIN + 2,
            "typists back through nginx",
        )
        await typing_task
        text = await converged(typists)
        await until(
            lambda: all(ghost.client_id in p.removed for p in typists),
            FAST_PRESENCE["PRESENCE_TTL"] + FAST_PRESENCE["PRESENCE_SWEEP_INTERVAL"] + 5,
            "the ghost's expiry announced",
        )
        print(f"ghost's expiry announced {time.monotonic() - killed_at:.1f} s after the kill")
        for p in typists:
            await p.stop()
        return home, before, text

    home, before, text = async_to_sync(scenario)()

    assert_quick_reconnects(typists)
    after = [now - then for now, then in zip(backends.opened(document.pk), before, strict=True)]
    new_homes = [i for i, count in enumerate(after) if count]
    assert len(new_homes) == 1 and new_homes[0] != home, f"reopened per backend: {after}"
    assert after[new_homes[0]] >= len(typists)
    typed = [marker for p in typists for marker in p.typed]
    assert len(typed) > 60 and all(marker in text for marker in typed)
    live.wait_stored(document.pk, contains=typed)


def test_a_rolling_restart_loses_nothing_and_every_client_comes_back(
    start_cluster, owner, editor_user
):
    backends, nginx = start_cluster(2)
    documents = [Document.objects.create_for(owner, f"doc {n}") for n in range(4)]
    for document in documents:
        Membership.objects.create(document=document, user=editor_user, role=Role.EDITOR)
    groups = [
        [peer(nginx, f"d{d}u{u}", user, document) for u, user in enumerate((owner, editor_user))]
        for d, document in enumerate(documents)
    ]
    peers = [p for group in groups for p in group]

    async def scenario():
        for p in peers:
            p.start()
        await until(lambda: all(p.synced.is_set() for p in peers), 20, "all synced")
        stop = asyncio.Event()

        async def keep_typing():
            while not stop.is_set():
                await typing(peers, seconds=0.5)

        typing_task = asyncio.ensure_future(keep_typing())
        # As docs/DEPLOY.md's loop does it: the next one is stopped as soon as the last one
        # answers its health check, so the clients of the second go to a process that nginx
        # saw refuse connections a moment ago.
        for index in range(backends.count):
            started = time.monotonic()
            status = await asyncio.to_thread(backends.terminate, index)  # as systemd stops it
            print(f"backend {index} stopped in {time.monotonic() - started:.1f} s")
            assert status == 0, backends.log_tail(index)
            await until(
                lambda: all(p.synced.is_set() for p in peers),
                RECONNECT_WITHIN + 2,
                f"everyone back after backend {index} stopped",
                also=lambda: {p.name: (p.connections, p.synced.is_set()) for p in peers},
            )
            started = time.monotonic()
            await asyncio.to_thread(backends.restart, index)
            print(f"backend {index} restarted in {time.monotonic() - started:.1f} s")
        await asyncio.sleep(1)
        stop.set()
        await typing_task
        texts = [await converged(group) for group in groups]
        for p in peers:
            await p.stop()
        return texts

    texts = async_to_sync(scenario)()

    assert_quick_reconnects(peers)
    assert all(p.connections >= 2 for p in peers), {p.name: p.connections for p in peers}
    for document, group, text in zip(documents, groups, texts, strict=True):
        typed = [marker for p in group for marker in p.typed]
        assert all(marker in text for marker in typed)
        live.wait_stored(document.pk, contains=typed)


def test_a_process_back_from_a_restart_takes_every_new_socket_at_once(start_cluster, owner):
    """As a rolling restart without pauses: the second process stops as soon as the first is
    back. nginx's passive checks would still count the first as down (for fail_timeout after
    it refused a connection), and then let one socket per nginx worker through as a probe,
    which holds the mark until that socket closes: with WebSockets, the process would stay
    down for everyone else. Pages and the API likewise."""
    backends, nginx = start_cluster(2)
    documents = [Document.objects.create_for(owner, f"doc {n}") for n in range(16)]
    urls = [nginx.ws(document.pk, live.ticket_for(owner, document)) for document in documents]

    async def open_all() -> list[str]:
        """Opens a socket to every document at once; what each got ("open" or the error)."""

        async def one(url: str) -> str:
            try:
                async with websockets.connect(url, open_timeout=5, close_timeout=1):
                    return "open"
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                return repr(exc)

        return list(await asyncio.gather(*(one(url) for url in urls)))

    def get_pages() -> list[int | str]:
        """Asks nginx for a page as often as there are documents: each status (or error)."""
        statuses: list[int | str] = []
        for _ in urls:
            try:
                with urllib.request.urlopen(nginx.http() + "/healthz", timeout=5) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
            except OSError as exc:
                statuses.append(repr(exc))
        return statuses

    async def scenario() -> tuple[list[str], list[int | str]]:
        assert await open_all() == ["open"] * len(urls)
        await asyncio.to_thread(backends.terminate, 0)
        for _ in range(3):  # each of nginx's workers sees process 0 refuse
            assert await open_all() == ["open"] * len(urls)
            assert await asyncio.to_thread(get_pages) == [200] * len(urls)
        await asyncio.to_thread(backends.restart, 0)
        await asyncio.to_thread(backends.terminate, 1)
        return await open_all(), await asyncio.to_thread(get_pages)

    sockets, pages = async_to_sync(scenario)()

    refused = [result for result in sockets if result != "open"]
    assert not refused, f"{len(refused)} of {len(sockets)} sockets refused: {refused[:3]}"
    assert pages == [200] * len(urls)
