"""`manage.py compact_documents`: folds documents' update logs into their snapshots.

The sync core compacts a document by itself once its log passes ``COLLAB["COMPACT_THRESHOLD"]``
rows; this command is for everything below that (e.g. a nightly run) and for one-off repairs.
Safe to run while the server is up: compaction locks the document row and deletes only the rows
it folded (``editor/realtime/store.py``).
"""

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from editor.models import Document, DocumentUpdate
from editor.realtime import store


class Command(BaseCommand):
    help = (
        "Folds the update logs of the given documents, or of every document with at least "
        "--min-updates stored updates, into their snapshots."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "document_ids",
            nargs="*",
            metavar="document_id",
            help="Documents to compact (all of them, whatever --min-updates says).",
        )
        parser.add_argument(
            "--min-updates",
            type=int,
            default=1,
            metavar="N",
            help="Without ids: compact every document with at least N stored updates (1).",
        )

    def handle(self, *args: Any, document_ids: list[str], min_updates: int, **options: Any) -> None:
        if min_updates < 1:
            raise CommandError(f"--min-updates must be at least 1, not {min_updates}.")
        if document_ids:
            targets = self._existing(document_ids)
        else:
            targets = list(
                DocumentUpdate.objects.values("document_id")
                .annotate(rows=Count("id"))
                .filter(rows__gte=min_updates)
                .order_by("document_id")
                .values_list("document_id", flat=True)
            )
        folded = 0
        failed: list[str] = []
        for document_id in targets:
            try:
                result = store.compact(document_id)
            except Document.DoesNotExist:
                self.stderr.write(f"{document_id}: deleted meanwhile, skipped")
                continue
            except Exception as exc:
                # One broken document must not stop the others; the command fails at the end.
                failed.append(str(document_id))
                self.stderr.write(f"{document_id}: compaction failed: {exc!r}")
                continue
            folded += result.folded
            line = (
                f"{document_id}: folded {result.folded} updates, "
                f"snapshot {result.snapshot_bytes} bytes"
            )
            if result.kept:
                line += f" ({result.kept} kept in the log, see the collab.store log)"
            self.stdout.write(line)
        compacted = len(targets) - len(failed)
        self.stdout.write(
            self.style.SUCCESS(f"Compacted {compacted} documents, folded {folded} updates.")
        )
        if failed:
            raise CommandError(
                f"Compaction failed for {len(failed)} document(s): {', '.join(failed)}"
            )

    @staticmethod
    def _existing(raw_ids: list[str]) -> list[uuid.UUID]:
        ids = []
        for raw in raw_ids:
            try:
                ids.append(uuid.UUID(raw))
            except ValueError:
                raise CommandError(
                    f"{raw!r} is not a document id: expected a UUID such as "
                    "3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b."
                ) from None
        ids = list(dict.fromkeys(ids))  # once each, in the order given
        found = set(Document.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [str(pk) for pk in ids if pk not in found]
        if missing:
            raise CommandError(f"No document with id {', '.join(missing)}.")
        return ids
