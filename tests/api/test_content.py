"""/api/documents/<id>/content/: GET the text; PUT replaces it, PATCH edits it (editors, owners)."""

import pytest
from django.urls import reverse

from editor import content


def url(document):
    return reverse("api-content", args=[document.id])


def put(client, document, text):
    return client.put(url(document), {"text": text}, "application/json")


def patch(client, document, **edit):
    return client.patch(url(document), edit, "application/json")


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_gives_the_text_to_every_member(login_as, document, owner, who):
    content.replace(document, "# Notes\n", owner)

    response = login_as(who).get(url(document))

    assert response.status_code == 200
    assert response.json() == {"text": "# Notes\n"}


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_replace_the_text(login_as, document, people, who):
    response = put(login_as(who), document, "  héllo 🎉\n")

    assert response.status_code == 200
    assert response.json() == {"text": "  héllo 🎉\n"}  # whitespace is content
    assert content.read(document) == "  héllo 🎉\n"
    assert document.updates.get().author == people[who]


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_edit_at_a_character_index(login_as, document, owner, who):
    content.replace(document, "a🎉b crème", owner)
    client = login_as(who)

    assert patch(client, document, index=2, insert="X").json() == {"text": "a🎉Xb crème"}
    assert patch(client, document, index=7, delete=1).json() == {"text": "a🎉Xb crme"}
    assert patch(client, document, index=1, delete=1, insert="!").json() == {"text": "a!Xb crme"}


def test_it_forbids_viewers_to_write(login_as, document, owner):
    content.replace(document, "keep", owner)
    client = login_as("viewer")

    for response in (put(client, document, "x"), patch(client, document, index=0, insert="x")):
        assert response.status_code == 403
        assert response.json() == {"detail": "Viewers cannot change this document."}
    assert content.read(document) == "keep"


@pytest.mark.parametrize("method", ["get", "put", "patch"])
def test_it_hides_the_text_from_a_stranger(login_as, document, method):
    response = getattr(login_as("stranger"), method)(
        url(document), {"text": "x"}, "application/json"
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    "data, field",
    [
        ({}, "text"),
        ({"text": None}, "text"),
        ({"text": 5}, None),  # DRF's CharField takes numbers as text
    ],
)
def test_it_validates_a_replacement(login_as, document, data, field):
    response = login_as("owner").put(url(document), data, "application/json")

    if field is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert field in response.json()


@pytest.mark.parametrize(
    "edit, field",
    [
        ({}, "index"),
        ({"index": -1}, "index"),
        ({"index": 5}, "index"),  # the text is "a🎉b": 3 characters
        ({"index": 1, "delete": 3}, "delete"),
        ({"index": 0, "delete": -2}, "delete"),
        ({"index": "one"}, "index"),
    ],
)
def test_it_explains_an_edit_that_does_not_fit(login_as, document, owner, edit, field):
    content.replace(document, "a🎉b", owner)

    response = patch(login_as("owner"), document, **edit)

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert isinstance(response.json()[field][0], str)
    assert content.read(document) == "a🎉b"


def test_it_refuses_a_text_over_the_limit_with_413(login_as, document, owner, settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_CONTENT_BYTES": 10}
    client = login_as("owner")
    put(client, document, "0123456789")

    too_long = put(client, document, "0123456789é")
    grown = patch(client, document, index=0, insert="🎉")
    huge_body = put(client, document, "x" * 200)  # refused before it is even parsed

    for response in (too_long, grown, huge_body):
        assert response.status_code == 413
        assert "limit" in response.json()["detail"] or "limited" in response.json()["detail"]
    assert content.read(document) == "0123456789"


def test_it_accepts_a_text_larger_than_djangos_form_upload_limit(login_as, document):
    text = "line of text\n" * 250_000  # 3.25 MB > DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)

    response = put(login_as("owner"), document, text)

    assert response.status_code == 200
    assert content.read(document) == text


def test_it_requires_csrf_for_session_writes(document, owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = put(client, document, "x")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
