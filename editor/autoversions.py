"""Automatic versions: history that protects work nobody thought to name.

The rooms (editor/realtime/room.py) say when their sockets change a document (``changed``) and
when a document's last socket in this process leaves (``left``). From that, per document and
per process, a version is taken:

- once nobody here has changed the text for AUTO_VERSION_QUIET seconds (a pause in the work);
- every AUTO_VERSION_EVERY seconds while changes keep coming (a long session with no pause);
- when the last socket leaves with changes not versioned yet, and nobody comes back within
  ROOM_GRACE seconds (the room's own grace): a client that drops and reconnects at once takes
  no version each time.

Only if the text differs from the document's newest version, named or automatic: an unchanged
text is never kept twice. Taking a version thins out the document's older automatic ones
(``to_thin``): every one of the last hour stays, then the newest of each hour for a day, then
the newest of each day. Named versions and those saved before a restore are never thinned.

The decision is made on the event loop (a dict and a timer per document: nothing per
keystroke but a clock read); the version is written off it (``database_sync_to_async``),
after this process's queued updates are written, so it holds what its sockets typed.

Known limits: with several processes, each versions what its own sockets typed (the document's
row lock and the "text changed" check keep two of them from keeping one text twice, but each
may take its own version of different moments). Changes made only through the REST API take
no automatic version; changes pending when a process stops take none either (the next
session's will hold them).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from editor import content
from editor.models import Document, Version
from editor.realtime import store
from editor.realtime.loops import per_event_loop

logger = logging.getLogger("editor.autoversions")

NAME = "Automatic version"

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# A timer may fire this much before its due time (the loop's clock resolution); it still counts.
_EARLY = 0.01


def to_thin(versions: Iterable[tuple[int, datetime]], now: datetime) -> list[int]:
    """Of a document's automatic versions, (id, created_at), the ids to delete: all of the last
    hour are kept; older than that, the newest of each clock hour for a day, and the newest of
    each (UTC) day before. Buckets are fixed in time, so a version kept once stays kept until
    it moves on to the coarser tier."""
    newest: dict[tuple[str, int], tuple[datetime, int]] = {}
    thinned: list[int] = []
    for version_id, created in versions:
        age = now - created
        if age < HOUR:
            continue
        seconds = int(created.timestamp())
        bucket = ("hour", seconds // 3600) if age < DAY else ("day", seconds // 86400)
        candidate = (created, version_id)
        kept = newest.get(bucket)
        if kept is None:
            newest[bucket] = candidate
        elif candidate > kept:
            newest[bucket] = candidate
            thinned.append(kept[1])
        else:
            thinned.append(version_id)
    return sorted(thinned)


def thin(document: Document, now: datetime | None = None) -> int:
    """Deletes the document's automatic versions that ``to_thin`` lets go; returns how many."""
    automatic = document.versions.filter(automatic=True).values_list("id", "created_at")
    doomed = to_thin(automatic, now or timezone.now())
    if doomed:
        Version.objects.filter(pk__in=doomed).delete()
    return len(doomed)


def take(document_id: uuid.UUID | str) -> Version | None:
    """Keeps the document's stored text as an automatic version, unless its newest version
    already holds that text (or the document is gone), then thins the older ones. Sync."""
    with transaction.atomic():
        # Row lock: two processes taking a version of one document at once would both see the
        # text as new. (SQLite ignores it; its writes are serial anyway.)
        document = Document.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            return None
        doc = content.load(document.pk)
        newest = document.versions.order_by("-created_at", "-id").values_list("text", flat=True)
        if content.storable(content.text_of(doc)) == (newest.first() or ""):
            return None  # unchanged since the newest version (or still empty)
        version = content.keep(document, doc, NAME, author=None, automatic=True)
        thinned = thin(document)
    logger.info(
        "automatic version %s of document %s (%d older thinned out)",
        version.pk,
        document_id,
        thinned,
    )
    return version


@dataclass
class _Pending:
    """Changes to a document not versioned yet: since when, and the latest one (loop time)."""

    since: float
    last: float
    timer: asyncio.TimerHandle | None = None
    # When the document's last socket here left (None: someone is here).
    left_at: float | None = None


class AutoVersions:
    """This process's clocks for automatic versions: one entry per document with changes not
    versioned yet. Use ``get_autoversions()``; call from the event loop's thread."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._writing: set[asyncio.Task[None]] = set()

    def changed(self, document_id: str) -> None:
        """Called when a socket here changed the document's text."""
        quiet = settings.COLLAB["AUTO_VERSION_QUIET"]
        if quiet <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self._pending.get(document_id)
        if pending is not None:
            pending.last = now  # the timer looks at it when it fires: no re-arming per keystroke
            return
        pending = self._pending[document_id] = _Pending(since=now, last=now)
        pending.timer = loop.call_at(self._due_at(pending), self._due, document_id)

    def left(self, document_id: str) -> None:
        """Called when the document's last socket in this process has left: the changes are
        due ROOM_GRACE seconds later, unless someone comes back first (``joined``). Taking the
        version at once made every drop of a lone client's connection a version: the whole
        document read and rebuilt in a thread that holds the GIL, while the other documents of
        the process waited (a client that floods, is closed and reconnects: the neighbours'
        p99 latency 2.2-2.6x their quiet one; docs/BENCHMARKS.md, change 50)."""
        pending = self._pending.get(document_id)
        if pending is None:
            return
        loop = asyncio.get_running_loop()
        pending.left_at = loop.time()
        self._arm(document_id, pending)

    def joined(self, document_id: str) -> None:
        """Called when a socket joins the document in this process: its changes are due
        again by the quiet period and the ceiling only."""
        pending = self._pending.get(document_id)
        if pending is not None:
            pending.left_at = None  # the timer looks at it when it fires

    def _due(self, document_id: str) -> None:
        pending = self._pending.get(document_id)
        if pending is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() + _EARLY < self._due_at(pending):
            self._arm(document_id, pending)
            return
        self._take(document_id)

    def _arm(self, document_id: str, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_at(self._due_at(pending), self._due, document_id)

    @staticmethod
    def _due_at(pending: _Pending) -> float:
        """When the changes are due for a version: after the quiet period, at the ceiling, or
        the room's grace after the last socket left."""
        options = settings.COLLAB
        due = pending.last + options["AUTO_VERSION_QUIET"]
        if options["AUTO_VERSION_EVERY"] > 0:
            due = min(due, pending.since + options["AUTO_VERSION_EVERY"])
        if pending.left_at is not None:
            due = min(due, pending.left_at + options["ROOM_GRACE"])
        return due

    def _take(self, document_id: str) -> None:
        pending = self._pending.pop(document_id)
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.ensure_future(self._write(document_id))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, document_id: str) -> None:
        try:
            await store.get_writer().flush()
            await database_sync_to_async(take)(document_id)
        except Exception:
            # The changes count as not versioned yet: tried again after the next quiet period.
            logger.exception("document %s: could not take an automatic version", document_id)
            self.changed(document_id)

    @property
    def pending(self) -> int:
        """Documents with changes not versioned yet."""
        return len(self._pending)

    async def drain(self) -> None:
        """Waits for the versions being written now (tests, before emptying the database)."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


@per_event_loop
def get_autoversions() -> AutoVersions:
    """This process's automatic versions (editor/realtime/loops.py)."""
    return AutoVersions()
