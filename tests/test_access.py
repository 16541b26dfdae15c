"""The access policy as a table over roles."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from editor.access import can_edit, can_manage, can_view, get_viewable_document

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
