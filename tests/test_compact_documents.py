"""`manage.py compact_documents`: folds update logs into snapshots, as an operator runs it."""

import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from pycrdt import Doc, Text

from editor.models import Document, DocumentUpdate
from editor.realtime import store


def typed(document, *words: str) -> str:
    """Stores one update per word, as a client typing them would produce; returns the text."""
    doc = Doc()
    text = doc.get("codemirror", type=Text)
    for word in words:
        before = doc.get_state()
        text += word
        DocumentUpdate.objects.create(document=document, data=doc.get_update(before))
    return str(text)


def text_of(document) -> str:
    doc = Doc()
    for update in store.load(document.id)[0]:
        doc.apply_update(update)
    return str(doc.get("codemirror", type=Text))


def compact(*args: str) -> list[str]:
    out = StringIO()
    call_command("compact_documents", *args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def test_it_compacts_the_documents_it_is_given(document, owner):
    other = Document.objects.create_for(owner, "Other")
    untouched = Document.objects.create_for(owner, "Untouched")
    expected = typed(document, "one ", "two ", "three")
    typed(other, "x")
    typed(untouched, "left", " alone")

    lines = compact(str(document.id), str(other.id))

    document.refresh_from_db()
    other.refresh_from_db()
    assert lines == [
        f"{document.id}: folded 3 updates, snapshot {len(document.snapshot)} bytes",
        f"{other.id}: folded 1 updates, snapshot {len(other.snapshot)} bytes",
        "Compacted 2 documents, folded 4 updates.",
    ]
    assert not DocumentUpdate.objects.filter(document__in=[document, other]).exists()
    assert text_of(document) == expected == "one two three"
    assert untouched.updates.count() == 2


def test_it_compacts_every_document_with_enough_updates(document, owner):
    busy = Document.objects.create_for(owner, "Busy")
    typed(document, "a", "b", "c")
    typed(busy, "d", "e", "f", "g")
    typed(Document.objects.create_for(owner, "Quiet"), "h", "i")

    lines = compact("--min-updates", "3")

    assert sorted(lines[:-1]) == sorted(
        f"{d.id}: folded {n} updates, snapshot {len(d.snapshot)} bytes"
        for d, n in (
            (Document.objects.get(pk=document.pk), 3),
            (Document.objects.get(pk=busy.pk), 4),
        )
    )
    assert lines[-1] == "Compacted 2 documents, folded 7 updates."
    assert DocumentUpdate.objects.count() == 2  # the quiet document's
    assert text_of(busy) == "defg"


def test_it_compacts_every_document_with_a_log_by_default(document):
    typed(document, "solo")

    assert compact() == [
        f"{document.id}: folded 1 updates, snapshot "
        f"{len(Document.objects.get(pk=document.pk).snapshot)} bytes",
        "Compacted 1 documents, folded 1 updates.",
    ]
    assert compact() == ["Compacted 0 documents, folded 0 updates."]


def test_it_rejects_an_id_that_is_not_a_uuid(db):
    with pytest.raises(CommandError, match="'not-a-uuid' is not a document id: expected a UUID"):
        compact("not-a-uuid")


def test_it_rejects_an_unknown_document_and_compacts_nothing(document):
    typed(document, "stays")
    unknown = uuid.uuid4()

    with pytest.raises(CommandError, match=f"No document with id {unknown}"):
        compact(str(document.id), str(unknown))
    assert document.updates.count() == 1


def test_it_rejects_a_minimum_below_one(db):
    with pytest.raises(CommandError, match="--min-updates must be at least 1"):
        compact("--min-updates", "0")


def test_it_carries_on_past_a_broken_document_and_fails_at_the_end(document, owner):
    broken = Document.objects.create_for(owner, "Broken")
    typed(broken, "never folded")
    Document.objects.filter(pk=broken.pk).update(snapshot=b"\x05corrupt snapshot")
    typed(document, "fine")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match=f"Compaction failed for 1 document\\(s\\): {broken.id}"):
        call_command("compact_documents", str(broken.id), str(document.id), stdout=out, stderr=err)

    assert f"{broken.id}: compaction failed" in err.getvalue()
    assert out.getvalue().splitlines()[-1] == "Compacted 1 documents, folded 1 updates."
    assert broken.updates.count() == 1  # nothing lost: the transaction rolled back
    assert not document.updates.exists()
