"""The durable state of a document: its Yjs update log and the snapshot it is folded into.

This module is the only code that touches ``DocumentUpdate`` rows and ``Document.snapshot``.

Writes (``UpdateWriter``): rooms call ``append()`` for every accepted update without waiting.
One writer per process (per event loop) gathers what arrives within
``COLLAB["STORE_FLUSH_INTERVAL"]`` of the first queued update and commits the lot in one
transaction and one thread hop: the rows and their documents' ``updated_at`` (one statement on
PostgreSQL, ``_insert``; ``bulk_create`` and one ``UPDATE`` elsewhere).
That is group commit: a burst of keystrokes from many sockets costs one commit instead of one per
keystroke, and the event loop never waits on the database. The price is that an update is durable
about one interval after it was accepted; ``flush()`` waits for that, and
``install_shutdown_flush()`` makes a graceful daphne shutdown wait for it too.

A batch that fails to commit stays queued and is retried with backoff, so a database blip delays
updates but never loses them. Retrying may store an update twice (a commit whose answer was lost);
that is harmless because applying a Yjs update twice is a no-op. The one exception: updates for a
document deleted in the meantime are dropped with a warning, or they would block every later batch.

Reads: ``load()`` gives a room the snapshot plus whatever rows remain; ``updates_since()`` lets
rooms re-read recent rows to recover group messages the channel layer lost, and
``snapshots_since()`` the snapshot, when a compaction folded (and deleted) rows since they last
looked.

Compaction (``compact()``) folds the log into the snapshot when it grows past
``COLLAB["COMPACT_THRESHOLD"]`` rows (checked after each batch) or from
``manage.py compact_documents``. Row ids are not a commit order: in PostgreSQL a transaction
holding a lower id can commit after one holding a higher id. So compaction deletes exactly the
rows it folded, by id, and ``load()`` reads every row that remains rather than ``id >
snapshot_seq``. For the same reason a folded row may depend on a row that is not committed yet;
pycrdt parks such an update as "pending" and leaves it out of ``Doc.get_update()``, so compaction
keeps (does not delete) any row that the folded document does not fully contain.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import sys
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils import timezone
from pycrdt import Decoder, Doc
from pycrdt import get_update as diff_update

from editor import metrics
from editor.bigvalues import server_bound
from editor.models import Document, DocumentUpdate
from editor.realtime.loops import per_event_loop

__all__ = [
    "CompactResult",
    "UpdateWriter",
    "compact",
    "get_writer",
    "install_shutdown_flush",
    "load",
    "missing_from",
    "snapshots_since",
    "updates_since",
    "write",
]

logger = logging.getLogger("collab.store")

# Backoff between attempts to write a batch that failed: doubles from the first to the cap.
RETRY_FIRST_DELAY = 0.1
RETRY_MAX_DELAY = 5.0
# How long a graceful shutdown waits for pending writes (docker stop's grace period is 10 s).
SHUTDOWN_FLUSH_TIMEOUT = 8.0
# At shutdown, how long the log must stay quiet before the final flush counts as the last one.
_SHUTDOWN_SETTLE = 0.05
# Rows per DELETE in compaction: stays far below SQLite's limit on query parameters.
_DELETE_CHUNK = 500


# -- reads ----------------------------------------------------------------------------------


def load(document_id: uuid.UUID | str) -> tuple[list[bytes], int]:
    """The document's state as updates to apply in order: the snapshot (if any), then every row
    still in the log, by id. Also returns the largest row id seen, or ``snapshot_seq`` if the log
    is empty. Raises ``Document.DoesNotExist`` for an unknown document. Sync: run it through
    ``database_sync_to_async``."""
    # Rows first, snapshot second, with no lock: a compaction committing in between has either
    # not deleted the rows yet (we also hold them, and applying them twice is harmless) or has
    # already written the snapshot that contains them. Snapshot first could miss both.
    with server_bound(binary_results=True):
        rows = list(
            DocumentUpdate.objects.filter(document_id=document_id)
            .order_by("id")
            .values_list("id", "data")
        )
        snapshot, snapshot_seq = (
            Document.objects.filter(pk=document_id).values_list("snapshot", "snapshot_seq").get()
        )
    updates = [bytes(snapshot)] if snapshot else []
    updates += [bytes(data) for _, data in rows]
    return updates, max((pk for pk, _ in rows), default=snapshot_seq)


def updates_since(
    document_ids: list, since: datetime.datetime, held: Collection[int] = ()
) -> list[tuple[str, int, bytes]]:
    """Rows of these documents created at or after ``since``, by id, as (document id, row id,
    update), but for the rows whose ids are ``held`` (the caller has them already: a 16 MB
    paste is not read back every catch-up). ``created_at`` is set when the writer commits the
    batch, so callers should look back a little further than they last looked."""
    if not document_ids:
        return []
    recent = DocumentUpdate.objects.filter(document_id__in=document_ids, created_at__gte=since)
    if held:
        recent = recent.exclude(id__in=list(held))
    with server_bound(binary_results=True):
        rows = list(recent.order_by("id").values_list("document_id", "id", "data"))
    return [(str(document_id), pk, bytes(data)) for document_id, pk, data in rows]


def snapshots_since(known: dict[str, int | None]) -> list[tuple[str, int, bytes]]:
    """The snapshots of these documents (id → the ``snapshot_seq`` the caller last saw, None
    for none) that a compaction replaced since, as (document id, snapshot_seq, snapshot).
    Compaction deletes the rows it folds, so whoever follows recent rows must look here too.
    Sync."""
    if not known:
        return []
    current = Document.objects.filter(pk__in=list(known)).values_list("pk", "snapshot_seq")
    changed = [pk for pk, seq in current if known.get(str(pk)) != seq]
    if not changed:
        return []
    rows = Document.objects.filter(pk__in=changed).values_list("pk", "snapshot_seq", "snapshot")
    return [(str(pk), seq, bytes(snapshot)) for pk, seq, snapshot in rows]


# -- compaction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactResult:
    folded: int  # log rows merged into the snapshot and deleted
    snapshot_bytes: int  # size of the snapshot afterwards
    kept: int = 0  # rows left in the log: they failed to apply or wait for a missing dependency


def compact(document_id: uuid.UUID | str) -> CompactResult:
    """Folds the document's log into its snapshot, in one transaction. Sync."""
    with transaction.atomic():
        # Row lock: two compactions at once could each write a snapshot from the rows they saw
        # and delete them, so the later snapshot would lack rows only the other one folded.
        document = (
            Document.objects.select_for_update()
            .only("snapshot", "snapshot_seq")
            .get(pk=document_id)
        )
        snapshot = bytes(document.snapshot)
        rows = list(
            DocumentUpdate.objects.filter(document_id=document.pk)
            .order_by("id")
            .values_list("id", "data")
        )
        if not rows:
            return CompactResult(folded=0, snapshot_bytes=len(snapshot))
        new_snapshot, folded = _fold(snapshot, [(pk, bytes(data)) for pk, data in rows])
        kept = len(rows) - len(folded)
        if not folded:
            return CompactResult(folded=0, snapshot_bytes=len(snapshot), kept=kept)
        Document.objects.filter(pk=document.pk).update(
            snapshot=new_snapshot, snapshot_seq=max(max(folded), document.snapshot_seq)
        )
        for start in range(0, len(folded), _DELETE_CHUNK):
            DocumentUpdate.objects.filter(pk__in=folded[start : start + _DELETE_CHUNK]).delete()
    if kept:
        logger.warning("compaction of %s kept %d row(s) it could not fold", document_id, kept)
    return CompactResult(folded=len(folded), snapshot_bytes=len(new_snapshot), kept=kept)


def _fold(snapshot: bytes, rows: list[tuple[int, bytes]]) -> tuple[bytes, list[int]]:
    """Applies the snapshot and rows to a fresh Doc; returns its full state as one update and
    the ids of the rows it fully contains."""
    doc: Doc = Doc()
    if snapshot:
        doc.apply_update(snapshot)  # a corrupt snapshot raises: better stop than delete rows
    applied = []
    for pk, data in rows:
        try:
            doc.apply_update(data)
        except ValueError as exc:
            logger.error("update row %s does not apply and stays in the log: %s", pk, exc)
        else:
            applied.append((pk, data))
    state = doc.get_state()
    clocks = _decode_state_vector(state)
    folded = [pk for pk, data in applied if _contained(data, state, clocks)]
    return doc.get_update(), folded


def missing_from(state: bytes, updates: list[bytes]) -> list[bytes]:
    """The updates that a Doc with this state (``Doc.get_state()``) does not fully hold:
    never applied, or applied but parked waiting for a dependency."""
    clocks = _decode_state_vector(state)
    return [update for update in updates if not _contained(update, state, clocks)]


def _decode_state_vector(state: bytes) -> dict[int, int]:
    decoder = Decoder(state)
    return {
        decoder.read_var_uint(): decoder.read_var_uint() for _ in range(decoder.read_var_uint())
    }


def _contained(update: bytes, state: bytes, clocks: dict[int, int]) -> bool:
    """Whether a Doc with this state holds all of ``update``: its insertions are all within the
    state vector, and so is everything it deletes. Anything else is pending in the Doc (pycrdt
    waits for the missing earlier update) and would be missing from ``Doc.get_update()``."""
    # The diff against the state keeps only the insertions the Doc lacks, plus the whole delete
    # set. In update v1 encoding that is: structs (client count, ...), then the delete set:
    # client count, then per client: client, range count, (clock, length) per range.
    decoder = Decoder(diff_update(update, state))
    try:
        if decoder.read_var_uint():
            return False
        for _ in range(decoder.read_var_uint()):
            client = decoder.read_var_uint()
            for _ in range(decoder.read_var_uint()):
                clock, length = decoder.read_var_uint(), decoder.read_var_uint()
                if clock + length > clocks.get(client, 0):
                    return False
    except (IndexError, ValueError):
        return False  # unreadable: keep the row rather than guess
    return True


# -- writes ---------------------------------------------------------------------------------


class _Pending(NamedTuple):
    document_id: uuid.UUID
    data: bytes
    author_id: int | None
    queued_at: float  # event loop time
    # Told the row's id once it is committed (on the event loop); see ``UpdateWriter.append``.
    on_written: Callable[[int], None] | None = None


def _write_batch(batch: list[_Pending]) -> list[tuple[_Pending, int | None]]:
    """Commits a batch of updates, then compacts the documents whose log grew too long; returns
    the updates written with their row ids (None where the database does not return them).
    Sync; raises if the batch was not committed."""
    try:
        ids = _insert(batch)
    except IntegrityError:
        # A document (or author) deleted while its updates waited makes the whole batch fail
        # on its foreign key, forever. Drop those rows (null those authors) and try once more.
        cleaned = _without_orphans(batch)
        if cleaned == batch:
            raise
        ids = _insert(cleaned)
        batch = cleaned
    if batch:
        _compact_crowded([p.document_id for p in batch])
    return list(zip(batch, ids, strict=True))


def _compact_crowded(written: Collection[uuid.UUID | str]) -> None:
    """Compacts those of these documents (one entry per row just written) whose log grew past
    the threshold. Counted in the database only when what this process knows of a document's
    log (``_LOG_ROWS``) says it may have: counting every document of every batch was one of a
    batch's three statements, and the work a thread does holds the GIL while the event loop
    waits to send the next update (docs/BENCHMARKS.md, change 51)."""
    threshold = settings.COLLAB.get("COMPACT_THRESHOLD")
    if threshold is None:
        return
    to_count = _LOG_ROWS.wrote(written, threshold)
    if not to_count:
        return
    # One aggregate query for all the documents, not one per document.
    counted = {
        str(document_id): rows
        for document_id, rows in DocumentUpdate.objects.filter(document_id__in=to_count)
        .values("document_id")
        .annotate(rows=Count("id"))
        .values_list("document_id", "rows")
    }
    _LOG_ROWS.counted({document_id: counted.get(document_id, 0) for document_id in to_count})
    for document_id, rows in counted.items():
        if rows <= threshold:
            continue
        try:
            result = compact(document_id)
        except Exception:
            # The updates are committed; a failed compaction only leaves the log longer.
            logger.exception("automatic compaction of document %s failed", document_id)
        else:
            _LOG_ROWS.counted({document_id: result.kept})
            logger.info(
                "compacted %s: folded %d updates, snapshot %d bytes",
                document_id,
                result.folded,
                result.snapshot_bytes,
            )


class _LogRows:
    """How many rows each document's log holds at least, as this process knows it: the rows it
    counted there last, plus those it has written since. A document's updates are written by
    the process its room is in (one, by the documents' hash, unless they move), so this is the
    log's length in practice; another process's writes since the count make it short by those,
    so a log may grow past the threshold by what the other processes wrote before this one
    counts again. A compaction elsewhere makes it long: counted sooner. Threads write it
    (the store's, the REST API's): under a lock. The least recently written documents are
    forgotten past ``KEPT`` (counted again when next written)."""

    KEPT = 10_000

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrote(self, written: Collection[uuid.UUID | str], threshold: int) -> list[str]:
        """Counts the rows just written (one entry each); returns the documents to count in
        the database: never counted (or forgotten), or possibly past the threshold."""
        added: dict[str, int] = {}
        for document_id in written:
            key = str(document_id)
            added[key] = added.get(key, 0) + 1
        to_count = []
        with self._lock:
            for key, count in added.items():
                known = self._rows.pop(key, None)  # put back last: the most recently written
                if known is None:
                    to_count.append(key)
                    continue
                self._rows[key] = known + count
                if known + count > threshold:
                    to_count.append(key)
        return to_count

    def counted(self, rows: dict[str, int]) -> None:
        """What a count (or a compaction) found."""
        with self._lock:
            for document_id, count in rows.items():
                self._rows.pop(str(document_id), None)
                self._rows[str(document_id)] = count
            while len(self._rows) > self.KEPT:
                del self._rows[next(iter(self._rows))]


_LOG_ROWS = _LogRows()


# One statement for a batch on PostgreSQL (``_insert``): the rows, and ``updated_at`` of their
# documents, written together (a statement is a transaction of its own), the rows' ids in the
# order of the batch (ids come from one sequence, in the order of the VALUES).
_INSERT_AND_TOUCH = (
    "WITH written AS ("
    "INSERT INTO {updates} (document_id, data, author_id, created_at) VALUES {rows}"
    " RETURNING id, document_id), "
    "touched AS (UPDATE {documents} SET updated_at = %s"
    " WHERE id IN (SELECT document_id FROM written)) "
    "SELECT id FROM written ORDER BY id"
)


def _insert(batch: list[_Pending]) -> list[int | None]:
    """Writes a batch's rows and touches their documents' ``updated_at``, in one transaction;
    returns the rows' ids in the batch's order.

    On PostgreSQL that is one statement, written here rather than by the ORM: the ORM's
    ``bulk_create`` and ``update`` in ``transaction.atomic`` cost the writer's thread 650-680 µs
    of CPU for a one-row batch, against 100-120 µs, and the thread holds the GIL for that while
    the event loop sends the next update (docs/BENCHMARKS.md, change 57)."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        sql = _INSERT_AND_TOUCH.format(
            updates=connection.ops.quote_name(DocumentUpdate._meta.db_table),
            documents=connection.ops.quote_name(Document._meta.db_table),
            rows=", ".join(["(%s, %s, %s, %s)"] * len(batch)),
        )
        values = [v for p in batch for v in (p.document_id, p.data, p.author_id, now)]
        with server_bound(), connection.cursor() as cursor:
            cursor.execute(sql, [*values, now])
            return [row[0] for row in cursor.fetchall()]
    with transaction.atomic(), server_bound():
        rows = DocumentUpdate.objects.bulk_create(
            DocumentUpdate(document_id=p.document_id, data=p.data, author_id=p.author_id)
            for p in batch
        )
        # update() bypasses auto_now, so the time is set here; one statement for the batch.
        Document.objects.filter(pk__in={p.document_id for p in batch}).update(updated_at=now)
    return [row.pk for row in rows]


def write(document_id: uuid.UUID | str, data: bytes, author_id: int | None) -> None:
    """Writes one update now. Sync.

    For callers outside the event loop that must not answer before the change is durable (the
    REST API); rooms use the batching writer instead.
    """
    with transaction.atomic(), server_bound():
        row = DocumentUpdate.objects.create(
            document_id=document_id, data=bytes(data), author_id=author_id
        )
        Document.objects.filter(pk=document_id).update(updated_at=timezone.now())
    _compact_crowded([row.document_id])


def _without_orphans(batch: list[_Pending]) -> list[_Pending]:
    documents = set(
        Document.objects.filter(pk__in={p.document_id for p in batch}).values_list("pk", flat=True)
    )
    authors = set(
        get_user_model()
        .objects.filter(pk__in={p.author_id for p in batch if p.author_id is not None})
        .values_list("pk", flat=True)
    )
    cleaned = [
        p if p.author_id is None or p.author_id in authors else p._replace(author_id=None)
        for p in batch
        if p.document_id in documents
    ]
    if len(cleaned) < len(batch):
        logger.warning(
            "dropped %d update(s) of deleted document(s) %s",
            len(batch) - len(cleaned),
            ", ".join(sorted({str(p.document_id) for p in batch} - {str(d) for d in documents})),
        )
    return cleaned


class UpdateWriter:
    """Queues updates and commits them in batches from one background task (group commit).

    Use ``get_writer()``; all methods must be called from the event loop's thread.
    """

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()
        self._appended = 0  # updates ever appended
        self._written = 0  # of those, how many are committed (always the oldest ones)
        self._task: asyncio.Task | None = None
        self._flush_requested = asyncio.Event()  # cuts the gathering pause short
        self._waiters: list[tuple[int, asyncio.Future]] = []

    @property
    def pending(self) -> int:
        """Updates appended but not committed yet."""
        return len(self._queue)

    def append(
        self,
        document_id: uuid.UUID | str,
        data: bytes,
        author_id: int | None,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        """Queues an update for writing and returns at once. ``on_written`` is called with its
        row's id once it is committed (where the database returns ids: PostgreSQL, SQLite)."""
        loop = asyncio.get_running_loop()
        # Parsed here so a bad id fails its caller instead of poisoning a whole batch.
        if not isinstance(document_id, uuid.UUID):
            document_id = uuid.UUID(str(document_id))
        self._queue.append(_Pending(document_id, bytes(data), author_id, loop.time(), on_written))
        self._appended += 1
        self._ensure_task(loop)

    async def flush(self, timeout: float = 10.0) -> None:
        """Returns once everything appended before the call is committed. Raises TimeoutError
        if that takes longer than ``timeout`` seconds; the updates then stay queued."""
        target = self._appended
        if self._written >= target:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append((target, waiter))
        self._flush_requested.set()
        self._ensure_task(loop)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.pending} update(s) still not written after {timeout} s"
            ) from None
        finally:
            self._waiters = [(t, w) for t, w in self._waiters if w is not waiter]
            if not self._waiters:
                self._flush_requested.clear()

    def _ensure_task(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="collab-store-writer")
            self._task.add_done_callback(self._task_done)

    @staticmethod
    def _task_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("update writer stopped", exc_info=task.exception())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while self._queue:
            options = settings.COLLAB
            max_batch = max(1, options["STORE_MAX_BATCH"])
            if failures:
                delay = min(RETRY_FIRST_DELAY * 2 ** (failures - 1), RETRY_MAX_DELAY)
                await asyncio.sleep(delay)
            elif len(self._queue) < max_batch:
                # Gather: wait until the oldest queued update is one interval old.
                due = self._queue[0].queued_at + options["STORE_FLUSH_INTERVAL"]
                await self._pause(due - loop.time())
            batch = list(itertools.islice(self._queue, max_batch))
            try:
                # Looked up at call time (not bound once) so tests can inject a failure.
                written = await database_sync_to_async(_write_batch)(batch)
            except Exception:
                failures += 1
                metrics.DATABASE["write"].inc()
                logger.exception(
                    "could not write %d update(s) (attempt %d, %d pending); retrying in %.1f s",
                    len(batch),
                    failures,
                    len(self._queue),
                    min(RETRY_FIRST_DELAY * 2 ** (failures - 1), RETRY_MAX_DELAY),
                )
                continue
            if failures:
                logger.info("wrote %d update(s) after %d failed attempt(s)", len(batch), failures)
            metrics.FLUSH_LAG.observe(loop.time() - batch[0].queued_at)
            metrics.BATCH_SIZE.observe(len(batch))
            failures = 0
            for _ in batch:
                self._queue.popleft()
            self._written += len(batch)
            for pending, row_id in written:
                if pending.on_written is not None and row_id is not None:
                    try:
                        pending.on_written(row_id)
                    except Exception:
                        logger.exception("a written update's callback failed")
            for target, waiter in self._waiters:
                if target <= self._written and not waiter.done():
                    waiter.set_result(None)

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0 or self._flush_requested.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_requested.wait(), seconds)


@per_event_loop
def get_writer() -> UpdateWriter:
    """The writer of this process (editor/realtime/loops.py)."""
    return UpdateWriter()


# -- shutdown -------------------------------------------------------------------------------

# Event loops whose Twisted reactor already has the shutdown trigger.
_shutdown_hooked: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def install_shutdown_flush() -> bool:
    """Makes a graceful daphne shutdown (SIGTERM, SIGINT) wait until pending updates are written.

    Call it from code running inside the server (e.g. when a socket connects): it is cheap and
    idempotent, and it returns False, doing nothing, unless Twisted's asyncio reactor is running.

    What daphne 4.2.3 does (daphne/server.py, Twisted's base.py): ``Server.run()`` registers
    ``kill_all_applications`` as a "before" "shutdown" trigger, then runs the reactor. SIGTERM
    and SIGINT call ``reactor.stop()``, which fires the shutdown event: every "before" trigger
    is called, in registration order and in the same tick, and the reactor waits for all the
    Deferreds they return. Only then come the "during" triggers, the first of which (``crash``)
    stops the asyncio loop; so "before" is the last phase in which asyncio code can still run,
    and anything unwritten after it is lost. Daphne's trigger cancels every application
    instance (consumers get CancelledError, not websocket_disconnect) while sockets stay open;
    ours runs alongside it, not after it. A consumer that appends while unwinding would append
    after our flush began, so the flush repeats until the queue stays empty for a moment.
    Nothing bounds the "before" phase, so our wait is bounded by SHUTDOWN_FLUSH_TIMEOUT.
    """
    # Never import twisted.internet.reactor here: importing it installs a default reactor.
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor) or not reactor.running:
        return False
    loop = reactor._asyncioEventloop
    if loop in _shutdown_hooked:
        return True
    from twisted.internet.defer import Deferred

    def before_shutdown() -> Deferred:
        return Deferred.fromFuture(asyncio.ensure_future(_flush_before_shutdown(), loop=loop))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    _shutdown_hooked.add(loop)
    return True


async def _flush_before_shutdown(timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    writer = get_writer()
    deadline = loop.time() + timeout
    written_before = writer._written
    try:
        while True:
            # Lets consumers that daphne is cancelling right now finish unwinding first.
            await asyncio.sleep(_SHUTDOWN_SETTLE)
            if not writer.pending:
                break
            await writer.flush(timeout=max(deadline - loop.time(), 0.001))
    except TimeoutError:
        # Never raise into Twisted: an error here would only add an unhandled-Deferred report.
        logger.error(
            "shutting down with %d update(s) not written after %s s", writer.pending, timeout
        )
    else:
        logger.info("shutdown: wrote %d pending update(s)", writer._written - written_before)
