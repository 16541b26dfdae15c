"""editor/content.py: text ↔ CRDT edits, positions in code points, versions.

Writes publish to the channel layer (the session's Redis); no room listens in these tests.
"""

import random

import pytest
from pycrdt import Doc, Text

from editor import content
from editor.content import Edit
from editor.models import Version
from editor.realtime import store


def doc_with(text: str) -> Doc:
    doc = Doc()
    doc.get("codemirror", type=Text).insert(0, text)
    return doc


def fork(doc: Doc) -> Doc:
    copy = Doc()
    copy.apply_update(doc.get_update())
    return copy


def set_text(document, text: str) -> None:
    """Stores a text without the API's validation, as a browser could."""
    store.write(document.pk, content.diff_update(content.load(document.pk), text), None)


def test_it_indexes_pycrdt_text_by_utf8_bytes():
    # The reason for the conversions: if pycrdt ever counts characters, they must go.
    doc = doc_with("a🎉b")
    text = doc.get("codemirror", type=Text)
    assert len(text) == 6
    text.insert(5, "X")
    assert str(text) == "a🎉Xb"


@pytest.mark.parametrize(
    "old, new",
    [
        ("", "hello"),
        ("hello", ""),
        ("hello", "hello"),
        ("a🎉b", "a🎉🎈b"),
        ("crème brûlée", "crème brûlée glacée"),
        ("naïve café", "naive cafe"),
        ("# Title\n\nsome text\n", "# Title\n\nsome more text\n- item\n"),
        ("👩‍👩‍👧 family", "family 👩‍👩‍👧"),
    ],
)
def test_it_turns_any_text_into_any_other(old, new):
    doc = doc_with(old)
    replica = fork(doc)

    update = content.diff_update(doc, new)

    assert content.text_of(doc) == new
    assert (update == b"") == (old == new)
    replica.apply_update(update or b"\x00\x00")
    assert content.text_of(replica) == new


def test_it_turns_random_texts_into_each_other():
    rng = random.Random(7)
    alphabet = "ab é🎉\n#"
    for _ in range(300):
        old = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        new = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        doc = doc_with(old)
        content.diff_update(doc, new)
        assert content.text_of(doc) == new, (old, new)


def test_it_changes_only_what_differs_so_a_concurrent_edit_survives():
    base = doc_with("Hello world\nsecond line\n")
    api, browser = fork(base), fork(base)

    api_update = content.diff_update(api, "Hello brave world\nsecond line\n")
    before = browser.get_state()
    browser.get("codemirror", type=Text).insert(len(b"Hello world\nsecond"), " 🎉")
    browser_update = browser.get_update(before)
    api.apply_update(browser_update)
    browser.apply_update(api_update)

    assert content.text_of(api) == content.text_of(browser) == "Hello brave world\nsecond 🎉 line\n"


def test_it_replaces_a_large_text_with_scattered_changes_quickly():
    lines = [f"line {i} with é and 🎉\n" for i in range(60_000)]
    old = "".join(lines)
    new = "".join(line.replace("1 with", "1 WITH") for line in lines)
    doc = doc_with(old)

    content.diff_update(doc, new)  # ~6000 changed lines: coarsened, well under a second

    assert content.text_of(doc) == new


@pytest.mark.parametrize(
    "before, change, after",
    [
        ("a🎉b", Edit(index=2, insert="X"), "a🎉Xb"),
        ("a🎉b", Edit(index=1, delete=1), "ab"),
        ("crème", Edit(index=2, delete=1, insert="e"), "creme"),
        ("héllo", Edit(index=5, insert=" wörld"), "héllo wörld"),
        ("", Edit(index=0, insert="🎉"), "🎉"),
    ],
)
def test_it_counts_edit_positions_in_code_points(before, change, after):
    doc = doc_with(before)
    content.edit_update(doc, change)
    assert content.text_of(doc) == after


@pytest.mark.django_db
def test_it_writes_an_edit_to_the_log_with_its_author(document, editor_user):
    content.replace(document, "héllo", editor_user)

    assert content.edit(document, Edit(index=5, insert=" 🎉"), editor_user) == "héllo 🎉"
    assert content.read(document) == "héllo 🎉"
    assert list(document.updates.values_list("author", flat=True)) == [editor_user.pk] * 2


@pytest.mark.django_db
def test_it_writes_nothing_for_a_change_that_changes_nothing(document, owner):
    content.replace(document, "same", owner)

    assert content.replace(document, "same", owner) == "same"
    assert content.edit(document, Edit(index=2), owner) == "same"
    assert document.updates.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, field",
    [
        (Edit(index=4), "index"),
        (Edit(index=2, delete=2), "delete"),
        (Edit(index=2, delete=1), None),
    ],
)
def test_it_refuses_an_edit_beyond_the_text(document, owner, change, field):
    content.replace(document, "a🎉b", owner)  # three characters
    if field is None:
        assert content.edit(document, change, owner) == "a🎉"
        return
    with pytest.raises(content.InvalidEdit) as refused:
        content.edit(document, change, owner)
    assert refused.value.field == field


@pytest.mark.django_db
def test_it_refuses_a_text_over_the_limit(document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_CONTENT_BYTES": 8}
    content.replace(document, "1234567", owner)

    with pytest.raises(content.ContentTooLarge, match="9 bytes"):
        content.replace(document, "1234567é", owner)
    with pytest.raises(content.ContentTooLarge):
        content.edit(document, Edit(index=0, insert="🎉"), owner)
    assert content.edit(document, Edit(index=0, delete=1, insert="é"), owner) == "é234567"


@pytest.mark.django_db
def test_it_keeps_a_version_and_restores_it_as_a_new_change(document, owner, editor_user):
    content.replace(document, "first draft", owner)
    version = content.create_version(document, "draft", owner)
    content.replace(document, "second draft, much better", editor_user)
    rows = document.updates.count()

    assert version.text == "first draft"
    assert content.version_text(Version.objects.get(pk=version.pk)) == "first draft"
    restored = content.restore(version, editor_user)
    assert restored.text == "first draft"
    assert content.read(document) == "first draft"
    assert document.updates.count() == rows + 1  # history kept: one more change, by the restorer
    assert document.updates.order_by("-id").first().author == editor_user
    # The text it replaced is kept first, by the restorer, so the restore can be undone.
    assert restored.before is not None
    assert (restored.before.name, restored.before.author) == (
        "Before restore of “draft”",
        editor_user,
    )
    assert content.version_text(restored.before) == "second draft, much better"


@pytest.mark.django_db
def test_it_keeps_a_nul_typed_in_a_browser_in_the_state_but_not_the_preview(document, owner):
    set_text(document, "a\x00b")

    version = content.create_version(document, "with nul", owner)

    assert Version.objects.get(pk=version.pk).text == "a\ufffdb"
    assert content.version_text(version) == "a\x00b"


def test_a_unified_diff_reads_like_diff_u():
    diff = content.unified_diff("a\nb\nc", "a\nB\nc\n", "old\nname", "new")

    assert diff == (
        "--- old name\n+++ new\n@@ -1,3 +1,3 @@\n a\n-b\n-c\n\\ No newline at end of file\n+B\n+c\n"
    )
    assert content.unified_diff("same", "same", "a", "b") == ""
    # Only \n ends a line: a form feed or a line separator is part of one.
    assert content.unified_diff("x\fy\u2028z\n", "x\fy\u2028Z\n", "a", "b").endswith(
        "@@ -1 +1 @@\n-x\fy\u2028z\n+x\fy\u2028Z\n"
    )
