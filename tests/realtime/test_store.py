"""The store: group-committed writes, load, catch-up reads, compaction, shutdown flush.

Updates are real Yjs updates made by pycrdt clients. Tests that use the writer run its event loop
with ``asyncio.run`` and need ``transaction=True``: its queries run on another thread.
"""

import asyncio
import datetime
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pycrdt import Doc, Text

from editor.models import Document, DocumentUpdate
from editor.realtime import store

ROOT = Path(__file__).resolve().parent.parent.parent


class Client:
    """A pycrdt client editing the "codemirror" text; each edit returns its Yjs update."""

    def __init__(self) -> None:
        self.doc = Doc()
        self.text = self.doc.get("codemirror", type=Text)

    def type(self, text: str) -> bytes:
        before = self.doc.get_state()
        self.text += text
        return self.doc.get_update(before)

    def delete(self, start: int, end: int) -> bytes:
        before = self.doc.get_state()
        del self.text[start:end]
        return self.doc.get_update(before)


def text_of(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("codemirror", type=Text))


def stored_text(document) -> str:
    return text_of(store.load(document.id)[0])


def add_rows(document, updates: list[bytes], author=None) -> list[int]:
    return [
        DocumentUpdate.objects.create(document=document, data=update, author=author).id
        for update in updates
    ]


def row_ids(document) -> list[int]:
    return list(document.updates.order_by("id").values_list("id", flat=True))


@pytest.fixture
def record_batches(monkeypatch):
    """Records each batch the writer commits: its size and the SQL it ran."""
    batches = []
    original = store._write_batch

    def recording(batch):
        with CaptureQueriesContext(connection) as queries:
            written = original(batch)
        batches.append((len(batch), [query["sql"] for query in queries.captured_queries]))
        return written

    monkeypatch.setattr(store, "_write_batch", recording)
    return batches


def statements(sql: list[str], verb: str, table: str) -> int:
    return sum(1 for s in sql if s.startswith(verb) and f'"{table}"' in s.split("WHERE")[0])


# -- load and updates_since ---------------------------------------------------------------


def test_it_loads_an_empty_document(document):
    assert store.load(document.id) == ([], 0)


def test_it_refuses_to_load_an_unknown_document(db):
    with pytest.raises(Document.DoesNotExist):
        store.load(uuid.uuid4())


def test_it_loads_the_snapshot_then_the_rest_of_the_log(document):
    client = Client()
    add_rows(document, [client.type("hello"), client.type(" world")])
    folded = store.compact(document.id)
    tail = add_rows(document, [client.type("!"), client.type("?")])

    updates, last_id = store.load(document.id)

    document.refresh_from_db()
    assert folded.folded == 2
    assert updates[0] == bytes(document.snapshot)
    assert updates[1:] == list(document.updates.order_by("id").values_list("data", flat=True))
    assert len(updates) == 3
    assert last_id == tail[-1]
    assert text_of(updates) == "hello world!?"


def test_it_reports_the_snapshot_seq_when_the_log_is_empty(document):
    client = Client()
    ids = add_rows(document, [client.type("a"), client.type("b")])
    store.compact(document.id)

    updates, last_id = store.load(document.id)

    assert len(updates) == 1
    assert last_id == ids[-1]
    assert text_of(updates) == "ab"


def test_it_returns_recent_updates_of_the_documents_asked_for(document, owner):
    other = Document.objects.create_for(owner, "Other")
    unrelated = Document.objects.create_for(owner, "Unrelated")
    client = Client()
    old, recent_1 = add_rows(document, [client.type("a"), client.type("b")])
    (recent_2,) = add_rows(other, [Client().type("x")])
    add_rows(unrelated, [Client().type("y")])
    since = timezone.now() - datetime.timedelta(minutes=1)
    DocumentUpdate.objects.filter(id=old).update(created_at=since - datetime.timedelta(seconds=1))
    DocumentUpdate.objects.filter(id=recent_1).update(created_at=since)  # ">=": included

    rows = store.updates_since([document.id, str(other.id)], since)

    assert [(doc_id, pk) for doc_id, pk, _ in rows] == [
        (str(document.id), recent_1),
        (str(other.id), recent_2),
    ]
    assert all(type(data) is bytes for _, _, data in rows)
    assert rows[0][2] == bytes(DocumentUpdate.objects.get(id=recent_1).data)
    assert store.updates_since([], since) == []


def test_it_leaves_out_the_recent_rows_the_caller_holds(document):
    client = Client()
    first, second, third = add_rows(document, [client.type(c) for c in "abc"])
    since = timezone.now() - datetime.timedelta(minutes=1)

    rows = store.updates_since([document.id], since, held={first, third})

    assert [pk for _, pk, _ in rows] == [second]
    assert [pk for _, pk, _ in store.updates_since([document.id], since, held=())] == [
        first,
        second,
        third,
    ]


# -- the writer -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_writes_appended_updates_with_their_author_on_flush(document, editor_user, settings):
    # A long interval: only flush() can have made these durable this soon.
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60}
    client = Client()
    updates = [client.type("hi"), client.type(" there")]
    updated_at = document.updated_at

    async def scenario():
        writer = store.get_writer()
        assert store.get_writer() is writer
        writer.append(document.id, updates[0], editor_user.id)
        writer.append(str(document.id), updates[1], None)
        assert writer.pending == 2
        await writer.flush()
        return writer.pending

    assert asyncio.run(scenario()) == 0
    rows = list(document.updates.order_by("id"))
    assert [bytes(row.data) for row in rows] == updates
    assert [row.author_id for row in rows] == [editor_user.id, None]
    assert stored_text(document) == "hi there"
    document.refresh_from_db()
    assert document.updated_at > updated_at


@pytest.mark.django_db(transaction=True)
def test_it_tells_who_asked_the_id_of_each_row_it_wrote(document, owner):
    client = Client()
    told: list[tuple[str, int]] = []

    async def scenario():
        writer = store.get_writer()
        writer.append(document.id, client.type("a"), owner.id, lambda pk: told.append(("a", pk)))
        writer.append(document.id, client.type("b"), None)  # nobody asked
        writer.append(document.id, client.type("c"), None, lambda pk: told.append(("c", pk)))
        await writer.flush()

    asyncio.run(scenario())
    a, b, c = document.updates.order_by("id").values_list("id", flat=True)
    assert told == [("a", a), ("c", c)]


@pytest.mark.django_db(transaction=True)
def test_it_writes_without_a_flush_once_the_interval_has_passed(
    document, owner, settings, record_batches
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 0.01}

    async def scenario():
        writer = store.get_writer()
        writer.append(document.id, Client().type("on its own"), owner.id)
        for _ in range(1000):  # polls; the deadline is generous, not a performance claim
            if not writer.pending:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the writer never wrote the update")

    asyncio.run(scenario())
    assert [size for size, _ in record_batches] == [1]
    assert stored_text(document) == "on its own"


@pytest.mark.django_db(transaction=True)
def test_it_commits_what_arrives_within_one_interval_as_one_batch(
    document, owner, settings, record_batches
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60}
    other = Document.objects.create_for(owner, "Other")
    here, there = Client(), Client()

    async def scenario():
        writer = store.get_writer()
        for i in range(10):
            writer.append(document.id, here.type(str(i)), owner.id)
            writer.append(other.id, there.type(str(i)), None)
            await asyncio.sleep(0)  # the writer task runs between appends: still one batch
        await writer.flush()

    asyncio.run(scenario())
    [(size, sql)] = record_batches
    assert size == 20
    writes = [s for s in sql if not s.startswith("SELECT")]
    if connection.vendor == "postgresql":
        # One statement writes the rows and touches their documents (change 57).
        [write] = writes
        assert write.startswith("WITH")
        assert 'INSERT INTO "editor_documentupdate"' in write
        assert 'UPDATE "editor_document"' in write
    else:
        assert statements(sql, "INSERT", "editor_documentupdate") == 1
        assert statements(sql, "UPDATE", "editor_document") == 1
    assert sum(1 for s in sql if s.startswith("SELECT") and "COUNT(" in s) == 1
    assert stored_text(document) == "0123456789"
    assert stored_text(other) == "0123456789"


@pytest.mark.django_db(transaction=True)
def test_a_batch_gives_each_update_its_own_row_id_and_touches_its_documents(document, owner):
    other = Document.objects.create_for(owner, "Other")
    Document.objects.filter(pk__in=[document.pk, other.pk]).update(
        updated_at=timezone.now() - datetime.timedelta(days=1)
    )
    batch = [
        store._Pending(document.id, b"first", owner.id, 0.0),
        store._Pending(other.id, b"second", None, 0.0),
        store._Pending(document.id, b"third", owner.id, 0.0),
    ]

    written = store._write_batch(batch)

    assert [pending for pending, _ in written] == batch
    rows = dict(DocumentUpdate.objects.values_list("id", "data"))
    assert [bytes(rows[row_id]) for _, row_id in written] == [b"first", b"second", b"third"]
    authors = {
        bytes(data): a for data, a in DocumentUpdate.objects.values_list("data", "author_id")
    }
    assert authors == {b"first": owner.id, b"second": None, b"third": owner.id}
    for touched in Document.objects.filter(pk__in=[document.pk, other.pk]):
        assert timezone.now() - touched.updated_at < datetime.timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
def test_it_splits_batches_at_the_maximum_size(document, settings, record_batches):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60, "STORE_MAX_BATCH": 3}
    client = Client()

    async def scenario():
        writer = store.get_writer()
        for letter in "abcdefg":
            writer.append(document.id, client.type(letter), None)
        await writer.flush()

    asyncio.run(scenario())
    assert [size for size, _ in record_batches] == [3, 3, 1]
    assert stored_text(document) == "abcdefg"


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_failed_batch_and_writes_it_on_retry(
    document, owner, settings, monkeypatch, caplog
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 0}
    original = store._write_batch
    attempts = []

    def fails_once(batch):
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise OperationalError("database is unavailable (injected)")
        return original(batch)

    monkeypatch.setattr(store, "_write_batch", fails_once)
    client = Client()

    async def scenario():
        writer = store.get_writer()
        for word in ("one ", "two ", "three"):
            writer.append(document.id, client.type(word), owner.id)
        await writer.flush(timeout=30)

    with caplog.at_level(logging.ERROR, logger="collab.store"):
        asyncio.run(scenario())
    assert attempts == [3, 3]  # one failure, then the same batch again
    assert stored_text(document) == "one two three"
    [failure] = [r for r in caplog.records if r.name == "collab.store"]
    assert "could not write 3 update(s)" in failure.getMessage()
    assert "injected" in failure.exc_text


@pytest.mark.django_db(transaction=True)
def test_it_raises_when_a_flush_cannot_finish_and_keeps_the_updates(
    document, settings, monkeypatch
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 0}
    original = store._write_batch

    def down(batch):
        raise OperationalError("database is unavailable (injected)")

    monkeypatch.setattr(store, "_write_batch", down)
    client = Client()

    async def scenario():
        writer = store.get_writer()
        writer.append(document.id, client.type("kept "), None)
        writer.append(document.id, client.type("safe"), None)
        with pytest.raises(TimeoutError, match="2 update"):
            await writer.flush(timeout=0.3)
        assert writer.pending == 2
        monkeypatch.setattr(store, "_write_batch", original)  # the database is back
        await writer.flush(timeout=30)
        return writer.pending

    assert asyncio.run(scenario()) == 0
    assert stored_text(document) == "kept safe"


@pytest.mark.django_db(transaction=True)
def test_it_drops_only_the_updates_of_a_document_deleted_meanwhile(
    document, owner, settings, caplog
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60}
    doomed = Document.objects.create_for(owner, "Doomed")

    async def scenario():
        writer = store.get_writer()
        writer.append(document.id, Client().type("survives"), owner.id)
        writer.append(doomed.id, Client().type("gone"), owner.id)
        await sync_to_async(doomed.delete)()
        await writer.flush(timeout=30)
        return writer.pending

    with caplog.at_level(logging.WARNING, logger="collab.store"):
        assert asyncio.run(scenario()) == 0
    assert not any("could not write" in r.getMessage() for r in caplog.records)
    assert stored_text(document) == "survives"
    assert not DocumentUpdate.objects.filter(document_id=doomed.id).exists()
    assert any("dropped 1 update(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_it_compacts_a_document_automatically_past_the_threshold(
    document, owner, settings, record_batches
):
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60, "COMPACT_THRESHOLD": 5}
    quiet = Document.objects.create_for(owner, "Quiet")
    busy = Client()

    async def scenario():
        writer = store.get_writer()
        for i in range(6):
            writer.append(document.id, busy.type(f"{i} "), None)
        writer.append(quiet.id, Client().type("few"), None)
        await writer.flush()

    asyncio.run(scenario())
    document.refresh_from_db()
    assert not document.updates.exists()
    assert document.snapshot
    assert text_of([bytes(document.snapshot)]) == "0 1 2 3 4 5 "
    assert quiet.updates.count() == 1  # at most the threshold: left alone
    [(size, _)] = record_batches
    assert size == 7


@pytest.mark.django_db(transaction=True)
def test_a_documents_log_is_counted_only_when_it_may_be_past_the_threshold(
    document, settings, record_batches
):
    """One batch after another of a document being typed in: the log's length is known from
    the rows written, so only the first batch and the one that takes it past the threshold
    count it in the database, and that one compacts it."""
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60, "COMPACT_THRESHOLD": 5}
    typist = Client()

    async def type_words(words: list[str]) -> None:
        writer = store.get_writer()
        for word in words:
            writer.append(document.id, typist.type(word), None)
            await writer.flush()

    asyncio.run(type_words(["a", "b", "c", "d", "e"]))
    assert document.updates.count() == 5
    counts = [sum("COUNT(" in sql for sql in sqls) for _, sqls in record_batches]
    assert counts == [1, 0, 0, 0, 0]

    asyncio.run(type_words(["f"]))  # the sixth row: past the threshold
    assert [sum("COUNT(" in sql for sql in sqls) for _, sqls in record_batches[5:]] == [1]
    assert not document.updates.exists()
    assert stored_text(document) == "abcdef"


@pytest.mark.django_db(transaction=True)
def test_rows_another_process_wrote_are_seen_at_the_next_count(document, settings):
    """Rows this process did not write (another process's) are not in what it knows of the
    log: they are counted, and compacted, once its own rows take the log past the threshold
    by its count."""
    settings.COLLAB = {**settings.COLLAB, "STORE_FLUSH_INTERVAL": 60, "COMPACT_THRESHOLD": 5}
    typist = Client()

    async def type_word(word: str) -> None:
        writer = store.get_writer()
        writer.append(document.id, typist.type(word), None)
        await writer.flush()

    asyncio.run(type_word("a"))  # counted: one row
    add_rows(document, [typist.type(w) for w in "bcdefgh"])  # another process's seven rows
    for word in "ijkl":
        asyncio.run(type_word(word))
    assert document.updates.count() == 12  # by its count, 1 + 4 rows: not past 5
    asyncio.run(type_word("m"))
    assert not document.updates.exists()
    assert stored_text(document) == "abcdefghijklm"


# -- compaction -----------------------------------------------------------------------------


def test_it_folds_the_log_into_the_snapshot(document):
    client = Client()
    updates = [client.type("Hello"), client.type(", world"), client.delete(0, 1), client.type("!")]
    ids = add_rows(document, updates)
    before = stored_text(document)

    result = store.compact(document.id)

    document.refresh_from_db()
    assert before == "ello, world!"
    assert result == store.CompactResult(folded=4, snapshot_bytes=len(document.snapshot))
    assert not document.updates.exists()
    assert document.snapshot_seq == ids[-1]
    assert stored_text(document) == before
    assert store.compact(document.id) == store.CompactResult(0, len(document.snapshot))


def test_it_keeps_rows_committed_while_it_was_folding(document, monkeypatch):
    """PostgreSQL can commit a lower id after a higher one: the late row must survive."""
    first, second = Client(), Client()
    early = add_rows(document, [first.type("early ")])
    gap = add_rows(document, [b"placeholder"])[0]
    DocumentUpdate.objects.filter(id=gap).delete()  # an id taken by a transaction still open
    late_update = second.type("late ")
    after = add_rows(document, [first.type("after ")])
    original = store._fold

    def fold_then_commit_late_row(snapshot, rows):
        DocumentUpdate.objects.create(id=gap, document=document, data=late_update)
        return original(snapshot, rows)

    monkeypatch.setattr(store, "_fold", fold_then_commit_late_row)

    result = store.compact(document.id)

    assert result.folded == 2
    assert row_ids(document) == [gap]
    document.refresh_from_db()
    assert document.snapshot_seq == after[0] > gap > early[0]
    assert sorted(stored_text(document).split()) == ["after", "early", "late"]


def test_it_keeps_updates_whose_predecessor_is_not_in_the_log_yet(document):
    client = Client()
    a, b, c = client.type("a"), client.type("b"), client.type("c")
    ids = add_rows(document, [a, c])  # b (which c builds on) is not committed yet

    result = store.compact(document.id)

    assert result == store.CompactResult(folded=1, snapshot_bytes=result.snapshot_bytes, kept=1)
    assert row_ids(document) == [ids[1]]
    add_rows(document, [b])
    assert stored_text(document) == "abc"
    assert store.compact(document.id).folded == 2
    assert stored_text(document) == "abc"
    assert not document.updates.exists()


def test_it_keeps_a_deletion_of_text_it_has_not_seen(document):
    client = Client()
    typed = client.type("typo")
    removal = client.delete(0, 2)
    add_rows(document, [removal])  # the insertion it deletes is not committed yet

    assert store.compact(document.id).folded == 0
    assert document.updates.count() == 1
    add_rows(document, [typed])
    assert store.compact(document.id).folded == 2
    assert stored_text(document) == "po"


def test_it_leaves_a_row_that_does_not_apply_in_the_log(document, caplog):
    client = Client()
    good = add_rows(document, [client.type("fine")])
    bad = add_rows(document, [b"\x01\x02not an update"])

    with caplog.at_level(logging.ERROR, logger="collab.store"):
        result = store.compact(document.id)

    assert (result.folded, result.kept) == (1, 1)
    assert row_ids(document) == bad
    document.refresh_from_db()
    assert document.snapshot_seq == good[0]
    assert any(f"row {bad[0]} does not apply" in r.getMessage() for r in caplog.records)


def test_it_refuses_to_compact_an_unknown_document(db):
    with pytest.raises(Document.DoesNotExist):
        store.compact(uuid.uuid4())


# -- shutdown -------------------------------------------------------------------------------

DAPHNE_SCRIPT = r"""
import asyncio, os, signal, socket, sys, threading, time

from daphne.server import Server  # installs Twisted's asyncio reactor, as daphne's CLI does

import django

django.setup()
from editor.realtime import store

document_id, port, hook = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hook"
first, last = bytes.fromhex(sys.argv[4]), bytes.fromhex(sys.argv[5])
appended = threading.Event()


async def application(scope, receive, send):
    if hook:
        assert store.install_shutdown_flush() and store.install_shutdown_flush()
    writer = store.get_writer()
    writer.append(document_id, first, None)
    appended.set()
    try:
        await asyncio.Event().wait()  # a long-lived connection, like a WebSocket
    finally:
        writer.append(document_id, last, None)  # appended while daphne cancels it


def client():
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.05)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    appended.wait(60)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=client, daemon=True).start()
Server(application, endpoints=[f"tcp:port={port}:interface=127.0.0.1"]).run()
print("daphne stopped")
"""


def database_url() -> str:
    options = connection.settings_dict
    if options["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{options['NAME']}"
    login = quote(options["USER"] or "") + (
        f":{quote(options['PASSWORD'])}" if options["PASSWORD"] else ""
    )
    host = f"{options['HOST'] or '127.0.0.1'}:{options['PORT'] or 5432}"
    return f"postgres://{login}@{host}/{options['NAME']}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("hook, kept", [("hook", ["first", "last"]), ("no-hook", [])])
def test_it_writes_pending_updates_when_daphne_is_stopped(document, hook, kept):
    client = Client()
    first, last = client.type("first "), client.type("last")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "collab.settings",
        "DATABASE_URL": database_url(),
        # Nothing is written in the normal course of things before the SIGTERM.
        "STORE_FLUSH_INTERVAL": "600",
    }
    process = subprocess.run(
        [sys.executable, "-c", DAPHNE_SCRIPT, str(document.id), str(free_port()), hook]
        + [first.hex(), last.hex()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert process.returncode == 0, process.stderr
    assert "daphne stopped" in process.stdout
    assert stored_text(document).split() == kept


def test_it_installs_no_shutdown_hook_without_a_running_asyncio_reactor(monkeypatch):
    monkeypatch.delitem(sys.modules, "twisted.internet.reactor", raising=False)

    assert store.install_shutdown_flush() is False
    assert "twisted.internet.reactor" not in sys.modules  # it must not install a reactor


def test_it_writes_one_update_at_once_for_the_rest_api(document, editor_user, settings):
    settings.COLLAB = {**settings.COLLAB, "COMPACT_THRESHOLD": 2}
    client = Client()
    Document.objects.filter(pk=document.pk).update(
        updated_at=timezone.now() - datetime.timedelta(1)
    )

    store.write(document.id, client.type("hello"), editor_user.pk)
    store.write(document.id, client.type(" world"), None)

    assert list(document.updates.order_by("id").values_list("author", flat=True)) == [
        editor_user.pk,
        None,
    ]
    document.refresh_from_db()
    assert timezone.now() - document.updated_at < datetime.timedelta(seconds=5)
    store.write(document.id, client.delete(0, 1), None)  # the third row: past the threshold
    assert document.updates.count() == 0
    assert stored_text(document) == "ello world"
