"""`python -m bench.connectpath`: what collab's application costs per socket it opens, without
daphne, Twisted or a network: the other half of `python -m bench.floor`, which measures daphne's
part with an application that does nothing (docs/BENCHMARKS.md, "What holds the rest back").

One driver opens sockets on each level in turn, in a process of its own started as collab's
servers start (collab's ASGI module loaded: its tunings, its collector settings), on uvloop,
``--concurrency`` at a time, handing each what daphne hands an application: a scope, an
asyncio queue's ``get`` as ``receive`` and a ``send``. A socket asks to connect; once accepted,
it sends an empty sync step 1, and it is open when its sync step 2 comes back. Every socket is
held until the level ends. Levels:

- ``bare``: bench.floor_apps' bare application, the driver's own cost per socket;
- ``tickets``: collab's ASGI application, sockets with a ticket (signed before the clock
  starts: a client's work), checked in the check thread, joined to their document's room,
  sent sync step 1, the auth message and everyone's presence, logged (``ws open``), counted;
- ``sessions``: the same with a logged-in session's cookie and the page's Origin, as browsers
  connect.

The figure is CPU per socket: the level's process, every thread (the check thread's work is the
application's too), from its first connect to its last sync, after a warm-up socket per
document; beside it the event loop's thread alone, what a collab level costs over ``bare``, and
the full collections in the window (each one a pause over every socket held, enough to move
the figure). This machine's own swings move it too (docs/BENCHMARKS.md): compare levels and
builds within one run, over several rounds. A scratch database (PostgreSQL on
127.0.0.1:5432 when it answers, else SQLite) and a private Valkey (collab.embedded) serve it,
as under `make bench`, whose 50 people and 50 documents it copies.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, Database, migrate, say

LEVELS = ("bare", "tickets", "sessions")
PEOPLE = 50  # manage.py loadtest's CROWD
DOCUMENTS = 50  # make bench's idle mode: 5,000 sockets over 50 documents
EMPTY_STEP1 = b"\x00\x00\x01\x00"  # sync step 1 with an empty state vector
HOST = "127.0.0.1:8000"  # the Host the sockets ask for; a session socket's Origin is its page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connectpath", description=__doc__)
    parser.add_argument("--sockets", type=int, default=5000, help="sockets per level")
    parser.add_argument("--concurrency", type=int, default=64, help="connects in flight")
    parser.add_argument("--rounds", type=int, default=1, help="every level once per round")
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--database-url", help="default: scratch PostgreSQL or SQLite")
    parser.add_argument("--log-level", default="INFO", help="collab's, as under make bench")
    parser.add_argument("--out", help="all figures, JSON")
    parser.add_argument(
        "--profile",
        help="a folder: each level's cProfile of its timed sockets, LEVEL-ROUND.prof (the event"
        " loop's thread only; the profiler about doubles what it sees)",
    )
    parser.add_argument("--child", choices=LEVELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.sockets, args.concurrency, args.rounds) < 1:
        parser.error("--sockets, --concurrency and --rounds take 1 or more")
    if args.child:
        figures = _measure(args.child, args.sockets, args.concurrency, args.profile)
        Path(args.out).write_text(json.dumps(figures) + "\n")
        return 0
    levels = [level for level in args.levels.split(",") if level in LEVELS]
    folder = Path(tempfile.mkdtemp(prefix="collab-connectpath-"))
    database = Database(folder, args.database_url)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        from collab.embedded import EmbeddedRedis

        with EmbeddedRedis() as redis_url:
            env = _environment(folder, database.url, redis_url, args.log_level)
            migrate(env)
            for turn in range(args.rounds):
                figures = {}
                for level in levels:
                    say(f"round {turn + 1}: {level}")
                    figures[level] = _run_level(level, args, env, folder, turn)
                rounds.append(figures)
    finally:
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)
    _print(rounds)
    if args.out:
        Path(args.out).write_text(json.dumps(rounds, indent=2) + "\n")
    return 1 if any(row["failed"] for figures in rounds for row in figures.values()) else 0


def _environment(folder: Path, database_url: str, redis_url: str, log_level: str) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="collab.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        COLLAB_VAR_DIR=str(folder / "var"),
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(48),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL=log_level,
        PYTHONUNBUFFERED="1",
        WS_MAX_CONNECTIONS_PER_USER="0",  # 50 people hold thousands of sockets
    )
    return env


def _run_level(level: str, args: argparse.Namespace, env: dict, folder: Path, turn: int) -> dict:
    out = folder / f"{level}-{turn}.json"
    command = [sys.executable, "-m", "bench.connectpath", "--child", level, "--out", str(out)]
    command += ["--sockets", str(args.sockets), "--concurrency", str(args.concurrency)]
    if args.profile:
        command += ["--profile", str(Path(args.profile).resolve() / f"{level}-{turn + 1}.prof")]
    path = folder / f"{level}-{turn}.log"
    with open(path, "wb") as log:
        try:
            subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,  # collab's log lines, as a server's go to its log
                check=True,
                timeout=900,
            )
        except subprocess.SubprocessError as exc:
            # The scratch folder goes with the run: its last lines are shown before it does.
            tail = path.read_text(errors="replace").splitlines()[-30:]
            message = f"level {level} failed ({exc}); its last lines:\n" + "\n".join(tail)
            raise SystemExit(message) from None
    return json.loads(out.read_text())


def _print(rounds: list[dict[str, dict[str, Any]]]) -> None:
    print(
        "| round | level | sockets/s | CPU per socket (ms) | of which the event loop's thread"
        " (ms) | over bare (ms) | full collections | failed |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for turn, figures in enumerate(rounds, 1):
        bare = figures.get("bare", {}).get("cpu_ms_per_socket")
        for level, row in figures.items():
            over = (
                "—" if bare is None or level == "bare" else f"{row['cpu_ms_per_socket'] - bare:.3f}"
            )
            print(
                f"| {turn} | {level} | {row['sockets_per_s']:,.0f} | "
                f"{row['cpu_ms_per_socket']:.3f} | {row['loop_cpu_ms_per_socket']:.3f} | {over} | "
                f"{row['full_collections']} | {row['failed']} |"
            )


# -- one level, in a process of its own ----------------------------------------------------------


def _measure(level: str, sockets: int, concurrency: int, profile: str | None) -> dict[str, Any]:
    import django

    django.setup()
    import uvloop

    import collab.asgi  # collab's start-up, for every level: its tunings and collector settings

    if level == "bare":
        from bench.floor_apps import bare as application

        scopes = [_scope(f"d{n % DOCUMENTS}", b"", []) for n in range(DOCUMENTS + sockets)]
    else:
        application = collab.asgi.application
        scopes = _collab_scopes(level, DOCUMENTS + sockets)
    return uvloop.run(_drive(application, scopes, concurrency, profile))


def _collab_scopes(level: str, count: int) -> list[dict[str, Any]]:
    """The scopes of ``count`` sockets, spread over the documents and the people in turn."""
    from django.contrib.auth import get_user_model

    from editor.management.commands.loadtest import session_cookie
    from editor.models import Document, Membership, Role
    from editor.realtime import tickets

    people = [
        get_user_model().objects.get_or_create(username=f"connectpath-{n}")[0]
        for n in range(PEOPLE)
    ]
    documents = list(Document.objects.filter(title__startswith="connectpath ").order_by("title"))
    if not documents:
        documents = [
            Document.objects.create_for(people[0], f"connectpath {n:02d}") for n in range(DOCUMENTS)
        ]
        Membership.objects.bulk_create(
            Membership(document=document, user=person, role=Role.EDITOR)
            for document in documents
            for person in people[1:]
        )
    cookies = [session_cookie(person).encode() for person in people] if level == "sessions" else []
    scopes = []
    for n in range(count):
        document, person = documents[n % DOCUMENTS], people[(n // DOCUMENTS) % PEOPLE]
        if level == "tickets":
            query = f"ticket={tickets.issue(person.pk, document.pk)[0]}".encode()
            scopes.append(_scope(str(document.pk), query, []))
        else:
            headers = [(b"cookie", cookies[n % PEOPLE]), (b"origin", f"http://{HOST}".encode())]
            scopes.append(_scope(str(document.pk), b"", headers))
    return scopes


def _scope(document: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    path = f"/ws/documents/{document}"
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", HOST.encode()), *headers],
        "client": ["127.0.0.1", 40000],
        "server": ["127.0.0.1", 8000],
        "subprotocols": [],
    }


async def _drive(
    application: Any, scopes: list[dict[str, Any]], concurrency: int, profile: str | None
) -> dict:
    held: list[tuple[asyncio.Future[None], asyncio.Queue[dict[str, Any]]]] = []
    failed: list[str] = []
    warm, timed = scopes[:DOCUMENTS], scopes[DOCUMENTS:]
    # Warm-up, not counted: one socket per document, as make bench's idle mode does (a room is
    # a per-document cost, and a fresh process's first sockets import and allocate for good).
    await asyncio.gather(*(_open(application, scope, held, failed) for scope in warm))
    await asyncio.sleep(1)
    slots = asyncio.Semaphore(concurrency)

    async def one(scope: dict[str, Any]) -> None:
        async with slots:
            await _open(application, scope, held, failed)

    profiler = cProfile.Profile() if profile else None
    full = gc.get_stats()[2]["collections"]
    cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(one(scope) for scope in timed))
    if profiler is not None:
        profiler.disable()
        Path(profile).parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile)
    # Read in the reverse order of the start, so that the thread's window lies inside the
    # process's and its CPU can never come out above the process's.
    loop_cpu = time.thread_time() - loop_cpu
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    full = gc.get_stats()[2]["collections"] - full
    for _, queue in held:
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*(task for task, _ in held)), 60)
    return {
        "sockets": len(timed),
        "cpu_ms_per_socket": round(1000 * cpu / len(timed), 4),
        # The event loop's thread alone: the rest is the check threads' (and the GC's there).
        "loop_cpu_ms_per_socket": round(1000 * loop_cpu / len(timed), 4),
        "sockets_per_s": round(len(timed) / wall, 1),
        # Full collections in the window: one is a pause of the whole heap, all sockets held.
        "full_collections": full,
        "failed": len(failed),
        "first_failure": failed[0] if failed else None,
    }


async def _open(
    application: Any,
    scope: dict[str, Any],
    held: list[tuple[asyncio.Future[None], asyncio.Queue[dict[str, Any]]]],
    failed: list[str],
) -> None:
    """One socket, as daphne hands it over: open once its sync step 2 has come back."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    synced = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            queue.put_nowait({"type": "websocket.receive", "bytes": EMPTY_STEP1})
        elif kind == "websocket.send" and (message.get("bytes") or b"")[:2] == b"\x00\x01":
            if not synced.done():
                synced.set_result(None)
        elif kind == "websocket.close" and not synced.done():
            synced.set_exception(ConnectionError(f"closed with {message.get('code')}"))

    task = asyncio.ensure_future(application(scope, queue.get, send))
    held.append((task, queue))
    queue.put_nowait({"type": "websocket.connect"})
    try:
        await asyncio.wait_for(synced, 30)
    except Exception as exc:
        failed.append(repr(exc))


if __name__ == "__main__":
    sys.exit(main())
