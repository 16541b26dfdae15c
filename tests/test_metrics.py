"""editor/metrics.py's own machinery: frame types, counting a fan-out once, the event-loop
stall probe, GC pause timing and the ping round-trip hook. What a real process reports after
real traffic: tests/realtime/test_live_metrics.py."""

import asyncio
import gc
import logging
import mmap
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from daphne.ws_protocol import WebSocketProtocol
from prometheus_client import Counter, Histogram
from pycrdt import Doc

from editor import metrics
from editor.realtime import protocol


def samples(histogram: Histogram, **labels: str) -> dict[str, float]:
    """A histogram's samples (``_count``, ``_sum``, ``_bucket`` by ``le``) of one label set."""
    found = {}
    for family in histogram.collect():
        for sample in family.samples:
            rest = {k: v for k, v in sample.labels.items() if k != "le"}
            if rest != labels:
                continue
            key = sample.name.rsplit("_", 1)[-1]
            if key == "bucket":
                key = f"le={sample.labels['le']}"
            found[key] = sample.value
    return found


def private_counter() -> Counter:
    return Counter("collab_test", "A counter of the test's own.", registry=None)


def counted(counter: Counter) -> float:
    [family] = counter.collect()
    return next(sample.value for sample in family.samples if sample.name.endswith("_total"))


def private_histogram(*labels: str) -> Histogram:
    return Histogram(
        "collab_test_seconds",
        "A histogram of the test's own.",
        labels,
        buckets=metrics._PAUSES,
        registry=None,
    )


def test_it_reads_each_y_websocket_type_from_the_first_bytes():
    doc = Doc()
    update = b"\x01\x01\x05\x00"
    frames = {
        protocol.sync_step1(doc): "sync_step1",
        protocol.sync_step2(doc, Doc().get_state()): "sync_step2",
        protocol.sync_update(update): "update",
        protocol.awareness(protocol.encode_awareness([])): "awareness",
        protocol.authenticated(protocol.SCOPE_READ_WRITE): "auth",
        protocol.permission_denied("no"): "auth",
        protocol.query_awareness(): "query_awareness",
        b"": "other",
        b"\x00": "other",
        b"\x00\x07": "other",
        b"\x09\x00": "other",
    }
    assert {frame: metrics.frame_type(frame) for frame in frames} == frames


def test_it_counts_a_fan_out_once_for_all_its_sockets():
    frame = protocol.sync_update(b"\x01\x01\x05\x00")
    frames, size = metrics._FRAMES_OUT["update"]
    before = frames._value.get(), size._value.get()

    metrics.frames_out(frame, 7)
    metrics.frames_out(frame, 0)

    assert (frames._value.get(), size._value.get()) == (before[0] + 7, before[1] + 7 * len(frame))


def test_it_counts_text_frames_in_without_bytes():
    before = metrics._FRAMES_IN["text"][0]._value.get()
    metrics.frame_in(None)
    assert metrics._FRAMES_IN["text"][0]._value.get() == before + 1


@pytest.mark.asyncio
async def test_it_observes_how_late_the_event_loop_woke():
    lag = private_histogram()
    probe = asyncio.ensure_future(metrics.watch_event_loop(interval=0.01, histogram=lag))
    await asyncio.sleep(0.1)  # a few punctual wake-ups
    time.sleep(0.3)  # a stall: the loop is held, the probe cannot wake
    await asyncio.sleep(0.05)
    probe.cancel()

    observed = samples(lag)
    assert observed["count"] >= 3
    # Exactly one wake-up was at least 0.25 s late: the stall's.
    assert observed["le=+Inf"] - observed["le=0.25"] == 1
    assert 0.28 <= observed["sum"] < 1.0


async def stalls_while_held(caplog, *holds: float, **probe: Any) -> list[logging.LogRecord]:
    """The stall lines a probe (every 10 ms) logs while the loop is held by a blocking call of
    each of ``holds`` seconds in turn."""
    watching = asyncio.ensure_future(
        metrics.watch_event_loop(interval=0.01, histogram=private_histogram(), **probe)
    )
    with caplog.at_level(logging.WARNING, logger="collab.metrics"):
        await asyncio.sleep(0.05)
        for hold in holds:
            time.sleep(hold)
            await asyncio.sleep(0.05)
    watching.cancel()
    return [r for r in caplog.records if r.getMessage().startswith("event loop stalled")]


@pytest.mark.asyncio
async def test_a_long_stall_is_logged_with_its_length(settings, caplog):
    settings.STALL_WARNING_MS = 200
    stalls = await stalls_while_held(caplog, 0.1, 0.3)  # 0.1 s: under the threshold, not logged

    assert len(stalls) == 1
    assert 290 <= stalls[0].stall_ms < 1000
    assert stalls[0].cause == "loop"


@pytest.mark.asyncio
async def test_a_stall_mostly_spent_collecting_garbage_says_so(settings, caplog):
    settings.STALL_WARNING_MS = 200
    timer = metrics.GcTimer({generation: private_histogram() for generation in (0, 1, 2)}, 1.0)
    probe = asyncio.ensure_future(
        metrics.watch_event_loop(interval=0.01, histogram=private_histogram(), gc_timer=timer)
    )
    with caplog.at_level(logging.WARNING, logger="collab.metrics"):
        await asyncio.sleep(0.05)
        for _ in range(3):  # three collections of 80 ms, as the timer sees them
            timer("start", {})
            time.sleep(0.08)
            timer("stop", {"generation": 2})
        time.sleep(0.02)
        await asyncio.sleep(0.05)
    probe.cancel()

    stalls = [r for r in caplog.records if r.getMessage().startswith("event loop stalled")]
    assert len(stalls) == 1
    assert stalls[0].cause == "gc"
    assert 230 <= stalls[0].gc_ms <= stalls[0].stall_ms
    assert f"cause=gc gc_ms={stalls[0].gc_ms} faults=" in stalls[0].getMessage()


@pytest.mark.alone  # the kernel's share of the stall: another worker's load would take it
@pytest.mark.asyncio
async def test_a_stall_spent_faulting_in_new_memory_says_so(settings, caplog):
    # A big update's copies touch memory the process never had, a page at a time: the kernel's
    # time, which the stall line tells apart from the loop's own work and from the collector.
    settings.STALL_WARNING_MS = 5
    probe = asyncio.ensure_future(
        metrics.watch_event_loop(interval=0.01, histogram=private_histogram())
    )
    pages = 25_600  # 100 MB
    with caplog.at_level(logging.WARNING, logger="collab.metrics"):
        await asyncio.sleep(0.05)
        with mmap.mmap(-1, pages * mmap.PAGESIZE) as memory:
            view = memoryview(memory)
            view[:: mmap.PAGESIZE] = b"\x01" * pages  # one byte a page: all faults, no work
            view.release()
        await asyncio.sleep(0.05)
    probe.cancel()

    stalls = [r for r in caplog.records if r.getMessage().startswith("event loop stalled")]
    longest = max(stalls, key=lambda record: record.stall_ms)
    assert longest.faults >= pages
    assert longest.cause == "kernel"
    assert longest.sys_ms >= longest.stall_ms / 2
    assert f"faults={longest.faults} sys_ms={longest.sys_ms}" in longest.getMessage()


@pytest.mark.asyncio
async def test_a_stall_spent_waiting_for_a_core_says_so(settings, caplog):
    # The loop's thread has work to do while two other processes want its one core: most of
    # the stall is the kernel's run queue (a machine short of CPU), not the loop's own work.
    settings.STALL_WARNING_MS = 5
    kept = os.sched_getaffinity(0)
    core = min(kept)
    hog = (
        f"import os, sys; os.sched_setaffinity(0, {{{core}}}); print(flush=True)\nwhile True: pass"
    )
    hogs = [subprocess.Popen([sys.executable, "-c", hog], stdout=subprocess.PIPE) for _ in (1, 2)]
    try:
        for process in hogs:
            assert process.stdout is not None
            process.stdout.readline()  # on the core, and spinning
        os.sched_setaffinity(0, {core})  # this thread, the event loop's
        waiting = private_counter()
        probe = asyncio.ensure_future(
            metrics.watch_event_loop(interval=0.01, histogram=private_histogram(), waiting=waiting)
        )
        with caplog.at_level(logging.WARNING, logger="collab.metrics"):
            await asyncio.sleep(0.05)
            spent = time.thread_time()
            while time.thread_time() - spent < 0.06:  # 60 ms of the thread's own work
                pass
            await asyncio.sleep(0.05)
        probe.cancel()
    finally:
        os.sched_setaffinity(0, kept)
        for process in hogs:
            process.kill()
            process.wait()

    stalls = [r for r in caplog.records if r.getMessage().startswith("event loop stalled")]
    longest = max(stalls, key=lambda record: record.stall_ms)
    assert longest.stall_ms >= 100  # 60 ms of work on a third of a core
    assert longest.cause == "waiting"
    assert longest.stall_ms / 2 <= longest.wait_ms <= longest.stall_ms
    assert longest.getMessage().endswith(f"wait_ms={longest.wait_ms}")
    # Counted too, for the graphs: the stall's wait and whatever the other wakes waited.
    assert counted(waiting) >= (longest.wait_ms - 0.05) / 1000


@pytest.mark.asyncio
async def test_a_stall_is_logged_where_the_kernel_keeps_no_run_queue_figure(
    settings, caplog, monkeypatch
):
    monkeypatch.setattr(metrics._RunQueueWait, "PATH", "/proc/thread-self/no-such-figure")
    settings.STALL_WARNING_MS = 200
    waiting = private_counter()
    stalls = await stalls_while_held(caplog, 0.3, waiting=waiting)

    assert len(stalls) == 1
    assert stalls[0].cause == "loop"
    assert stalls[0].wait_ms == 0.0
    assert counted(waiting) == 0.0


def test_a_long_collection_is_logged_with_its_generation(caplog):
    timer = metrics.GcTimer({generation: private_histogram() for generation in (0, 1, 2)}, 0.0)
    # The process's own timer, when a test installed it, would log this collection too.
    installed = metrics._gc_timer in gc.callbacks
    if installed:
        gc.callbacks.remove(metrics._gc_timer)
    gc.callbacks.append(timer)
    try:
        with caplog.at_level(logging.WARNING, logger="collab.metrics"):
            gc.collect(2)
    finally:
        gc.callbacks.remove(timer)
        if installed:
            gc.callbacks.append(metrics._gc_timer)
    pauses = [r for r in caplog.records if getattr(r, "cause", "") == "gc2"]
    assert len(pauses) == 1
    assert pauses[0].stall_ms >= 0
    assert pauses[0].getMessage().endswith(f"stall_ms={pauses[0].stall_ms} cause=gc2")


def test_it_times_each_collection_by_generation():
    pauses = private_histogram("generation")
    timer = metrics.GcTimer(
        {generation: pauses.labels(str(generation)) for generation in (0, 1, 2)}
    )
    gc.callbacks.append(timer)
    try:
        gc.collect(1)
        gc.collect(2)
        gc.collect(2)
    finally:
        gc.callbacks.remove(timer)

    # Collections the interpreter started by itself may add to generation 0, never to 1 or 2
    # in so short a window (generation 1 waits for ten of generation 0).
    assert samples(pauses, generation="1")["count"] == 1
    assert samples(pauses, generation="2")["count"] == 2
    assert samples(pauses, generation="2")["sum"] > 0


def test_it_installs_the_gc_timer_once():
    metrics.time_gc_pauses()
    metrics.time_gc_pauses()
    assert gc.callbacks.count(metrics._gc_timer) == 1


def test_it_observes_daphnes_ping_round_trips():
    assert metrics.observe_ping_round_trips()
    assert metrics.observe_ping_round_trips()  # idempotent
    before = samples(metrics.PING_RTT).get("count", 0)

    sent = time.time_ns()
    WebSocketProtocol.onAutoPong(object(), sent, 1, sent + 12_000_000, 12, b"")

    after = samples(metrics.PING_RTT)
    assert after["count"] == before + 1
    assert after["le=0.025"] - after["le=0.01"] >= 1  # 12 ms


@pytest.mark.parametrize(
    "hook",
    [
        lambda self, ping_sent, ping_seq, pong_received, pong_rtt, payload: None,  # daphne's own
        lambda self, rtt: None,  # a changed signature
    ],
    ids=["overridden", "changed"],
)
def test_it_leaves_a_changed_ping_hook_alone_with_one_warning(monkeypatch, caplog, hook):
    monkeypatch.setattr(WebSocketProtocol, "onAutoPong", hook)
    if hook.__code__.co_argcount == 2:
        # As if autobahn changed it: daphne's class inherits the changed hook.
        from autobahn.websocket.protocol import WebSocketProtocol as Autobahn

        monkeypatch.setattr(Autobahn, "onAutoPong", hook)

    with caplog.at_level(logging.WARNING, logger="collab.metrics"):
        assert not metrics.observe_ping_round_trips()

    assert WebSocketProtocol.onAutoPong is hook
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "ping round trips not observed" in messages[0]
