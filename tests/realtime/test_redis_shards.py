"""Beyond one Redis: documents sharded over two real Redis servers, and Redis Sentinel.

Two `manage.py serve` processes get REDIS_URL listing two private Valkey servers (started as
the suite starts its own, collab/embedded.py). channels-redis puts each document's group on one
of them; presence must keep that document's keys on the same one, and sweep both. The clients
are tests/deploy/cluster.py's y-websocket peers on pycrdt.

The Sentinel test runs Debian's redis-server (a master and its replica) and redis-sentinel,
installed when missing as the Makefile installs nginx and Chromium, and kills the master while
two processes' clients type.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from asgiref.sync import async_to_sync
from channels_redis.pubsub import RedisPubSubLoopLayer

from collab.embedded import EmbeddedRedis
from editor.models import Document, Membership, Role
from editor.realtime.presence import shard_of
from editor.realtime.room import group_name
from tests import apt, live
from tests.deploy.cluster import Peer, converged, typing, until

# Short, so that a killed process's users expire within seconds (as in test_live_presence).
FAST_PRESENCE = {"PRESENCE_TTL": 4, "PRESENCE_SWEEP_INTERVAL": 1, "PRESENCE_FLUSH_INTERVAL": 0.2}
# Named here so that the keys the servers write can be looked for.
PREFIXES = {"CHANNEL_PREFIX": "collab", "PRESENCE_PREFIX": "collab:presence"}


def layer_settings(hosts: list[str]) -> dict:
    """CHANNEL_LAYERS with these shards, as settings.py makes it from REDIS_URL."""
    config = {"hosts": hosts, "prefix": PREFIXES["CHANNEL_PREFIX"]}
    return {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": config}
    }


def layer_shard(hosts: list[str], document_id: str) -> int:
    """The shard channels-redis itself picks for the document's group."""
    layer = RedisPubSubLoopLayer(hosts=hosts, prefix=PREFIXES["CHANNEL_PREFIX"])
    channel = layer._get_group_channel_name(group_name(document_id))
    return layer._shards.index(layer._get_shard(channel))


@pytest.mark.parametrize("count", [2, 3])
def test_it_puts_presence_on_the_shard_channels_redis_puts_the_group_on(settings, count):
    hosts = [f"redis://127.0.0.1:{6379 + i}/0" for i in range(count)]
    settings.CHANNEL_LAYERS = layer_settings(hosts)
    documents = [str(uuid.uuid4()) for _ in range(3000)]

    shards = [shard_of(document, count) for document in documents]

    assert shards == [layer_shard(hosts, document) for document in documents]
    for shard in range(count):  # a CRC32 range split: an even spread, give or take
        assert abs(shards.count(shard) / len(documents) - 1 / count) < 0.05


# -- two Redis servers, two processes ------------------------------------------------------------


@pytest.fixture
def two_redis() -> Iterator[list[str]]:
    servers = [EmbeddedRedis(), EmbeddedRedis()]
    urls = []
    try:
        for server in servers:
            urls.append(server.start())
        yield urls
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def sharded(transactional_db, tmp_path, two_redis, settings):
    """Two processes on both Redis servers; this process maps documents as they do."""
    settings.CHANNEL_LAYERS = layer_settings(two_redis)
    env = {"REDIS_URL": ",".join(two_redis), **PREFIXES, **FAST_PRESENCE}
    with live.LiveServers(2, tmp_path / "servers", **env) as servers:
        yield servers, [redis.Redis.from_url(url) for url in two_redis]
        live.wait_quiet_database()
        print(servers.log_tails(lines=60))


def documents_on_each_shard(owner, editor_user, per_shard: int) -> list[list[Document]]:
    """Creates documents until each of the two shards has ``per_shard`` of them."""
    found: list[list[Document]] = [[], []]
    while min(len(documents) for documents in found) < per_shard:
        document = Document.objects.create_for(owner, "Sharded")
        Membership.objects.create(document=document, user=editor_user, role=Role.EDITOR)
        found[shard_of(str(document.pk), 2)].append(document)
    return [documents[:per_shard] for documents in found]


def peer(servers: live.LiveServers, index: int, name: str, user, document, **options) -> Peer:
    url = f"{servers.ws(index)}/{document.pk}?ticket={live.ticket_for(user, document)}"
    return Peer(name, lambda: url, **options)


def group_channel(document: Document) -> bytes:
    return f"{PREFIXES['CHANNEL_PREFIX']}__group__{group_name(str(document.pk))}".encode()


def presence_key(document: Document) -> bytes:
    return f"{PREFIXES['PRESENCE_PREFIX']}:doc:{document.pk}".encode()


def deadline_documents(client: redis.Redis) -> set[str]:
    members = client.zrange(f"{PREFIXES['PRESENCE_PREFIX']}:deadlines", 0, -1)
    return {member.decode().partition("|")[0] for member in members}


def test_documents_spread_over_both_shards_and_co_editing_works_on_each(
    sharded, owner, editor_user
):
    servers, clients = sharded
    shards = documents_on_each_shard(owner, editor_user, per_shard=2)
    pairs = {
        document: (
            peer(servers, 0, f"a{i}", owner, document),
            peer(servers, 1, f"b{i}", editor_user, document),
        )
        for i, document in enumerate(shards[0] + shards[1])
    }
    everyone = [p for pair in pairs.values() for p in pair]

    async def scenario() -> None:
        for p in everyone:
            p.start()
        await until(lambda: all(p.synced.is_set() for p in everyone), 20, "everyone synced")
        # Each process's room for each document is subscribed to the group on ONE server, and
        # presence (written when a peer announces itself) sits on that server too.
        await until(
            lambda: all(clients[i].exists(presence_key(d)) for i in (0, 1) for d in shards[i]),
            10,
            "presence written",
        )
        for index, client in enumerate(clients):
            subscribers = dict(client.pubsub_numsub(*(group_channel(d) for d in pairs)))
            for document in pairs:
                mine = document in shards[index]
                assert subscribers[group_channel(document)] == (2 if mine else 0), (
                    f"shard {index}: {document.pk} has {subscribers[group_channel(document)]} "
                    "subscribed processes"
                )
                assert bool(client.exists(presence_key(document))) is mine
            assert deadline_documents(client) == {str(d.pk) for d in shards[index]}

        await typing(everyone, seconds=2.0)
        for pair in pairs.values():
            text = await converged(list(pair))
            assert len(text) == sum(len(m) for p in pair for m in p.typed)
        for p in everyone:
            await p.stop()

    async_to_sync(scenario)()
    for document, pair in pairs.items():
        live.wait_stored(document.pk, contains=[m for p in pair for m in p.typed])


def test_presence_works_and_expiry_is_announced_on_both_shards(sharded, owner, editor_user):
    servers, clients = sharded
    documents = [shard[0] for shard in documents_on_each_shard(owner, editor_user, per_shard=1)]

    async def scenario() -> None:
        doomed = [
            peer(servers, 0, f"d{i}", owner, d, reconnect=False) for i, d in enumerate(documents)
        ]
        for p in doomed:
            p.start()
        await until(lambda: all(p.synced.is_set() for p in doomed), 20, "doomed synced")
        await until(
            lambda: all(clients[i].exists(presence_key(d)) for i, d in enumerate(documents)),
            10,
            "presence written",
        )
        # Late joiners on the other process see the users from Redis, each on its own shard.
        watchers = [peer(servers, 1, f"w{i}", editor_user, d) for i, d in enumerate(documents)]
        for p in watchers:
            p.start()
        for watcher, gone in zip(watchers, doomed, strict=True):
            await until(
                lambda w=watcher, g=gone: w.awareness.get(g.client_id) is not None, 10, "seen"
            )

        async def renew() -> None:  # as browsers do, here well within the short TTL
            while True:
                await asyncio.sleep(1)
                for watcher in watchers:
                    await watcher.announce()

        renewing = asyncio.ensure_future(renew())
        servers.kill(0)  # SIGKILL: nobody says goodbye; only the sweep can announce them

        ttl_plus_sweep = FAST_PRESENCE["PRESENCE_TTL"] + FAST_PRESENCE["PRESENCE_SWEEP_INTERVAL"]
        for watcher, gone in zip(watchers, doomed, strict=True):
            await until(
                lambda w=watcher, g=gone: g.client_id in w.removed,
                ttl_plus_sweep + 5,
                f"{watcher.name} told that {gone.name} left",
            )
        for index, (document, gone) in enumerate(zip(documents, doomed, strict=True)):
            assert str(gone.client_id).encode() not in clients[index].hgetall(
                presence_key(document)
            )
            members = clients[index].zrange(f"{PREFIXES['PRESENCE_PREFIX']}:deadlines", 0, -1)
            assert f"{document.pk}|{gone.client_id}".encode() not in members
        renewing.cancel()
        for p in watchers + doomed:
            await p.stop()

    async_to_sync(scenario)()
    log = servers.log(1)
    for document in documents:
        assert f"presence of {document.pk}: 1 client(s) expired" in log


def test_healthz_checks_every_shard(client, db, settings, two_redis):
    settings.CHANNEL_LAYERS = layer_settings(two_redis)
    assert client.get("/healthz").status_code == 200

    down = f"redis://127.0.0.1:{live.free_port()}/0"  # nothing listens there
    settings.CHANNEL_LAYERS = layer_settings([two_redis[0], down])
    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "error"


# -- Redis Sentinel ------------------------------------------------------------------------------

SENTINEL_HINT = (
    "the Sentinel test runs Debian's redis-server and redis-sentinel "
    "(apt-get install redis-server redis-sentinel); as root they are installed when missing"
)


def debian_redis() -> tuple[str, str]:
    """Paths of redis-server and redis-sentinel, installed with apt-get when missing (as root)."""
    wanted = ("redis-server", "redis-sentinel")
    missing = not all(shutil.which(name) for name in wanted)
    if missing and apt.can_install():
        apt.install(list(wanted), timeout=300)
    server, sentinel = (shutil.which(name) for name in wanted)
    if server is None or sentinel is None:
        pytest.fail(SENTINEL_HINT, pytrace=False)
    return server, sentinel


class SentinelSetup:
    """A master, its replica and one sentinel (quorum 1) on free loopback ports, under ``root``.

    The sentinel calls the master down after 1 s of silence and promotes the replica.
    """

    MASTER = "collab"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server, self.sentinel_binary = debian_redis()
        self.ports = {name: live.free_port() for name in ("master", "replica", "sentinel")}
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, command: list[str]) -> None:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "log", "wb") as out:
            self.processes[name] = subprocess.Popen(
                command, cwd=directory, stdout=out, stderr=subprocess.STDOUT
            )

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], socket_timeout=2)

    def start(self) -> SentinelSetup:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", "."]
        self._start("master", [self.server, "--port", str(self.ports["master"]), *common])
        replicaof = ["--replicaof", "127.0.0.1", str(self.ports["master"])]
        self._start(
            "replica", [self.server, "--port", str(self.ports["replica"]), *common, *replicaof]
        )
        (self.root / "sentinel").mkdir(parents=True, exist_ok=True)
        config = self.root / "sentinel" / "sentinel.conf"  # the sentinel rewrites it: its own
        config.write_text(
            f"port {self.ports['sentinel']}\nbind 127.0.0.1\ndir .\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.ports['master']} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
            f"sentinel failover-timeout {self.MASTER} 10000\n"
        )
        self._start("sentinel", [self.sentinel_binary, str(config)])
        # Ready when the replica is in sync and the sentinel knows it (it learns of replicas
        # from the master's INFO, every 10 s), so that a failover has somewhere to go.
        deadline = time.monotonic() + 30
        while not self._ready():
            if time.monotonic() > deadline:
                raise AssertionError("the sentinel set-up did not come up:\n" + self.logs())
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            replication = self.client("replica").info("replication")
            replicas = self.client("sentinel").sentinel_slaves(self.MASTER)
        except redis.RedisError:
            return False
        return replication.get("master_link_status") == "up" and any(
            int(r["port"]) == self.ports["replica"] and "s_down" not in r["flags"] for r in replicas
        )

    def master_port(self) -> int:
        host, port = self.client("sentinel").sentinel_get_master_addr_by_name(self.MASTER)
        return int(port)

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n" + (self.root / name / "log").read_text(errors="replace")[-3000:]
            for name in self.processes
        )


@pytest.fixture
def sentinel(tmp_path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "redis")
    try:
        yield setup.start()
    finally:
        setup.stop()
        print(setup.logs())


def test_collab_carries_on_when_sentinel_fails_the_master_over(
    transactional_db, tmp_path, sentinel, document, owner, editor_user, viewer
):
    env = {
        "REDIS_URL": "",
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel.ports['sentinel']}",
        "REDIS_SENTINEL_MASTER": sentinel.MASTER,
        **PREFIXES,
        **FAST_PRESENCE,
    }
    with live.LiveServers(2, tmp_path / "servers", **env) as servers:
        alice = peer(servers, 0, "alice", owner, document)
        bob = peer(servers, 1, "bob", editor_user, document)

        async def scenario() -> None:
            for p in (alice, bob):
                p.start()
            await until(lambda: alice.synced.is_set() and bob.synced.is_set(), 20, "synced")
            await until(lambda: alice.client_id in bob.awareness, 10, "bob sees alice")
            await typing([alice, bob], seconds=1.0)
            # Mid-edit: the master dies; both keep typing through the failover.
            killed = asyncio.get_running_loop().run_in_executor(None, sentinel.kill, "master")
            await typing([alice, bob], seconds=1.0)
            await killed
            started = time.monotonic()
            promoted = asyncio.get_running_loop().run_in_executor(
                None, wait_for_promotion, sentinel
            )
            while not promoted.done():
                await typing([alice, bob], seconds=0.5)
            await promoted
            print(f"failover took {time.monotonic() - started:.1f} s after the kill")
            await typing([alice, bob], seconds=2.0)
            await converged([alice, bob], timeout=30)

            # Carries on through Redis again: both processes subscribed to the group on the new
            # master, a fresh marker crosses by it (well inside the catch-up interval), and a
            # late joiner sees presence.
            channel = f"{PREFIXES['CHANNEL_PREFIX']}__group__{group_name(str(document.pk))}"
            new_master = sentinel.client("replica")
            await until(lambda: new_master.pubsub_numsub(channel)[0][1] == 2, 10, "resubscribed")
            for _ in range(5):
                await alice.type()
                await until(lambda: alice.typed[-1] in str(bob), 2, "bob gets alice's marker")
            await alice.announce()  # her renewal (the short TTL let the first one lapse)
            await until(lambda: bob.awareness.get(alice.client_id) is not None, 5, "renewed")
            carol = peer(servers, 1, "carol", viewer, document)
            carol.start()
            await until(lambda: alice.client_id in carol.awareness, 10, "carol sees alice")
            for p in (alice, bob, carol):
                await p.stop()

        try:
            async_to_sync(scenario)()
            for index in (0, 1):
                status, body = live._get(servers.http(index) + "/healthz")
                assert status == 200, body
            live.wait_stored(document.pk, contains=alice.typed + bob.typed)
        finally:
            live.wait_quiet_database()
            print(servers.log_tails(lines=80))


def wait_for_promotion(setup: SentinelSetup, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if setup.master_port() == setup.ports["replica"]:
                role = setup.client("replica").info("replication")["role"]
                if role == "master":
                    return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise AssertionError("the sentinel did not promote the replica:\n" + setup.logs())
