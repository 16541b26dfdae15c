"""Presence and cursors: who is in a document, kept in Redis so that every process knows.

Keys (``P`` is ``settings.PRESENCE_PREFIX``):

- ``P:doc:<document id>`` — a hash, client id → JSON ``{"clock", "state", "user_id", "conn",
  "deadline"}``. One ``HGETALL`` answers "who is here" for a late joiner or the API, whichever
  process the users are connected to.
- ``P:deadlines`` — one sorted set for all documents (of one shard), member
  ``<document id>|<client id>``, scored by deadline (Unix seconds). Every process's sweeper
  finds expired entries with one range query per shard, without knowing which documents exist.

Shards: with several Redis servers (REDIS_URL lists them; docs/architecture.md, "Beyond one
Redis"), a document's keys live on the server its channel group is on, chosen by the very
function channels-redis's pub/sub layer uses (``shard_of``). Each shard has its own deadlines
set and every sweep covers every shard, so the sweep, the announcement and the hash all stay on
the document's shard; a shard that is down costs the presence of its documents only.

Why a hash plus a sorted set rather than one Redis key with a TTL per client: key expiry is
silent, so nobody could announce the removal to the other clients, and listing a document's
clients would need a SCAN. Here the sweep is a Lua script that removes an expired entry from
both structures atomically and returns it, so exactly one process announces each removal even
though every process runs a sweeper, and a renewal that lands during the sweep is never lost.

Cost: a renewal is queued in memory and written with the others every PRESENCE_FLUSH_INTERVAL
in one MULTI (HSET + ZADD per client); a client's first message is written at once, by a
script that checks in the same round trip that its client id is nobody else's (``claim``);
document updates never touch presence.

A Redis restart empties both structures: clients renew every 15 s, which re-creates their
entries, so presence heals within one renewal period (tests/realtime/test_presence.py).
"""

from __future__ import annotations

import asyncio
import colorsys
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis
import redis.asyncio as aredis
import redis.sentinel
from channels_redis.utils import (  # type: ignore[import-untyped]
    _consistent_hash,
    create_pool,
    decode_hosts,
)
from django.conf import settings

from editor import metrics
from editor.realtime import protocol
from editor.realtime.loops import per_event_loop

logger = logging.getLogger("collab.presence")

_SWEEP = """
local out = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[1], member)
  local sep = string.find(member, '|', 1, true)
  local hkey = ARGV[3] .. string.sub(member, 1, sep - 1)
  local field = string.sub(member, sep + 1)
  local raw = redis.call('HGET', hkey, field)
  if raw then
    redis.call('HDEL', hkey, field)
    table.insert(out, member)
    table.insert(out, raw)
  end
end
return out
"""
_SWEEP_BATCH = 500

# ``Presence.claim``: a client id's first state is written unless a live entry holds the id
# for another connection of another user (an unreadable entry holds nothing). User ids are
# compared as numbers: Lua writes numbers of 15 digits and more (a guest's, editor/links.py)
# with an exponent, and a guest would not get its own id back.
_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local ok, held = pcall(cjson.decode, raw)
  if ok and type(held) == 'table' and held['conn'] ~= ARGV[2]
      and held['user_id'] ~= tonumber(ARGV[3])
      and (tonumber(held['deadline']) or 0) >= tonumber(ARGV[4]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
return 1
"""

# ``Presence.remove``: clients' entries (ARGV: the document, then client ids) out of the hash and
# the deadlines set; members are named as ``_member`` names them.
_REMOVE = """
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[1] .. '|' .. ARGV[i])
end
return #ARGV - 1
"""


@dataclass(frozen=True)
class Entry:
    client_id: int
    clock: int
    state: dict[str, Any]
    user_id: int
    conn: str
    deadline: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "clock": self.clock,
                "state": self.state,
                "user_id": self.user_id,
                "conn": self.conn,
                "deadline": self.deadline,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, client_id: int, raw: bytes | str) -> Entry:
        data = json.loads(raw)
        return cls(
            client_id=int(client_id),
            clock=int(data["clock"]),
            state=data["state"],
            user_id=int(data["user_id"]),
            conn=str(data["conn"]),
            deadline=float(data["deadline"]),
        )

    def awareness(self) -> protocol.AwarenessEntry:
        return protocol.AwarenessEntry(client_id=self.client_id, clock=self.clock, state=self.state)


@dataclass(frozen=True)
class Removal:
    document_id: str
    client_id: int
    clock: int


class Account(Protocol):
    """What ``identity()`` reads of a user: a user model instance, or a socket's lighter copy."""

    @property
    def pk(self) -> Any: ...

    def get_full_name(self) -> str: ...

    def get_username(self) -> str: ...


def identity(user: Account) -> dict[str, Any]:
    """The ``user`` field of every awareness state, written by the server from the account.

    The colour is derived from the user id, so a person keeps one colour on every device.
    """
    digest = hashlib.blake2b(str(user.pk).encode(), digest_size=2).digest()
    hue = int.from_bytes(digest, "big") / 65536
    red, green, blue = colorsys.hls_to_rgb(hue, 0.45, 0.65)
    color = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
    name = (user.get_full_name() or user.get_username()).strip()
    return {"id": user.pk, "name": name, "color": color, "colorLight": color + "33"}


# One Redis server of the channel layer: a URL, or a Sentinel dict (collab/settings.py).
Host = str | dict[str, Any]


def _layer_config() -> Any:
    return settings.CHANNEL_LAYERS["default"]["CONFIG"]


def redis_hosts() -> list[Host]:
    """The channel layer's Redis servers, one per shard, in its order (CHANNEL_LAYERS): a URL,
    or a Sentinel dict. An ``{"address": URL, ...}`` entry is its URL: the options beside it
    are the layer's own (the protocol its pub/sub connections speak, collab/settings.py)."""
    return [
        host["address"] if isinstance(host, dict) and "address" in host else host
        for host in _layer_config()["hosts"]
    ]


def shard_of(document_id: str, shards: int) -> int:
    """The shard (an index into ``redis_hosts()``) that holds the document's channel group.

    What channels-redis's ``RedisPubSubLoopLayer._get_shard`` computes for the group
    ``room.group_name(document_id)``: CRC32 of the prefixed group channel, split in ranges.
    Kept in step with it by tests/realtime/test_redis_shards.py.
    """
    prefix = _layer_config().get("prefix", "asgi")
    return _consistent_hash(f"{prefix}__group__doc.{document_id}", shards)


def async_client(host: Host) -> aredis.Redis:
    """A client for one shard, made as channels-redis makes its own (Sentinel included)."""
    entry = {**decode_hosts([host])[0], **settings.REDIS_CONNECTION_OPTIONS}
    return aredis.Redis(connection_pool=create_pool(entry))


@contextmanager
def sync_client(host: Host, timeout: float) -> Iterator[redis.Redis]:
    """A short-lived blocking client for one shard (the REST API, the admin, /healthz)."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if isinstance(host, str):
        options.update(settings.REDIS_CONNECTION_OPTIONS)
        client = redis.Redis.from_url(host, **options)
        try:
            yield client
        finally:
            client.close()
        return
    entry = dict(host)
    sentinel = redis.sentinel.Sentinel(
        entry.pop("sentinels"),
        sentinel_kwargs={**(entry.pop("sentinel_kwargs", None) or {}), **options},
    )
    client = sentinel.master_for(entry.pop("master_name"), **entry, **options)
    try:
        yield client
    finally:
        client.close()
        for watcher in sentinel.sentinels:
            watcher.close()


def _doc_key(document_id: str) -> str:
    return f"{settings.PRESENCE_PREFIX}:doc:{document_id}"


def _deadlines_key() -> str:
    return f"{settings.PRESENCE_PREFIX}:deadlines"


def _member(document_id: str, client_id: int) -> str:
    return f"{document_id}|{client_id}"


def _live(document_id: str, raw: dict, now: float) -> list[Entry]:
    entries = []
    for field, value in raw.items():
        try:
            entry = Entry.from_json(int(field), value)
        except (ValueError, KeyError, TypeError):
            logger.error("presence of %s: unreadable entry for %r", document_id, field)
            continue
        if entry.deadline >= now:
            entries.append(entry)
    return sorted(entries, key=lambda e: e.client_id)


class Presence:
    """Presence of this process (one per event loop): batched renewals, reads, the sweep.

    ``hosts``: the channel layer's servers by default; one URL means one shard.
    """

    def __init__(self, hosts: str | Sequence[Host] | None = None) -> None:
        if hosts is None:
            hosts = redis_hosts()
        elif isinstance(hosts, str):
            hosts = [hosts]
        self.shards = [async_client(host) for host in hosts]
        self._sweeps = [client.register_script(_SWEEP) for client in self.shards]
        self._claims = [client.register_script(_CLAIM) for client in self.shards]
        self._removes = [client.register_script(_REMOVE) for client in self.shards]
        self._renewals: dict[tuple[str, int], Entry] = {}
        self._flusher: asyncio.Task | None = None
        # Per shard, the reads asked for and not yet sent, by document (``entries``), and the
        # tasks that will send them (held until done: the loop keeps only weak references).
        self._asked: dict[int, dict[str, asyncio.Future[list[Entry]]]] = {}
        self._senders: set[asyncio.Task[None]] = set()

    @property
    def redis(self) -> aredis.Redis:
        """The first shard's client: the only one when there is one Redis."""
        return self.shards[0]

    def shard(self, document_id: str) -> aredis.Redis:
        """The client of the shard that holds this document's keys (and its channel group)."""
        return self.shards[shard_of(document_id, len(self.shards))]

    async def aclose(self) -> None:
        for client in self.shards:
            await client.aclose()

    def deadline(self) -> float:
        return time.time() + settings.COLLAB["PRESENCE_TTL"]

    async def claim(self, document_id: str, entry: Entry) -> bool:
        """Writes a client id's first state (late joiners must see it now) unless the id is
        someone else's: False, and nothing written, when a live entry holds it for another
        connection of another user. A reconnecting Yjs client keeps its client id while its old
        connection may have died without a goodbye, so the same user's id is theirs to take
        back. One script, one round trip: it was a read, then a write, each a round trip, and
        another process could claim the id between the two (docs/BENCHMARKS.md, change 60)."""
        self._renewals.pop((document_id, entry.client_id), None)
        claimed = await self._claims[shard_of(document_id, len(self.shards))](
            keys=[_doc_key(document_id), _deadlines_key()],
            args=[
                str(entry.client_id),
                entry.conn,
                str(entry.user_id),
                time.time(),
                entry.to_json(),
                entry.deadline,
                _member(document_id, entry.client_id),
            ],
        )
        return bool(claimed)

    async def put(self, document_id: str, entry: Entry) -> None:
        """Writes an entry at once, whoever holds its client id. A socket's first state goes
        through ``claim``, which checks that; this is for writers that own the id already (the
        tests stand in for another process with it)."""
        self._renewals.pop((document_id, entry.client_id), None)
        await self._write({(document_id, entry.client_id): entry})

    def renew(self, document_id: str, entry: Entry) -> None:
        """Queues a renewal; the latest one per client is written at the next flush."""
        self._renewals[(document_id, entry.client_id)] = entry
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def remove(self, document_id: str, client_ids: Iterable[int]) -> None:
        """Takes clients' entries out of both structures at once: one script, one round trip
        (a ``MULTI`` of ``HDEL`` and ``ZREM`` cost the caller about twice the CPU;
        docs/BENCHMARKS.md, change 61)."""
        client_ids = list(client_ids)
        if not client_ids:
            return
        for client_id in client_ids:
            self._renewals.pop((document_id, client_id), None)
        await self._removes[shard_of(document_id, len(self.shards))](
            keys=[_doc_key(document_id), _deadlines_key()],
            args=[document_id, *client_ids],
        )

    async def entries(self, document_id: str) -> list[Entry]:
        """The document's live entries, from Redis. Reads asked for in the same turns of the
        event loop are sent together, after the last of them was asked: one round trip per
        shard (a pipeline of ``HGETALL``), and callers of the same document share one read. It
        sees everything written before any of them asked, as a read of their own would. A join
        storm of N sockets then makes a handful of reads, not N; and the sockets a trip of
        socket checks lets in together (editor/realtime/auth.py), one per document, cost one
        round trip, not one each with a pooled connection each (docs/BENCHMARKS.md, change 39).
        The list is shared: read it, do not change it."""
        shard = shard_of(document_id, len(self.shards))
        asked = self._asked.get(shard)
        if asked is None:
            asked = self._asked[shard] = {}
            sender = asyncio.ensure_future(self._read(shard))
            self._senders.add(sender)
            sender.add_done_callback(functools.partial(self._sent, shard, asked))
        read = asked.get(document_id)
        if read is None:
            read = asked[document_id] = asyncio.get_running_loop().create_future()
            # Retrieved even when every caller was cancelled, so asyncio logs nothing.
            read.add_done_callback(lambda done: done.cancelled() or done.exception())
        # A caller cancelled while it waits does not cancel the read the others wait for.
        return await asyncio.shield(read)

    def _sent(
        self, shard: int, asked: dict[str, asyncio.Future[list[Entry]]], sender: asyncio.Task
    ) -> None:
        """A sender is done. Cancelled before its first step (nothing else cancels it), it
        never took its reads: they are cancelled too, so no caller waits for them forever, and
        the next read makes a sender of its own."""
        self._senders.discard(sender)
        if self._asked.get(shard) is asked:
            del self._asked[shard]
        for read in asked.values():
            if not read.done():
                read.cancel()

    async def _read(self, shard: int) -> None:
        # A task's first step runs on a later turn than the one that made it: whoever asked
        # before this line is sent now; whoever asks from here on makes the next trip.
        asked = self._asked.pop(shard)
        documents = list(asked)
        try:
            client = self.shards[shard]
            if len(documents) == 1:
                raws = [await client.hgetall(_doc_key(documents[0]))]
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for document_id in documents:
                        pipe.hgetall(_doc_key(document_id))
                    raws = await pipe.execute()
        except BaseException as exc:
            for read in asked.values():
                if isinstance(exc, asyncio.CancelledError):
                    read.cancel()
                elif not read.done():
                    read.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        now = time.time()
        for document_id, raw in zip(documents, raws, strict=True):
            if not asked[document_id].done():
                asked[document_id].set_result(_live(document_id, raw, now))

    async def sweep(self) -> list[Removal]:
        """Removes expired entries of every document on every shard and returns those this
        process removed. A shard that fails is logged and skipped: what the others removed
        must still be announced (nobody else will)."""
        now = time.time()
        args: list[float | str] = [now, _SWEEP_BATCH, f"{settings.PRESENCE_PREFIX}:doc:"]
        results = await asyncio.gather(
            *(sweep(keys=[_deadlines_key()], args=args) for sweep in self._sweeps),
            return_exceptions=True,
        )
        removals = []
        for index, result in enumerate(results):
            if isinstance(result, Exception):
                metrics.REDIS["sweep"].inc()
                logger.warning("presence sweep of Redis shard %d failed: %s", index, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                removals.extend(_removals(result))
        return removals

    async def flush(self) -> None:
        pending, self._renewals = self._renewals, {}
        if pending:
            await self._write(pending)

    async def _flush_later(self) -> None:
        await asyncio.sleep(settings.COLLAB["PRESENCE_FLUSH_INTERVAL"])
        try:
            await self.flush()
        except redis.RedisError as exc:
            # Dropped, not retried: the client renews within 15 s anyway.
            metrics.REDIS["presence"].inc()
            logger.warning("presence renewals not written: %s", exc)

    async def _write(self, entries: dict[tuple[str, int], Entry]) -> None:
        by_shard: dict[int, list[tuple[str, int, Entry]]] = {}
        for (document_id, client_id), entry in entries.items():
            shard = shard_of(document_id, len(self.shards))
            by_shard.setdefault(shard, []).append((document_id, client_id, entry))
        await asyncio.gather(
            *(self._write_shard(self.shards[shard], rows) for shard, rows in by_shard.items())
        )

    @staticmethod
    async def _write_shard(client: aredis.Redis, rows: list[tuple[str, int, Entry]]) -> None:
        async with client.pipeline(transaction=True) as pipe:
            for document_id, client_id, entry in rows:
                pipe.hset(_doc_key(document_id), str(client_id), entry.to_json())
                pipe.zadd(_deadlines_key(), {_member(document_id, client_id): entry.deadline})
            await pipe.execute()


def _removals(result: list[bytes]) -> list[Removal]:
    """The sweep script's answer (member, entry, member, entry...) as removals."""
    removals = []
    for member, raw in zip(result[::2], result[1::2], strict=True):
        document_id, _, client_id = member.decode().partition("|")
        try:
            clock = int(json.loads(raw)["clock"])
        except (ValueError, KeyError, TypeError):
            clock = 0
        removals.append(Removal(document_id, int(client_id), clock))
    return removals


@per_event_loop
def get_presence() -> Presence:
    """The presence client of this process (editor/realtime/loops.py)."""
    return Presence()


def who_is_here(document_id: uuid.UUID | str) -> list[Entry]:
    """Live entries of one document, for sync code (the REST API)."""
    document_id = str(document_id)
    hosts = redis_hosts()
    with sync_client(hosts[shard_of(document_id, len(hosts))], timeout=2) as client:
        raw = client.hgetall(_doc_key(document_id))
    return _live(document_id, raw, time.time())


def everyone_here() -> dict[str, list[Entry]]:
    """Live entries of every document, for sync code (the admin's "who is editing now")."""
    found: dict[str, list[Entry]] = {}
    for host in redis_hosts():
        with sync_client(host, timeout=2) as client:
            # redis-py types every answer as whatever any command may return; this is bytes.
            members = cast(list[bytes], client.zrangebyscore(_deadlines_key(), time.time(), "+inf"))
            documents = sorted({m.decode().partition("|")[0] for m in members})
            pipe = client.pipeline(transaction=False)
            for document_id in documents:
                pipe.hgetall(_doc_key(document_id))
            hashes = pipe.execute()
        now = time.time()
        for document_id, raw in zip(documents, hashes, strict=True):
            if entries := _live(document_id, raw, now):
                found[document_id] = entries
    return dict(sorted(found.items()))
