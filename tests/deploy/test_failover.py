"""Losing and restarting processes behind nginx while people type (tests/deploy/cluster.py).

Clients are y-websocket peers on pycrdt that reconnect through nginx and re-sync, as the
browser's provider does. What must hold: they are back on a live process within 5 s, on one
process per document again, nothing anyone typed is lost (in every client and in the database),
and the users of a dead process vanish from everyone's presence.
"""

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync

from editor.models import Document, Membership, Role
from tests import live
from tests.deploy.cluster import Backends, Nginx, Peer, converged, typing, until

pytestmark = pytest.mark.django_db(transaction=True)

RECONNECT_WITHIN = 5.0
NGINX_FAIL_TIMEOUT = 10.0  # editor/deploy/nginx.conf.template, fail_timeout
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
    for part in reversed(started):
        part.stop()
    for part in started:
        print(part.log_tails(lines=60) if isinstance(part, Backends) else part.logs())


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
        for index in range(backends.count):
            started = stopped_at = time.monotonic()
            status = await asyncio.to_thread(backends.terminate, index)  # as systemd stops it
            print(f"backend {index} stopped in {time.monotonic() - started:.1f} s")
            assert status == 0, backends.log_tail(index)
            await until(
                lambda: all(p.synced.is_set() for p in peers),
                RECONNECT_WITHIN + 2,
                f"everyone back after backend {index} stopped",
            )
            started = time.monotonic()
            await asyncio.to_thread(backends.restart, index)
            print(f"backend {index} restarted in {time.monotonic() - started:.1f} s")
            # nginx skips a backend that refused a connection for fail_timeout (the generated
            # config's 10 s): a rolling restart waits that long after stopping one before
            # stopping the next, or the next one's clients find no live backend until it ends.
            await asyncio.sleep(max(0.5, stopped_at + NGINX_FAIL_TIMEOUT + 0.5 - time.monotonic()))
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
