"""/api/documents/<id>/versions/: list, save, read and restore named versions."""

import pytest
from django.urls import reverse

from editor import content
from editor.models import Version


def list_url(document):
    return reverse("api-version-list", args=[document.id])


def detail_url(version):
    return reverse("api-version-detail", args=[version.document_id, version.pk])


def restore_url(version):
    return reverse("api-version-restore", args=[version.document_id, version.pk])


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_save_a_version(login_as, document, people, who):
    content.replace(document, "first draft", people[who])

    response = login_as(who).post(list_url(document), {"name": "Draft 1"}, "application/json")

    assert response.status_code == 201
    version = Version.objects.get()
    assert response.json() == {
        "id": version.pk,
        "name": "Draft 1",
        "author": {"id": people[who].pk, "username": people[who].username},
        "created_at": version.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert version.text == "first draft"


def test_it_forbids_viewers_to_save_or_restore(login_as, document, owner):
    version = content.create_version(document, "v1", owner)
    client = login_as("viewer")

    saved = client.post(list_url(document), {"name": "mine"}, "application/json")
    restored = client.post(restore_url(version))

    assert saved.status_code == restored.status_code == 403
    assert saved.json() == {"detail": "Viewers cannot save versions."}
    assert restored.json() == {"detail": "Viewers cannot restore versions."}
    assert Version.objects.count() == 1


@pytest.mark.parametrize("data", [{}, {"name": ""}, {"name": "x" * 201}])
def test_it_requires_a_name(login_as, document, data):
    response = login_as("owner").post(list_url(document), data, "application/json")

    assert response.status_code == 400
    assert list(response.json()) == ["name"]


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_lists_versions_newest_first_to_every_member(login_as, document, owner, who):
    for name in ("one", "two", "three"):
        content.create_version(document, name, owner)
    owner_gone = content.create_version(document, "by someone gone", None)

    body = login_as(who).get(list_url(document)).json()

    assert body["count"] == 4 and body["next"] is None and body["previous"] is None
    assert [v["name"] for v in body["results"]] == ["by someone gone", "three", "two", "one"]
    assert body["results"][0] == {
        "id": owner_gone.pk,
        "name": "by someone gone",
        "author": None,
        "created_at": body["results"][0]["created_at"],
    }
    assert body["results"][1]["author"] == {"id": owner.pk, "username": "olive"}


def test_it_pages_the_versions(login_as, document, owner):
    for i in range(23):
        content.create_version(document, f"v{i}", owner)
    client = login_as("viewer")

    first = client.get(list_url(document)).json()
    second = client.get(list_url(document), {"page": 2}).json()

    assert first["count"] == 23
    assert [len(first["results"]), len(second["results"])] == [20, 3]
    assert second["results"][-1]["name"] == "v0"


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_shows_a_versions_text(login_as, document, owner, who):
    content.replace(document, "# Kept\n", owner)
    version = content.create_version(document, "kept", owner)
    content.replace(document, "changed", owner)

    response = login_as(who).get(detail_url(version))

    assert response.status_code == 200
    assert response.json()["text"] == "# Kept\n"
    assert response.json()["name"] == "kept"


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_restores_a_version_as_a_new_change(login_as, document, people, owner, who):
    content.replace(document, "original 🎉", owner)
    version = content.create_version(document, "v1", owner)
    content.replace(document, "rewritten", owner)

    response = login_as(who).post(restore_url(version))

    assert response.status_code == 200
    assert response.json() == {"text": "original 🎉"}
    assert content.read(document) == "original 🎉"
    assert document.updates.order_by("-id").first().author == people[who]
    assert Version.objects.count() == 1  # restoring adds history, not versions


def test_it_hides_versions_from_a_stranger(login_as, document, owner):
    version = content.create_version(document, "secret", owner)
    client = login_as("stranger")

    for response in (
        client.get(list_url(document)),
        client.get(detail_url(version)),
        client.post(restore_url(version)),
        client.post(list_url(document), {"name": "x"}, "application/json"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_it_does_not_reach_a_version_of_another_document(login_as, document, owner):
    from editor.models import Document

    other = content.create_version(Document.objects.create_for(owner, "Other"), "v", owner)

    url = reverse("api-version-detail", args=[document.id, other.pk])
    assert login_as("owner").get(url).status_code == 404
