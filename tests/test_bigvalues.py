"""Large values are written with parameters bound on the server (editor.bigvalues.py): the
store's inserts and a version's snapshot travel to PostgreSQL as binary instead of being
escaped into the statement's text in the writer's thread, which held the GIL (and with it the
event loop) in steps of about 25 ms for a 16 MB update."""

import datetime

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from psycopg.pq import Format
from pycrdt import Doc, Text

from editor import content
from editor.bigvalues import server_bound
from editor.models import Document, DocumentUpdate, Version
from editor.realtime import store

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="binding on the server is PostgreSQL's"
)


def client_bound_statements(run) -> list[str]:
    """Runs ``run`` and returns the statements it sent with parameters bound on the client."""
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        if isinstance(context["cursor"].cursor, psycopg.ClientCursor):
            seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        run()
    return seen


def big_update(size: int = 2_000_000) -> bytes:
    doc = Doc()
    doc.get("codemirror", type=Text).insert(0, "x" * size)
    return doc.get_update()


@pytest.mark.django_db
def test_an_update_is_stored_bound_on_the_server_and_reads_back_whole(owner):
    document = Document.objects.create(owner=owner, title="big")
    update = big_update()

    sent_on_the_client = client_bound_statements(lambda: store.write(document.pk, update, owner.pk))

    assert not any("INSERT" in sql for sql in sent_on_the_client)
    assert bytes(DocumentUpdate.objects.get(document=document).data) == update


@pytest.mark.django_db
def test_a_batch_of_the_writer_is_bound_on_the_server(owner):
    document = Document.objects.create(owner=owner, title="batch")
    updates = [big_update(1000), big_update(2000)]
    batch = [store._Pending(document.pk, update, owner.pk, 0.0) for update in updates]

    sent_on_the_client = client_bound_statements(lambda: store._insert(batch))

    assert not any("INSERT" in sql for sql in sent_on_the_client)
    stored = DocumentUpdate.objects.filter(document=document).order_by("id")
    assert [bytes(row.data) for row in stored] == updates


@pytest.mark.django_db
def test_a_version_snapshot_is_bound_on_the_server(owner):
    document = Document.objects.create(owner=owner, title="versions")
    doc = Doc()
    doc.get("codemirror", type=Text).insert(0, "é" * 100_000)

    sent_on_the_client = client_bound_statements(lambda: content.keep(document, doc, "big", owner))

    assert not any("INSERT" in sql for sql in sent_on_the_client)
    version = Version.objects.get(document=document)
    assert version.text == "é" * 100_000


@pytest.mark.django_db
def test_other_statements_keep_djangos_client_side_binding():
    with server_bound():
        pass

    assert client_bound_statements(lambda: list(Document.objects.all()))


@pytest.mark.django_db
def test_the_binding_comes_back_when_the_block_fails(owner):
    with pytest.raises(RuntimeError), server_bound():
        raise RuntimeError("boom")

    assert client_bound_statements(lambda: list(Document.objects.all()))


def binary_reads(run) -> list[bool]:
    """Runs ``run``; for each SELECT it sent, whether its results came in binary."""
    formats: list[bool] = []

    def spy(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT"):
            formats.append(context["cursor"].cursor.format == Format.BINARY)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        run()
    return formats


@pytest.mark.django_db
def test_the_log_is_read_back_in_binary_byte_for_byte(owner):
    document = Document.objects.create(owner=owner, title="read")
    updates = [big_update(3000), big_update(1_000_000)]
    for update in updates:
        store.write(document.pk, update, owner.pk)
    loaded: list = []
    recent: list = []

    load_formats = binary_reads(lambda: loaded.extend(store.load(document.pk)[0]))
    since = timezone.now() - datetime.timedelta(minutes=1)
    recent_formats = binary_reads(lambda: recent.extend(store.updates_since([document.pk], since)))

    assert load_formats and all(load_formats)
    assert recent_formats == [True]
    assert loaded == updates
    assert [(str(document.pk), update) for update in updates] == [
        (document_id, data) for document_id, _, data in recent
    ]
    assert client_bound_statements(lambda: list(Document.objects.all()))  # back to Django's
