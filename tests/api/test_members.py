"""/api/documents/<id>/members/: any member lists; only the owner adds, changes and removes."""

import pytest
from django.urls import reverse

from editor.models import Membership, Role
from tests.conftest import make_user


def list_url(document):
    return reverse("api-member-list", args=[document.id])


def detail_url(document, membership):
    return reverse("api-member-detail", args=[document.id, membership.pk])


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_lists_the_members_to_any_member(login_as, document, who):
    response = login_as(who).get(list_url(document))

    assert response.status_code == 200
    assert [(m["user"]["username"], m["role"]) for m in response.json()] == [
        ("olive", "owner"),
        ("eddie", "editor"),
        ("vera", "viewer"),
    ]
    assert set(response.json()[0]) == {"id", "user", "role"}


def test_it_lets_the_owner_add_a_member(login_as, document):
    newcomer = make_user("nina")

    response = login_as("owner").post(
        list_url(document), {"username": "NINA", "role": "viewer"}, "application/json"
    )

    assert response.status_code == 201
    membership = Membership.objects.get(document=document, user=newcomer)
    assert response.json() == {
        "id": membership.pk,
        "user": {"id": newcomer.pk, "username": "nina"},
        "role": "viewer",
    }


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"username": "nobody", "role": "editor"}, "username", "There is no user called"),
        ({"username": "eddie", "role": "viewer"}, "username", "already a member"),
        ({"username": "olive", "role": "editor"}, "username", "owns this document"),
        ({"username": "sam", "role": "owner"}, "role", "not a valid choice"),
        ({"role": "editor"}, "username", "required"),
    ],
)
def test_it_explains_why_a_member_cannot_be_added(
    login_as, document, stranger, data, field, message
):
    response = login_as("owner").post(list_url(document), data, "application/json")

    assert response.status_code == 400
    assert message in response.json()[field][0]


def test_it_lets_the_owner_change_a_role(login_as, document, editor_user):
    membership = document.memberships.get(user=editor_user)

    response = login_as("owner").patch(
        detail_url(document, membership), {"role": "viewer"}, "application/json"
    )

    assert response.status_code == 200
    assert response.json()["role"] == "viewer"
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


def test_it_refuses_to_change_or_remove_the_owner(login_as, document, owner):
    membership = document.memberships.get(user=owner)
    client = login_as("owner")

    changed = client.patch(detail_url(document, membership), {"role": "viewer"}, "application/json")
    removed = client.delete(detail_url(document, membership))

    assert changed.status_code == 400
    assert changed.json() == {"role": ["The owner’s role cannot be changed."]}
    assert removed.status_code == 400
    assert removed.json() == {"non_field_errors": ["The owner cannot be removed."]}
    assert document.memberships.get(user=owner).role == Role.OWNER


def test_it_rejects_an_unknown_role(login_as, document, viewer):
    membership = document.memberships.get(user=viewer)
    response = login_as("owner").patch(
        detail_url(document, membership), {"role": "admin"}, "application/json"
    )
    assert response.status_code == 400
    assert "role" in response.json()


def test_it_lets_the_owner_remove_a_member(login_as, document, viewer):
    membership = document.memberships.get(user=viewer)

    assert login_as("owner").delete(detail_url(document, membership)).status_code == 204
    assert not document.memberships.filter(user=viewer).exists()


@pytest.mark.parametrize("who", ["editor", "viewer"])
def test_it_forbids_members_other_than_the_owner_to_change_anything(login_as, document, who):
    client = login_as(who)
    membership = document.memberships.get(role=Role.VIEWER)
    make_user("nina")

    responses = [
        client.post(list_url(document), {"username": "nina", "role": "viewer"}, "application/json"),
        client.patch(detail_url(document, membership), {"role": "editor"}, "application/json"),
        client.delete(detail_url(document, membership)),
    ]

    for response in responses:
        assert response.status_code == 403
        assert response.json() == {"detail": "Only the owner can change who has access."}
    assert document.memberships.count() == 3


def test_it_hides_the_members_from_a_stranger(login_as, document, viewer):
    client = login_as("stranger")
    membership = document.memberships.get(user=viewer)

    assert client.get(list_url(document)).status_code == 404
    assert client.delete(detail_url(document, membership)).json() == {"detail": "Not found."}


def test_it_does_not_reach_a_membership_of_another_document(login_as, document, owner):
    from editor.models import Document

    other = Document.objects.create_for(owner, "Other")
    foreign = make_user("nina")
    membership = Membership.objects.create(document=other, user=foreign, role=Role.EDITOR)

    response = login_as("owner").delete(detail_url(document, membership))

    assert response.status_code == 404
    assert Membership.objects.filter(pk=membership.pk).exists()
