"""Prometheus metrics of one collab process, served at ``GET /metrics`` (editor/metrics_view.py).

Each `manage.py serve` process is one daphne process with one event loop, and keeps its own
figures in prometheus-client's default registry; Prometheus scrapes every process directly
(nginx denies /metrics from outside). Nothing is shared between processes, so there is no
multiprocess mode: sum over the ``instance`` label for the whole service.

The names below are stable: the Grafana dashboard and the alert rules are built on them.

Gauges
- ``collab_websocket_connections{role,via}``: open sockets that joined their document (role
  ``owner|editor|viewer``, via ``session|ticket``); a role change moves the socket.
- ``collab_rooms_loaded``: documents loaded in this process (rooms, evicted ``ROOM_GRACE``
  after their last socket leaves).
- ``collab_presence_entries``: awareness client ids this process's sockets hold (their
  presence entries in Redis).

Counters
- ``collab_websocket_connects_total``: sockets that opened (authorised, admitted, joined).
- ``collab_websocket_refusals_total{code}``: sockets closed before they opened: 4401/4403
  (auth), 4404 (no such endpoint), 1013 and 4429 (caps, the user's rate), 1011 (the document
  could not be loaded).
- ``collab_websocket_disconnects_total{code}``: opened sockets that ended, by the close code
  this side sent, else the client's (1005: none given; 1006: the consumer ended abruptly).
- ``collab_websocket_frames_total{direction,type}`` and ``collab_websocket_bytes_total{...}``:
  binary messages and their bytes, ``in`` from clients and ``out`` to them, by y-websocket
  type (``sync_step1|sync_step2|update|awareness|query_awareness|auth|other``; ``text`` for
  text frames in). Counted once per fan-out (frames × sockets), not once per socket send.
- ``collab_updates_applied_total``: updates from this process's clients applied to a room.
- ``collab_remote_updates_total``: updates from the channel layer (other processes, the REST
  API) that were new here.
- ``collab_catchup_recovered_total{source}``: what catch-up recovered that the layer lost:
  ``log`` rows never seen, ``parked`` rows applied again (pycrdt left them pending),
  ``snapshot`` compacted snapshots that held something new.
- ``collab_event_loop_waiting_seconds_total``: time the event loop's thread was ready to run
  and waited for a core (Linux's run queue, read by the stall probe; stays 0 elsewhere): its
  rate is the share of the time the process had work and no core to do it on.
- ``collab_limit_closes_total{limit}``: sockets closed by a limit: ``frame_size`` (4413),
  ``awareness_size`` (4413), ``awareness_clients`` (4400), ``rate`` (4429), ``slow_reader``
  (4408), ``connections`` and ``connections_per_user`` (1013).
- ``collab_redis_errors_total{operation}``: ``group_send``, ``layer_receive``, ``presence``,
  ``sweep``, ``census``.
- ``collab_database_errors_total{operation}``: ``write`` (a batch, retried), ``load`` (a room
  could not be loaded: the database, or now and then its group's Redis subscription),
  ``catchup`` (re-reading the log).

Histograms (seconds unless named otherwise)
- ``collab_websocket_connect_seconds``: from the upgrade (the consumer's connect) to sync step
  1 sent: authorisation, the caps, the room's load when it was not loaded.
- ``collab_fanout_seconds{source}``: from an update reaching the room (``client``: a local
  socket's batch, applied here; ``layer``: from the channel layer) to its last local send.
- ``collab_store_flush_lag_seconds``: append to commit of the oldest update of each batch.
- ``collab_store_batch_updates``: updates per committed batch.
- ``collab_websocket_ping_rtt_seconds``: round trip of daphne's keep-alive pings
  (``WS_PING_INTERVAL``), from autobahn's ``onAutoPong``; empty when that hook cannot be used
  (``observe_ping_round_trips`` logs one warning saying why).
- ``collab_event_loop_lag_seconds``: how late a sleep of STALL_PROBE_INTERVAL_MS (50 ms) on the
  event loop woke: the stalls every socket of the process waited through.
- ``collab_gc_pause_seconds{generation}``: garbage-collector pauses (``gc.callbacks``).

Plus prometheus-client's default collectors: ``process_*`` (CPU, memory, open files, start
time), ``python_info`` and ``python_gc_*``.

Hot paths use children bound here, once, so no label is looked up per frame or per socket.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import resource
import sys
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger("collab.metrics")

ROLES = ("owner", "editor", "viewer")
VIAS = ("session", "ticket")
FRAME_TYPES = (
    "sync_step1",
    "sync_step2",
    "update",
    "awareness",
    "query_awareness",
    "auth",
    "other",
    "text",
)
LIMITS = (
    "frame_size",
    "awareness_size",
    "awareness_clients",
    "rate",
    "slow_reader",
    "connections",
    "connections_per_user",
)
REDIS_OPERATIONS = ("group_send", "layer_receive", "presence", "sweep", "census")
DATABASE_OPERATIONS = ("write", "load", "catchup")
CATCHUP_SOURCES = ("log", "parked", "snapshot")
# Close codes known in advance (editor/realtime/codes.py, plus the client's usual ones).
KNOWN_CODES = (1000, 1001, 1005, 1006, 1011, 1013, 4400, 4401, 4403, 4404, 4408, 4413, 4429)

# Latency buckets from a millisecond to ten seconds.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Stalls and pauses: a stall under a millisecond is no stall.
_PAUSES = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- gauges ------------------------------------------------------------------------------------

CONNECTIONS = Gauge(
    "collab_websocket_connections",
    "Open WebSocket connections that joined their document.",
    ["role", "via"],
)
ROOMS = Gauge("collab_rooms_loaded", "Documents loaded in this process.")
PRESENCE_ENTRIES = Gauge(
    "collab_presence_entries", "Awareness client ids held by this process's sockets."
)

# -- counters ----------------------------------------------------------------------------------

CONNECTS = Counter("collab_websocket_connects_total", "WebSocket connections opened.")
REFUSALS = Counter(
    "collab_websocket_refusals_total", "WebSocket connections refused before opening.", ["code"]
)
DISCONNECTS = Counter(
    "collab_websocket_disconnects_total", "Opened WebSocket connections ended.", ["code"]
)
FRAMES = Counter("collab_websocket_frames_total", "WebSocket messages.", ["direction", "type"])
BYTES = Counter("collab_websocket_bytes_total", "WebSocket message bytes.", ["direction", "type"])
UPDATES_APPLIED = Counter(
    "collab_updates_applied_total", "Updates from this process's clients applied."
)
REMOTE_UPDATES = Counter(
    "collab_remote_updates_total", "Updates from the channel layer that were new here."
)
CATCHUP_RECOVERED = Counter(
    "collab_catchup_recovered_total",
    "Updates (or snapshots) catch-up recovered that the channel layer lost.",
    ["source"],
)
LIMIT_CLOSES = Counter(
    "collab_limit_closes_total", "Connections closed by a limit or a cap.", ["limit"]
)
REDIS_ERRORS = Counter("collab_redis_errors_total", "Failed Redis operations.", ["operation"])
DATABASE_ERRORS = Counter(
    "collab_database_errors_total", "Failed database operations.", ["operation"]
)

# -- histograms --------------------------------------------------------------------------------

CONNECT_TIME = Histogram(
    "collab_websocket_connect_seconds",
    "From the WebSocket upgrade to sync step 1 sent.",
    buckets=_SECONDS,
)
FANOUT_TIME = Histogram(
    "collab_fanout_seconds",
    "From an update reaching the room to its last local send.",
    ["source"],
    buckets=(0.0001, 0.00025, 0.0005) + _SECONDS,
)
FLUSH_LAG = Histogram(
    "collab_store_flush_lag_seconds",
    "Append to commit of the oldest update of each batch.",
    buckets=_SECONDS,
)
BATCH_SIZE = Histogram(
    "collab_store_batch_updates",
    "Updates per committed batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
PING_RTT = Histogram(
    "collab_websocket_ping_rtt_seconds",
    "Round trip of the server's keep-alive pings.",
    buckets=_SECONDS,
)
EVENT_LOOP_LAG = Histogram(
    "collab_event_loop_lag_seconds",
    "How late a 50 ms sleep on the event loop woke.",
    buckets=_PAUSES,
)
EVENT_LOOP_WAITING = Counter(
    "collab_event_loop_waiting_seconds_total",
    "Time the event loop's thread was ready to run and waited for a core (Linux).",
)
GC_PAUSE = Histogram(
    "collab_gc_pause_seconds",
    "Garbage-collector pauses.",
    ["generation"],
    buckets=_PAUSES,
)

# -- bound children ----------------------------------------------------------------------------

_CONNECTIONS = {(role, via): CONNECTIONS.labels(role, via) for role in ROLES for via in VIAS}
_REFUSALS = {code: REFUSALS.labels(str(code)) for code in KNOWN_CODES}
_DISCONNECTS = {code: DISCONNECTS.labels(str(code)) for code in KNOWN_CODES}
_FRAMES_IN = {kind: (FRAMES.labels("in", kind), BYTES.labels("in", kind)) for kind in FRAME_TYPES}
_FRAMES_OUT = {
    kind: (FRAMES.labels("out", kind), BYTES.labels("out", kind)) for kind in FRAME_TYPES
}
LIMIT = {limit: LIMIT_CLOSES.labels(limit) for limit in LIMITS}
REDIS = {operation: REDIS_ERRORS.labels(operation) for operation in REDIS_OPERATIONS}
DATABASE = {operation: DATABASE_ERRORS.labels(operation) for operation in DATABASE_OPERATIONS}
RECOVERED = {source: CATCHUP_RECOVERED.labels(source) for source in CATCHUP_SOURCES}
FANOUT_CLIENT = FANOUT_TIME.labels("client")
FANOUT_LAYER = FANOUT_TIME.labels("layer")
_GC_PAUSES = {generation: GC_PAUSE.labels(str(generation)) for generation in (0, 1, 2)}

# y-websocket's message types (editor/realtime/protocol.py): the first byte, and for sync
# messages the second (both varints below 128, so one byte each).
_TYPES = {1: "awareness", 2: "auth", 3: "query_awareness"}
_SYNC_TYPES = {0: "sync_step1", 1: "sync_step2", 2: "update"}


def frame_type(frame: bytes) -> str:
    """The y-websocket type of an encoded message, read from its first bytes (no parse)."""
    if not frame:
        return "other"
    if frame[0] == 0:
        return _SYNC_TYPES.get(frame[1], "other") if len(frame) > 1 else "other"
    return _TYPES.get(frame[0], "other")


def frame_in(frame: bytes | None) -> None:
    """Counts one message from a client (None: a text frame)."""
    if frame is None:
        _FRAMES_IN["text"][0].inc()
        return
    frames, size = _FRAMES_IN[frame_type(frame)]
    frames.inc()
    size.inc(len(frame))


def frames_out(frame: bytes, sockets: int = 1) -> None:
    """Counts one message sent to ``sockets`` sockets (a fan-out counts once)."""
    if sockets:
        frames, size = _FRAMES_OUT[frame_type(frame)]
        frames.inc(sockets)
        size.inc(sockets * len(frame))


def connections(role: str, via: str) -> Gauge:
    """The open-connections gauge of one role and way in (bound once per connection)."""
    child = _CONNECTIONS.get((role, via))
    return child if child is not None else CONNECTIONS.labels(role, via)


def refused(code: int) -> None:
    (_REFUSALS.get(code) or REFUSALS.labels(str(code))).inc()


def disconnected(code: int) -> None:
    (_DISCONNECTS.get(code) or DISCONNECTS.labels(str(code))).inc()


# -- event-loop stalls and GC pauses -----------------------------------------------------------


def _warn_at() -> float:
    """Seconds from which a stall or a pause is logged (settings.STALL_WARNING_MS; 0: never)."""
    from django.conf import settings

    milliseconds = getattr(settings, "STALL_WARNING_MS", 100)
    return milliseconds / 1000 if milliseconds > 0 else float("inf")


async def watch_event_loop(
    interval: float | None = None,
    histogram: Histogram = EVENT_LOOP_LAG,
    gc_timer: GcTimer | None = None,
    waiting: Counter = EVENT_LOOP_WAITING,
) -> None:
    """Sleeps ``interval`` (settings.STALL_PROBE_INTERVAL_MS) again and again and observes how
    late each sleep woke: whatever held the loop (a long CRDT merge, a big JSON dump, a GC
    pause) held every socket as long. A stall of STALL_WARNING_MS or more is also logged, with
    its length (``stall_ms``), for whoever reads the logs rather than the graphs (the bench
    does), with how much of it garbage collection took (``gc_ms``, from ``gc_timer``), and how
    many page faults the loop's thread took and how long it spent in the kernel meanwhile
    (``faults``, ``sys_ms``), and how long it was ready to run but waited for a core
    (``wait_ms``, where Linux counts it): the cause is ``gc`` when collections took half of it
    or more, ``kernel`` when the kernel did, ``waiting`` when the wait for a core did (the
    machine is short of CPU: more busy processes and threads than cores), else ``loop``. That
    wait is also counted at every wake, stall or not (``waiting``): its rate is the share of
    the time the loop had work and no core. Runs until cancelled; one per serving process
    (``when_serving``)."""
    if interval is None:
        from django.conf import settings

        interval = getattr(settings, "STALL_PROBE_INTERVAL_MS", 50) / 1000
    if gc_timer is None:
        gc_timer = _gc_timer
    warn_at = _warn_at()
    loop = asyncio.get_running_loop()
    queue = _RunQueueWait()  # opened here, on the loop's thread: that thread's wait
    waited = queue.ns()
    try:
        while True:
            started, collected, used = loop.time(), gc_timer.total, _thread_usage()
            await asyncio.sleep(interval)
            late = max(0.0, loop.time() - started - interval)
            histogram.observe(late)
            before, waited = waited, queue.ns()
            wait = (waited - before) / 1e9 if waited is not None and before is not None else 0.0
            if wait > 0:
                waiting.inc(wait)
            if late >= warn_at:
                _log_stall(late, gc_timer.total - collected, used, round(wait * 1000, 1))
    finally:
        queue.close()


def _log_stall(
    late: float, collecting: float, used: resource.struct_rusage, wait_ms: float
) -> None:
    """One stall's warning line (``watch_event_loop`` says what each figure is), with the
    collector's time, the thread's resource use since ``used`` and its wait for a core."""
    stall_ms = round(late * 1000, 1)
    gc_ms = round(min(late, collecting) * 1000, 1)
    faults, sys_ms = _usage_since(used)
    wait_ms = min(wait_ms, stall_ms)
    if gc_ms >= stall_ms / 2:
        cause = "gc"
    elif sys_ms >= stall_ms / 2:
        cause = "kernel"
    elif wait_ms >= stall_ms / 2:
        cause = "waiting"
    else:
        cause = "loop"
    extra = {
        "event": "stall",
        "stall_ms": stall_ms,
        "cause": cause,
        "gc_ms": gc_ms,
        "faults": faults,
        "sys_ms": sys_ms,
        "wait_ms": wait_ms,
    }
    logger.warning(
        "event loop stalled stall_ms=%s cause=%s gc_ms=%s faults=%s sys_ms=%s wait_ms=%s",
        stall_ms,
        cause,
        gc_ms,
        faults,
        sys_ms,
        wait_ms,
        extra=extra,
    )


class _RunQueueWait:
    """How long the thread that made it has been ready to run but not running, waiting in the
    kernel's run queue for a core: the second figure of Linux's ``/proc/thread-self/schedstat``
    (nanoseconds), read with one ``pread`` of a descriptor kept open. Elsewhere, or where the
    kernel does not keep it, nothing is read and every wait is 0."""

    PATH = "/proc/thread-self/schedstat"

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(self.PATH, os.O_RDONLY)
        except OSError:
            self._fd = None
        if self.ns() is None:
            self.close()

    def ns(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


# The event loop's own thread where the system counts per thread (Linux), else the process.
_USAGE_OF = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def _thread_usage() -> resource.struct_rusage:
    return resource.getrusage(_USAGE_OF)


def _usage_since(before: resource.struct_rusage) -> tuple[int, float]:
    """The page faults the loop's thread took since ``before`` and the milliseconds it spent
    in the kernel: a stall in the kernel is mostly first touches of memory (a big update's
    copies fault in a page at a time: 15,693 faults and 155 ms of a 157 ms stall, once, on the
    bench's VM; docs/BENCHMARKS.md) or system calls."""
    now = _thread_usage()
    faults = (now.ru_minflt - before.ru_minflt) + (now.ru_majflt - before.ru_majflt)
    return faults, round((now.ru_stime - before.ru_stime) * 1000, 1)


class GcTimer:
    """A ``gc.callbacks`` entry that observes every collection's duration by generation."""

    def __init__(self, pauses: dict[int, Any] = _GC_PAUSES, warn_at: float | None = None) -> None:
        self._pauses = pauses
        self._started: float | None = None
        self._warn_at = warn_at
        # Seconds of every collection so far, for the stall probe's share of GC.
        self.total = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            elapsed = time.perf_counter() - self._started
            self._started = None
            self.total += elapsed
            generation = info.get("generation", 2)
            pause = self._pauses.get(generation)
            if pause is not None:
                pause.observe(elapsed)
            if self._warn_at is None:
                self._warn_at = _warn_at()
            # (Not at exit: the log's streams may be closed by then.)
            if elapsed >= self._warn_at and not sys.is_finalizing():
                stall_ms = round(elapsed * 1000, 1)
                cause = f"gc{generation}"
                logger.warning(
                    "garbage collection paused the process stall_ms=%s cause=%s",
                    stall_ms,
                    cause,
                    extra={"event": "stall", "stall_ms": stall_ms, "cause": cause},
                )


_gc_timer = GcTimer()


def time_gc_pauses() -> None:
    """Observes every garbage collection of this process from now on. Idempotent."""
    if _gc_timer not in gc.callbacks:
        gc.callbacks.append(_gc_timer)


# -- ping round trips --------------------------------------------------------------------------

# autobahn's documented callback for a pong answering one of its automatic pings, with the
# arguments it is called with (autobahn/websocket/protocol.py, processControlFrame).
_AUTO_PONG_PARAMETERS = ["self", "ping_sent", "ping_seq", "pong_received", "pong_rtt", "payload"]


def _on_auto_pong(
    self: Any, ping_sent: int, ping_seq: int, pong_received: int, pong_rtt: int, payload: bytes
) -> None:
    # Both ends are time.time_ns(); autobahn's own pong_rtt is whole milliseconds.
    PING_RTT.observe(max(0, pong_received - ping_sent) / 1e9)


def observe_ping_round_trips() -> bool:
    """Times daphne's keep-alive pings: daphne sends autobahn's automatic ping every
    ``WS_PING_INTERVAL`` (``_sendAutoPing``), and autobahn calls ``onAutoPong`` with the
    times when the matching pong arrives; daphne's protocol does not use that hook, so it is
    set on daphne's protocol class. Checked first, as collab/transport.py checks its tunings:
    if daphne's class is missing, overrides the hook, or the hook's arguments changed, one
    warning says so and nothing is changed (the histogram stays empty). Says whether it is on.
    """
    try:
        from autobahn.websocket.protocol import WebSocketProtocol as Autobahn
        from daphne.ws_protocol import WebSocketProtocol as Daphne
    except ImportError as exc:
        logger.warning("metrics: ping round trips not observed: %s", exc)
        return False
    if Daphne.__dict__.get("onAutoPong") is _on_auto_pong:
        return True
    hook = getattr(Daphne, "onAutoPong", None)
    problem = None
    if hook is None or not hasattr(Daphne, "_sendAutoPing"):
        problem = "autobahn's onAutoPong or _sendAutoPing is gone"
    elif hook is not getattr(Autobahn, "onAutoPong", None):
        problem = "daphne's protocol has an onAutoPong of its own"
    elif list(inspect.signature(hook).parameters) != _AUTO_PONG_PARAMETERS:
        problem = f"onAutoPong takes {list(inspect.signature(hook).parameters)}"
    if problem is not None:
        logger.warning("metrics: ping round trips not observed (%s)", problem)
        return False
    Daphne.onAutoPong = _on_auto_pong
    return True


# -- start-up ----------------------------------------------------------------------------------

# The serving process's own tasks (the stall probe, the census): the loop holds tasks weakly.
_tasks: set[asyncio.Task[None]] = set()


def when_serving() -> bool:
    """Called when daphne loads the application (collab/asgi.py): times GC pauses and pings,
    and once the server runs, starts the stall probe and the census (editor/realtime/
    census.py) on its event loop. Does nothing outside daphne (tests, management commands):
    False. Never imports Twisted's reactor itself, which would install a default one."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        return False
    time_gc_pauses()
    observe_ping_round_trips()
    reactor.callWhenRunning(_start_tasks)
    return True


def _start_tasks() -> None:
    from editor.realtime import census

    for work in (watch_event_loop(), census.report_forever()):
        task = asyncio.ensure_future(work)
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
