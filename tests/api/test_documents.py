"""/api/documents/: list (mine and shared, search, pages), create, retrieve, rename, delete."""

import pytest
from django.urls import reverse

from editor.models import Document, Membership, Role


def list_url():
    return reverse("api-document-list")


def detail_url(document):
    return reverse("api-document-detail", args=[document.id])


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_lists_documents_owned_and_shared_with_the_users_role(login_as, document, people, who):
    Document.objects.create_for(people["stranger"], "Someone else's")

    body = login_as(who).get(list_url()).json()

    assert body["count"] == 1
    assert body["next"] is None and body["previous"] is None
    [listed] = body["results"]
    assert listed["id"] == str(document.id)
    assert listed["title"] == "Meeting notes"
    assert listed["owner"] == {"id": document.owner.pk, "username": "olive"}
    assert listed["role"] == who
    assert set(listed) == {"id", "title", "owner", "role", "created_at", "updated_at"}


def test_it_lists_nothing_to_a_stranger(login_as, document):
    assert login_as("stranger").get(list_url()).json()["results"] == []


def test_it_searches_titles_and_pages_the_results(login_as, owner, editor_user):
    for i in range(25):
        Document.objects.create_for(owner, f"Plan {i}")
    shared = Document.objects.create_for(editor_user, "Shared plan")
    Membership.objects.create(document=shared, user=owner, role=Role.VIEWER)
    Document.objects.create_for(owner, "Groceries")
    client = login_as("owner")

    first = client.get(list_url(), {"search": "PLAN"}).json()
    second = client.get(list_url(), {"search": "plan", "page": 2}).json()

    assert first["count"] == 26
    assert len(first["results"]) == 20
    assert "page=2" in first["next"] and "search=PLAN" in first["next"]
    assert len(second["results"]) == 6
    titles = {d["title"] for d in first["results"] + second["results"]}
    assert "Shared plan" in titles and "Groceries" not in titles
    assert client.get(list_url(), {"page": 9}).status_code == 404


def test_it_creates_a_document_owned_by_the_user(login_as, owner):
    response = login_as("owner").post(list_url(), {"title": "  Roadmap "}, "application/json")

    assert response.status_code == 201
    body = response.json()
    document = Document.objects.get(pk=body["id"])
    assert body["title"] == document.title == "Roadmap"
    assert body["role"] == "owner"
    assert document.memberships.get().role == Role.OWNER


@pytest.mark.parametrize("data", [{}, {"title": "   "}, {"title": "x" * 201}, {"title": "a\x00"}])
def test_it_rejects_a_bad_title_with_a_field_message(login_as, owner, data):
    response = login_as("owner").post(list_url(), data, "application/json")

    assert response.status_code == 400
    assert list(response.json()) == ["title"]
    assert isinstance(response.json()["title"][0], str)


def test_it_rejects_malformed_json_and_lone_surrogates(login_as, owner):
    client = login_as("owner")
    assert client.post(list_url(), "{", "application/json").status_code == 400
    response = client.post(list_url(), '{"title": "\\ud800"}', "application/json")
    assert response.status_code == 400
    assert "Unicode" in response.json()["detail"]


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_shows_a_document_to_its_members(login_as, document, who):
    response = login_as(who).get(detail_url(document))

    assert response.status_code == 200
    assert response.json()["role"] == who


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_rename(login_as, document, who):
    response = login_as(who).patch(detail_url(document), {"title": "Minutes"}, "application/json")

    assert response.status_code == 200
    assert response.json()["title"] == "Minutes"
    document.refresh_from_db()
    assert document.title == "Minutes"


def test_it_forbids_viewers_to_rename(login_as, document):
    response = login_as("viewer").patch(detail_url(document), {"title": "X"}, "application/json")

    assert response.status_code == 403
    assert response.json() == {"detail": "Viewers cannot rename this document."}


def test_it_has_no_put_on_a_document(login_as, document):
    response = login_as("owner").put(detail_url(document), {"title": "X"}, "application/json")
    assert response.status_code == 405


def test_it_lets_only_the_owner_delete(login_as, document):
    assert login_as("owner").delete(detail_url(document)).status_code == 204
    assert not Document.objects.filter(pk=document.pk).exists()


@pytest.mark.parametrize("who", ["editor", "viewer"])
def test_it_forbids_others_to_delete(login_as, document, who):
    response = login_as(who).delete(detail_url(document))

    assert response.status_code == 403
    assert response.json() == {"detail": "Only the owner can delete this document."}
    assert Document.objects.filter(pk=document.pk).exists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_it_answers_a_stranger_as_if_there_were_no_document(login_as, document, method):
    client = login_as("stranger")
    hidden = getattr(client, method)(detail_url(document), {}, "application/json")
    missing = getattr(client, method)(
        reverse("api-document-detail", args=["00000000-0000-0000-0000-000000000000"])
    )

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json() == {"detail": "Not found."}


def test_it_answers_404_for_an_id_that_is_not_a_uuid(login_as, owner):
    assert login_as("owner").get("/api/documents/not-a-uuid/").status_code == 404


def test_it_requires_authentication(client, document):
    assert client.get(list_url()).status_code == 403
    assert client.get(detail_url(document)).status_code == 403
