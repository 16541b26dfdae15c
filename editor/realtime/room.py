"""The live state of one document in this process: a room.

One pycrdt ``Doc`` per document per process, shared by every local connection (never one per
connection). The room, not each consumer, is the process's member of the document's channel
group, through a layer channel of its own: an update fans out to local connections directly and
crosses to other processes as ONE group message, which each other process's room applies once
and fans out locally (docs/architecture.md has the measurements behind this). A room that no
other process has open sends nothing to the group: rooms of a document tell each other when
they open and close (``Room.shared``).

The channel layer is lossy (channels_redis#406, capacity drops), so correctness does not rest
on it: every room re-reads its document's recent log rows every CATCHUP_INTERVAL and applies
the ones it never saw, and clients re-sync with the Yjs handshake when they reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone
from pycrdt import Doc, merge_updates

from collab import transport
from editor import autoversions, metrics
from editor.realtime import protocol, store
from editor.realtime.loops import per_event_loop
from editor.realtime.presence import Entry, get_presence

logger = logging.getLogger("collab.room")

EMPTY_UPDATE = b"\x00\x00"


class Connection(Protocol):
    """What a room needs of a connection: a way to send it one frame, and whose it is and how
    to re-check its access when the document's access changes."""

    @property
    def user_id(self) -> int | None: ...

    async def send_frame(self, frame: bytes) -> bool: ...

    async def recheck_access(self) -> None: ...

    async def sessions_ended(
        self, ended: str | None, kept: str | None, renamed: str | None
    ) -> None: ...


class InvalidUpdate(ValueError):
    """The bytes are not a Yjs update this document can apply; nothing was changed."""


def removals(clocks: dict[int, int]) -> list[protocol.AwarenessEntry]:
    """Awareness entries saying that these clients (id → last clock) are gone."""
    return [
        protocol.AwarenessEntry(client_id=client_id, clock=clock + 1, state=None)
        for client_id, clock in clocks.items()
    ]


def removal_payload(clocks: dict[int, int]) -> bytes:
    """An awareness payload saying that these clients (id → last clock) are gone."""
    return protocol.encode_awareness(removals(clocks))


def _client_id(entry: Entry) -> int:
    return entry.client_id


def group_name(document_id: str) -> str:
    return f"doc.{document_id}"


async def _to_group(document_id: uuid.UUID | str, message: dict[str, Any], what: str) -> bool:
    """Sends a message from outside any room (a view, a signal) to the document's group, every
    process's room of it; says whether it went. A failure is counted and logged ("could not
    ``what``"), never raised: each kind of message says below what makes up for a lost one."""
    try:
        await get_channel_layer().group_send(group_name(str(document_id)), message)
    except Exception:
        metrics.REDIS["group_send"].inc()
        logger.exception("document %s: could not %s", document_id, what)
        return False
    return True


async def publish_update(document_id: uuid.UUID | str, update: bytes) -> None:
    """Sends an update written outside any room (the REST API) to the document's group: every
    process's room applies it and passes it on to its connections. Store it first: a lost group
    message is then recovered by the rooms' catch-up from the log."""
    message = {"type": "doc.update", "update": bytes(update), "origin": None}
    await _to_group(document_id, message, "publish an update")


async def publish_access_change(document_id: uuid.UUID | str, user_id: int | None) -> bool:
    """Tells every process that a user's access to a document changed (``None``: everyone's,
    e.g. the document was deleted); their sockets re-check it at once. Says whether it went;
    when it did not, a socket keeps its old role until it reconnects (roles are read at every
    connect)."""
    message = {"type": "doc.access", "user_id": user_id, "origin": None}
    return await _to_group(document_id, message, "announce an access change")


async def publish_sessions_ended(
    document_id: uuid.UUID | str,
    user_id: int,
    ended: str | None,
    kept: str | None = None,
    renamed: str | None = None,
) -> bool:
    """Tells every process that sessions of a user ended: ``ended`` names one (a logout), or
    None for all of them but ``kept``, which goes on as ``renamed`` (a password change). Their
    sockets in the document that logged in with an ended session close
    (``Connection.sessions_ended``). Says whether it went; when it did not, the sockets stay
    open until they reconnect (the session is read at every connect)."""
    message = {
        "type": "doc.session_ended",
        "user_id": user_id,
        "session": ended,
        "kept": kept,
        "renamed": renamed,
        "origin": None,
    }
    return await _to_group(document_id, message, "announce sessions ended")


async def publish_title(document_id: uuid.UUID | str, title: str) -> None:
    """Tells every process that a document was renamed; their rooms pass the new title on to
    each socket (``protocol.title_changed``), so every open page shows it at once. Lossy like
    any group message: a page that misses it shows the new title when it is next loaded."""
    message = {"type": "doc.title", "title": title, "origin": None}
    await _to_group(document_id, message, "announce a new title")


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException: yrs hit a bug (found by fuzzing: some garbage updates make it
    panic). A BaseException, so ``except Exception`` does not see it; the Doc it was applying
    to may be left half-changed."""
    return type(exc).__name__ == "PanicException"


def _digest(update: bytes) -> bytes:
    return hashlib.blake2b(update, digest_size=16).digest()


# From this size an update's digest is taken in a thread: hashlib lets go of the GIL while it
# hashes, so the event loop serves every other socket meanwhile (a 16 MB update: 28 ms).
DIGEST_OFF_LOOP = 256 * 1024


# From this size an update does not travel to the other processes through the channel layer:
# once the log holds it, they are told so in a notice of a few bytes and read it from the log.
# Through the layer, a 16 MB paste was copied on the sending process's event loop by msgpack,
# by the Redis connection's send (and the kernel's loopback), and again on its way back (the
# process is in the document's group too): 16,000 page faults and a 100 ms stall on one turn
# (docs/BENCHMARKS.md, change 35). The other processes' clients get it one flush later.
THROUGH_THE_LOG = 1 << 20
# From this size a room's own update, once written, is left out of its catch-ups (``held``); a
# smaller one costs little to read again.
HOLD_FROM = 256 * 1024
# How long such an update waits for the log before it is published through the layer after all
# (the database is down or slow: the other processes' clients must get it all the same).
LOG_WAIT = 5.0

# A room alone publishes nothing (``COLLAB["LAYER_ONLY_WHEN_SHARED"]``): the rooms of one
# document in different processes know of each other (``Room._others``). A room says
# ``doc.hello`` to its document's group when it opens, the others answer ``doc.here``, and it
# says ``doc.bye`` when it closes; any message a room sends makes it known too. For
# HELLO_WINDOW seconds after its hello a room publishes everything, while the answers come.
HELLO_WINDOW = 2.0
# What a room alone did not publish in its last UNPUBLISHED_KEEP seconds is published when a
# hello comes: the newcomer joined the group before it said hello, and what came in between may
# not be in the log it loads either (writes are batched). Anything older is in the log by then.
# Updates from HOLD_FROM are not kept, only that one came: the hello is answered with a notice
# (``doc.logged``) and the newcomer reads the log, as for a big update. At most
# UNPUBLISHED_KEEP_BYTES are kept; the newcomer's catch-ups after its load read the rest.
UNPUBLISHED_KEEP = 2.0
UNPUBLISHED_KEEP_BYTES = 256 * 1024


async def _digest_off_loop(update: bytes) -> bytes:
    if len(update) < DIGEST_OFF_LOOP:
        return _digest(update)
    return await asyncio.get_running_loop().run_in_executor(None, _digest, update)


# How many sync step 2 answers a room keeps, and for how long (``Room.sync_step2``).
STEP2_KEEP = 4
STEP2_KEEP_SECONDS = 2.0


class Room:
    def __init__(
        self,
        document_id: str,
        on_layer_error: Callable[[], None] | None = None,
        on_logged: Callable[[Room], None] | None = None,
    ) -> None:
        self.document_id = str(document_id)
        # Called when a group_send fails: Redis is unreachable (``Rooms.layer_failed``).
        self._on_layer_error = on_layer_error
        # Called when another process says a big update of the document is in the log
        # (``Rooms.read_logged``).
        self._on_logged = on_logged
        # Big updates waiting for the log before the other processes are told (``_pass_on``).
        self._announcing: set[asyncio.Task[None]] = set()
        self.group = group_name(self.document_id)
        self.doc: Doc = Doc()
        self.connections: set[Connection] = set()
        self.channel: str | None = None
        # Digests of updates already applied, so catch-up re-sends only what was really missed.
        self._seen: dict[bytes, float] = {}
        # Ids of log rows the Doc holds all of (a catch-up read them, or this room's big updates
        # written by its process), with when: catch-ups do not read them again (a 16 MB paste
        # was read back, and diffed against the Doc on the loop, at every one).
        self.held: dict[int, float] = {}
        # The document's ``snapshot_seq`` when catch-up last looked (None: not yet).
        self.snapshot_seq: int | None = None
        # yrs panicked while applying to ``doc``: it must be rebuilt before it is trusted.
        self._broken = False
        self._listener: asyncio.Task | None = None
        self._evict_timer: asyncio.TimerHandle | None = None
        # Sync step 2 answers by the asker's state vector, for the doc's state ``_step2_state``
        # (``sync_step2``); emptied when the doc changes, and soon after anyway.
        self._step2: dict[bytes, bytes] = {}
        self._step2_state = b""
        # The document's rooms in other processes, by layer channel (``shared``).
        self._others: set[str] = set()
        # Until when (``time.monotonic()``) this room publishes everything: it said hello.
        self._hello_until = 0.0
        # What it did not publish lately, being alone: (when, the update, or None for a big
        # update's notice), and the updates' bytes.
        self._unpublished: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._unpublished_bytes = 0
        # Everyone's presence as the room last read it (``presence``): when the read was asked
        # (``time.monotonic()``) and its entries by client id, with this process's own changes
        # since; dropped when another process's awareness passes through. ``_awareness_passed``
        # counts what passed, so that a read on its way meanwhile is not kept.
        self._presence: tuple[float, dict[int, Entry]] | None = None
        self._awareness_passed = 0

    def sync_step2(self, state_vector: bytes) -> bytes:
        """The sync step 2 frame answering a client's state vector. Clients that join together
        (a join storm: 50 fresh tabs after a meeting link is posted) ask the same question of
        the same state; the answer, the whole document for a fresh client, is encoded once and
        the same bytes are sent to each, while the document does not change. A few answers are
        kept, for ``STEP2_KEEP_SECONDS`` at most, so an idle room holds no second copy."""
        state = self.doc.get_state()
        if state != self._step2_state:
            self._step2 = {}
            self._step2_state = state
        frame = self._step2.get(state_vector)
        if frame is None:
            frame = protocol.sync_step2(self.doc, state_vector)
            if len(self._step2) < STEP2_KEEP:
                if not self._step2:
                    asyncio.get_running_loop().call_later(STEP2_KEEP_SECONDS, self._step2.clear)
                self._step2[state_vector] = frame
        return frame

    async def open(self) -> None:
        """Joins the document group first, then loads: anything published meanwhile is applied
        too (Yjs updates commute and are idempotent). One gap remains: an update published
        just before the join and not yet written (writes are batched) is in neither; the
        catch-ups that Rooms schedules right after the load pick it up from the log."""
        layer = get_channel_layer()
        self.channel = await layer.new_channel("room.")
        await layer.group_add(self.group, self.channel)
        self._listener = asyncio.ensure_future(self._listen())
        await self.say_hello()
        updates, _ = await database_sync_to_async(store.load)(self.document_id)
        for update in updates:
            self.doc.apply_update(update)
            self._remember(update)
        logger.info("room %s loaded (%d stored updates)", self.document_id, len(updates))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        layer = get_channel_layer()
        if self.channel is not None:
            if self._others or time.monotonic() < self._hello_until:
                await self._say("doc.bye")
            try:
                await layer.group_discard(self.group, self.channel)
            except Exception:  # Redis down: the subscription dies with the connection anyway
                logger.warning("room %s: could not leave its group", self.document_id)
        logger.info("room %s evicted", self.document_id)

    # -- document updates -----------------------------------------------------------------

    async def apply_client_updates(
        self, updates: list[bytes], origin: Connection, author_id: int | None
    ) -> None:
        """Applies updates one client sent in a row (it got ahead of the server: a paste
        burst, an offline batch, a flood) and passes them on as ONE merged update: one log
        row, one frame per local connection and one group message, instead of one of each
        per update. When one does not apply, the ones before it are kept and passed on, then
        ``InvalidUpdate`` is raised; nothing of it or after it is applied."""
        started = time.perf_counter()
        updates = [update for update in updates if update != EMPTY_UPDATE]
        if not updates:
            return
        for index, update in enumerate(updates):
            if not protocol.plausible_update(update):
                if index:
                    await self.apply_client_updates(updates[:index], origin, author_id)
                raise InvalidUpdate("malformed update: its counts exceed its length")
        try:
            merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
            # One transaction for the batch: a commit costs about as much as a small update's
            # whole application (50,000 keystrokes: 2.3 s one by one, 0.08 s by hundreds).
            self.doc.apply_update(merged)
        except BaseException as exc:
            if _is_panic(exc):
                await self.reload()
                raise InvalidUpdate("update makes the CRDT library fail") from None
            if not isinstance(exc, ValueError):
                raise
            if len(updates) == 1:
                raise InvalidUpdate(str(exc)) from exc
            # Garbage somewhere in the batch (nothing was applied): keep what comes before it.
            applied, error = self._apply_each(updates)
            if applied:
                metrics.UPDATES_APPLIED.inc(len(applied))
                await self._pass_on(merge_updates(*applied), origin, author_id, started)
            if self._broken:
                await self.reload()
            raise error from exc
        metrics.UPDATES_APPLIED.inc(len(updates))
        await self._pass_on(merged, origin, author_id, started)

    def _apply_each(self, updates: list[bytes]) -> tuple[list[bytes], InvalidUpdate]:
        applied: list[bytes] = []
        for update in updates:
            try:
                self.doc.apply_update(update)
            except ValueError as exc:
                return applied, InvalidUpdate(str(exc))
            except BaseException as exc:
                if not _is_panic(exc):
                    raise
                # The Doc may be half-changed: the caller passes on what applied before, and
                # the next apply or catch-up finds the room rebuilt (``reload``).
                self._broken = True
                return applied, InvalidUpdate("update makes the CRDT library fail")
            applied.append(update)
        # Each applies alone though not together: not expected of valid Yjs updates.
        return applied, InvalidUpdate("updates do not apply together")

    async def _pass_on(
        self, update: bytes, origin: Connection, author_id: int | None, started: float
    ) -> None:
        """Makes an applied update durable and sends it to every other connection of the
        document, here and in other processes. ``started``: when the update reached the room
        (``time.perf_counter()``), to time the fan-out."""
        self._seen[await _digest_off_loop(update)] = time.monotonic()
        # A big update's row, once committed, is left out of this room's catch-ups (``held``).
        written = None
        if len(update) >= HOLD_FROM:
            written = functools.partial(self._hold_written, update)
        store.get_writer().append(self.document_id, update, author_id, on_written=written)
        autoversions.get_autoversions().changed(self.document_id)
        # Joined behind its WebSocket frame's header: one copy of a big paste, not two.
        message = transport.framed_message(protocol.sync_update_parts(update))
        await self._send_local(message, exclude=origin)
        metrics.FANOUT_CLIENT.observe(time.perf_counter() - started)
        if not self.shared():
            self._keep_unpublished(None if len(update) >= HOLD_FROM else update)
            return
        if len(update) >= THROUGH_THE_LOG:
            # Not awaited: the sender's next messages do not wait for the log.
            announcing = asyncio.ensure_future(self._announce_when_logged(update))
            self._announcing.add(announcing)
            announcing.add_done_callback(self._announcing.discard)
            return
        await self._publish({"type": "doc.update", "update": update})

    async def _announce_when_logged(self, update: bytes) -> None:
        """Tells the other processes that a big update is in the log, once it is; publishes
        the update itself if the log has not taken it within ``LOG_WAIT``."""
        try:
            await store.get_writer().flush(LOG_WAIT)
        except TimeoutError:
            logger.warning(
                "room %s: a %d-byte update is not in the log after %s s; publishing it",
                self.document_id,
                len(update),
                LOG_WAIT,
            )
            await self._publish({"type": "doc.update", "update": update})
            return
        await self._publish({"type": "doc.logged"})

    def _apply_remote(self, update: bytes, digest: bytes | None = None) -> bool:
        """Applies an update from another process or the log; says whether it was new here.
        ``digest``: the update's, when the caller has it."""
        if digest is None:
            digest = _digest(update)
        if digest in self._seen:
            return False
        try:
            self.doc.apply_update(update)
        except ValueError:
            logger.error("room %s: dropped an update that does not apply", self.document_id)
            return False
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            logger.error("room %s: an update from the log made yrs panic", self.document_id)
            self._broken = True
            return False
        self._seen[digest] = time.monotonic()
        return True

    async def reload(self) -> None:
        """Rebuilds the Doc from the durable log after yrs panicked while applying to it (it may
        be half-changed): waits for queued writes, loads the document again, and asks every
        local client to sync, so whatever a client holds that the log lacks comes back."""
        logger.error("room %s: yrs failed on an update; rebuilding from the log", self.document_id)
        await store.get_writer().flush()
        updates, _ = await database_sync_to_async(store.load)(self.document_id)
        doc: Doc = Doc()
        for update in updates:
            doc.apply_update(update)
        self.doc = doc
        self._broken = False
        now = time.monotonic()
        self._seen = {_digest(update): now for update in updates}
        await self._send_local(protocol.sync_step1(doc))

    def _hold_written(self, update: bytes, row_id: int) -> None:
        """The writer committed this room's update as row ``row_id``: held if the Doc holds
        all of it (an update parked for a dependency is left to the catch-ups, which apply
        it again, ``_integrate_parked``)."""
        if not self._broken and not store.missing_from(self.doc.get_state(), [update]):
            self.held[row_id] = time.monotonic()

    def _remember(self, update: bytes) -> None:
        self._seen[_digest(update)] = time.monotonic()

    async def catch_up(self, rows: list[bytes]) -> list[bytes]:
        """Applies log rows this room may have missed and forwards the new ones locally.
        Returns the rows the Doc does not hold all of yet (parked, or the room was rebuilt)."""
        missed = 0
        for update in rows:
            if self._apply_remote(update, await _digest_off_loop(update)):
                missed += 1
                await self._send_local(transport.framed_message(protocol.sync_update_parts(update)))
        parked = await self._integrate_parked(rows)
        if self._broken:
            await self.reload()
            parked = rows
        cutoff = time.monotonic() - _seen_ttl()
        self._seen = {d: t for d, t in self._seen.items() if t >= cutoff}
        if missed:
            metrics.RECOVERED["log"].inc(missed)
            logger.warning(
                "room %s: recovered %d missed updates from the log", self.document_id, missed
            )
            if time.monotonic() >= self._hello_until:
                # Perhaps a room that thinks itself alone (it missed this one's hello): it
                # learns of this one now, and publishes again.
                await self.say_hello()
        return parked

    async def _integrate_parked(self, rows: list[bytes]) -> list[bytes]:
        """Applies again the rows this Doc holds as applied but does not contain, and
        forwards what that brings in.

        An update whose dependencies have not arrived is parked ("pending") and should be
        integrated when they do. pycrdt 0.14.13 (yrs) sometimes leaves it parked for good when
        updates from several clients arrive out of order, as they do across a Redis outage: a
        room held every row of the log and still lacked a client's last ~90 characters, until
        the rows were applied again (tests/realtime/test_live_faults.py found it). The check
        is the one compaction uses (``store.missing_from``). Returns the rows found parked."""
        if self._broken:
            return rows  # rebuilt from the log next
        parked = store.missing_from(self.doc.get_state(), rows)
        if not parked:
            return parked
        before = self.doc.get_state()
        for update in parked:
            try:
                self.doc.apply_update(update)
            except ValueError:
                pass  # reported when it was first applied
            except BaseException as exc:
                if not _is_panic(exc):
                    raise
                self._broken = True  # the caller rebuilds the room
                return rows
        brought = self.doc.get_update(before)
        if brought != EMPTY_UPDATE:
            metrics.RECOVERED["parked"].inc(len(parked))
            logger.warning(
                "room %s: integrated %d parked update(s) on re-applying them",
                self.document_id,
                len(parked),
            )
            await self._send_local(protocol.sync_update(brought))
        return parked

    async def catch_up_snapshot(self, seq: int, snapshot: bytes) -> None:
        """Applies the document's snapshot after a compaction (``seq``: its snapshot_seq) and
        forwards locally whatever it held that this room lacked. Compaction deletes the rows it
        folds, so an update this room missed on the channel layer may be in the snapshot only
        by the time catch-up reads the log (a busy document reaches COMPACT_THRESHOLD rows in
        seconds). Costs one read and one application of the whole state per compaction."""
        self.snapshot_seq = seq
        if not snapshot:
            return
        before = self.doc.get_state()
        if not self._apply_remote(snapshot):
            if self._broken:
                await self.reload()
            return
        missed = self.doc.get_update(before)
        if missed != EMPTY_UPDATE:
            metrics.RECOVERED["snapshot"].inc()
            logger.warning(
                "room %s: recovered missed updates from the snapshot (%d bytes)",
                self.document_id,
                len(missed),
            )
            await self._send_local(protocol.sync_update(missed))

    # -- awareness ------------------------------------------------------------------------
    # Presence state itself lives in Redis (presence.py); a room only moves awareness frames.

    async def presence(self) -> list[Entry]:
        """Everyone's live presence, for a socket of this room (one that joined, or a client
        that asks), by client id: read from Redis (``Presence.entries``), or the room's last
        read while it holds, asked less than ``PRESENCE_READ_REUSE`` ago. Every change since
        that read came through the room: this process's own clients' (``relay_awareness``
        with the changes) are taken into it; another process's, and the sweep's expiries (a
        ``doc.awareness`` message), drop it. The socket is in the room by then, so every change
        after what it is sent reaches it as awareness of its own. What a kept read can miss is
        a change that reached Redis with no message to this room (another process's, sent
        before it heard this room's hello; a message the layer lost), for that window at most;
        Yjs clients drop a state they have not heard of for 30 s anyway. A join storm then reads
        a document's presence about once a window, not once per trip of joiners, also when
        each joiner's first awareness follows at once, as a browser's does (docs/BENCHMARKS.md,
        change 59)."""
        reuse = settings.COLLAB["PRESENCE_READ_REUSE"]
        asked = time.monotonic()
        kept = self._presence
        if kept is not None and asked - kept[0] < reuse:
            now = time.time()
            return sorted(
                (entry for entry in kept[1].values() if entry.deadline >= now),
                key=_client_id,
            )
        passed = self._awareness_passed
        entries = await get_presence().entries(self.document_id)
        if reuse > 0 and self._awareness_passed == passed:
            kept = self._presence = (asked, {entry.client_id: entry for entry in entries})
            # Let go once it can no longer be used: an idle room holds no copy.
            asyncio.get_running_loop().call_later(reuse, self._let_go_of, kept)
        return entries

    def _let_go_of(self, kept: tuple[float, dict[int, Entry]]) -> None:
        if self._presence is kept:
            self._presence = None

    def forget_presence(self) -> None:
        """Awareness passed through the room that it cannot take into its kept read, or some
        may have been lost (the layer failed): the next ``presence`` reads Redis."""
        self._awareness_passed += 1
        self._presence = None

    def _take_awareness(self, changes: Sequence[Entry | protocol.AwarenessEntry]) -> None:
        """This process's own clients' changes, as stored (an ``Entry``) or gone (state None),
        taken into the kept read; a read on its way is not kept."""
        self._awareness_passed += 1
        kept = self._presence
        if kept is None:
            return
        entries = kept[1]
        for change in changes:
            if change.state is None:
                entries.pop(change.client_id, None)
            elif isinstance(change, Entry):
                entries[change.client_id] = change
            else:
                self._presence = None
                return

    async def relay_awareness(
        self, payload: bytes, changes: Sequence[Entry | protocol.AwarenessEntry] | None = None
    ) -> None:
        """Sends awareness to everyone, the sender included: the stock client reconnects after
        30 s of silence, and this echo of its own renewals is what it hears. ``changes``: what
        the payload says, when it is this process's clients' own (``presence`` keeps them);
        without them, the room's kept presence read is dropped."""
        if changes is None:
            self.forget_presence()
        else:
            self._take_awareness(changes)
        await self._send_local(protocol.awareness(payload))
        if self.shared():
            await self._publish({"type": "doc.awareness", "payload": payload})

    async def announce_removal(self, clocks: dict[int, int]) -> None:
        """Tells everyone these clients left (state null, clock bumped as y-protocols does)."""
        if not clocks:
            return
        gone = removals(clocks)
        await self.relay_awareness(protocol.encode_awareness(gone), gone)

    # -- the document's rooms in other processes ------------------------------------------

    def shared(self) -> bool:
        """Whether what this room passes on goes to the channel layer: another process has
        the document open, or may have (this room said hello lately), or the switch is off."""
        return (
            bool(self._others)
            or time.monotonic() < self._hello_until
            or not settings.COLLAB["LAYER_ONLY_WHEN_SHARED"]
        )

    async def say_hello(self) -> None:
        """Asks the document's rooms in other processes to make themselves known; publishes
        everything until their answers have had time to come (``HELLO_WINDOW``)."""
        self._hello_until = time.monotonic() + HELLO_WINDOW
        await self._say("doc.hello")

    async def _say(self, kind: str) -> None:
        try:
            await get_channel_layer().group_send(self.group, {"type": kind, "origin": self.channel})
        except Exception as exc:
            metrics.REDIS["group_send"].inc()
            logger.warning("room %s: could not say %s: %r", self.document_id, kind, exc)
            if self._on_layer_error is not None and kind != "doc.bye":
                self._on_layer_error()

    def _keep_unpublished(self, update: bytes | None) -> None:
        now = time.monotonic()
        self._unpublished.append((now, update))
        self._unpublished_bytes += len(update or b"")
        self._forget_unpublished(now)

    def _forget_unpublished(self, now: float) -> None:
        kept = self._unpublished
        while kept and (
            kept[0][0] < now - UNPUBLISHED_KEEP or self._unpublished_bytes > UNPUBLISHED_KEEP_BYTES
        ):
            self._unpublished_bytes -= len(kept.popleft()[1] or b"")

    async def _welcome(self) -> None:
        """A room of the document opened in another process: answers it, and publishes what
        this room did not while it was alone (``UNPUBLISHED_KEEP``)."""
        await self._say("doc.here")
        self._forget_unpublished(time.monotonic())
        updates = [update for _, update in self._unpublished if update is not None]
        big = len(updates) < len(self._unpublished)
        self._unpublished.clear()
        self._unpublished_bytes = 0
        if updates:
            merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
            await self._publish({"type": "doc.update", "update": merged})
        if big:
            await self._publish({"type": "doc.logged"})

    # -- plumbing -------------------------------------------------------------------------

    async def _send_local(self, frame: bytes, exclude: Connection | None = None) -> None:
        """Sends a frame to every local connection but ``exclude``. A send to one socket is that
        socket's business: whatever it raises (a socket closing under it, say) is logged and
        never reaches the other connections or the sender, whose update is already applied.
        Counted once (metrics.py), not per socket: this is the hot path."""
        sent = 0
        for connection in list(self.connections):
            if connection is exclude:
                continue
            try:
                if await connection.send_frame(frame):
                    sent += 1
            except Exception:
                logger.exception(
                    "room %s: a send to one connection failed; the others go on",
                    self.document_id,
                )
        metrics.frames_out(frame, sent)

    async def _publish(self, message: dict) -> None:
        message["origin"] = self.channel
        try:
            await get_channel_layer().group_send(self.group, message)
        except Exception as exc:
            # Durability does not depend on the layer: other processes catch up from the log.
            # One line, not a traceback: during an outage this comes with every keystroke.
            metrics.REDIS["group_send"].inc()
            logger.warning("room %s: group_send failed: %r", self.document_id, exc)
            if self._on_layer_error is not None:
                self._on_layer_error()

    async def probe(self) -> bool:
        """Whether the document's group takes a message again (a ``doc.ping``, which every
        room ignores)."""
        try:
            await get_channel_layer().group_send(
                self.group, {"type": "doc.ping", "origin": self.channel}
            )
        except Exception:
            return False
        return True

    async def _listen(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.REDIS["layer_receive"].inc()
                logger.exception("room %s: channel layer receive failed", self.document_id)
                self.forget_presence()
                await asyncio.sleep(1)
                continue
            if message.get("origin") == self.channel:
                continue
            try:
                await self._dispatch(message)
            except Exception:
                logger.exception(
                    "room %s: could not handle %s", self.document_id, message.get("type")
                )

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind, origin = message["type"], message.get("origin")
        if kind == "doc.bye":
            self._others.discard(str(origin))
            return
        if origin is not None:  # a room of another process (not a view, not the sweep)
            self._others.add(origin)
        if kind == "doc.hello":
            await self._welcome()
        elif message["type"] == "doc.update":
            started = time.perf_counter()
            update = message["update"]
            if self._apply_remote(update, await _digest_off_loop(update)):
                metrics.REMOTE_UPDATES.inc()
                await self._send_local(transport.framed_message(protocol.sync_update_parts(update)))
                metrics.FANOUT_LAYER.observe(time.perf_counter() - started)
            elif self._broken:
                await self.reload()
        elif message["type"] == "doc.logged":
            if self._on_logged is not None:
                self._on_logged(self)
        elif message["type"] == "doc.awareness":
            self.forget_presence()
            await self._send_local(protocol.awareness(message["payload"]))
        elif message["type"] == "doc.title":
            await self._send_local(protocol.title_changed(message["title"]))
        elif message["type"] == "doc.access":
            user_id = message["user_id"]
            for connection in list(self.connections):
                if user_id in (None, connection.user_id):
                    try:
                        await connection.recheck_access()
                    except Exception:
                        logger.exception("room %s: an access re-check failed", self.document_id)
        elif message["type"] == "doc.session_ended":
            user_id = message["user_id"]
            for connection in list(self.connections):
                if connection.user_id == user_id:
                    try:
                        await connection.sessions_ended(
                            message["session"], message["kept"], message["renamed"]
                        )
                    except Exception:
                        logger.exception("room %s: a session's end failed", self.document_id)
        # Anything else ("doc.here": an answer to this room's hello, known by its origin now;
        # "doc.ping": Rooms probing Redis during an outage) is ignored.


# Seconds after a room loads at which it re-reads the log once, for updates published just
# before it joined the group and written only after it loaded (batches take ~50 ms; more under
# load).
_CATCHUP_AFTER_LOAD = (0.5, 2.0)

# While Redis is unreachable the channel layer carries nothing between processes, so rooms
# re-read the log this often (seconds) instead of every CATCHUP_INTERVAL, and probe Redis as
# often. Once it answers they re-read the log at these delays after its return: channels-redis
# re-subscribes only on its receive loop's next turn (it sleeps 1 s after an error), and what
# other processes published before that is lost too. Without this a Redis restart left clients
# on different processes apart for up to CATCHUP_INTERVAL after Redis came back.
OUTAGE_CATCHUP_INTERVAL = 1.0
_CATCHUP_AFTER_RETURN = (0.5, 1.5, 3.0)


def _read_log(
    document_ids: list[str], since: datetime, known: dict[str, int | None], held: set[int]
) -> tuple[list[tuple[str, int, bytes]], list[tuple[str, int, bytes]]]:
    """Recent log rows but the ``held`` ones, then the snapshots compacted since ``known``: in
    that order, as ``store.load`` reads, so a compaction committing in between is seen one way
    or the other. Sync."""
    rows = store.updates_since(document_ids, since, held)
    return rows, store.snapshots_since(known)


def _seen_ttl() -> float:
    return 4 * settings.COLLAB["CATCHUP_INTERVAL"] + 10


class Rooms:
    """This process's rooms. A document is loaded at most once at a time (a shared load task),
    and evicted ROOM_GRACE seconds after its last local connection leaves."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._catchup: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._outage: asyncio.Task | None = None
        # Log reads that other processes' notices asked for (``read_logged``), by room.
        self._reading: dict[Room, asyncio.Task[None]] = {}
        self._read_again: set[Room] = set()

    def get(self, document_id: str) -> Room | None:
        return self._rooms.get(str(document_id))

    @property
    def loaded(self) -> int:
        """How many rooms are loaded (the census, editor/realtime/census.py)."""
        return len(self._rooms)

    async def join(self, document_id: uuid.UUID | str, connection: Connection) -> Room:
        document_id = str(document_id)
        room = self._rooms.get(document_id)
        if room is None:
            loading = self._loading.get(document_id)
            if loading is None:
                loading = asyncio.ensure_future(self._open(document_id))
                self._loading[document_id] = loading
            room = await asyncio.shield(loading)
        if room._evict_timer is not None:
            room._evict_timer.cancel()
            room._evict_timer = None
        if not room.connections:
            autoversions.get_autoversions().joined(document_id)
        room.connections.add(connection)
        return room

    async def _open(self, document_id: str) -> Room:
        room = Room(document_id, on_layer_error=self.layer_failed, on_logged=self.read_logged)
        try:
            await room.open()
        except BaseException:
            self._loading.pop(document_id, None)
            await room.close()
            raise
        self._rooms[document_id] = room
        metrics.ROOMS.inc()
        self._loading.pop(document_id, None)
        loop = asyncio.get_running_loop()
        for delay in _CATCHUP_AFTER_LOAD:
            loop.call_later(delay, lambda: asyncio.ensure_future(self._catch_up_quietly(room)))
        if self._catchup is None or self._catchup.done():
            self._catchup = asyncio.ensure_future(self._catch_up_forever())
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep_forever())
        return room

    def leave(self, room: Room, connection: Connection) -> None:
        room.connections.discard(connection)
        if not room.connections:
            autoversions.get_autoversions().left(room.document_id)
        if room.connections or room._evict_timer is not None:
            return
        loop = asyncio.get_running_loop()
        room._evict_timer = loop.call_later(
            settings.COLLAB["ROOM_GRACE"], lambda: asyncio.ensure_future(self._evict(room))
        )

    async def _evict(self, room: Room) -> None:
        room._evict_timer = None
        if room.connections or self._rooms.get(room.document_id) is not room:
            return
        del self._rooms[room.document_id]
        metrics.ROOMS.dec()
        await room.close()

    def read_logged(self, room: Room) -> None:
        """Another process put a big update of the room's document in the log
        (``Room._announce_when_logged``): reads the log for it now, not at the next catch-up.
        One read at a time per room; notices that come during one make one more after it."""
        reading = self._reading.get(room)
        if reading is not None and not reading.done():
            self._read_again.add(room)
            return
        reading = asyncio.ensure_future(self._read_logged(room))
        self._reading[room] = reading
        reading.add_done_callback(lambda done: self._forget_read(room, done))

    def _forget_read(self, room: Room, done: asyncio.Task[None]) -> None:
        if self._reading.get(room) is done:
            del self._reading[room]

    async def _read_logged(self, room: Room) -> None:
        while True:
            self._read_again.discard(room)
            await self._catch_up_quietly(room)
            if room not in self._read_again:
                return

    async def _catch_up_quietly(self, room: Room) -> None:
        if self._rooms.get(room.document_id) is not room:
            return
        try:
            await self.catch_up_once([room.document_id])
        except Exception:
            metrics.DATABASE["catchup"].inc()
            logger.exception("room %s: catch-up after load failed", room.document_id)

    async def catch_up_once(self, document_ids: list[str] | None = None) -> None:
        """Re-reads recent log rows of these rooms (all by default) and applies what was
        missed."""
        document_ids = list(self._rooms) if document_ids is None else document_ids
        if not document_ids:
            return
        window = timedelta(seconds=2 * settings.COLLAB["CATCHUP_INTERVAL"] + 2)
        rooms = [room for d in document_ids if (room := self._rooms.get(d))]
        known = {room.document_id: room.snapshot_seq for room in rooms}
        # Held rows older than the window are out of it anyway.
        cutoff = time.monotonic() - window.total_seconds() - 1
        for room in rooms:
            room.held = {row: t for row, t in room.held.items() if t >= cutoff}
        held = {row for room in rooms for row in room.held}
        rows, snapshots = await database_sync_to_async(_read_log)(
            document_ids, timezone.now() - window, known, held
        )
        by_document: dict[str, list[tuple[int, bytes]]] = {}
        for document_id, row_id, data in rows:
            by_document.setdefault(str(document_id), []).append((row_id, bytes(data)))
        for document_id, updates in by_document.items():
            room = self._rooms.get(document_id)
            if room is not None:
                parked = {id(data) for data in await room.catch_up([d for _, d in updates])}
                now = time.monotonic()
                room.held.update((row_id, now) for row_id, d in updates if id(d) not in parked)
        for document_id, seq, snapshot in snapshots:
            room = self._rooms.get(document_id)
            if room is not None:
                await room.catch_up_snapshot(seq, snapshot)

    def layer_failed(self) -> None:
        """Called when Redis failed under a room (a group_send, the sweep): until it answers
        again, the rooms catch up from the log every OUTAGE_CATCHUP_INTERVAL, and read
        presence afresh for each joiner (awareness may have been lost)."""
        for room in self._rooms.values():
            room.forget_presence()
        if self._outage is None or self._outage.done():
            self._outage = asyncio.ensure_future(self._ride_out_outage())

    async def _ride_out_outage(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        logger.warning(
            "Redis unreachable: rooms catch up from the log every %s s until it answers",
            OUTAGE_CATCHUP_INTERVAL,
        )
        while True:
            await asyncio.sleep(OUTAGE_CATCHUP_INTERVAL)
            if not self._rooms:
                return
            await self._catch_up_logged()
            rooms = list(self._rooms.values())
            if all(await asyncio.gather(*(room.probe() for room in rooms))):
                break
        back = loop.time()
        logger.warning("Redis answers again after %.1f s; catching up", back - started)
        for delay in _CATCHUP_AFTER_RETURN:
            await asyncio.sleep(max(0.0, back + delay - loop.time()))
            # Rooms opened during the outage could not say hello; the others' subscriptions
            # come back within the first second or so.
            await asyncio.gather(*(room.say_hello() for room in list(self._rooms.values())))
            await self._catch_up_logged()

    async def _catch_up_logged(self) -> None:
        try:
            await self.catch_up_once()
        except Exception:
            metrics.DATABASE["catchup"].inc()
            logger.exception("catch-up failed")

    async def _catch_up_forever(self) -> None:
        while self._rooms:
            await asyncio.sleep(settings.COLLAB["CATCHUP_INTERVAL"])
            try:
                await self.catch_up_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.DATABASE["catchup"].inc()
                logger.exception(
                    "catch-up failed; retrying in %ss", settings.COLLAB["CATCHUP_INTERVAL"]
                )

    async def sweep_once(self) -> None:
        """Removes expired presence of every document (any process's) and announces it."""
        removals = await get_presence().sweep()
        by_document: dict[str, dict[int, int]] = {}
        for removal in removals:
            by_document.setdefault(removal.document_id, {})[removal.client_id] = removal.clock
        layer = get_channel_layer()
        for document_id, clocks in by_document.items():
            logger.info("presence of %s: %d client(s) expired", document_id, len(clocks))
            # origin None: every room, this process's included, forwards it to its sockets.
            await layer.group_send(
                group_name(document_id),
                {"type": "doc.awareness", "payload": removal_payload(clocks), "origin": None},
            )

    async def _sweep_forever(self) -> None:
        while self._rooms:
            await asyncio.sleep(settings.COLLAB["PRESENCE_SWEEP_INTERVAL"])
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.REDIS["sweep"].inc()
                logger.exception("presence sweep failed; trying again after the interval")
                self.layer_failed()


@per_event_loop
def get_rooms() -> Rooms:
    """The rooms of this process (editor/realtime/loops.py)."""
    return Rooms()
