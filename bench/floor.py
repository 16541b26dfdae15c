"""`python -m bench.floor`: how many sockets per second daphne opens when the application does
nothing, against the reference y-websocket server in the same run: the floor under collab's
connects/s row (issue 16, target 2; docs/BENCHMARKS.md, "What holds the rest back").

Each level runs as N processes on loopback (the reference as one, as in `make bench`) and
gets `manage.py loadtest idle` as the reference does (no tickets, no database): the apps are
bench/floor_apps.py's. Levels:
- ``daphne``: daphne as it comes, a bare ASGI app;
- ``collab-daphne``: the same app under collab's start-up (collab.eventloop's uvloop, the
  transport tunings, the collector's settings);
- ``channels``: a plain Channels consumer behind Channels' routers, under collab's start-up.
collab's own row is `make bench`'s "connects/s".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.loadtest import raise_nofile_limit
from bench.run import (
    ROOT,
    Servers,
    free_port,
    install_reference,
    say,
    start_reference,
    wait_port,
)

LEVELS = {
    "daphne": ["-m", "daphne"],
    "collab-daphne": ["-m", "collab.eventloop", "uvloop"],
    "channels": ["-m", "collab.eventloop", "uvloop"],
}
APPS = {
    "daphne": "bench.floor_apps:bare",
    "collab-daphne": "bench.floor_apps:tuned",
    "channels": "bench.floor_apps:consumer",
}


def measure(level: str, server_js: Path | None, args: argparse.Namespace, folder: Path) -> dict:
    """One level's idle run: its processes started, loaded and stopped."""
    servers = Servers(folder)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="collab.settings", PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)  # the apps use none; collab's start-up must not dial one
    try:
        urls, pids = [], []
        if level == "reference":
            assert server_js is not None
            url, pid = start_reference(servers, server_js, env)
            urls.append(url)
            pids.append(pid)
        else:
            for _ in range(args.processes):
                port = free_port()
                command = [sys.executable, *LEVELS[level], "--bind", "127.0.0.1"]
                process = servers.spawn(
                    f"{level} {port}", [*command, "--port", str(port), APPS[level]], env
                )
                wait_port(port, process, 60, level)
                urls.append(f"ws://127.0.0.1:{port}/ws/documents")
                pids.append(process.pid)
        out = folder / f"{level}.json"
        command = [sys.executable, "manage.py", "loadtest", "idle", "--reference"]
        command += [part for url in urls for part in ("--url", url)]
        command += [part for pid in pids for part in ("--server-pid", str(pid))]
        command += ["--connections", str(args.connections), "--hold", "1"]
        command += ["--concurrency", str(args.concurrency), "--json-out", str(out), "--quiet"]
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, timeout=300)
        try:
            result = json.loads(out.read_text())["result"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"{level}: the load test gave no result ({exc})") from None
        return {
            "connects_per_s": result["connects_per_s"],
            "server_cpu_ms_per_connect": result["server_cpu_ms_per_connect"],
            "client_cpu_ms_per_connect": result["client_cpu_ms_per_connect"],
            "server_kb_per_connection": result["server_kb_per_connection"],
            "failed": result["connect_failures"],
        }
    finally:
        servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--processes", type=int, default=2, help="processes per daphne level")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="every level once per round")
    parser.add_argument("--levels", default=",".join(["reference", *LEVELS]))
    parser.add_argument("--out", help="all figures, JSON")
    args = parser.parse_args(argv)
    levels = [level for level in args.levels.split(",") if level == "reference" or level in LEVELS]
    raise_nofile_limit()
    folder = Path(tempfile.mkdtemp(prefix="collab-floor-"))
    server_js = install_reference(folder / "reference") if "reference" in levels else None
    rounds = []
    try:
        for turn in range(args.rounds):
            figures = {}
            for level in levels:
                say(f"round {turn + 1}: {level}")
                figures[level] = measure(level, server_js, args, folder)
            rounds.append(figures)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        "| round | level | connects/s | / reference | server CPU per connect (ms) | KB per "
        "connection | load client CPU per connect (ms) | failed |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for turn, figures in enumerate(rounds, 1):
        reference = figures.get("reference", {}).get("connects_per_s")
        for level, row in figures.items():
            ratio = f"{row['connects_per_s'] / reference:.2f}" if reference else "—"
            print(
                f"| {turn} | {level} | {row['connects_per_s']:,.0f} | {ratio} | "
                f"{row['server_cpu_ms_per_connect']} | {row['server_kb_per_connection']} | "
                f"{row['client_cpu_ms_per_connect']} | {row['failed']} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rounds, indent=2) + "\n")
    return 1 if any(row["failed"] for figures in rounds for row in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
