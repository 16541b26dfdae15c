"""The load-test tool (`manage.py loadtest`, bench/loadtest.py) on tiny loads against one live
`manage.py serve`: every mode must count what it sent and what arrived correctly and report its
figures in the documented shape. Nothing here asserts how fast anything was; `make bench`
prints the figures."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from websockets.asyncio.server import serve

from bench import loadtest
from editor.models import Document
from editor.realtime import tickets
from tests import live
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory, django_db_blocker):
    # Module scope: one server for every mode (startup is the slow part). Its database is the
    # test database (hence django_db_setup first), which the tests below commit into.
    with django_db_blocker.unblock():
        servers = live.LiveServers(1, tmp_path_factory.mktemp("loadtest-server"))
        servers.start()
    yield servers
    servers.stop()


def run(server, tmp_path, mode: str, *args: str) -> dict:
    out = tmp_path / f"{mode}.json"
    call_command("loadtest", mode, "--url", server.ws(0), "--json-out", str(out), "--quiet", *args)
    report = json.loads(out.read_text())
    assert report["mode"] == mode
    assert report["target"] == "collab"
    return report["result"]


def assert_latency_shape(latency: dict) -> None:
    assert set(latency) == {"p50", "p95", "p99", "max", "mean"}
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


def test_it_delivers_every_fanout_update_to_every_reader(server, tmp_path):
    result = run(server, tmp_path, "fanout", "--readers", "5", "--updates", "20", "--rate", "50")

    assert result["connected"] == 6
    assert result["expected"] == 5 * 20
    assert result["delivered"] == result["expected"]
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert_latency_shape(result["latency_ms"])
    assert result["client_cpu_percent"] >= 0
    # The server's CPU and its time without a core while the updates went out, and this
    # client's time without a core, read from /proc (None if a process could not be read).
    assert result["server_cpu_ms_per_update"] >= 0
    assert result["server_wait_ms_per_update"] >= 0
    assert result["client_wait_ms_per_update"] >= 0


def test_it_counts_every_other_writers_updates_in_throughput(server, tmp_path):
    result = run(
        server,
        tmp_path,
        "throughput",
        *("--documents", "2", "--writers", "3", "--rate", "20", "--duration", "1"),
    )

    assert result["connected"] == 6
    # Each of 3 writers per document receives the other 2 writers' 20 updates.
    assert result["expected"] == 2 * 3 * 2 * 20
    assert result["delivered"] == result["expected"]
    assert result["updates_sent"] == 6 * 20
    assert_latency_shape(result["latency_ms"])


def test_it_holds_idle_connections_and_reads_server_memory(server, tmp_path):
    result = run(server, tmp_path, "idle", "--connections", "30", "--hold", "1")

    assert result["opened"] == 30
    assert result["still_open"] == 30
    assert result["connect_failures"] == 0
    assert result["closed_codes"] == {}
    # The tool found the daphne process listening on the port and read its memory.
    assert result["server_pids"]
    assert result["server_rss_before_mb"] > 0
    assert result["server_kb_per_connection"] is not None
    # And the CPU it and this client spent per connect (a clock tick is 10 ms: may round to 0).
    assert result["server_cpu_ms_per_connect"] >= 0
    assert result["client_cpu_ms_per_connect"] > 0
    # PostgreSQL's processes, read from /proc the same way (the checks' queries; may round to 0).
    assert result["database_cpu_ms_per_connect"] >= 0
    # And the time the server's threads and this client's waited for a core, from /proc.
    assert result["server_wait_ms_per_connect"] >= 0
    assert result["client_wait_ms_per_connect"] >= 0
    # Each socket's open in its two parts, over the 30 sockets.
    assert_latency_shape(result["handshake_ms"])
    assert_latency_shape(result["first_round_trip_ms"])
    assert result["handshake_ms"]["p50"] > 0 and result["first_round_trip_ms"]["p50"] > 0


def test_the_run_queue_wait_shows_processes_that_outnumber_the_cores():
    # Three busy processes a core for half a second: the kernel holds each back two thirds of
    # the time, and the run queue's clock (what the bench reports as "run-queue wait") says so.
    spinners = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time\nend = time.time() + 0.5\nwhile time.time() < end: pass",
            ]
        )
        for _ in range(3 * len(os.sched_getaffinity(0)))
    ]
    pids = [spinner.pid for spinner in spinners]
    try:
        before = loadtest.run_queue_seconds(pids)
        time.sleep(0.4)
        after = loadtest.run_queue_seconds(pids)
    finally:
        for spinner in spinners:
            spinner.wait(timeout=30)

    assert before is not None and after is not None
    # 0.4 s of three processes a core, one of them running: about 0.8 s a core of waiting.
    assert after - before > 0.1
    # A process that is gone is not measured (its figure would be a guess).
    assert loadtest.run_queue_seconds(pids) is None


def test_a_client_times_its_upgrade_and_its_first_round_trip_apart():
    # A server that takes 1 s to answer the upgrade, then 0.2 s to answer sync step 1: each
    # wait shows in its own part, and neither part holds the other's.
    async def slow_upgrade(connection, request):
        await asyncio.sleep(1.0)

    async def slow_answer(websocket):
        async for frame in websocket:
            if frame == loadtest.EMPTY_STEP1:
                await asyncio.sleep(0.2)
                await websocket.send(loadtest.SYNC_STEP2_PREFIX + b"\x02\x00\x00")

    async def scenario():
        async with serve(slow_answer, "127.0.0.1", 0, process_request=slow_upgrade) as server:
            port = server.sockets[0].getsockname()[1]
            client = loadtest.Client(f"ws://127.0.0.1:{port}/", loadtest.Run())
            await client.open(10)
            await client.close()
            return client

    client = asyncio.run(scenario())
    assert client.handshake_ns >= 1.0e9
    assert 0.2e9 <= client.sync_ns < client.handshake_ns


def test_it_connects_idle_sockets_with_a_session_cookie_as_a_browser(server, tmp_path):
    result = run(
        server, tmp_path, "idle", "--connections", "10", "--hold", "1", "--auth", "session"
    )

    # The server's origin check and session middleware let them in: all synced, none refused.
    assert result["auth"] == "session"
    assert result["opened"] == result["still_open"] == 10
    assert result["connect_failures"] == 0
    start, end = result["windows"]["connect"]
    assert start <= end <= result["windows"]["hold"][0]
    assert result["probe_max_connecting_ms"] is None or result["probe_max_connecting_ms"] > 0


def test_it_delivers_one_big_update_to_every_reader(server, tmp_path):
    result = run(server, tmp_path, "bigupdate", "--readers", "3", "--size", "2000000")

    assert result["update_bytes"] >= 1_990_000  # whole lines of text, and the marker
    assert result["expected"] == result["delivered"] == 3
    assert result["lost"] == 0
    assert result["time_to_all_readers_s"] > 0
    assert result["probe_max_ms"] > 0
    start, end = result["windows"]["apply"]
    assert start < end


def test_the_probe_keeps_timing_the_server_while_the_load_client_is_busy(server, db):
    owner = make_user("pat")
    document = Document.objects.create_for(owner, "Probed")
    token, _ = tickets.issue(owner.pk, document.pk)
    url = f"{server.ws(0)}/{document.pk}?ticket={token}"

    async def probed() -> tuple[list[tuple[float, int]], float, float]:
        probe = await loadtest._ProbeApart.start(url, 0.02, None, timeout=30)
        busy_from = time.time()
        time.sleep(1.0)  # the load client's own pause: a full collection, a 16 MB read
        busy_until = time.time()
        await asyncio.sleep(0.2)
        return await probe.samples(), busy_from, busy_until

    samples, busy_from, busy_until = asyncio.run(probed())

    # Round trips were sent, and answered, while this process could not have sent any.
    during = [rtt for sent_at, rtt in samples if busy_from + 0.1 < sent_at < busy_until - 0.1]
    assert len(during) >= 10
    assert all(rtt > 0 for _, rtt in samples)


def test_a_probe_that_cannot_connect_says_why_when_stopped():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    async def probed() -> list[tuple[float, int]]:
        probe = await loadtest._ProbeApart.start(f"ws://127.0.0.1:{port}/x", 0.1, None, 30)
        return await probe.samples()

    with pytest.raises(RuntimeError, match="Connect|refused|Errno"):
        asyncio.run(probed())


def test_a_probe_that_does_not_stop_in_time_is_killed_not_left_running():
    # A probe process that never answers its stop (closed stdin), as a hung one would not.
    async def probed() -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        probe = loadtest._ProbeApart(child, None)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(probe.samples(), 0.5)
        return child

    child = asyncio.run(probed())
    try:
        # Gone with the bench's wait for it, not running on into the next mode's figures.
        assert child.returncode is not None
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)
    finally:
        if child.returncode is None:  # left running (the old way): not left for the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)


def test_it_syncs_every_joiner_of_a_seeded_document(server, tmp_path):
    result = run(server, tmp_path, "joinstorm", "--clients", "5", "--size", "100000")

    assert result["document_bytes"] >= 100_000
    assert result["step2_bytes"] >= result["document_bytes"]
    assert result["synced"] == result["complete"] == 5
    assert result["lost"] == 0
    assert_latency_shape(result["time_to_sync_ms"])


def test_it_cleans_up_the_documents_it_made(server, tmp_path):
    run(server, tmp_path, "fanout", "--readers", "1", "--updates", "2", "--rate", "50")

    assert not Document.objects.filter(title__startswith="loadtest ").exists()


def test_it_refuses_targets_off_this_machine():
    with pytest.raises(ValueError, match="loopback"):
        loadtest.Target(["ws://10.1.2.3:8000/ws/documents"])


def test_it_sends_a_documents_clients_to_one_process():
    ring = loadtest.HashRing(["ws://127.0.0.1:1", "ws://127.0.0.1:2", "ws://127.0.0.1:3"])
    picks = {ring.pick(f"/doc-{n}") for n in range(200)}

    assert ring.pick("/doc-7") == ring.pick("/doc-7")
    assert picks == set(ring.urls)  # all processes get documents


def test_the_flood_finds_two_documents_on_one_process_when_the_first_is_alone():
    target = loadtest.Target(["ws://127.0.0.1:1/ws/documents", "ws://127.0.0.1:2/ws/documents"])
    ring = target.ring
    names = [f"doc-{n}" for n in range(200)]
    alone = names[0]
    others = [n for n in names[1:] if ring.pick(f"/{n}") != ring.pick(f"/{alone}")][:7]
    documents = [alone, *others]  # no other document shares the first one's process

    pair = loadtest.same_process_pair(target, documents)

    assert pair is not None and pair[0] != pair[1]
    assert ring.pick(f"/{pair[0]}") == ring.pick(f"/{pair[1]}")
    assert loadtest.same_process_pair(target, [alone, others[0]]) is None


def test_it_reports_percentiles_by_nearest_rank():
    stats = loadtest.percentiles([n * 1_000_000 for n in range(1, 101)])

    assert (stats["p50"], stats["p95"], stats["p99"], stats["max"]) == (50.0, 95.0, 99.0, 100.0)
    assert loadtest.percentiles([])["p99"] is None


# Fifty 1 MB messages whose bytes arrive interleaved, as a join storm's answers do when the
# server has sent them all at once: each buffer grows a read at a time, then the message is cut.
_FIFTY_INTERLEAVED = """
import resource, sys
from bench import loadtest
warmed = loadtest.warm_heap(3 * 50 * 1_000_000) if sys.argv[1] == "warm" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffers = [bytearray() for _ in range(50)]
chunk = bytes(131072)
for _ in range(8):
    for buffer in buffers:
        buffer += chunk
messages = [bytes(buffer[:1_000_000]) for buffer in buffers]
print(warmed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_reading_fifty_messages(how: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FIFTY_INTERLEAVED, how],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=settings.BASE_DIR,
    )
    warmed, faults = done.stdout.split()
    return warmed, int(faults)


def test_a_warmed_client_reads_a_join_storm_without_touching_new_memory():
    # The join storm's clock must not run while the client faults in memory it never touched:
    # that cost depended on how the server spread its sends, not on the server's speed.
    cold_warmed, cold = page_faults_reading_fifty_messages("cold")
    warm_warmed, warm = page_faults_reading_fifty_messages("warm")
    assert (cold_warmed, warm_warmed) == ("None", "True")
    assert cold > 20_000  # about 100 MB of buffers and messages, 4 KB pages
    assert warm < cold / 20


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="reads a local PostgreSQL's processes",
)
def test_it_reads_what_the_databases_processes_spent():
    from django.db import connection

    before = loadtest.database_cpu()
    assert before  # the server's own processes, at least: PostgreSQL on this machine
    with connection.cursor() as cursor:  # work for a backend: a few hundred ms of CPU
        cursor.execute("SELECT count(*) FROM generate_series(1, 3000000)")
        assert cursor.fetchone() == (3000000,)
    assert loadtest.database_cpu_since(before) > 0.05
