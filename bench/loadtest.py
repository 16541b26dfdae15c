"""The load-test engine: y-websocket clients over real sockets, four modes, JSON results.

Driven by ``manage.py loadtest`` (which creates the user, documents and tickets for collab) and
by ``make bench`` (bench/run.py, which runs the same loads against collab and the reference Node
server). It speaks only the wire protocol (editor/realtime/protocol.py), so it works unchanged
against any y-websocket server; it imports no Django.

How delivery is measured: each writer pre-computes its updates with pycrdt, every one inserting a
unique marker ``[writer:seq]`` into the Y.Text "codemirror", and notes the monotonic time just
before sending it. Readers never decode Yjs: they look for markers in the bytes of the
sync-update frames they receive (a Yjs update carries inserted text verbatim, so this holds even
for a server that re-encodes updates, as the reference does). Latency is receive time minus send
time, in one process and one clock. Lost = expected deliveries that never arrived.

Modes:
- ``fanout``: per document 1 writer and N readers; latency percentiles, delivered/expected.
- ``throughput``: D documents x W writers at R updates/s each; every writer reads the others.
- ``idle``: C connections held for T s; server RSS per connection; how many are still open.
- ``joinstorm``: a document seeded to S bytes, then C clients join at once; time to synced.

Everything is bounded: every wait has a timeout and every loop a count. Only loopback targets
are allowed (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import functools
import hashlib
import ipaddress
import json
import math
import os
import re
import resource
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from editor.realtime import protocol

MODES = ("fanout", "throughput", "idle", "joinstorm", "flood", "bigupdate")

SYNC_STEP2_PREFIX = b"\x00\x01"
SYNC_UPDATE_PREFIX = b"\x00\x02"
# Sync step 1 with an empty state vector (a client that holds nothing), and the empty step 2
# the stock client answers the server's step 1 with.
EMPTY_STEP1 = protocol.sync_step1(Doc())
EMPTY_STEP2 = b"\x00\x01\x02\x00\x00"
MARKER = re.compile(rb"\[(\d+):(\d+)\]")
# Yjs updates larger than this are split when seeding (collab refuses frames over 1 MiB).
SEED_CHUNK = 256 * 1024


# -- targets -------------------------------------------------------------------------------------


def ensure_loopback(url: str) -> None:
    """Load tests may only reach this machine (the workplace's network rule)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"{url}: load tests target loopback addresses only (127.0.0.0/8, ::1)")


class HashRing:
    """Consistent hashing of a document path onto server URLs, as nginx's ``hash ...
    consistent`` does: every client of one document reaches the same process."""

    def __init__(self, urls: Sequence[str], replicas: int = 160) -> None:
        self.urls = list(urls)
        points = []
        for url in self.urls:
            for index in range(replicas):
                points.append((_hash(f"{url}-{index}"), url))
        points.sort()
        self._keys = [key for key, _ in points]
        self._urls = [url for _, url in points]

    def pick(self, path: str) -> str:
        if len(self.urls) == 1:
            return self.urls[0]
        index = bisect.bisect(self._keys, _hash(path)) % len(self._keys)
        return self._urls[index]


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.md5(value.encode()).digest()[:8], "big")


@dataclass
class Target:
    """Where clients connect: base URLs (one per server process) to which ``/<document>`` is
    appended, and how a client gets a ticket (None: the server wants none, like the reference).
    """

    urls: list[str]
    ticket: Callable[[str], str] | None = None
    # Tickets of a second person with access, for a client that must not share the first one's
    # per-user limits (the flooder).
    other_ticket: Callable[[str], str] | None = None
    server_pids: list[int] = field(default_factory=list)
    name: str = "target"
    # Session cookies ("sessionid=…"), one per person: clients connect as browsers do,
    # without tickets, each with the next person's cookie in turn.
    cookies: Sequence[str] = ()

    def __post_init__(self) -> None:
        for url in self.urls:
            ensure_loopback(url)
        self.ring = HashRing([url.rstrip("/") for url in self.urls])
        self._turn = 0

    def url_for(self, document: str, other: bool = False) -> str:
        base = self.ring.pick(f"/{document}")
        url = f"{base}/{document}"
        ticket = self.other_ticket if other and self.other_ticket else self.ticket
        if ticket is not None and not self.cookies:
            url += "?ticket=" + ticket(document)
        return url

    def headers(self) -> dict[str, str] | None:
        """A browser's headers for one more client (the next person's cookie), or None."""
        if not self.cookies:
            return None
        cookie = self.cookies[self._turn % len(self.cookies)]
        self._turn += 1
        return {"Cookie": cookie}


# -- one client ----------------------------------------------------------------------------------


class Client:
    """One y-websocket connection: handshake, then a reader that counts markers."""

    def __init__(self, url: str, run: Run, writer_id: int | None = None) -> None:
        self.url = url
        self.run = run
        self.writer_id = writer_id
        self.ws: ClientConnection | None = None
        self.synced = asyncio.Event()
        self.step2_size = 0
        self.closed_code: int | None = None
        self.refusal = ""
        self._reader: asyncio.Task | None = None
        # How long its open took, in two parts (ns): from the TCP connect to the server's 101
        # read, and from there to the sync step 2 read (the first round trip on the socket).
        self.handshake_ns = 0
        self.sync_ns = 0
        self.synced_at_ns = 0

    async def open(self, timeout: float) -> None:
        started = time.perf_counter_ns()
        self.ws = await asyncio.wait_for(
            connect(
                self.url,
                compression=None,  # neither server negotiates it by default; keep it equal
                max_size=None,
                max_queue=None,
                ping_interval=None,  # the servers ping; pongs are answered automatically
                open_timeout=timeout,
                close_timeout=2,
                user_agent_header=None,
                # Loopback: no proxy. The default (True) looks the proxy up in the
                # environment on every connect, a sixth of this client's time per socket.
                proxy=None,
                **self._handshake(),
            ),
            timeout,
        )
        upgraded = time.perf_counter_ns()
        self.handshake_ns = upgraded - started
        self._reader = asyncio.ensure_future(self._read())
        await self.ws.send(EMPTY_STEP1)
        synced = asyncio.ensure_future(self.synced.wait())
        await asyncio.wait({synced, self._reader}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not self.synced.is_set():
            synced.cancel()
            if self.closed_code is not None:
                raise ConnectionError(f"closed {self.closed_code} before sync: {self.refusal}")
            raise TimeoutError(f"no sync step 2 within {timeout} s")
        self.sync_ns = self.synced_at_ns - upgraded

    def _handshake(self) -> dict[str, Any]:
        """A browser's handshake when the run has a session cookie: the cookie, and the Origin
        of the page (the server refuses cookie sockets from other origins)."""
        headers = self.run.headers() if self.run.headers else None
        if not headers:
            return {}
        netloc = urllib.parse.urlsplit(self.url).netloc
        return {"additional_headers": headers, "origin": f"http://{netloc}"}

    async def _read(self) -> None:
        ws = self.ws
        run = self.run
        try:
            async for frame in ws:
                now = time.perf_counter_ns()
                if not isinstance(frame, bytes):
                    continue
                head = frame[:2]
                if head == SYNC_UPDATE_PREFIX:
                    run.on_update(self, frame, now)
                elif head == SYNC_STEP2_PREFIX:
                    self.step2_size = len(frame)
                    if not self.synced.is_set():
                        self.synced_at_ns = now
                    self.synced.set()
                elif head == b"\x00\x00":
                    await ws.send(EMPTY_STEP2)  # answer the server's step 1, as Yjs does
                elif head[:1] == b"\x02":
                    self.refusal = frame[3:].decode(errors="replace")  # [2, 0, reason]
        except ConnectionClosed:
            pass
        finally:
            self.closed_code = ws.close_code if ws.close_code is not None else -1

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.closed_code is None

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(TimeoutError, OSError, ConnectionClosed):
                await asyncio.wait_for(self.ws.close(), 3)
        if self._reader is not None:
            self._reader.cancel()


class Run:
    """The shared bookkeeping of one mode's run: what was sent when, what arrived."""

    def __init__(self, headers: Callable[[], dict[str, str] | None] | None = None) -> None:
        # Each handshake's headers (a session cookie, with its page's Origin), asked per client.
        self.headers = headers
        self.sent: dict[tuple[int, int], int] = {}
        self.latencies_ns: list[int] = []
        self.delivered = 0
        self.duplicates = 0
        self.late = 0  # deliveries of markers whose send time is unknown (another run's)
        self._seen: set[tuple[int, int, int]] = set()

    def on_update(self, client: Client, frame: bytes, now: int) -> None:
        for match in MARKER.finditer(frame):
            key = (int(match[1]), int(match[2]))
            if key[0] == client.writer_id:
                continue  # the reference echoes a writer's own updates; they are not deliveries
            sent = self.sent.get(key)
            if sent is None:
                self.late += 1
                continue
            seen = (id(client), *key)
            if seen in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(seen)
            self.delivered += 1
            self.latencies_ns.append(now - sent)


def make_updates(writer_id: int, count: int, pad: int = 0) -> list[bytes]:
    """``count`` sync-update frames, each inserting ``[writer_id:seq]`` at the end of the text
    (plus ``pad`` filler characters), as a real editor's keystrokes would arrive."""
    doc = Doc()
    text = doc.get("codemirror", type=Text)
    filler = "x" * pad
    frames = []
    for seq in range(count):
        before = doc.get_state()
        text.insert(len(text), f"[{writer_id}:{seq}]{filler}")
        frames.append(protocol.sync_update(doc.get_update(before)))
    return frames


# -- measurements --------------------------------------------------------------------------------


def percentiles(values_ns: list[int]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds (nearest-rank), None when there are no samples."""
    if not values_ns:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values_ns)

    def rank(q: float) -> float:
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) - 1e-9) - 1))
        return ordered[index] / 1e6

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1] / 1e6,
        "mean": sum(ordered) / len(ordered) / 1e6,
    }


def listening_pids(urls: Sequence[str]) -> list[int]:
    """The processes listening on the targets' ports (daphne, node), for RSS readings."""
    try:
        import psutil
    except ImportError:
        return []
    ports = {urlsplit(url).port for url in urls}
    pids = set()
    try:
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port in ports and conn.pid:
                pids.add(conn.pid)
    except (psutil.AccessDenied, OSError):
        return []
    return sorted(pids)


def rss_bytes(pids: Sequence[int]) -> int | None:
    """Summed resident memory of the processes, from /proc (psutil not needed)."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            return None
    return total


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """Summed CPU time (user and system) the processes have used, from /proc."""
    if not pids:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def run_queue_seconds(pids: Sequence[int]) -> float | None:
    """Summed time the processes' threads were ready to run and waited for a core (the kernel's
    run queue), from each thread's /proc/<pid>/task/<tid>/schedstat. The servers share the
    machine's cores with this client and the database: a server that waits there is late by as
    much, which its CPU time does not show (docs/BENCHMARKS.md, "What holds the rest back")."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                    total += int(stat.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    return total / 1e9


def _per(spent: float | None, since: float | None, count: int) -> float | None:
    """Milliseconds of ``spent - since`` per one of ``count``, or None when not measured."""
    if spent is None or since is None or not count:
        return None
    return round(1000 * (spent - since) / count, 3)


def database_cpu() -> dict[int, float]:
    """CPU time (user and system) of each PostgreSQL process on this machine, from /proc: the
    database shares the cores with the servers and this client. A backend that exits inside a
    window takes its time with it; the servers' connections live through a run."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, tail = stat.read().rsplit(")", 1)
        except OSError:  # gone, or not ours to read
            continue
        if head.partition("(")[2] != "postgres":
            continue
        fields = tail.split()
        spent[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    return spent


def database_cpu_since(before: dict[int, float]) -> float:
    """What PostgreSQL's processes spent since ``before`` (``database_cpu``), in seconds."""
    return sum(now - before.get(pid, 0.0) for pid, now in database_cpu().items())


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def warm_heap(size: int) -> bool:
    """Makes the next ``size`` bytes this process allocates for received messages cost the
    same however the server's bytes arrive; says whether it could (glibc only).

    Fifty 1 MB answers arriving at once make the client hold fifty growing buffers at the same
    moment, and the peak is memory the process has never touched: its first use costs a page
    fault per 4 KB page, paid while the clock runs. Answers that arrive one after another reuse
    the memory the previous ones freed. So the client's own cost of reading depended on how the
    server spread its sends (2026-12-04: 163 ms in ``data_received`` for one server's storm, 34
    ms for the other's, the same 50 MB in the same ~400 reads), which is not what a join storm
    measures: each browser reads its own answer in a process of its own. Here, blocks of up to
    32 MB stay in the heap (no ``mmap`` of their own) and freed memory is kept (no trim), then
    ``size`` bytes are touched once and freed, before the clock starts."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False  # not glibc: musl, macOS and Windows have no mallopt
    if not (mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 2**30)):
        return False
    step = 1024 * 1024
    blocks = [bytearray(step) for _ in range(max(1, size // step))]  # zeroed: every page touched
    del blocks
    return True


class CpuMeter:
    """This process's CPU use over an interval, as a percentage of one core."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.cpu = time.process_time()

    def percent(self) -> float:
        wall = time.monotonic() - self.wall
        return round(100 * (time.process_time() - self.cpu) / wall, 1) if wall > 0 else 0.0


class Progress:
    """One line to stderr every ``every`` seconds on long runs."""

    def __init__(self, mode: str, enabled: bool = True, every: float = 2.0) -> None:
        self.mode = mode
        self.enabled = enabled
        self.every = every
        self._last = 0.0

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= self.every):
            self._last = now
            print(f"  [{self.mode}] {message}", file=sys.stderr, flush=True)


def raise_nofile_limit() -> int:
    """Lifts the open-files limit to its hard maximum (5,000 sockets need more than 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# -- connecting many -----------------------------------------------------------------------------


async def open_clients(
    specs: Sequence[tuple[str | Callable[[], str], int | None]],
    run: Run,
    concurrency: int,
    timeout: float,
    progress: Progress,
    what: str = "connected",
) -> tuple[list[Client], list[str]]:
    """Opens and syncs one client per (url, writer id), ``concurrency`` at a time. Returns the
    clients that synced and the errors of those that did not. A url may be a function that
    makes it: a ticket is then signed when its client connects, not minutes before (10,000
    connects at a slow rate outlast a ticket's 300 s)."""
    semaphore = asyncio.Semaphore(concurrency)
    clients: list[Client] = []
    errors: list[str] = []

    async def one(url: str | Callable[[], str], writer_id: int | None) -> None:
        async with semaphore:
            client = Client(url if isinstance(url, str) else url(), run, writer_id)
            try:
                await client.open(timeout)
            except (OSError, TimeoutError, ConnectionClosed, Exception) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await client.close()
                return
            clients.append(client)
            progress(f"{what} {len(clients)}/{len(specs)} ({len(errors)} failed)")

    await asyncio.gather(*(one(url, writer_id) for url, writer_id in specs))
    progress(f"{what} {len(clients)}/{len(specs)} ({len(errors)} failed)", force=True)
    return clients, errors


async def close_all(clients: Sequence[Client]) -> None:
    for start in range(0, len(clients), 500):
        await asyncio.gather(*(client.close() for client in clients[start : start + 500]))


async def wait_delivered(run: Run, expected: int, timeout: float, progress: Progress) -> None:
    deadline = time.monotonic() + timeout
    while run.delivered < expected and time.monotonic() < deadline:
        progress(f"draining: delivered {run.delivered}/{expected}")
        await asyncio.sleep(0.05)


async def send_paced(
    client: Client, frames: Sequence[bytes], rate: float, run: Run, writer_id: int
) -> float:
    """Sends frames at ``rate`` per second (catching up without skipping if late); records each
    send time; returns the achieved rate."""
    interval = 1.0 / rate
    start = time.monotonic()
    for seq, frame in enumerate(frames):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        run.sent[(writer_id, seq)] = time.perf_counter_ns()
        await client.send(frame)
    elapsed = time.monotonic() - start
    return len(frames) / elapsed if elapsed > 0 else float("inf")


def delivery(run: Run, expected: int) -> dict[str, Any]:
    return {
        "expected": expected,
        "delivered": run.delivered,
        "lost": expected - run.delivered,
        "duplicates": run.duplicates,
    }


# -- modes ---------------------------------------------------------------------------------------


async def fanout(
    target: Target,
    documents: Sequence[str],
    readers: int,
    updates: int,
    rate: float,
    concurrency: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """Per document one writer and ``readers`` readers; the writer sends ``updates`` at
    ``rate``/s; every reader must receive every update."""
    run = Run()
    specs = [(target.url_for(doc), None) for doc in documents for _ in range(readers)]
    readers_open, errors = await open_clients(
        specs, run, concurrency, timeout, progress, "readers synced"
    )
    writers_open, writer_errors = await open_clients(
        [(target.url_for(doc), index) for index, doc in enumerate(documents)],
        run,
        concurrency,
        timeout,
        progress,
        "writers synced",
    )
    errors += writer_errors
    expected = len(readers_open) * updates if len(writers_open) == len(documents) else 0
    frames = {index: make_updates(index, updates) for index in range(len(writers_open))}
    await asyncio.sleep(0.5)  # let joins settle (presence, room loads) before timing
    pids = target.server_pids or listening_pids(target.urls)
    cpu = CpuMeter()
    server_cpu = cpu_seconds(pids)
    server_waited = run_queue_seconds(pids)
    client_waited = run_queue_seconds([os.getpid()])
    started = time.monotonic()

    async def write(client: Client) -> float:
        return await send_paced(client, frames[client.writer_id], rate, run, client.writer_id)

    ticker = asyncio.ensure_future(_tick(progress, lambda: f"delivered {run.delivered}/{expected}"))
    rates = await asyncio.gather(*(write(client) for client in writers_open))
    await wait_delivered(run, expected, timeout, progress)
    ticker.cancel()
    elapsed = time.monotonic() - started
    client_cpu = cpu.percent()
    sent = len(writers_open) * updates
    server_cpu_ms = _per(cpu_seconds(pids), server_cpu, sent)
    server_wait_ms = _per(run_queue_seconds(pids), server_waited, sent)
    client_wait_ms = _per(run_queue_seconds([os.getpid()]), client_waited, sent)
    await close_all(readers_open + writers_open)
    return {
        "documents": len(documents),
        "readers_per_document": readers,
        "updates_per_writer": updates,
        "rate_per_writer": rate,
        "achieved_rate_per_writer": round(min(rates), 1) if rates else 0,
        "connected": len(readers_open) + len(writers_open),
        "connect_errors": errors[:10],
        "connect_failures": len(errors),
        **delivery(run, expected),
        "latency_ms": percentiles(run.latencies_ns),
        "duration_s": round(elapsed, 2),
        "client_cpu_percent": client_cpu,
        # The servers' CPU (every process, every thread: the database writes' Python too) and
        # their time ready to run but without a core, per update sent; the load client's wait.
        "server_cpu_ms_per_update": server_cpu_ms,
        "server_wait_ms_per_update": server_wait_ms,
        "client_wait_ms_per_update": client_wait_ms,
    }


async def _flood(
    target: Target, document: str, rate: float, stop: asyncio.Event, timeout: float
) -> dict[str, Any]:
    """One client sends updates to ``document`` at ``rate`` per second until ``stop``, as an
    abusive or broken client would: when the server closes it, it reconnects and goes on."""
    run = Run()
    frames = make_updates(10_000, 2_000)
    sent = connects = 0
    closes: dict[str, int] = {}
    interval = 0.01  # a batch every 10 ms: the event loop's timers are no finer than ~1 ms
    per_batch = max(1, round(rate * interval))
    while not stop.is_set():
        client = Client(target.url_for(document, other=True), run, writer_id=10_000)
        try:
            await client.open(timeout)
        except Exception as exc:  # refused while reconnecting: count it, back off a little
            key = str(client.closed_code or type(exc).__name__)
            closes[key] = closes.get(key, 0) + 1
            await client.close()
            await asyncio.sleep(0.1)
            continue
        connects += 1
        started = time.monotonic()
        batch = 0
        try:
            while not stop.is_set() and client.is_open:
                for _ in range(per_batch):
                    await client.send(frames[sent % len(frames)])
                    sent += 1
                batch += 1
                delay = started + batch * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        except (ConnectionClosed, OSError):
            pass
        if not client.is_open:
            await asyncio.sleep(0.05)  # let the reader record the close code
            key = str(client.closed_code)
            closes[key] = closes.get(key, 0) + 1
        await client.close()
    return {"sent": sent, "connects": connects, "closes_by_code": closes}


def same_process_pair(target: Target, documents: Sequence[str]) -> tuple[str, str] | None:
    """Two documents that the same server process serves (a consistent hash decides which
    process serves one), the first such in ``documents``' order; None if there are none. Eight
    documents on up to seven processes always hold such a pair; asking for a partner of the
    first document alone failed a `make bench` run (0.6 % of 2,000 simulated rings of two
    processes: the bench's ports, so its ring, change every run)."""
    seen: dict[str, str] = {}
    for document in documents:
        base = target.ring.pick(f"/{document}")
        if base in seen:
            return seen[base], document
        seen[base] = document
    return None


async def flood(
    target: Target,
    documents: Sequence[str],
    readers: int,
    updates: int,
    rate: float,
    flood_rate: float,
    concurrency: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """Fan-out on one document (1 writer, ``readers`` readers, ``updates`` at ``rate``/s), first
    alone, then while one client floods ANOTHER document served by the same process with
    ``flood_rate`` updates/s (reconnecting whenever it is closed). What one abusive client
    costs everyone else: the latency ratio flood / quiet."""
    pair = same_process_pair(target, documents)
    if pair is None:
        return {"error": "no two documents on the same process; pass more --documents"}
    quiet_doc, noisy_doc = pair
    phases: dict[str, Any] = {}
    for phase in ("quiet", "flood"):
        stop = asyncio.Event()
        flooder = None
        if phase == "flood":
            flooder = asyncio.ensure_future(_flood(target, noisy_doc, flood_rate, stop, timeout))
            await asyncio.sleep(1.0)  # the flood is on before timing starts
        result = await fanout(
            target, [quiet_doc], readers, updates, rate, concurrency, timeout, progress
        )
        stop.set()
        if flooder is not None:
            result["flooder"] = await flooder
        phases[phase] = result
        progress(f"{phase}: p99 {result['latency_ms']['p99']} ms", force=True)
    quiet, flooded = phases["quiet"]["latency_ms"], phases["flood"]["latency_ms"]
    return {
        **phases,
        "flood_rate": flood_rate,
        "latency_ms_quiet": quiet,
        "latency_ms_flood": flooded,
        "p50_ratio": _ratio(flooded["p50"], quiet["p50"]),
        "p99_ratio": _ratio(flooded["p99"], quiet["p99"]),
        "lost": phases["quiet"]["lost"] + phases["flood"]["lost"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


async def throughput(
    target: Target,
    documents: Sequence[str],
    writers: int,
    rate: float,
    duration: float,
    concurrency: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """D documents x W writers, each sending ``rate`` updates/s for ``duration`` s; each
    writer must receive every other writer's updates."""
    run = Run()
    updates = max(1, int(rate * duration))
    specs = []
    for doc_index, doc in enumerate(documents):
        for w in range(writers):
            specs.append((target.url_for(doc), doc_index * writers + w))
    clients, errors = await open_clients(specs, run, concurrency, timeout, progress, "synced")
    per_doc: dict[int, int] = {}
    for client in clients:
        per_doc[client.writer_id // writers] = per_doc.get(client.writer_id // writers, 0) + 1
    expected = sum(n * (n - 1) * updates for n in per_doc.values())
    frames = {client.writer_id: make_updates(client.writer_id, updates) for client in clients}
    await asyncio.sleep(0.5)
    cpu = CpuMeter()
    started = time.monotonic()
    ticker = asyncio.ensure_future(_tick(progress, lambda: f"delivered {run.delivered}/{expected}"))
    rates = await asyncio.gather(
        *(send_paced(c, frames[c.writer_id], rate, run, c.writer_id) for c in clients)
    )
    sending = time.monotonic() - started
    await wait_delivered(run, expected, timeout, progress)
    ticker.cancel()
    elapsed = time.monotonic() - started
    client_cpu = cpu.percent()
    await close_all(clients)
    sent = len(clients) * updates
    return {
        "documents": len(documents),
        "writers_per_document": writers,
        "rate_per_writer": rate,
        "duration_s": duration,
        "connected": len(clients),
        "connect_failures": len(errors),
        "connect_errors": errors[:10],
        "updates_sent": sent,
        "sent_per_s": round(sent / sending, 1) if sending > 0 else None,
        "achieved_rate_per_writer_min": round(min(rates), 1) if rates else 0,
        **delivery(run, expected),
        "delivered_per_s": round(run.delivered / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": percentiles(run.latencies_ns),
        "client_cpu_percent": client_cpu,
    }


async def _probe(
    url: str,
    stop: asyncio.Event,
    interval: float = 0.1,
    headers: dict[str, str] | None = None,
    ready: Callable[[], None] | None = None,
) -> list[tuple[float, int]]:
    """Round trips of a sync step 1 on one more socket, every ``interval`` until ``stop``: how
    long the server keeps a client waiting while it holds the others (its longest event-loop
    stall, as a client sees it: a garbage collection, a burst of pings). Each sample is (when
    it was sent, wall clock; its round trip, ns)."""
    samples: list[tuple[float, int]] = []
    extra: dict[str, Any] = {}
    if headers:
        extra = {
            "additional_headers": headers,
            "origin": f"http://{urllib.parse.urlsplit(url).netloc}",
        }
    async with connect(
        url, compression=None, max_size=None, ping_interval=None, proxy=None, **extra
    ) as ws:
        await ws.send(EMPTY_STEP1)
        while (await ws.recv())[:2] != SYNC_STEP2_PREFIX:
            pass
        if ready is not None:
            ready()
        while not stop.is_set():
            sent_at = time.time()
            started = time.perf_counter_ns()
            await ws.send(EMPTY_STEP1)
            while (frame := await ws.recv())[:2] != SYNC_STEP2_PREFIX:
                if frame[:2] == b"\x00\x00":
                    await ws.send(EMPTY_STEP2)
            samples.append((sent_at, time.perf_counter_ns() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return samples


class _ProbeApart:
    """``_probe`` in a process of its own (``python -m bench.loadtest --probe``), so that its
    round trips time the server and not this client: in this process a round trip also waited
    for whatever the client did meanwhile, its own full collections (62–173 ms with 5,000
    sockets' objects, docs/BENCHMARKS.md), a 16 MB update read five times."""

    def __init__(self, child: asyncio.subprocess.Process | None, error: str | None) -> None:
        self._child = child
        self._error = error

    @classmethod
    async def start(
        cls, url: str, interval: float, headers: dict[str, str] | None, timeout: float
    ) -> _ProbeApart:
        """Returns once the probe's socket has synced; a probe that could not start says why
        when stopped (``samples``), as a probe that fails later does."""
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadtest",
            "--probe",
            json.dumps({"url": url, "interval": interval, "headers": headers}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert child.stdout is not None
        try:
            line = await asyncio.wait_for(child.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if line != b"ready\n":
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            err = (await child.communicate())[1].decode(errors="replace").strip()
            return cls(None, err.splitlines()[-1] if err else "the probe did not start")
        return cls(child, None)

    async def samples(self) -> list[tuple[float, int]]:
        """Stops the probe: its samples, (when sent, wall clock; round trip, ns) each."""
        if self._child is None:
            raise RuntimeError(self._error)
        assert self._child.stdin is not None
        self._child.stdin.close()  # the probe's stop
        try:
            out, err = await self._child.communicate()
        except BaseException:
            # The caller gave up waiting (its timeout, its cancellation): a probe still running
            # would go on loading the machine through the next mode's figures.
            if self._child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._child.kill()
                await asyncio.shield(self._child.wait())
            raise
        if self._child.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(lines[-1] if lines else "the probe died")
        return [(sent_at, rtt) for sent_at, rtt in json.loads(out)]


def _probe_alone(options: dict[str, Any]) -> None:
    """The probe's process: ``_probe`` until its stdin closes, then its samples as JSON."""

    def ready() -> None:
        print("ready", flush=True)

    async def main() -> list[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def wait_for_the_end() -> None:
            while os.read(0, 65536):  # until end of file: the bench closed it
                pass
            loop.call_soon_threadsafe(stop.set)

        # A daemon thread: a probe that failed exits at once, without waiting for it.
        threading.Thread(target=wait_for_the_end, daemon=True).start()
        return await _probe(
            options["url"], stop, options["interval"], options["headers"], ready=ready
        )

    try:  # the event loop the load client runs on (``execute``)
        import uvloop
    except ImportError:
        uvloop = None
    json.dump(uvloop.run(main()) if uvloop is not None else asyncio.run(main()), sys.stdout)


def _probe_max(samples: list[tuple[float, int]], window: tuple[float, float]) -> float | None:
    """The longest probe round trip (ms) sent within ``window`` (wall clock)."""
    inside = [rtt for sent_at, rtt in samples if window[0] <= sent_at <= window[1]]
    return round(max(inside) / 1e6, 2) if inside else None


async def idle(
    target: Target,
    documents: Sequence[str],
    connections: int,
    hold: float,
    concurrency: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """Opens ``connections`` synced connections spread over the documents, holds them ``hold``
    seconds, and reads the servers' RSS before and after."""
    run = Run(target.headers)
    pids = target.server_pids or listening_pids(target.urls)
    # Warm-up, not counted: one connection per document, held to the end. The first
    # connections of a fresh process import and allocate for good, and each document's own
    # state (a room: its Doc, its group subscription) is a per-document cost, not a
    # per-connection one.
    warm, _ = await open_clients(
        [(target.url_for(doc), None) for doc in documents],
        run,
        concurrency,
        timeout,
        Progress("idle", enabled=False),
    )
    await asyncio.sleep(2)
    before = rss_bytes(pids)
    # One more socket probes the server from here to the end of the hold: its round trips
    # while the others connect, and while they are held.
    probe = await _ProbeApart.start(target.url_for(documents[0]), 0.1, target.headers(), timeout)
    await asyncio.sleep(0.5)
    connect_window = [time.time(), 0.0]
    started = time.monotonic()
    # CPU per connect, the servers' and this client's: both share the machine's cores, so
    # what one spends per socket the other cannot (docs/BENCHMARKS.md).
    server_cpu = cpu_seconds(pids)
    client_cpu = time.process_time()
    server_waited, client_waited = run_queue_seconds(pids), run_queue_seconds([os.getpid()])
    database = database_cpu()
    specs: list[tuple[str | Callable[[], str], int | None]] = [
        (functools.partial(target.url_for, documents[i % len(documents)]), None)
        for i in range(connections)
    ]
    clients, errors = await open_clients(specs, run, concurrency, timeout, progress, "open")
    open_s = time.monotonic() - started
    connect_window[1] = time.time()
    server_cpu_after = cpu_seconds(pids)
    client_cpu = time.process_time() - client_cpu
    server_wait_ms = _per(run_queue_seconds(pids), server_waited, len(clients))
    client_wait_ms = _per(run_queue_seconds([os.getpid()]), client_waited, len(clients))
    database_spent = database_cpu_since(database)
    server_cpu_ms = _per(server_cpu_after, server_cpu, len(clients))
    await asyncio.sleep(2)
    after = rss_bytes(pids)
    hold_window = [time.time(), 0.0]
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        alive = sum(client.is_open for client in clients)
        progress(f"holding: {alive}/{len(clients)} open, {deadline - time.monotonic():.0f} s left")
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    end = rss_bytes(pids)
    hold_window[1] = time.time()
    try:
        probe_samples = await asyncio.wait_for(probe.samples(), timeout)
    except Exception as exc:  # the probe's socket failed: say so, keep the rest of the figures
        progress(f"probe failed: {exc}", force=True)
        probe_samples = []
    probe_ns = [rtt for sent_at, rtt in probe_samples if sent_at >= hold_window[0]]
    still_open = sum(client.is_open for client in clients)
    closed_codes: dict[str, int] = {}
    for client in clients:
        if not client.is_open:
            closed_codes[str(client.closed_code)] = closed_codes.get(str(client.closed_code), 0) + 1
    progress("closing", force=True)
    # Every socket, 500 at a time (close_all), as when a proxy restarts: the servers' own
    # "ws close" lines say when they were done with them (bench/run.py).
    close_window = [time.time(), 0.0]
    await close_all(clients + warm)
    close_window[1] = time.time()
    opened = len(clients)
    per_conn = None
    if before is not None and end is not None and opened:
        per_conn = round((max(after, end) - before) / opened / 1024, 1)
    return {
        "connections": connections,
        "documents": len(documents),
        "opened": opened,
        "connect_failures": len(errors),
        "connect_errors": errors[:10],
        "open_s": round(open_s, 2),
        "connects_per_s": round(opened / open_s, 1) if open_s > 0 else None,
        # Each socket's open in two parts, as this client saw them: until the server's 101
        # (the TCP connect, the upgrade), then until its sync step 2 (the first round trip
        # on the open socket; collab checks the socket after its 101, so its check is in this
        # part). Waits in either process's event loop count in both.
        "handshake_ms": percentiles([client.handshake_ns for client in clients]),
        "first_round_trip_ms": percentiles([client.sync_ns for client in clients]),
        "hold_s": hold,
        "still_open": still_open,
        "closed_codes": closed_codes,
        "server_pids": pids,
        "server_rss_before_mb": _mb(before),
        "server_rss_after_mb": _mb(after),
        "server_rss_end_mb": _mb(end),
        "server_kb_per_connection": per_conn,
        "server_cpu_ms_per_connect": server_cpu_ms,
        "client_cpu_ms_per_connect": round(1000 * client_cpu / opened, 3) if opened else None,
        # Time ready to run but without a core (the kernel's run queue), every thread's.
        "server_wait_ms_per_connect": server_wait_ms,
        "client_wait_ms_per_connect": client_wait_ms,
        # PostgreSQL's, whoever asked it (the socket checks' queries): 0 for a server without.
        "database_cpu_ms_per_connect": round(1000 * database_spent / opened, 3) if opened else None,
        "auth": "session" if target.cookies else ("ticket" if target.ticket else "none"),
        # A sync round trip every 100 ms on one more socket while the others are held.
        "probe_rtt_ms": percentiles(probe_ns),
        "probe_max_connecting_ms": _probe_max(probe_samples, tuple(connect_window)),
        # Wall-clock windows, for the servers' own stall lines (bench/run.py reads them).
        "windows": {"connect": connect_window, "hold": hold_window, "close": close_window},
        "close_s": round(close_window[1] - close_window[0], 2),
        "closed": len(clients) + len(warm),
        "client_rss_mb": _mb(rss_bytes([os.getpid()])),
    }


async def joinstorm(
    target: Target,
    document: str,
    clients: int,
    size: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """Seeds ``document`` to about ``size`` bytes of text, then ``clients`` join at once; each
    must receive a sync step 2 holding the whole document."""
    run = Run()
    seeder = Client(target.url_for(document), run, writer_id=-1)
    await seeder.open(timeout)
    doc = Doc()
    text = doc.get("codemirror", type=Text)
    line = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 4 + "\n"
    written = 0
    while written < size:
        chunk = line * max(1, min(SEED_CHUNK, size - written) // len(line))
        before = doc.get_state()
        text.insert(len(text), chunk)
        await seeder.send(protocol.sync_update(doc.get_update(before)))
        written += len(chunk)
    # A probe joins first: it proves the server holds the whole seed before the storm.
    deadline = time.monotonic() + timeout
    while True:
        probe = Client(target.url_for(document), run)
        await probe.open(timeout)
        await probe.close()
        if probe.step2_size >= written or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    progress(f"seeded {written} bytes (step 2 of {probe.step2_size} bytes)", force=True)
    # Each joiner's reader holds the frame's buffer, the frame cut from it and the message.
    warm_heap(3 * clients * max(probe.step2_size, size))

    times: list[int] = []
    sizes: list[int] = []
    errors: list[str] = []
    joined: list[Client] = []
    start_gate = asyncio.Event()

    async def join() -> None:
        client = Client(target.url_for(document), run)
        await start_gate.wait()
        t0 = time.perf_counter_ns()
        try:
            await client.open(timeout)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            await client.close()
            return
        times.append(time.perf_counter_ns() - t0)
        sizes.append(client.step2_size)
        joined.append(client)
        progress(f"synced {len(joined)}/{clients}")

    cpu = CpuMeter()
    tasks = [asyncio.ensure_future(join()) for _ in range(clients)]
    started = time.monotonic()
    start_gate.set()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - started
    client_cpu = cpu.percent()
    complete = sum(1 for s in sizes if s >= written)
    await close_all([*joined, seeder])
    return {
        "clients": clients,
        "document_bytes": written,
        "step2_bytes": probe.step2_size,
        "synced": len(joined),
        "complete": complete,
        "lost": clients - complete,
        "failures": len(errors),
        "errors": errors[:10],
        "time_to_sync_ms": percentiles(times),
        "wall_s": round(wall, 2),
        "client_cpu_percent": client_cpu,
    }


async def bigupdate(
    target: Target,
    documents: Sequence[str],
    readers: int,
    size: int,
    timeout: float,
    progress: Progress,
) -> dict[str, Any]:
    """``readers`` readers and a writer on a document; the writer sends one update inserting
    ``size`` bytes of text; every reader must receive it. A probe socket on another document of
    the same server process times sync round trips meanwhile: how long everyone else waits
    while the server applies, stores and fans out one huge update."""
    run = Run(target.headers)
    document, neighbour = same_process_pair(target, documents) or (documents[0], documents[0])
    clients, errors = await open_clients(
        [(target.url_for(document), None) for _ in range(readers)],
        run,
        readers,
        timeout,
        progress,
        "readers synced",
    )
    writer = Client(target.url_for(document), run, writer_id=0)
    await writer.open(timeout)
    doc = Doc()
    text = doc.get("codemirror", type=Text)
    line = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 4 + "\n"
    marker = "[0:0]"
    text.insert(0, marker + line * max(1, (size - len(marker)) // len(line)))
    frame = protocol.sync_update(doc.get_update())
    probe = await _ProbeApart.start(target.url_for(neighbour), 0.01, target.headers(), timeout)
    await asyncio.sleep(1.0)
    window = [time.time(), 0.0]
    run.sent[(0, 0)] = time.perf_counter_ns()
    await writer.send(frame)
    progress(f"sent one update of {len(frame):,} bytes", force=True)
    await wait_delivered(run, len(clients), timeout, progress)
    applied_s = (time.perf_counter_ns() - run.sent[(0, 0)]) / 1e9
    await asyncio.sleep(1.0)  # the store's write and what follows it, still in the window
    window[1] = time.time()
    probe_error = None
    try:
        samples = await asyncio.wait_for(probe.samples(), timeout)
    except Exception as exc:
        probe_error = f"{type(exc).__name__}: {exc}"[:200]
        progress(f"probe failed: {probe_error}", force=True)
        samples = []
    await close_all([*clients, writer])
    return {
        "readers": readers,
        "update_bytes": len(frame),
        "connect_failures": len(errors),
        **delivery(run, len(clients)),
        "time_to_all_readers_s": round(applied_s, 2),
        "latency_ms": percentiles(run.latencies_ns),
        "probe_max_ms": _probe_max(samples, tuple(window)),
        "probe_error": probe_error,
        "windows": {"apply": window},
    }


async def _tick(progress: Progress, message: Callable[[], str]) -> None:
    while True:
        progress(message())
        await asyncio.sleep(0.5)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


# -- running ------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("mode", choices=MODES)
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="WebSocket base URL of a server process, e.g. ws://127.0.0.1:8000/ws/documents; "
        "repeat for several processes (documents are spread by a consistent hash)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="the target is a stock y-websocket server: no tickets, no database",
    )
    parser.add_argument("--documents", type=int, default=None, help="documents (mode default)")
    parser.add_argument("--readers", type=int, default=100, help="fanout: readers per document")
    parser.add_argument("--updates", type=int, default=200, help="fanout: updates per writer")
    parser.add_argument("--rate", type=float, default=20.0, help="updates/s per writer")
    parser.add_argument(
        "--flood-rate", type=float, default=5000.0, help="flood: the flooder's updates/s"
    )
    parser.add_argument("--writers", type=int, default=5, help="throughput: writers per document")
    parser.add_argument("--duration", type=float, default=10.0, help="throughput: seconds")
    parser.add_argument("--connections", type=int, default=1000, help="idle: connections")
    parser.add_argument("--hold", type=float, default=10.0, help="idle: seconds to hold them")
    parser.add_argument("--clients", type=int, default=50, help="joinstorm: clients")
    parser.add_argument(
        "--size", type=int, default=1_000_000, help="joinstorm: document bytes; bigupdate: update"
    )
    parser.add_argument(
        "--auth",
        choices=("ticket", "session"),
        default="ticket",
        help="collab: how clients authenticate (session: a browser's cookie and Origin)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="connects in flight")
    parser.add_argument("--timeout", type=float, default=60.0, help="any single wait, seconds")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--json-out", help="also write the JSON result to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def documents_needed(options: dict[str, Any]) -> int:
    mode = options["mode"]
    if options.get("documents"):
        return options["documents"]
    if mode == "throughput":
        return 10
    if mode == "idle":
        return max(1, options["connections"] // 100)
    if mode in ("flood", "bigupdate"):
        return 8  # two of them on the same process (same_process_pair), up to 7 processes
    return 1


async def run_mode(target: Target, documents: Sequence[str], options: dict[str, Any]) -> dict:
    mode = options["mode"]
    progress = Progress(mode, enabled=not options.get("quiet"))
    common = {"timeout": options["timeout"], "progress": progress}
    if mode == "fanout":
        return await fanout(
            target,
            documents,
            options["readers"],
            options["updates"],
            options["rate"],
            options["concurrency"],
            **common,
        )
    if mode == "flood":
        return await flood(
            target,
            documents,
            options["readers"],
            options["updates"],
            options["rate"],
            options["flood_rate"],
            options["concurrency"],
            **common,
        )
    if mode == "throughput":
        return await throughput(
            target,
            documents,
            options["writers"],
            options["rate"],
            options["duration"],
            options["concurrency"],
            **common,
        )
    if mode == "idle":
        return await idle(
            target,
            documents,
            options["connections"],
            options["hold"],
            options["concurrency"],
            **common,
        )
    if mode == "bigupdate":
        return await bigupdate(target, documents, options["readers"], options["size"], **common)
    return await joinstorm(target, documents[0], options["clients"], options["size"], **common)


def execute(target: Target, documents: Sequence[str], options: dict[str, Any]) -> dict:
    """Runs one mode to completion (its own event loop; uvloop when installed) and returns the
    result with the run's context."""
    nofile = raise_nofile_limit()
    started = time.time()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    coro = run_mode(target, documents, options)
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    return {
        "mode": options["mode"],
        "target": target.name,
        "urls": target.urls,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": socket.gethostname(),
        "event_loop": "uvloop" if uvloop is not None else "asyncio",
        "nofile_limit": nofile,
        "result": result,
    }


def reference_documents(count: int) -> list[str]:
    """Room names for a server without a database: fresh uuids, so runs never share a room."""
    return [str(uuid.uuid4()) for _ in range(count)]


def emit(report: dict, json_out: str | None, stream=None) -> None:
    text = json.dumps(report, indent=2)
    if json_out:
        with open(json_out, "w") as out:
            out.write(text + "\n")
    print(text, file=stream or sys.stdout)


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    _probe_alone(json.loads(sys.argv[2]))
