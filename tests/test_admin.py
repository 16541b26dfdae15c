"""The Django admin: every page an administrator uses loads and finds what it should."""

import pytest
from django.urls import reverse

from editor.models import DocumentUpdate, Membership
from tests.conftest import make_user


@pytest.fixture
def admin_client(client, db):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "name",
    [
        "admin:index",
        "admin:auth_user_changelist",
        "admin:auth_user_add",
        "admin:editor_document_changelist",
        "admin:editor_document_add",
        "admin:editor_membership_changelist",
        "admin:editor_membership_add",
        "admin:editor_documentupdate_changelist",
    ],
)
def test_it_loads_each_admin_list_and_form(admin_client, document, name):
    assert admin_client.get(reverse(name)).status_code == 200


def test_it_loads_change_pages(admin_client, document, owner):
    membership = Membership.objects.filter(document=document).first()
    update = DocumentUpdate.objects.create(document=document, data=b"\x00\x00", author=owner)
    for url in [
        reverse("admin:editor_document_change", args=[document.pk]),
        reverse("admin:editor_membership_change", args=[membership.pk]),
        reverse("admin:editor_documentupdate_change", args=[update.pk]),
        reverse("admin:auth_user_change", args=[owner.pk]),
    ]:
        assert admin_client.get(url).status_code == 200, url


def test_it_shows_members_inline_on_the_document(admin_client, document):
    body = admin_client.get(reverse("admin:editor_document_change", args=[document.pk])).content
    assert b"eddie" in body and b"vera" in body


@pytest.mark.parametrize("query", ["Meeting", "olive"])
def test_it_searches_documents_by_title_and_owner(admin_client, document, stranger, query):
    from editor.models import Document

    Document.objects.create_for(stranger, "Unrelated")
    body = admin_client.get(reverse("admin:editor_document_changelist"), {"q": query}).content
    assert b"Meeting notes" in body
    assert b"Unrelated" not in body


def test_it_filters_documents_by_member_role(admin_client, document):
    url = reverse("admin:editor_document_changelist")
    assert admin_client.get(url, {"memberships__role": "viewer"}).status_code == 200


def test_it_keeps_non_staff_out(client, owner):
    client.force_login(owner)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302


def test_it_lists_and_shows_versions_read_only(admin_client, document, owner):
    from editor import content

    version = content.create_version(document, "Before review", owner)

    listing = admin_client.get(reverse("admin:editor_version_changelist"))
    page = admin_client.get(reverse("admin:editor_version_change", args=[version.pk]))

    assert "Before review" in listing.content.decode()
    assert page.status_code == 200
    assert admin_client.get(reverse("admin:editor_version_add")).status_code == 403
