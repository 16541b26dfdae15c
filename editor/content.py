"""A document's text as the REST API sees it: read it, change it, keep and restore versions.

The text is the Yjs ``Text`` named "codemirror" that browsers edit. The API never overwrites it:
every change is computed as a Yjs update against the document's stored state (snapshot + log),
written to the log at once (``store.write``) and published to the document's group, so each
process's room applies it and passes it on to its sockets. Yjs then merges it with whatever
browsers typed meanwhile, as it merges their edits with each other's.

Positions in this module's API are Unicode code points (Python ``str`` indexes), which is what
API clients count. pycrdt 0.14 indexes ``Text`` by UTF-8 bytes, so they are converted here.

Known limit: the state the change is computed against is what the log holds, which lags the
rooms by up to ``STORE_FLUSH_INTERVAL``. A replacement still merges (what it did not see stays);
an ``index`` is relative to the text as stored.
"""

from __future__ import annotations

import difflib
import os.path
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from pycrdt import Doc, Text

from editor.bigvalues import server_bound
from editor.models import Document, Version
from editor.realtime import room, store

TEXT_NAME = "codemirror"

# Changed runs of at most this many characters on each side are diffed character by character;
# longer ones line by line only (difflib's character matching is quadratic in the worst case).
_CHAR_DIFF_LIMIT = 2000
# At most this many separate edits per replacement; more are merged into fewer, larger ones.
_MAX_RANGES = 500
# Past this many lines (changed part only) a replacement is not diffed at all but replaces the
# changed part whole: the line diff would take seconds, in the thread Django's sync views share.
_LINE_DIFF_LIMIT = 50_000


class ContentTooLarge(Exception):
    """The text would be larger than COLLAB["MAX_CONTENT_BYTES"]."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.limit = max_content_bytes()
        super().__init__(
            f"The text would be {size} bytes (UTF-8); the limit is {self.limit} bytes."
        )


class InvalidEdit(ValueError):
    """An edit that does not fit the text; ``field`` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Edit:
    """Replace ``delete`` characters at ``index`` with ``insert``."""

    index: int
    delete: int = 0
    insert: str = ""


def max_content_bytes() -> int:
    return settings.COLLAB["MAX_CONTENT_BYTES"]


# -- reading ----------------------------------------------------------------------------------


def load(document_id: uuid.UUID) -> Doc[Text]:
    """A Doc holding the document's stored state."""
    doc: Doc[Text] = Doc()
    for update in store.load(document_id)[0]:
        doc.apply_update(update)
    return doc


def text_of(doc: Doc) -> str:
    return str(doc.get(TEXT_NAME, type=Text))


def read(document: Document) -> str:
    return text_of(load(document.pk))


# -- changing ---------------------------------------------------------------------------------


def replace(document: Document, text: str, author: User | None) -> str:
    """Turns the text into ``text`` with the smallest edit difflib finds, so concurrent edits
    elsewhere survive. Returns the text afterwards."""
    check_size(len(text.encode("utf-8")))
    doc = load(document.pk)
    return _commit(document, doc, diff_update(doc, text), author)


def edit(document: Document, change: Edit, author: User | None) -> str:
    """Applies one positional edit; raises InvalidEdit if it does not fit. Returns the text
    afterwards."""
    doc = load(document.pk)
    current = text_of(doc)
    if change.index > len(current):
        raise InvalidEdit("index", f"Must be at most {len(current)}, the length of the text.")
    if change.index + change.delete > len(current):
        raise InvalidEdit(
            "delete", f"Must be at most {len(current) - change.index} at index {change.index}."
        )
    removed = current[change.index : change.index + change.delete]
    check_size(
        len(current.encode("utf-8"))
        - len(removed.encode("utf-8"))
        + len(change.insert.encode("utf-8"))
    )
    return _commit(document, doc, edit_update(doc, change), author)


def check_size(size: int) -> None:
    if size > max_content_bytes():
        raise ContentTooLarge(size)


def diff_update(doc: Doc, new_text: str) -> bytes:
    """Changes the doc's text into ``new_text`` in one transaction; returns that change as a
    Yjs update (empty bytes if there was nothing to change)."""
    text = doc.get(TEXT_NAME, type=Text)
    old_text = str(text)
    if old_text == new_text:
        return b""
    before = doc.get_state()
    # Front to back, shifting later offsets by what earlier edits changed: yrs finds a byte
    # offset by scanning from the start of its block, and the untouched rest of the text stays
    # one block ahead of us this way (back to front was ~10x slower on a 1.4 MB text).
    shift = 0
    with doc.transaction():
        for start, end, replacement in _byte_ranges(old_text, _ranges(old_text, new_text)):
            if end > start:
                del text[start + shift : end + shift]
            if replacement:
                text.insert(start + shift, replacement)
            shift += _utf8_len(replacement) - (end - start)
    return doc.get_update(before)


def edit_update(doc: Doc, change: Edit) -> bytes:
    """Applies a positional edit (in code points) to the doc; returns it as a Yjs update."""
    text = doc.get(TEXT_NAME, type=Text)
    current = str(text)
    start = _utf8_len(current[: change.index])
    end = start + _utf8_len(current[change.index : change.index + change.delete])
    if end == start and not change.insert:
        return b""
    before = doc.get_state()
    with doc.transaction():
        if end > start:
            del text[start:end]
        if change.insert:
            text.insert(start, change.insert)
    return doc.get_update(before)


def _commit(document: Document, doc: Doc[Text], update: bytes, author: User | None) -> str:
    """Makes the update durable, then sends it to the live editors."""
    if update:
        store.write(document.pk, update, author.pk if author else None)
        async_to_sync(room.publish_update)(document.pk, update)
    return text_of(doc)


def _ranges(old: str, new: str) -> list[tuple[int, int, str]]:
    """What to change in ``old`` to get ``new``: (start, end, replacement) in characters of
    ``old``, in increasing order, not overlapping, at most _MAX_RANGES of them."""
    # Most writes change one place: strip what both ends share before diffing the rest.
    prefix = len(os.path.commonprefix([old, new]))
    limit = min(len(old), len(new)) - prefix
    suffix = len(os.path.commonprefix([old[::-1][:limit], new[::-1][:limit]]))
    old_mid, new_mid = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    ranges = [(prefix + i1, prefix + i2, r) for i1, i2, r in _char_ops(old_mid, new_mid)]
    return _coarsen(old, ranges, _MAX_RANGES)


def _coarsen(old: str, ranges: list[tuple[int, int, str]], most: int) -> list[tuple[int, int, str]]:
    """Merges the ranges separated by the smallest gaps until at most ``most`` remain: each edit
    costs a walk through the text's blocks, so thousands of scattered ones are slow."""
    if len(ranges) <= most:
        return ranges
    gaps = sorted(b[0] - a[1] for a, b in zip(ranges, ranges[1:], strict=False))
    widest_merged = gaps[len(ranges) - most - 1]
    merged = [ranges[0]]
    for start, end, replacement in ranges[1:]:
        last_start, last_end, last_replacement = merged[-1]
        if start - last_end <= widest_merged:
            merged[-1] = (last_start, end, last_replacement + old[last_end:start] + replacement)
        else:
            merged.append((start, end, replacement))
    return merged


def _byte_ranges(old: str, ranges: list[tuple[int, int, str]]) -> Iterator[tuple[int, int, str]]:
    """The same ranges with start and end in UTF-8 bytes of ``old``."""
    chars = nbytes = 0
    for start, end, replacement in ranges:
        # In order: advance from the previous range instead of re-encoding from 0.
        nbytes += _utf8_len(old[chars:start])
        chars = start
        yield nbytes, nbytes + _utf8_len(old[start:end]), replacement


def _char_ops(old: str, new: str) -> Iterator[tuple[int, int, str]]:
    """(i1, i2, replacement) ranges of ``old`` to replace: by lines, refined by characters."""
    if not old or not new:
        if old or new:
            yield 0, len(old), new
        return
    if len(old) <= _CHAR_DIFF_LIMIT and len(new) <= _CHAR_DIFF_LIMIT:
        yield from _ops(old, new, autojunk=False)
        return
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    if max(len(old_lines), len(new_lines)) > _LINE_DIFF_LIMIT:
        yield 0, len(old), new
        return
    old_starts = _starts(old_lines)
    new_starts = _starts(new_lines)
    # autojunk keeps big, repetitive texts fast; it can only make the diff coarser, not wrong.
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines)
    opcodes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    refine = len(opcodes) <= _MAX_RANGES
    for _tag, i1, i2, j1, j2 in opcodes:
        a1, a2, b1, b2 = old_starts[i1], old_starts[i2], new_starts[j1], new_starts[j2]
        if refine and a2 - a1 <= _CHAR_DIFF_LIMIT and b2 - b1 <= _CHAR_DIFF_LIMIT:
            for k1, k2, replacement in _ops(old[a1:a2], new[b1:b2], autojunk=False):
                yield a1 + k1, a1 + k2, replacement
        else:
            yield a1, a2, new[b1:b2]


def _ops(old: str, new: str, autojunk: bool) -> Iterator[tuple[int, int, str]]:
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=autojunk)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            yield i1, i2, new[j1:j2]


def _starts(lines: list[str]) -> list[int]:
    """Character offset of each line, plus the total length at the end."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


# -- versions ---------------------------------------------------------------------------------

# A version's name holds at most this many characters (Version.name).
_NAME_LENGTH = 200


@dataclass(frozen=True)
class Restored:
    """What a restore did: the text afterwards, and the version that keeps the text as it was
    before (None when the restore changed nothing)."""

    text: str
    before: Version | None


def create_version(
    document: Document, name: str, author: User | None, automatic: bool = False
) -> Version:
    """Keeps the document's current state under a name."""
    return keep(document, load(document.pk), name, author, automatic)


def keep(
    document: Document, doc: Doc[Text], name: str, author: User | None, automatic: bool = False
) -> Version:
    """Keeps ``doc``, the document's state as loaded, as a version."""
    state, text = doc.get_update(), storable(text_of(doc))
    with server_bound():
        return Version.objects.create(
            document=document,
            name=name,
            author=author,
            automatic=automatic,
            state=state,
            text=text,
        )


def storable(text: str) -> str:
    """The copy of a text a version keeps in ``Version.text``: PostgreSQL text cannot hold NUL,
    which a Yjs text can; the copy (for lists, previews, diffs) does without."""
    return text.replace("\x00", "\ufffd")


def version_text(version: Version) -> str:
    """The exact text of the version, from its Yjs state."""
    doc: Doc[Text] = Doc()
    doc.apply_update(bytes(version.state))
    return text_of(doc)


def before_restore_name(version: Version) -> str:
    """The name of the version a restore of ``version`` saves first."""
    name = version.name or "Untitled version"
    room = _NAME_LENGTH - len("Before restore of “”")
    if len(name) > room:
        name = name[: room - 1] + "…"
    return f"Before restore of “{name}”"


def restore(version: Version, author: User | None) -> Restored:
    """Brings the version's text back as a new change by ``author`` (history is kept, and live
    editors receive it like any edit). The text as it was is kept first as a version of its
    own, "Before restore of …", so that restoring that one undoes the restore."""
    document = version.document
    target = version_text(version)
    check_size(len(target.encode("utf-8")))
    doc = load(document.pk)
    if text_of(doc) == target:
        return Restored(target, None)
    before = keep(document, doc, before_restore_name(version), author)
    return Restored(_commit(document, doc, diff_update(doc, target), author), before)


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    """The changes from ``old`` to ``new`` as a unified diff (three lines of context), in the
    format of ``diff -u`` and git: a last line without a newline is marked as such. Empty when
    the texts are equal."""
    lines = difflib.unified_diff(
        _diff_lines(old), _diff_lines(new), _label(old_label), _label(new_label), lineterm="\n"
    )
    return "".join(lines)


def _diff_lines(text: str) -> list[str]:
    """Lines as the editor shows them: split at "\\n" only (``splitlines`` would also split at
    form feeds and Unicode separators), each with its newline."""
    if not text:
        return []
    *lines, last = text.split("\n")
    lines = [line + "\n" for line in lines]
    if last:
        lines.append(last + "\n\\ No newline at end of file\n")
    return lines


def _label(label: str) -> str:
    """A label on one line: names may hold anything, newlines included."""
    return " ".join(label.split())
