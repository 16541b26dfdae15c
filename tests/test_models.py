import pytest
from django.db import IntegrityError

from editor.models import Document, DocumentUpdate, Membership, Role


def test_it_creates_a_document_with_its_owner_membership(owner):
    document = Document.objects.create_for(owner, "Plan")

    assert document.id.version == 4
    assert document.title == "Plan"
    membership = Membership.objects.get(document=document)
    assert (membership.user, membership.role) == (owner, Role.OWNER)
    assert document.snapshot_seq == 0
    assert bytes(document.snapshot) == b""


def test_it_reports_each_role(document, people):
    assert document.role_of(people["owner"]) == Role.OWNER
    assert document.role_of(people["editor"]) == Role.EDITOR
    assert document.role_of(people["viewer"]) == Role.VIEWER
    assert document.role_of(people["stranger"]) is None


def test_it_treats_the_owner_as_owner_even_without_a_membership_row(owner):
    document = Document.objects.create(owner=owner, title="Bare")
    assert document.role_of(owner) == Role.OWNER


def test_it_lists_documents_visible_to_a_user_once(document, people):
    other = Document.objects.create_for(people["stranger"], "Private")

    assert list(Document.objects.visible_to(people["viewer"])) == [document]
    assert set(Document.objects.visible_to(people["owner"])) == {document}
    assert list(Document.objects.visible_to(people["stranger"])) == [other]


def test_it_refuses_a_second_membership_for_the_same_user(document, viewer):
    with pytest.raises(IntegrityError):
        Membership.objects.create(document=document, user=viewer, role=Role.EDITOR)


def test_it_removes_memberships_and_updates_with_the_document(document, owner):
    DocumentUpdate.objects.create(document=document, data=b"\x00\x00", author=owner)
    document.delete()

    assert Membership.objects.count() == 0
    assert DocumentUpdate.objects.count() == 0


def test_it_keeps_updates_when_their_author_is_deleted(document, editor_user):
    update = DocumentUpdate.objects.create(document=document, data=b"\x00\x00", author=editor_user)
    editor_user.delete()

    update.refresh_from_db()
    assert update.author is None
    assert bytes(update.data) == b"\x00\x00"
