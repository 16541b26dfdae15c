"""/api/documents/<id>/versions/: list, save, read, restore and compare versions."""

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


def diff_url(version, against=None):
    url = reverse("api-version-diff", args=[version.document_id, version.pk])
    return url if against is None else f"{url}?against={against}"


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_save_a_version(login_as, document, people, who):
    content.replace(document, "first draft", people[who])

    response = login_as(who).post(list_url(document), {"name": "Draft 1"}, "application/json")

    assert response.status_code == 201
    version = Version.objects.get()
    assert response.json() == {
        "id": version.pk,
        "name": "Draft 1",
        "automatic": False,
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
        "automatic": False,
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
    assert response.json()["text"] == "original 🎉"
    assert content.read(document) == "original 🎉"
    assert document.updates.order_by("-id").first().author == people[who]


def test_it_keeps_the_text_before_a_restore_as_a_version(login_as, document, editor_user, owner):
    content.replace(document, "original", owner)
    version = content.create_version(document, "v1", owner)
    content.replace(document, "rewritten\n", owner)

    body = login_as("editor").post(restore_url(version)).json()

    before = Version.objects.get(name="Before restore of “v1”")
    assert body["before_restore"] == {
        "id": before.pk,
        "name": "Before restore of “v1”",
        "automatic": False,
        "author": {"id": editor_user.pk, "username": "eddie"},
        "created_at": before.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert content.version_text(before) == "rewritten\n"
    assert list(document.versions.values_list("name", flat=True)) == [before.name, "v1"]


def test_restoring_the_version_kept_before_a_restore_undoes_it(login_as, document, owner):
    content.replace(document, "original", owner)
    version = content.create_version(document, "v1", owner)
    content.replace(document, "work that a restore would lose", owner)
    client = login_as("owner")
    before = client.post(restore_url(version)).json()["before_restore"]
    assert content.read(document) == "original"

    undone = client.post(reverse("api-version-restore", args=[document.id, before["id"]]))

    assert undone.json()["text"] == "work that a restore would lose"
    assert content.read(document) == "work that a restore would lose"
    # That restore kept "original" in turn: every step can be taken back.
    assert undone.json()["before_restore"]["name"] == "Before restore of “Before restore of “v1””"


def test_a_restore_that_changes_nothing_keeps_no_version(login_as, document, owner):
    content.replace(document, "same", owner)
    version = content.create_version(document, "v1", owner)

    body = login_as("owner").post(restore_url(version)).json()

    assert body == {"text": "same", "before_restore": None}
    assert Version.objects.count() == 1


def test_a_long_name_is_shortened_in_the_version_kept_before_a_restore(login_as, document, owner):
    content.replace(document, "a", owner)
    version = content.create_version(document, "n" * 200, owner)
    content.replace(document, "b", owner)

    name = login_as("owner").post(restore_url(version)).json()["before_restore"]["name"]

    assert len(name) == 200
    assert name.startswith("Before restore of “nnn") and name.endswith("n…”")


def test_it_hides_versions_from_a_stranger(login_as, document, owner):
    version = content.create_version(document, "secret", owner)
    client = login_as("stranger")

    for response in (
        client.get(list_url(document)),
        client.get(detail_url(version)),
        client.get(diff_url(version)),
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


# -- diffs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_diffs_a_version_against_the_current_text(login_as, document, owner, who):
    content.replace(document, "# Plan\n\none\ntwo\nthree\n", owner)
    version = content.create_version(document, "Draft", owner)
    content.replace(document, "# Plan\n\none\n2\nthree\nfour\n", owner)

    response = login_as(who).get(diff_url(version, "current"))

    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["against"], body["added"], body["removed"]) == (
        version.pk,
        "current",
        2,
        1,
    )
    header = f"--- version {version.pk} (Draft, {version.created_at.isoformat()})\n"
    assert body["diff"] == (
        f"{header}+++ current text\n@@ -1,5 +1,6 @@\n # Plan\n \n one\n-two\n+2\n three\n+four\n"
    )


def test_it_diffs_against_the_current_text_by_default(login_as, document, owner):
    content.replace(document, "a\n", owner)
    version = content.create_version(document, "v", owner)
    content.replace(document, "b\n", owner)

    body = login_as("viewer").get(diff_url(version)).json()

    assert body["against"] == "current"
    assert body["diff"].endswith("@@ -1 +1 @@\n-a\n+b\n")


def test_it_diffs_two_versions(login_as, document, owner):
    content.replace(document, "first line\nsecond line", owner)
    old = content.create_version(document, "old", owner)
    content.replace(document, "first line\nsecond line, longer\n", owner)
    new = content.create_version(document, "new", owner)
    content.replace(document, "something else entirely", owner)

    body = login_as("editor").get(diff_url(old, new.pk)).json()

    assert (body["from"], body["against"]) == (old.pk, new.pk)
    lines = body["diff"].split("\n")
    assert lines[0].startswith(f"--- version {old.pk} (old, ")
    assert lines[1].startswith(f"+++ version {new.pk} (new, ")
    assert lines[2:] == [
        "@@ -1,2 +1,2 @@",
        " first line",
        "-second line",
        "\\ No newline at end of file",
        "+second line, longer",
        "",
    ]


def test_an_unchanged_text_has_an_empty_diff(login_as, document, owner):
    content.replace(document, "same\n", owner)
    version = content.create_version(document, "v", owner)

    body = login_as("owner").get(diff_url(version)).json()

    assert (body["diff"], body["added"], body["removed"]) == ("", 0, 0)


def test_names_cannot_break_the_diff_header(login_as, document, owner):
    content.replace(document, "a", owner)
    version = content.create_version(document, "two\nlines\n+++ forged", owner)
    content.replace(document, "b", owner)

    diff = login_as("owner").get(diff_url(version)).json()["diff"]

    assert diff.split("\n")[0].startswith(f"--- version {version.pk} (two lines +++ forged, ")
    assert diff.split("\n")[1] == "+++ current text"


@pytest.mark.parametrize("against", ["latest", "-1", "1.5", "99999999999999999999", "١"])
def test_it_rejects_what_is_not_a_version_id(login_as, document, owner, against):
    version = content.create_version(document, "v", owner)

    response = login_as("owner").get(diff_url(version), {"against": against})

    assert response.status_code == 400
    assert response.json() == {"against": ['Must be "current" or the id of a version.']}


def test_it_does_not_diff_against_a_version_of_another_document(login_as, document, owner):
    from editor.models import Document

    version = content.create_version(document, "mine", owner)
    other = content.create_version(Document.objects.create_for(owner, "Other"), "theirs", owner)
    client = login_as("owner")

    assert client.get(diff_url(version, other.pk)).status_code == 404
    assert client.get(diff_url(version, 10**12)).status_code == 404
    url = reverse("api-version-diff", args=[document.id, other.pk])
    assert client.get(url).json() == {"detail": "Not found."}
