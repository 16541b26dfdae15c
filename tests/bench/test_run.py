"""bench/run.py: what `make bench` reads from the servers' logs, how it runs and combines its
rounds, and the table it prints (its loads: tests/bench/test_loadtest.py)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import run


def test_the_bench_reads_the_longest_stall_of_each_window_from_the_server_logs(tmp_path):
    log = tmp_path / "collab-1.log"
    log.write_text(
        "2026-12-03 06:00:00,100 INFO collab.ws ws open user=a\n"
        "2026-12-03 06:00:01,250 WARNING collab.metrics event loop stalled "
        "stall_ms=12.5 cause=loop\n"
        "2026-12-03 06:00:02,000 WARNING collab.metrics garbage collection paused the process "
        "stall_ms=118.0 cause=gc2\n"
        "2026-12-03 06:00:09,000 WARNING collab.metrics event loop stalled "
        "stall_ms=300.0 cause=loop\n"
    )
    base = time.mktime(time.strptime("2026-12-03 06:00:00", "%Y-%m-%d %H:%M:%S"))
    found = run.server_stalls([log], {"connect": [base, base + 3], "quiet": [base + 4, base + 5]})

    assert found["connect"] == {"max_ms": 118.0, "cause": "gc2", "over_50_ms": 1}
    assert found["quiet"] == {"max_ms": 0.0, "cause": None, "over_50_ms": 0}


def test_the_bench_reads_a_stall_line_as_collab_writes_it_today(tmp_path):
    log = tmp_path / "collab-1.log"
    log.write_text(
        "2026-12-03 06:00:01,250 WARNING collab.metrics event loop stalled stall_ms=41.5"
        " cause=waiting gc_ms=0.0 faults=12 sys_ms=0.4 wait_ms=30.2\n"
    )
    base = time.mktime(time.strptime("2026-12-03 06:00:00", "%Y-%m-%d %H:%M:%S"))
    found = run.server_stalls([log], {"connect": [base, base + 3]})

    assert found["connect"] == {"max_ms": 41.5, "cause": "waiting", "over_50_ms": 0}


def test_keep_logs_copies_the_logs_of_the_servers_a_phase_started_and_no_others(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "collab-8001.log").write_text("an earlier phase's server\n")
    servers = run.Servers(scratch)
    server = servers.spawn("collab 9001", [sys.executable, "-c", "print('a stall line')"], {})
    server.wait(timeout=30)
    servers.stop()

    run.keep_logs(servers, tmp_path / "kept", 2)
    run.keep_logs(servers, None, 3)  # no --keep-logs: nothing

    kept = tmp_path / "kept"
    assert sorted(p.name for p in kept.iterdir()) == ["phase-2"]
    assert [p.name for p in (kept / "phase-2").iterdir()] == ["collab-9001.log"]
    assert (kept / "phase-2" / "collab-9001.log").read_text() == "a stall line\n"


def test_a_stall_counts_in_the_window_it_overlapped_and_not_in_one_that_ended_before_it(tmp_path):
    log = tmp_path / "collab-1.log"
    log.write_text(
        # 06:00:05.000-05.080: began inside "hold", ended after it.
        "2026-12-03 06:00:05,080 WARNING collab.metrics event loop stalled "
        "stall_ms=80.0 cause=loop\n"
        # 06:00:05.060-05.150: began after "hold" ended (the closes that follow it).
        "2026-12-03 06:00:05,150 WARNING collab.metrics event loop stalled "
        "stall_ms=90.0 cause=loop\n"
    )
    base = time.mktime(time.strptime("2026-12-03 06:00:00", "%Y-%m-%d %H:%M:%S"))
    found = run.server_stalls(
        [log], {"hold": [base + 1, base + 5.05], "close": [base + 5.1, base + 6]}
    )

    assert found["hold"] == {"max_ms": 80.0, "cause": "loop", "over_50_ms": 1}
    assert found["close"] == {"max_ms": 90.0, "cause": "loop", "over_50_ms": 1}


def test_the_bench_reads_when_the_servers_were_done_closing_from_their_logs(tmp_path):
    base = time.mktime(time.strptime("2026-12-03 06:00:00", "%Y-%m-%d %H:%M:%S"))
    (tmp_path / "collab-1.log").write_text(
        "2026-12-03 06:00:00,500 INFO collab.ws ws close user=a document=d code=1000\n"
        "2026-12-03 06:00:02,100 INFO collab.ws ws close user=b document=d code=1000\n"
    )
    (tmp_path / "collab-2.log").write_text(
        "2026-12-03 06:00:01,000 INFO collab.ws ws open user=c document=d role=editor via=ticket\n"
        "2026-12-03 06:00:03,000 INFO collab.ws ws close user=c document=d code=1000\n"
    )
    logs = [tmp_path / "collab-1.log", tmp_path / "collab-2.log"]

    # The line before the closes started is someone else's.
    assert run.server_closes(logs, base + 1, expected=2) == {
        "closed": 2,
        "seconds": 2.0,
        "per_s": 1.0,
    }
    assert run.server_closes(logs, base + 1, expected=3, timeout=0.3)["seconds"] is None


def test_the_table_prints_no_ratio_for_the_database_the_reference_does_not_have():
    results = {
        "collab": {"idle": {"connects_per_s": 1200.0, "database_cpu_ms_per_connect": 0.04}},
        "reference": {"idle": {"connects_per_s": 2000.0, "database_cpu_ms_per_connect": 0.002}},
    }
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in run.table(results, ["idle"]).splitlines()
    }
    assert rows["connects/s"] == ["1,200.0", "2,000.0", "0.60 |"]
    assert rows["database CPU per connect (ms)"][2] == "— |"


def test_the_table_names_each_longest_stall_s_cause():
    stalls = {
        "connect": {"max_ms": 35.0, "cause": "waiting", "over_50_ms": 0},
        "hold": {"max_ms": 0.0, "cause": None, "over_50_ms": 0},
    }
    results = {"collab": {"idle": {"server_stalls": stalls}}, "reference": {"idle": {}}}
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in run.table(results, ["idle"]).splitlines()
    }

    assert rows["idle: longest server stall while connecting (ms)"][0] == "35.0 (waiting)"
    assert rows["idle: longest server stall while held (ms)"][0] == "0.00"


def test_each_mode_runs_its_rounds_and_each_fresh_round_gets_servers_of_its_own():
    phases = run.schedule(["fanout", "idle", "bigupdate", "joinstorm", "idle_session"], rounds=3)

    assert phases == [
        [("fanout", 1), ("fanout", 2), ("fanout", 3)]
        + [("joinstorm", 1), ("joinstorm", 2), ("joinstorm", 3)],
        [("bigupdate", 1), ("bigupdate", 2), ("bigupdate", 3)],
        [("idle", 1)],
        [("idle", 2)],
        [("idle", 3)],
        [("idle_session", 1)],
        [("idle_session", 2)],
        [("idle_session", 3)],
    ]
    assert run.schedule(["idle"], rounds=1) == [[("idle", 1)]]


def test_only_the_servers_whose_stalls_are_timed_look_at_their_loop_every_5_ms():
    env = {"DATABASE_URL": "x", "STALL_PROBE_INTERVAL_MS": "7"}
    timed = [run.collab_env(env, [(mode, 1)], {}) for mode in ("bigupdate", "idle", "idle_session")]
    latency = [
        run.collab_env(env, [(mode, 1), (mode, 2)], {})
        for mode in ("fanout", "flood", "throughput", "joinstorm", "fanout1000")
    ]

    assert [e["STALL_PROBE_INTERVAL_MS"] for e in timed] == ["5", "5", "5"]
    # The servers' own default (50 ms, as deployed), whatever the shell had.
    assert all("STALL_PROBE_INTERVAL_MS" not in e for e in latency)
    assert all(e["DATABASE_URL"] == "x" for e in timed + latency)
    # An experiment's --server-env wins in every phase.
    assert run.collab_env(env, [("fanout", 1)], {"STALL_PROBE_INTERVAL_MS": "1"}) == {
        "DATABASE_URL": "x",
        "STALL_PROBE_INTERVAL_MS": "1",
    }
    assert (
        run.collab_env(env, [("idle", 1)], {"STALL_PROBE_INTERVAL_MS": "1"})[
            "STALL_PROBE_INTERVAL_MS"
        ]
        == "1"
    )


@pytest.mark.django_db(transaction=True)
def test_a_phases_collab_processes_are_started_with_its_stall_probe(tmp_path):
    from tests.live import server_env

    servers = run.Servers(tmp_path)
    env = server_env(STALL_PROBE_INTERVAL_MS="50")  # a shell's setting, which no phase keeps
    seen = {}
    try:
        for mode in ("bigupdate", "fanout"):
            (target,) = run.start_phase(
                [(mode, 1)],
                servers,
                env,
                {},
                processes=1,
                only="collab",
                server_cores=None,
                server_js=None,
            )
            (pid,) = target["pids"]
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
            seen[mode] = [v for v in environ if v.startswith(b"STALL_PROBE_INTERVAL_MS=")]
    finally:
        servers.stop()

    # What the daphne processes themselves run with: the 5 ms probe where the stalls are
    # timed, the servers' own default (no setting) elsewhere.
    assert seen == {"bigupdate": [b"STALL_PROBE_INTERVAL_MS=5"], "fanout": []}


def test_the_servers_take_turns_going_first_and_collab_only_modes_skip_the_reference():
    collab = {"name": "collab", "reference": False}
    reference = {"name": "reference", "reference": True}
    targets = [collab, reference]

    assert run.turns(targets, "fanout", 1) == [collab, reference]
    assert run.turns(targets, "fanout", 2) == [reference, collab]
    assert run.turns(targets, "fanout", 3) == [collab, reference]
    assert run.turns(targets, "idle_session", 2) == [collab]


def _round(p99, stall, *, lost=0, opened=5000, cause="loop"):
    return {
        "opened": opened,
        "lost": lost,
        "latency_ms": {"p50": p99 / 2, "p99": p99, "max": p99 * 2},
        "achieved_rate_per_writer_min": p99,
        "server_stalls": {"connect": {"max_ms": stall, "cause": cause, "over_50_ms": 1}},
        "connect_errors": [f"error {p99}"] if lost else [],
        "auth": "ticket",
    }


def test_rounds_combine_into_medians_the_worst_stall_and_every_loss():
    rounds = [
        _round(6.0, 20.0),
        _round(9.0, 60.0, lost=2, opened=4998, cause="gc"),
        _round(5.0, 30.0),
    ]

    combined = run.combine(rounds)

    assert combined["latency_ms"] == {"p50": 3.0, "p99": 6.0, "max": 18.0}  # medians; the max
    assert combined["achieved_rate_per_writer_min"] == 5.0  # the least
    assert combined["server_stalls"]["connect"] == {"max_ms": 60.0, "cause": "gc", "over_50_ms": 3}
    assert (combined["lost"], combined["opened"]) == (2, 4998)
    assert combined["connect_errors"] == ["error 9.0"]
    assert combined["auth"] == "ticket"
    assert combined["rounds"] == rounds
    assert "error" not in combined


def test_a_failed_round_is_left_out_of_the_figures_and_fails_the_bench():
    combined = run.combine([_round(6.0, 20.0), {"error": "timed out after 240 s"}])

    assert combined["latency_ms"]["p99"] == 6.0
    assert combined["error"] == "timed out after 240 s"
    assert run.combine([{"error": "no result"}]) == {"error": "no result"}


def test_one_round_is_the_result_as_the_load_tool_gave_it():
    only = _round(6.0, 20.0)

    assert run.combine([only]) == only


def test_the_table_shows_the_median_and_the_rounds_one_by_one_with_their_ratios():
    def idle(*rates):
        return run.combine([{"connects_per_s": rate} for rate in rates])

    results = {
        "collab": {"idle": idle(1200.0, 900.0, 1300.0), "idle_session": idle(1000.0, 1100.0)},
        "reference": {"idle": idle(2000.0, 1000.0, 2100.0)},
    }
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in run.table(results, ["idle", "idle_session"]).splitlines()
    }
    each = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in run.each_round(results, ["idle", "idle_session"]).splitlines()
    }

    # The medians, and the median of the rounds' ratios (0.60, 0.90, 0.62), not 1,200 / 2,000.
    assert rows["connects/s"] == ["1,200.0", "2,000.0", "0.62 |"]
    assert each["connects/s"] == [
        "1,200.0 / 900.0 / 1,300.0",
        "2,000.0 / 1,000.0 / 2,100.0",
        "0.60 / 0.90 / 0.62 |",
    ]
    # A collab-only mode is compared round by round with the reference's idle.
    assert each["session cookie: connects/s"] == [
        "1,000.0 / 1,100.0",
        "2,000.0 / 1,000.0 / 2,100.0",
        "0.50 / 1.10 |",
    ]
    assert run.each_round({"collab": {"idle": idle(1.0)}, "reference": {}}, ["idle"]) == ""


def test_it_refuses_a_bench_of_no_rounds(capsys):
    with pytest.raises(SystemExit) as stopped:
        run.main(["--rounds", "0"])

    assert stopped.value.code == 2
    assert "--rounds must be 1 or more" in capsys.readouterr().err


def test_pinned_the_load_client_gets_the_last_core_and_the_servers_the_others():
    assert run.split_cores({0, 1}) == ({0}, {1})
    assert run.split_cores({0, 1, 2, 3}) == ({0, 1, 2}, {3})
    with pytest.raises(SystemExit, match="at least two cores"):
        run.split_cores({0})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two cores")
def test_what_the_bench_starts_while_pinned_runs_on_those_cores_and_the_bench_goes_back():
    before = os.sched_getaffinity(0)
    servers, client = run.split_cores(before)
    with run.on_cores(client):
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
    try:
        assert os.sched_getaffinity(child.pid) == client
    finally:
        child.communicate(b"")
    assert os.sched_getaffinity(0) == before
    # Unpinned (the target rows): a process starts wherever the bench may run.
    with run.on_cores(None):
        assert os.sched_getaffinity(0) == before
