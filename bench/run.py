"""`make bench`: collab and the reference y-websocket server under the same loads, side by side.

Starts, on this machine and on loopback only:
- a private Valkey (collab.embedded), a scratch database (a fresh PostgreSQL database on
  127.0.0.1:5432 when one answers, else SQLite in a temporary folder) and N `manage.py serve`
  processes on N ports, as production runs them (DEBUG off);
- the reference server: npm `y-websocket@1.5.4`, its `bin/server.js`, installed into a temporary
  folder now and deleted afterwards (never committed);
then runs every mode of `manage.py loadtest` against each in turn and prints a table of the
figures with the ratio collab / reference. Every step is bounded in time; everything it started
is stopped and deleted at the end. Options: `python -m bench.run --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.loadtest import raise_nofile_limit

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PACKAGE = "y-websocket@1.5.4"
# ws is an optional dependency of y-websocket (its server needs it; y-leveldb, the other
# optional one, is native and unused without YPERSISTENCE); versions as tests/interop pins.
REFERENCE_EXTRAS = ["ws@8.18.3", "yjs@13.6.33"]
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODE_ORDER = (
    "fanout",
    "flood",
    "throughput",
    "joinstorm",
    "fanout1000",
    "bigupdate",
    "idle",
    "idle_session",
)
# Rows of the bench that are a loadtest mode with other parameters.
LOADTEST_MODE = {"fanout1000": "fanout", "idle_session": "idle"}
# Modes run against collab only; their reference column is another mode's (the reference has
# no sessions: its idle figures are what a session socket is compared with).
COLLAB_ONLY = {"idle_session": "idle"}
# Modes that get fresh servers of their own (each its own phase, after the others).
FRESH = ("idle", "idle_session")
# Modes with a "longest server stall" row: their collab processes look at the event loop every
# STALL_PROBE_MS, so that a stall is timed to within that. Every other mode runs its servers at
# the probe's own default (50 ms, as deployed): an idle process waking every 5 ms spent 30-36 ms
# of CPU a second on this bench's machines (6-7 ms at 50 ms), which the reference does not pay
# and a deployment does not either (docs/BENCHMARKS.md, change 78).
STALL_MODES = ("bigupdate", "idle", "idle_session")
STALL_PROBE_MS = 5


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on {port} within {timeout:.0f} s")


def wait_healthy(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"collab on {port} exited with {process.returncode} while starting")
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"collab on {port} not healthy within {timeout:.0f} s")


def migrate(env: dict) -> None:
    """Migrates the scratch database that ``env`` names (DATABASE_URL)."""
    say("migrating the scratch database")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
    )


class Database:
    """A scratch database: PostgreSQL on 127.0.0.1 if it answers, else SQLite in ``folder``."""

    def __init__(self, folder: Path, url: str | None) -> None:
        self.url = url
        self.created: str | None = None
        if url:
            return
        try:
            import psycopg

            name = f"collab_bench_{os.getpid()}"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as db:
                db.execute(f'DROP DATABASE IF EXISTS "{name}"')
                db.execute(f'CREATE DATABASE "{name}"')
            self.created = name
            self.url = f"postgres://postgres@127.0.0.1:5432/{name}"
        except Exception as exc:
            say(f"no PostgreSQL on 127.0.0.1:5432 ({type(exc).__name__}); using SQLite")
            self.url = f"sqlite:///{folder / 'bench.sqlite3'}"

    def drop(self) -> None:
        if self.created is None:
            return
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as db:
                db.execute(f'DROP DATABASE IF EXISTS "{self.created}" WITH (FORCE)')


class Servers:
    """Everything the bench starts, stopped in reverse order by ``stop()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.logs: list[Path] = []

    def spawn(self, what: str, command: list[str], env: dict, cwd: Path = ROOT):
        self.logs.append(self.folder / f"{what.replace(' ', '-')}.log")
        log = open(self.logs[-1], "wb")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it reaches daphne too
        )
        self.processes.append((what, process))
        return process

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def keep_logs(servers: Servers, into: Path | None, phase: int) -> None:
    """``--keep-logs``: the logs of the servers one phase started, copied into
    ``into/phase-N`` before the bench removes its scratch folder (docs/BENCHMARKS.md read the
    stalls' causes this way, change 81)."""
    if into is None or not servers.logs:
        return
    kept = into / f"phase-{phase}"
    kept.mkdir(parents=True, exist_ok=True)
    for log in servers.logs:
        if log.exists():
            shutil.copy2(log, kept / log.name)


def split_cores(available: set[int]) -> tuple[set[int], set[int]]:
    """``--pin``: the cores for the servers and the one for the load client (the highest)."""
    if len(available) < 2:
        raise SystemExit(
            "--pin needs at least two cores: one for the load client, one or more for the servers"
        )
    client = max(available)
    return available - {client}, {client}


@contextlib.contextmanager
def on_cores(cores: set[int] | None):
    """Runs the block on ``cores`` (None: wherever it ran), so that what it starts runs there:
    a process starts on its parent's cores. This process's own are restored afterwards."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def server_pids(process: subprocess.Popen) -> list[int]:
    """The daphne process under a `manage.py serve` (or the process itself): serve runs it as
    `python -m collab.eventloop LOOP ...` (collab/eventloop.py)."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
        daphne = [c.pid for c in children if "collab.eventloop" in c.cmdline()]
        return daphne or [process.pid]
    except Exception:
        return [process.pid]


def install_reference(folder: Path) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the reference server (Node.js 18+)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text('{"private": true}\n')
    say(f"installing {REFERENCE_PACKAGE} into {folder} (npm)")
    result = subprocess.run(
        ["npm", "install", "--omit=optional", "--no-audit", "--no-fund", REFERENCE_PACKAGE]
        + REFERENCE_EXTRAS,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"npm install failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    server = folder / "node_modules" / "y-websocket" / "bin" / "server.js"
    if not server.exists():
        raise SystemExit(f"{server} is missing after npm install")
    return server


def start_reference(servers: Servers, server_js: Path, env: dict) -> tuple[str, int]:
    """Starts the reference server on a free port; its URL and pid once it listens."""
    port = free_port()
    node = servers.spawn(
        "reference",
        ["node", str(server_js)],
        {**env, "HOST": "127.0.0.1", "PORT": str(port)},
        cwd=server_js.parent,
    )
    wait_port(port, node, 30, "the reference server")
    say(f"reference: y-websocket {REFERENCE_PACKAGE} on port {port}, pid {node.pid}")
    return f"ws://127.0.0.1:{port}", node.pid


def mode_arguments(mode: str, args) -> list[str]:
    common = ["--timeout", str(args.timeout), "--concurrency", str(args.concurrency)]
    if mode == "fanout":
        return common + [
            "--readers",
            str(args.readers),
            "--updates",
            str(args.updates),
            "--rate",
            str(args.rate),
        ]
    if mode == "flood":
        return common + [
            "--readers",
            str(args.flood_readers),
            "--updates",
            str(args.flood_updates),
            "--rate",
            str(args.rate),
            "--flood-rate",
            str(args.flood_rate),
        ]
    if mode == "throughput":
        return common + [
            "--documents",
            str(args.tp_documents),
            "--writers",
            str(args.writers),
            "--rate",
            str(args.tp_rate),
            "--duration",
            str(args.duration),
        ]
    if mode == "fanout1000":
        return common + [
            "--readers",
            str(args.wide_readers),
            "--updates",
            str(args.wide_updates),
            "--rate",
            str(args.wide_rate),
        ]
    if mode in ("idle", "idle_session"):
        auth = ["--auth", "session"] if mode == "idle_session" else []
        return common + ["--connections", str(args.connections), "--hold", str(args.hold)] + auth
    if mode == "bigupdate":
        return common + ["--readers", str(args.big_readers), "--size", str(args.big_size)]
    return common + ["--clients", str(args.clients), "--size", str(args.size)]


def run_loadtest(
    mode: str, target: dict, env: dict, args, out: Path, cores: set[int] | None = None
) -> dict:
    command = [sys.executable, "manage.py", "loadtest", LOADTEST_MODE.get(mode, mode)]
    command += ["--json-out", str(out)]
    for url in target["urls"]:
        command += ["--url", url]
    for pid in target["pids"]:
        command += ["--server-pid", str(pid)]
    if target["reference"]:
        command.append("--reference")
    command += mode_arguments(mode, args)
    say(f"{mode} against {target['name']}")
    try:
        with on_cores(cores):
            subprocess.run(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, timeout=args.mode_timeout
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.mode_timeout} s"}
    try:
        result = json.loads(out.read_text())["result"]
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"no result ({exc})"}
    if target.get("logs"):
        windows = result.get("windows", {})
        if "close" in windows and result.get("closed"):
            closes = server_closes(target["logs"], windows["close"][0], result["closed"])
            result["server_closes"] = closes
            if closes["seconds"] is not None:
                windows["close"] = [windows["close"][0], windows["close"][0] + closes["seconds"]]
        result["server_stalls"] = server_stalls(target["logs"], windows)
    return result


def _logged(logs: list[Path], pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
    """The collab processes' lines that match ``pattern`` (whose first two groups are the text
    format's time, to the second, and its milliseconds), each with its wall-clock stamp."""
    found = []
    for log in logs:
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                match = pattern.match(line)
                if match:
                    stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
                    found.append((stamp + int(match[2]) / 1000, match))
    return found


# A collab process's line for a socket it has finished with (editor/realtime/connection.py).
CLOSE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO collab\.ws ws close ")


def server_closes(logs: list[Path], started: float, expected: int, timeout: float = 30.0) -> dict:
    """How long the collab processes took to finish with ``expected`` sockets closed from
    ``started`` on (wall clock): until the last of their ``ws close`` lines, written once a
    socket has left its room and its presence. The client sees a close handshake answered
    before that (autobahn answers it first), so only the servers' lines say when the work
    was done. Waits up to ``timeout`` for the lines; ``seconds`` is None if fewer came."""
    # No line at all after a few seconds: the processes do not log at INFO (--log-level).
    deadline, first = time.monotonic() + timeout, time.monotonic() + min(timeout, 5.0)
    while True:
        stamps = [at for at, _ in _logged(logs, CLOSE_LINE) if at >= started - 0.001]
        now = time.monotonic()
        if len(stamps) >= expected or now > deadline or (not stamps and now > first):
            break
        time.sleep(0.2)
    if len(stamps) < expected:
        return {"closed": len(stamps), "seconds": None, "per_s": None}
    seconds = max(max(stamps) - started, 0.001)
    return {
        "closed": len(stamps),
        "seconds": round(seconds, 2),
        "per_s": round(len(stamps) / seconds, 1),
    }


# A collab process's stall line (editor/metrics.py), in the text log format.
STALL_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING collab\.metrics .*"
    r"stall_ms=([\d.]+) cause=(\w+)"
)


def server_stalls(logs: list[Path], windows: dict) -> dict:
    """The longest stall the collab processes logged within each of the run's windows (wall
    clock), with its cause (loop; gc: a stall mostly spent collecting; kernel: mostly in the
    kernel, page faults or system calls; waiting: mostly ready to run and waiting for a core;
    gc0, gc1, gc2: one collection's own line), across all processes. A line is stamped when
    the stall ended, and says how long it lasted: it counts in a window if it overlapped it.
    (Counting every line stamped up to 0.2 s after a window, as the bench did before, put the
    first stalls of the idle mode's 5,000 closes, which start as the hold ends, in the "while
    held" row.)"""
    stalls = [(at, float(match[3]), match[4]) for at, match in _logged(logs, STALL_LINE)]
    found = {}
    for name, (start, end) in windows.items():
        inside = [(ms, cause) for at, ms, cause in stalls if at >= start and at - ms / 1000 <= end]
        longest = max(inside, default=None)
        found[name] = {
            "max_ms": longest[0] if longest else 0.0,
            "cause": longest[1] if longest else None,
            "over_50_ms": sum(1 for ms, _ in inside if ms > 50),
        }
    return found


# -- rounds -------------------------------------------------------------------------------------
#
# Every mode runs ``--rounds`` times against each server, the two taking turns (collab first in
# odd rounds, the reference first in even ones, so that a machine growing busier or quieter
# through a mode does not favour either); a fresh mode's rounds each get fresh servers. One run
# of identical code swung by about a quarter from one `make bench` to the next on these shared
# machines (docs/BENCHMARKS.md), more than most targets' margins: a figure of several rounds
# says which side of a line a build is on where one round cannot.
#
# How one figure of several rounds is made, by its name: counts of what went wrong are added
# up; counts of what worked and minima are the fewest; maxima (the longest stall, the slowest
# delivery) are the largest; everything else (percentiles, rates, memory, CPU) is the median.
SUMMED = {"lost", "duplicates", "failures", "connect_failures", "over_50_ms"}
LEAST = {"opened", "still_open", "delivered", "synced", "complete", "connected", "closed"}
# Figures whose rounds the table also prints one by one (with each round's ratio): the rows
# of the round-2 targets (docs/BENCHMARKS.md, issue 16).
EACH_ROUND = [
    ("idle", "connects_per_s"),
    ("idle_session", "connects_per_s"),
    ("idle", "server_kb_per_connection"),
    ("idle_session", "server_kb_per_connection"),
    ("fanout", "latency_ms.p99"),
    ("fanout1000", "latency_ms.p99"),
    ("joinstorm", "time_to_sync_ms.p50"),
    ("joinstorm", "wall_s"),
]


def schedule(modes: list[str], rounds: int) -> list[list[tuple[str, int]]]:
    """The bench's phases (each on servers of its own) as (mode, round) in the order run:
    the modes that share servers, each mode's rounds one after another, in one phase, those
    timing stalls (``STALL_MODES``) in a phase after the others; then every round of each fresh
    mode (``FRESH``) in a phase of its own."""
    shared = [m for m in modes if m not in FRESH]
    quiet = [(m, n) for m in shared if m not in STALL_MODES for n in range(1, rounds + 1)]
    timed = [(m, n) for m in shared if m in STALL_MODES for n in range(1, rounds + 1)]
    fresh = [[(mode, n)] for mode in modes if mode in FRESH for n in range(1, rounds + 1)]
    return [phase for phase in [quiet, timed, *fresh] if phase]


def collab_env(env: dict, phase: list[tuple[str, int]], server_env: dict) -> dict:
    """The collab processes' environment for a phase: ``env``, with the event loop looked at
    every ``STALL_PROBE_MS`` when a mode of the phase reports their longest stall (else at the
    servers' own default), and ``--server-env``'s settings over both."""
    chosen = {k: v for k, v in env.items() if k != "STALL_PROBE_INTERVAL_MS"}
    if any(mode in STALL_MODES for mode, _ in phase):
        chosen["STALL_PROBE_INTERVAL_MS"] = str(STALL_PROBE_MS)
    return {**chosen, **server_env}


def start_phase(
    phase: list[tuple[str, int]],
    servers: Servers,
    env: dict,
    server_env: dict,
    *,
    processes: int,
    only: str | None,
    server_cores: set[int] | None,
    server_js: Path | None,
) -> list[dict]:
    """Starts a phase's servers (``only`` one side, or both) and returns them as targets: the
    collab processes with the phase's environment (``collab_env``), the reference with the
    bench's own."""
    targets = []
    if only != "reference":
        ports = [free_port() for _ in range(processes)]
        own_env = collab_env(env, phase, server_env)
        with on_cores(server_cores):
            collab = [
                servers.spawn(
                    f"collab {port}",
                    [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
                    + ["--port", str(port)],
                    own_env,
                )
                for port in ports
            ]
        for port, process in zip(ports, collab, strict=True):
            wait_healthy(port, process, 60)
        pids = [pid for process in collab for pid in server_pids(process)]
        logs = [servers.folder / f"collab-{port}.log" for port in ports]
        probe = own_env.get("STALL_PROBE_INTERVAL_MS")
        say(
            f"collab: {processes} daphne process(es) on ports {ports}, pids {pids};"
            + (f" stall probe every {probe} ms" if probe else " stall probe at its default")
        )
        targets.append(
            {
                "name": "collab",
                "reference": False,
                "urls": [f"ws://127.0.0.1:{p}/ws/documents" for p in ports],
                "pids": pids,
                "logs": logs,
            }
        )
    if only != "collab":
        assert server_js is not None, "the reference is installed before its phases start"
        with on_cores(server_cores):
            url, pid = start_reference(servers, server_js, env)
        targets.append({"name": "reference", "reference": True, "urls": [url], "pids": [pid]})
    return targets


def turns(targets: list[dict], mode: str, round_: int) -> list[dict]:
    """The targets a mode's round runs against, in order: collab first in odd rounds, the
    reference first in even ones; modes for collab only (``COLLAB_ONLY``) skip the
    reference."""
    chosen = [t for t in targets if not (t["reference"] and mode in COLLAB_ONLY)]
    return chosen if round_ % 2 else chosen[::-1]


def combine(rounds: list[dict]) -> dict:
    """One result from a mode's rounds against one server (module comment above). A failed
    round (``error``) is left out of the figures and its error kept: the bench then fails."""
    good = [r for r in rounds if "error" not in r]
    errors = [r["error"] for r in rounds if "error" in r]
    combined = _combine(good) if good else {}
    if errors:
        combined["error"] = "; ".join(errors)
    if len(rounds) > 1:
        combined["rounds"] = rounds
    return combined


def _combine(results: list[dict]) -> dict:
    first = results[0]
    combined: dict = {}
    for key, value in first.items():
        values = [r.get(key) for r in results]
        if isinstance(value, dict) and "max_ms" in value:
            # A window's longest stall: the whole entry of the round where it was longest.
            stalls = [v for v in values if isinstance(v, dict)]
            longest = dict(max(stalls, key=lambda v: v.get("max_ms") or 0))
            longest["over_50_ms"] = sum(v.get("over_50_ms") or 0 for v in stalls)
            combined[key] = longest
        elif isinstance(value, dict):
            combined[key] = _combine([v for v in values if isinstance(v, dict)])
        elif _number(value) and all(_number(v) for v in values):
            combined[key] = _figure(key, values)
        elif isinstance(value, list) and key.endswith("errors"):
            combined[key] = [e for v in values if isinstance(v, list) for e in v]
        else:
            combined[key] = value
    return combined


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _figure(key: str, values: list):
    words = key.split("_")
    if key in SUMMED:
        return sum(values)
    if key in LEAST or "min" in words:
        return min(values)
    if "max" in words:
        return max(values)
    middle = statistics.median(values)
    return int(middle) if all(isinstance(v, int) for v in values) and middle % 1 == 0 else middle


# -- the table ----------------------------------------------------------------------------------


def _get(result: dict, path: str):
    value = result
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# Figures whose reference side is background, not the reference's own: no ratio is printed.
# (The reference keeps no database: what PostgreSQL spent while it connected is other work.)
NO_RATIO = {"database_cpu_ms_per_connect"}

ROWS = [
    ("idle", "opened", "connections opened", ""),
    ("idle", "still_open", "still open after hold", ""),
    ("idle", "connects_per_s", "connects/s", ""),
    ("idle", "server_kb_per_connection", "server KB per connection", "KB"),
    ("idle", "server_rss_after_mb", "server RSS with all open", "MB"),
    ("idle", "server_cpu_ms_per_connect", "server CPU per connect", "ms"),
    ("idle", "client_cpu_ms_per_connect", "load client CPU per connect", "ms"),
    ("idle", "server_wait_ms_per_connect", "server run-queue wait per connect", "ms"),
    ("idle", "client_wait_ms_per_connect", "load client run-queue wait per connect", "ms"),
    ("idle", "database_cpu_ms_per_connect", "database CPU per connect", "ms"),
    ("idle", "handshake_ms.p50", "idle: a socket's time to its 101, p50", "ms"),
    ("idle", "handshake_ms.p99", "idle: a socket's time to its 101, p99", "ms"),
    ("idle", "first_round_trip_ms.p50", "idle: 101 to sync step 2, p50", "ms"),
    ("idle", "first_round_trip_ms.p99", "idle: 101 to sync step 2, p99", "ms"),
    ("idle", "probe_rtt_ms.p50", "idle: probe round trip p50", "ms"),
    ("idle", "probe_rtt_ms.max", "idle: probe round trip max (longest stall)", "ms"),
    ("idle", "probe_max_connecting_ms", "idle: probe round trip max while connecting", "ms"),
    ("idle", "server_stalls.connect.max_ms", "idle: longest server stall while connecting", "ms"),
    ("idle", "server_stalls.hold.max_ms", "idle: longest server stall while held", "ms"),
    ("idle", "close_s", "idle: all closed, client's wait", "s"),
    ("idle", "server_closes.per_s", "idle: closes/s, server done", ""),
    ("idle", "server_stalls.close.max_ms", "idle: longest server stall while closing", "ms"),
    ("idle_session", "connects_per_s", "session cookie: connects/s", ""),
    ("idle_session", "server_kb_per_connection", "session cookie: server KB per connection", "KB"),
    ("idle_session", "server_stalls.connect.max_ms", "session cookie: longest stall", "ms"),
    ("idle_session", "server_cpu_ms_per_connect", "session cookie: server CPU per connect", "ms"),
    (
        "idle_session",
        "server_wait_ms_per_connect",
        "session cookie: server run-queue wait per connect",
        "ms",
    ),
    ("idle_session", "handshake_ms.p50", "session cookie: time to the 101, p50", "ms"),
    ("idle_session", "first_round_trip_ms.p50", "session cookie: 101 to sync step 2, p50", "ms"),
    (
        "idle_session",
        "database_cpu_ms_per_connect",
        "session cookie: database CPU per connect",
        "ms",
    ),
    ("fanout", "latency_ms.p50", "fan-out latency p50", "ms"),
    ("fanout", "latency_ms.p95", "fan-out latency p95", "ms"),
    ("fanout", "latency_ms.p99", "fan-out latency p99", "ms"),
    ("fanout", "latency_ms.max", "fan-out latency max", "ms"),
    ("fanout", "server_cpu_ms_per_update", "fan-out: server CPU per update", "ms"),
    ("fanout", "server_wait_ms_per_update", "fan-out: server run-queue wait per update", "ms"),
    ("fanout", "client_wait_ms_per_update", "fan-out: load client run-queue wait per update", "ms"),
    ("fanout", "delivered", "fan-out delivered", ""),
    ("fanout", "lost", "fan-out lost", ""),
    ("fanout", "client_cpu_percent", "fan-out client CPU", "%"),
    ("flood", "latency_ms_quiet.p99", "flood: other document p99, quiet", "ms"),
    ("flood", "latency_ms_flood.p99", "flood: other document p99, flooded", "ms"),
    ("flood", "p99_ratio", "flood: p99 flooded / quiet", ""),
    ("flood", "p50_ratio", "flood: p50 flooded / quiet", ""),
    ("flood", "flood.flooder.sent", "flood: updates the flooder sent", ""),
    ("throughput", "delivered_per_s", "throughput delivered/s", ""),
    ("throughput", "latency_ms.p50", "throughput latency p50", "ms"),
    ("throughput", "latency_ms.p99", "throughput latency p99", "ms"),
    ("throughput", "lost", "throughput lost", ""),
    ("throughput", "client_cpu_percent", "throughput client CPU", "%"),
    ("joinstorm", "complete", "join storm complete", ""),
    ("joinstorm", "time_to_sync_ms.p50", "join storm sync p50", "ms"),
    ("joinstorm", "time_to_sync_ms.p99", "join storm sync p99", "ms"),
    ("joinstorm", "wall_s", "join storm wall", "s"),
    ("fanout1000", "latency_ms.p50", "fan-out 1 → 1,000 latency p50", "ms"),
    ("fanout1000", "latency_ms.p99", "fan-out 1 → 1,000 latency p99", "ms"),
    ("fanout1000", "latency_ms.max", "fan-out 1 → 1,000 latency max", "ms"),
    ("fanout1000", "lost", "fan-out 1 → 1,000 lost", ""),
    ("bigupdate", "time_to_all_readers_s", "16 MB update: time to every reader", "s"),
    ("bigupdate", "probe_max_ms", "16 MB update: probe round trip max", "ms"),
    ("bigupdate", "server_stalls.apply.max_ms", "16 MB update: longest server stall", "ms"),
    ("bigupdate", "lost", "16 MB update lost", ""),
]


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: dict, modes) -> str:
    lines = [
        "| metric | collab | reference | collab / reference |",
        "|---|---:|---:|---:|",
    ]
    for mode, path, label, unit in ROWS:
        if mode not in modes:
            continue
        mine = results["collab"].get(mode, {})
        theirs = results["reference"].get(COLLAB_ONLY.get(mode, mode), {})
        ours, ref = _get(mine, path), _get(theirs, path)
        ratio = "—"
        if path in NO_RATIO:
            pass
        elif ratios := _ratios(mine.get("rounds", []), theirs.get("rounds", []), path):
            # A round's ratio compares two figures taken a minute or so apart; the two sides'
            # medians may come from rounds ten minutes apart. The median of the rounds' ratios
            # is what the machine's drift through a run moves least.
            ratio = f"{statistics.median(ratios):.2f}"
        elif _number(ours) and _number(ref) and ref:
            ratio = f"{ours / ref:.2f}"
        label = f"{label} ({unit})" if unit else label
        lines.append(f"| {label} | {_with_cause(mine, path)} | {_fmt(ref)} | {ratio} |")
    return "\n".join(lines)


def _with_cause(result: dict, path: str) -> str:
    """A figure as the table prints it; a longest stall with its cause beside it (``35.0
    (waiting)``), as the collab process's stall line named it (editor/metrics.py)."""
    shown = _fmt(_get(result, path))
    if path.startswith("server_stalls.") and path.endswith(".max_ms"):
        cause = _get(result, path.removesuffix("max_ms") + "cause")
        if cause:
            shown = f"{shown} ({cause})"
    return shown


def _ratios(ours: list[dict], theirs: list[dict], path: str) -> list[float]:
    """Each round's collab figure over the reference's figure of the same round, for the
    rounds where both have one (none for one round)."""
    pairs = [(_get(a, path), _get(b, path)) for a, b in zip(ours, theirs, strict=False)]
    return [a / b for a, b in pairs if _number(a) and _number(b) and b] if len(pairs) > 1 else []


def each_round(results: dict, modes) -> str:
    """The ``EACH_ROUND`` figures round by round, with each round's ratio; empty for one
    round."""
    lines = []
    for mode, path in EACH_ROUND:
        if mode not in modes:
            continue
        label = next(label for m, p, label, _ in ROWS if (m, p) == (mode, path))
        ours = [_get(r, path) for r in results["collab"].get(mode, {}).get("rounds", [])]
        ref = results["reference"].get(COLLAB_ONLY.get(mode, mode), {}).get("rounds", [])
        theirs = [_get(r, path) for r in ref]
        if len(ours) < 2:
            continue
        ratios = [
            f"{a / b:.2f}" if _number(a) and _number(b) and b else "—"
            for a, b in zip(ours, theirs, strict=False)
        ]  # every round's, "—" where one side has no figure
        lines.append(
            f"| {label} | {' / '.join(map(_fmt, ours))} | {' / '.join(map(_fmt, theirs)) or '—'}"
            f" | {' / '.join(ratios) or '—'} |"
        )
    if not lines:
        return ""
    head = ["| each round | collab | reference | collab / reference |", "|---|---:|---:|---:|"]
    return "\n".join(head + lines)


def parameters(args) -> str:
    return (
        f"{args.rounds} round(s) of each mode, the servers taking turns; "
        f"{args.processes} collab process(es) vs 1 node process; "
        f"fanout 1 writer → {args.readers} readers, {args.updates} updates at {args.rate}/s; "
        f"flood {args.flood_rate:.0f} updates/s on one document while 1 → {args.flood_readers} "
        f"fan out on another of the same process; "
        f"throughput {args.tp_documents} docs × {args.writers} writers at {args.tp_rate}/s "
        f"for {args.duration} s; idle {args.connections} connections held {args.hold} s; "
        f"join storm {args.clients} clients on a {args.size:,}-byte document; "
        f"wide fan-out 1 → {args.wide_readers} readers, {args.wide_updates} updates at "
        f"{args.wide_rate}/s; one {args.big_size:,}-byte update to {args.big_readers} readers; "
        f"collab's event loop looked at every {STALL_PROBE_MS} ms where its stalls are timed"
        f" ({', '.join(STALL_MODES)}), at its default elsewhere"
        + (
            "; pinned: the load client on a core of its own, the servers on the others"
            if args.pin
            else ""
        )
    )


# -- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="collab daphne processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of each mode against each server, taking turns; the table shows each"
        " figure's median (longest stalls: the longest; losses: the sum) and the median of"
        " the rounds' ratios",
    )
    parser.add_argument("--modes", default=",".join(MODE_ORDER))
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="fanout updates/s")
    parser.add_argument("--flood-readers", type=int, default=20)
    parser.add_argument("--flood-updates", type=int, default=100)
    parser.add_argument("--flood-rate", type=float, default=5000.0, help="the flooder's updates/s")
    parser.add_argument("--tp-documents", type=int, default=10)
    parser.add_argument("--writers", type=int, default=5)
    parser.add_argument("--tp-rate", type=float, default=10.0, help="throughput, per writer")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--wide-readers", type=int, default=1000, help="fanout1000: readers")
    parser.add_argument("--wide-updates", type=int, default=100)
    parser.add_argument("--wide-rate", type=float, default=10.0)
    parser.add_argument("--big-readers", type=int, default=5, help="bigupdate: readers")
    parser.add_argument("--big-size", type=int, default=16_000_000, help="bigupdate: bytes")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--mode-timeout", type=float, default=240.0)
    parser.add_argument("--database-url", help="default: scratch PostgreSQL or SQLite")
    parser.add_argument("--log-level", default="INFO", help="collab's LOG_LEVEL")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the collab processes (repeatable), for experiments",
    )
    parser.add_argument("--only", choices=("collab", "reference"), help="one side only")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the load client on the machine's last core and every server on the others"
        " (the database and Valkey where the kernel puts them): how much of a figure is the"
        " servers and the load client sharing cores. A diagnostic, not the target rows' setup",
    )
    parser.add_argument(
        "--keep-logs",
        type=Path,
        help="a folder: every phase's server logs (collab's stall, ws and access lines; the"
        " reference's output) copied into FOLDER/phase-N before they are removed",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "var" / "bench" / "latest.json"), help="all results, JSON"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    modes = [m for m in args.modes.split(",") if m in MODE_ORDER]  # in the order given
    server_cores, client_cores = split_cores(os.sched_getaffinity(0)) if args.pin else (None, None)
    nofile = raise_nofile_limit()  # inherited by every process started below
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="collab-bench-"))
    servers = Servers(folder)
    database = Database(folder, args.database_url)
    say(f"scratch folder {folder}; database {database.url}; open files limit {nofile}")
    results: dict = {"collab": {}, "reference": {}}
    phase_number = 0
    try:
        from collab.embedded import EmbeddedRedis

        redis = EmbeddedRedis()
        redis_url = redis.start()
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            DATABASE_URL=database.url,
            REDIS_URL=redis_url,
            COLLAB_VAR_DIR=str(folder / "var"),
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(48),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL=args.log_level,
            PYTHONUNBUFFERED="1",
            # The load-test clients are 50 people (manage.py loadtest's CROWD): a mode with
            # 10,000 sockets gives each more than the per-user socket cap, meant for tabs.
            WS_MAX_CONNECTIONS_PER_USER="0",
            # Every stall of 5 ms or more is logged: the table's "longest server stall" rows
            # come from these lines (server_stalls), the loop looked at every 5 ms in the
            # phases that have such rows (collab_env).
            STALL_WARNING_MS="5",
        )
        server_env = dict(item.split("=", 1) for item in args.server_env)
        env.update(server_env)
        migrate(env)
        server_js = None if args.only == "collab" else install_reference(folder / "reference")

        def start_targets(phase: list[tuple[str, int]]) -> list[dict]:
            return start_phase(
                phase,
                servers,
                env,
                server_env,
                processes=args.processes,
                only=args.only,
                server_cores=server_cores,
                server_js=server_js,
            )

        # Idle gets servers of its own, fresh: memory freed by the other loads would be reused
        # by its connections and hide their cost (the reference's figure halved that way),
        # and closing its 5,000 sockets leaves garbage whose collection stalled the next load.
        rounds: dict = {"collab": {}, "reference": {}}
        for number, phase in enumerate(schedule(modes, args.rounds), 1):
            phase_number = number
            targets = start_targets(phase)
            for mode, round_ in phase:
                for target in turns(targets, mode, round_):
                    if args.rounds > 1:
                        say(f"round {round_} of {args.rounds}")
                    out = folder / f"{target['name']}-{mode}-{round_}.json"
                    result = run_loadtest(mode, target, env, args, out, client_cores)
                    rounds[target["name"]].setdefault(mode, []).append(result)
                    time.sleep(2)  # let the last sockets close before the next load
            say("stopping servers")
            servers.stop()
            keep_logs(servers, args.keep_logs, phase_number)
            servers = Servers(folder)
        for name, by_mode in rounds.items():
            results[name] = {mode: combine(each) for mode, each in by_mode.items()}
    finally:
        say("stopping servers")
        servers.stop()
        keep_logs(servers, args.keep_logs, phase_number)  # a phase cut short keeps its own
        with contextlib.suppress(Exception):
            redis.stop()
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)
    report = {
        "parameters": parameters(args),
        "machine": machine(),
        "results": results,
        "duration_s": round(time.monotonic() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"collab vs y-websocket reference — {report['parameters']}")
    print(f"machine: {report['machine']}")
    print()
    print(table(results, modes))
    print()
    if per_round := each_round(results, modes):
        print(per_round)
        print()
    print(f"bench took {report['duration_s']} s; all figures in {out}")
    errors = [
        f"{name} {mode}: {result['error']}"
        for name, by_mode in results.items()
        for mode, result in by_mode.items()
        if "error" in result
    ]
    for error in errors:
        print("ERROR", error)
    return 1 if errors else 0


def machine() -> str:
    cores = os.cpu_count()
    try:
        with open("/proc/meminfo") as meminfo:
            total = int(meminfo.readline().split()[1]) / 2**20
        memory = f"{total:.0f} GiB"
    except OSError:
        memory = "?"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]
    python = sys.version.split()[0]
    return f"{cores} cores, {memory}, Python {python}, Node {node}, load avg {load:.2f} at end"


if __name__ == "__main__":
    sys.exit(main())
