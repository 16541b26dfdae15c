"""Each serving process's census in Redis: the sockets it holds and the rooms it has loaded,
so the admin ("Who is editing now") shows every live process and the total without
Prometheus (which scrapes each process's /metrics on its own, editor/metrics.py).

Every process writes its figures every ``INTERVAL`` seconds (``report_forever``, started by
``editor.metrics.when_serving``); each write lives ``TTL`` seconds, so a process that stops or
dies drops out of the picture within that. Keys, on the first Redis shard (the census belongs
to no document), under ``PRESENCE_PREFIX`` (``P``):

- ``P:process:<name>`` — JSON ``{"name", "pid", "sockets", "rooms", "at"}``, expiring after TTL;
- ``P:processes`` — a sorted set of the names, scored by when each last wrote, so the admin
  finds them with one range and one ``MGET`` (no ``SCAN``); writers trim names gone quiet.

A process's name is ``COLLAB_PROCESS_NAME`` (`manage.py serve` sets host name and port),
else host name and pid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import cast

import redis
import redis.asyncio as aredis
from django.conf import settings

from editor import metrics
from editor.realtime.connection import sockets
from editor.realtime.presence import get_presence, redis_hosts, sync_client
from editor.realtime.room import get_rooms

logger = logging.getLogger("collab.census")

INTERVAL = 10.0
TTL = 30.0


@dataclass(frozen=True)
class ProcessCensus:
    name: str
    pid: int
    sockets: int
    rooms: int
    at: float  # Unix time of the write


def process_name() -> str:
    return os.environ.get("COLLAB_PROCESS_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def _key(name: str) -> str:
    return f"{settings.PRESENCE_PREFIX}:process:{name}"


def _index_key() -> str:
    return f"{settings.PRESENCE_PREFIX}:processes"


def current() -> ProcessCensus:
    """This process's figures now (from its event loop)."""
    return ProcessCensus(
        name=process_name(),
        pid=os.getpid(),
        sockets=sockets.total,
        rooms=get_rooms().loaded,
        at=time.time(),
    )


async def write(client: aredis.Redis, census: ProcessCensus, ttl: float = TTL) -> None:
    """Writes one process's figures, to live ``ttl`` seconds."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(_key(census.name), json.dumps(asdict(census)), ex=math.ceil(ttl))
        pipe.zadd(_index_key(), {census.name: census.at})
        pipe.zremrangebyscore(_index_key(), "-inf", census.at - 10 * ttl)
        await pipe.execute()


async def report_forever(interval: float = INTERVAL) -> None:
    """Writes this process's census now and every ``interval`` seconds, until cancelled. With
    Redis down the admin shows the process as gone; it comes back with the next write."""
    while True:
        try:
            await write(get_presence().redis, current())
        except redis.RedisError as exc:
            metrics.REDIS["census"].inc()
            logger.warning("census not written (Redis: %s)", exc)
        await asyncio.sleep(interval)


def read_all() -> list[ProcessCensus]:
    """Every live process's last census, by name, for sync code (the admin). A key that expired
    is a process that stopped writing; it is left out."""
    with sync_client(redis_hosts()[0], timeout=2) as client:
        names = cast(list[bytes], client.zrange(_index_key(), 0, -1))
        values = cast(
            list[bytes | None], client.mget([_key(n.decode()) for n in names]) if names else []
        )
    found = []
    for raw in values:
        if raw is None:
            continue
        try:
            found.append(ProcessCensus(**json.loads(raw)))
        except (ValueError, TypeError):
            logger.error("census: unreadable entry %r", raw[:200])
    return sorted(found, key=lambda census: census.name)
