"""`python -m bench.presencepath`: what the presence calls a browser's socket makes cost the
server's process, each beside the way it was made before (docs/BENCHMARKS.md, changes 60 and
61), in the same run, alternating.

A browser's socket writes its first awareness state as it joins, and takes its entries out as it
leaves; bench sockets send no awareness, so `make bench` does not see either. Each operation runs
``--count`` times in a row through collab's own ``Presence`` client (redis-py's asyncio client,
on uvloop, as under daphne) against a private Valkey (collab.embedded), and the table gives the
process's CPU and the wall time per call:

- ``first state``: ``Presence.claim``, one script that checks the client id is nobody else's and
  writes the entry, against an ``HGET`` and then a ``MULTI`` of ``HSET`` and ``ZADD`` (before
  change 60);
- ``leave``: ``Presence.remove``, one script, against a ``MULTI`` of ``HDEL`` and ``ZREM``
  (before change 61);
- ``read``: ``Presence.entries`` of a document where five people are, one ``HGETALL``: a plain
  round trip, for scale.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.run import say

OPERATIONS = ("first state", "leave", "read")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presencepath", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="calls of each way per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.count, args.rounds) < 1:
        parser.error("--count and --rounds take 1 or more")
    from collab.embedded import EmbeddedRedis

    before = os.environ.get("REDIS_URL")
    with EmbeddedRedis() as redis_url:
        # Read by the settings when Django is set up here; a process that set Django up
        # before (the tests) keeps its own Redis.
        os.environ["REDIS_URL"] = redis_url
        try:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
            import django

            django.setup()
            import uvloop

            rows = uvloop.run(_measure(args.count, args.rounds))
        finally:
            if before is None:
                os.environ.pop("REDIS_URL", None)
            else:
                os.environ["REDIS_URL"] = before
    _print(rows)
    return 0


async def _measure(count: int, rounds: int) -> list[dict[str, Any]]:
    from editor.realtime.presence import Entry, Presence, _deadlines_key, _doc_key, _member

    presence = Presence()
    document_id = str(uuid.uuid4())
    key, deadlines = _doc_key(document_id), _deadlines_key()
    client = presence.shard(document_id)
    next_id = iter(range(1, 1 << 30))

    def entries() -> list[Entry]:
        deadline = presence.deadline()
        state = {"user": {"name": "Olive", "color": "#30bced"}, "cursor": None}
        return [Entry(next(next_id), 1, state, 1, "conn", deadline) for _ in range(count)]

    async def claim(entry: Entry) -> None:
        await presence.claim(document_id, entry)

    async def check_then_write(entry: Entry) -> None:
        await client.hget(key, str(entry.client_id))
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(entry.client_id), entry.to_json())
            pipe.zadd(deadlines, {_member(document_id, entry.client_id): entry.deadline})
            await pipe.execute()

    async def remove(entry: Entry) -> None:
        await presence.remove(document_id, [entry.client_id])

    async def multi_remove(entry: Entry) -> None:
        async with client.pipeline(transaction=True) as pipe:
            pipe.hdel(key, str(entry.client_id))
            pipe.zrem(deadlines, _member(document_id, entry.client_id))
            await pipe.execute()

    async def read(entry: Entry) -> None:
        await presence.entries(document_id)  # five people here (below)

    ways: list[tuple[str, str, Callable[[Entry], Awaitable[None]]]] = [
        ("first state", "one script (claim)", claim),
        ("first state", "HGET, then MULTI (before 60)", check_then_write),
        ("leave", "one script (remove)", remove),
        ("leave", "MULTI (before 61)", multi_remove),
        ("read", "HGETALL (entries)", read),
    ]
    # Each way once before the clock: scripts loaded, the pool's connection made.
    for _, _, call in ways:
        for entry in entries()[:1]:
            await claim(entry)
            await call(entry)
    rows = []
    for turn in range(rounds):
        say(f"round {turn + 1}")
        for operation, way, call in ways:
            await client.delete(key, deadlines)
            batch = entries()
            if operation == "leave":  # each removes an entry that is there
                for entry in batch:
                    await claim(entry)
            elif operation == "read":
                for entry in entries()[:5]:
                    await claim(entry)
            cpu, wall = time.process_time(), time.perf_counter()
            for entry in batch:
                await call(entry)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            rows.append(
                {
                    "round": turn + 1,
                    "operation": operation,
                    "way": way,
                    "cpu_us": 1e6 * cpu / count,
                    "wall_us": 1e6 * wall / count,
                }
            )
    await client.delete(key, deadlines)
    await presence.aclose()
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print("| round | operation | way | CPU per call (µs) | wall per call (µs) |")
    print("|---|---|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['round']} | {row['operation']} | {row['way']} "
            f"| {row['cpu_us']:.1f} | {row['wall_us']:.1f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
