"""The access policy as a table over roles: from a role, from a user and a document, in SQL."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from editor.access import (
    SHAREABLE_CHOICES,
    Role,
    can_edit,
    can_manage,
    can_view,
    get_viewable_document,
    may_edit,
    may_manage,
    may_view,
    role_from,
    with_roles,
)
from editor.models import Document

#            who:      view   edit   manage
TABLE = [
    ("owner", True, True, True),
    ("editor", True, True, False),
    ("viewer", True, False, False),
    ("stranger", False, False, False),
    ("anonymous", False, False, False),
]


@pytest.mark.parametrize("who,view,edit,manage", TABLE)
def test_it_grants_each_role_what_the_table_says(document, people, who, view, edit, manage):
    user = AnonymousUser() if who == "anonymous" else people[who]

    assert can_view(user, document) is view
    assert can_edit(user, document) is edit
    assert can_manage(user, document) is manage


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_returns_the_document_and_role_to_members(document, people, who):
    found, role = get_viewable_document(people[who], document.id)
    assert found == document
    assert role == who


@pytest.mark.parametrize("who", ["stranger", "anonymous"])
def test_it_hides_the_document_from_everyone_else(document, people, who):
    user = AnonymousUser() if who == "anonymous" else people[who]
    with pytest.raises(Http404):
        get_viewable_document(user, document.id)


def test_it_answers_a_missing_document_like_a_forbidden_one(owner):
    import uuid

    with pytest.raises(Http404):
        get_viewable_document(owner, uuid.uuid4())


def test_it_follows_a_role_change_at_once(document, viewer):
    membership = document.memberships.get(user=viewer)
    membership.role = "editor"
    membership.save()

    assert can_edit(viewer, document)
    membership.delete()
    assert not can_view(viewer, document)


# -- the rule from a role ---------------------------------------------------------------------

#                role:         view   edit   manage
ROLE_TABLE = [
    (Role.OWNER, True, True, True),
    (Role.EDITOR, True, True, False),
    (Role.VIEWER, True, False, False),
    (None, False, False, False),
]


@pytest.mark.parametrize("role,view,edit,manage", ROLE_TABLE)
def test_it_answers_every_question_from_the_role_alone(role, view, edit, manage):
    assert (may_view(role), may_edit(role), may_manage(role)) == (view, edit, manage)


def test_it_names_every_role_in_the_table():
    assert {row[0] for row in ROLE_TABLE} - {None} == set(Role)


def test_it_hands_out_every_role_but_ownership():
    assert SHAREABLE_CHOICES == [("editor", "Editor"), ("viewer", "Viewer")]


@pytest.mark.parametrize(
    "user_id,owner_id,member_role,role",
    [
        (1, 1, None, Role.OWNER),  # the owner needs no membership row
        (1, 1, Role.VIEWER, Role.OWNER),  # and a stale row cannot demote them
        (2, 1, Role.EDITOR, Role.EDITOR),
        (2, 1, Role.VIEWER, Role.VIEWER),
        (2, 1, None, None),
        (1, None, None, None),  # no such document
    ],
)
def test_it_takes_the_role_from_ownership_then_membership(user_id, owner_id, member_role, role):
    assert role_from(user_id, owner_id, member_role) == role


# -- the rule in SQL --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "editor", "viewer", "stranger", "anonymous"])
def test_it_annotates_the_same_role_as_role_of(document, people, who):
    user = AnonymousUser() if who == "anonymous" else people[who]
    Document.objects.create_for(people["stranger"], "Someone else's")

    annotated = {doc.pk: doc.role for doc in with_roles(Document.objects.all(), user)}

    assert annotated == {doc.pk: doc.role_of(user) for doc in Document.objects.all()}


@pytest.mark.parametrize("who", ["owner", "editor", "viewer", "stranger", "anonymous"])
def test_it_lists_exactly_the_documents_a_user_may_view(document, people, who):
    user = AnonymousUser() if who == "anonymous" else people[who]
    theirs = Document.objects.create_for(people["stranger"], "Someone else's")

    listed = {doc.pk: doc.role for doc in Document.objects.visible_to(user)}

    expected = {d.pk: d.role_of(user) for d in (document, theirs) if can_view(user, d)}
    assert listed == expected


def test_it_annotates_the_owner_as_owner_whatever_their_membership_says(document, owner):
    document.memberships.filter(user=owner).update(role=Role.VIEWER)

    [annotated] = with_roles(Document.objects.all(), owner)

    assert annotated.role == document.role_of(owner) == Role.OWNER
