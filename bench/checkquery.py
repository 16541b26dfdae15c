"""`python -m bench.checkquery`: what one trip's socket-check query costs, as Django binds it
(by the client, planned on every run) and prepared (bound by the server, planned once per
connection: ``WS_CHECKS_PREPARED``, docs/BENCHMARKS.md change 67), side by side in one run.

For each trip size it runs the read-ahead of users and roles (``_USER_AND_ROLE``, the query a
trip of ticket sockets sends) ``--runs`` times each way, alternating the ways ``--rounds``
times, and prints per query: the PostgreSQL backend's CPU (from /proc: the database shares
the machine's cores with the servers and the load client), this process's CPU, and the wall
time. Needs DATABASE_URL naming a migrated PostgreSQL database on this machine; what the
users and documents are does not matter to the plan (the ids asked need not exist).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid


def backend_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(sql: str, params: list, prepared: bool, runs: int) -> tuple[float, float, float]:
    """Per query: the backend's CPU, this process's CPU, the wall time, in µs."""
    import psycopg
    from django.db import connections

    from editor.realtime.auth import _bigints

    django = connections.create_connection("default")
    parameters = django.get_connection_params()
    parameters["cursor_factory"] = psycopg.Cursor if prepared else psycopg.ClientCursor
    parameters["prepare_threshold"] = 5
    with psycopg.Connection.connect(**parameters, autocommit=True) as connection:
        pid = connection.info.backend_pid
        values = _bigints(params) if prepared else params
        with connection.cursor() as cursor:
            for _ in range(10):  # warm: the catalog's caches, the statement prepared
                cursor.execute(sql, values, prepare=prepared)
                cursor.fetchall()
            database, own, wall = backend_cpu(pid), time.process_time(), time.perf_counter()
            for _ in range(runs):
                cursor.execute(sql, values, prepare=prepared)
                cursor.fetchall()
            return tuple(
                round(1e6 * spent / runs, 1)
                for spent in (
                    backend_cpu(pid) - database,
                    time.process_time() - own,
                    time.perf_counter() - wall,
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16", help="sockets in a trip")
    parser.add_argument("--runs", type=int, default=2000, help="queries per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two ways")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes numbers, comma-separated")
    if args.runs < 1 or args.rounds < 1 or min(sizes) < 1:
        parser.error("--sizes, --runs and --rounds take 1 or more")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    import django

    django.setup()
    from django.db import connection

    from editor.realtime.auth import _USER_AND_ROLE

    if connection.vendor != "postgresql":
        raise SystemExit("bench.checkquery needs DATABASE_URL to name a PostgreSQL database")
    print("| trip size | way | PostgreSQL CPU µs | this process's CPU µs | wall µs |")
    print("|---:|---|---:|---:|---:|")
    document = uuid.uuid4()
    for size in sizes:
        asked = [(100 + n, document) for n in range(size)]
        if size == 1:
            # A trip of one asks on its own (``fetch``): the one-socket query.
            _USER_AND_ROLE._compiled.setdefault("default", _USER_AND_ROLE._compile("default"))
            sql, marked = _USER_AND_ROLE._compiled["default"]
            values = [100, document]
            params = [values[m.index] if hasattr(m, "index") else m for m in marked]
        else:
            _, ((sql, params), *_) = _USER_AND_ROLE.statements(asked, least=2)
        for _ in range(args.rounds):
            for prepared in (False, True):
                figures = measure(sql, params, prepared, args.runs)
                way = "prepared" if prepared else "as Django binds it"
                print(f"| {size} | {way} | " + " | ".join(f"{f:,.1f}" for f in figures) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
