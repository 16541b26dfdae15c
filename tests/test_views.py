"""Every page for anonymous, owner, editor, viewer and stranger."""

import uuid

import pytest
from django.urls import reverse

from editor.models import Document, Membership, Role

ROLES = ["anonymous", "owner", "editor", "viewer", "stranger"]


def is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith(reverse("login"))


# -- document list ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
def test_it_lists_my_documents_with_my_role(login_as, document, who):
    response = login_as(who).get(reverse("document-list"))

    if who == "anonymous":
        assert is_login_redirect(response)
        return
    assert response.status_code == 200
    body = response.content.decode()
    if who == "stranger":
        assert "Meeting notes" not in body
        assert "No documents yet" in body
    else:
        assert "Meeting notes" in body
        assert f"role-{who}" in body


def test_it_sends_visitors_to_the_landing_page_and_members_to_their_list(client, owner):
    assert "Write together" in client.get("/").content.decode()
    client.force_login(owner)
    assert client.get("/")["Location"] == reverse("document-list")


# -- create -------------------------------------------------------------------------------------


def test_it_creates_a_document_and_opens_it(client, owner):
    client.force_login(owner)
    response = client.post(reverse("document-create"), {"title": "  Roadmap  "})

    document = Document.objects.get()
    assert document.title == "Roadmap"
    assert document.owner == owner
    assert response["Location"] == document.get_absolute_url()


@pytest.mark.parametrize("title", ["", "   "])
def test_it_creates_an_untitled_document_when_no_title_is_given(client, owner, title):
    client.force_login(owner)
    response = client.post(reverse("document-create"), {"title": title})

    document = Document.objects.get()
    assert document.title == "Untitled"
    assert response["Location"] == document.get_absolute_url()


def test_it_refuses_a_too_long_title_with_a_message_and_creates_nothing(client, owner):
    client.force_login(owner)
    response = client.post(reverse("document-create"), {"title": "x" * 201})

    assert response.status_code == 400
    body = response.content.decode()
    assert "title" in body.lower()
    assert 'role="alert"' in body
    assert Document.objects.count() == 0


# -- list: search, sort, empty states -----------------------------------------------------------


def _listed_titles(response) -> list[str]:
    return [row[0].title for row in response.context["rows"]]


@pytest.fixture
def three_documents(owner):
    """Three documents, changed in the order Zebra plan, apple notes, Mango (most recent last)."""
    made = {}
    for title in ("Zebra plan", "apple notes", "Mango"):
        made[title] = Document.objects.create_for(owner, title)
    return made


def test_the_list_searches_titles_in_any_case(client, owner, three_documents):
    client.force_login(owner)
    response = client.get(reverse("document-list"), {"q": "AN"})
    assert sorted(_listed_titles(response)) == ["Mango", "Zebra plan"]
    assert 'value="AN"' in response.content.decode()


def test_the_list_sorts_by_recent_change_or_by_title(client, owner, three_documents):
    client.force_login(owner)
    three_documents["Zebra plan"].save()  # changed last

    recent = client.get(reverse("document-list"))
    assert _listed_titles(recent) == ["Zebra plan", "Mango", "apple notes"]
    by_title = client.get(reverse("document-list"), {"sort": "title"})
    assert _listed_titles(by_title) == ["apple notes", "Mango", "Zebra plan"]
    assert _listed_titles(client.get(reverse("document-list"), {"sort": "nonsense"})) == (
        _listed_titles(recent)
    )


def test_the_list_says_what_to_do_when_empty_and_when_nothing_matches(
    client, owner, three_documents
):
    client.force_login(owner)
    nothing = client.get(reverse("document-list"), {"q": "<b>kiwi</b>"}).content.decode()
    assert "No document’s title contains “&lt;b&gt;kiwi&lt;/b&gt;”" in nothing
    assert "show all documents" in nothing

    Document.objects.all().delete()
    empty = client.get(reverse("document-list")).content.decode()
    assert "No documents yet." in empty
    assert "New document" in empty
    assert 'role="search"' not in empty  # nothing to search yet


def test_the_list_never_shows_documents_the_user_may_not_view(client, stranger, three_documents):
    client.force_login(stranger)
    response = client.get(reverse("document-list"), {"q": "a"})
    assert _listed_titles(response) == []
    assert "No documents yet." in response.content.decode()


def test_it_sends_anonymous_creators_to_log_in(client, db):
    response = client.post(reverse("document-create"), {"title": "Sneaky"})
    assert is_login_redirect(response)
    assert Document.objects.count() == 0


def test_it_rejects_get_on_create(client, owner):
    client.force_login(owner)
    assert client.get(reverse("document-create")).status_code == 405


# -- document page ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,status", [("owner", 200), ("editor", 200), ("viewer", 200), ("stranger", 403)]
)
def test_it_shows_the_document_page_to_members_only(login_as, document, who, status):
    response = login_as(who).get(document.get_absolute_url())

    assert response.status_code == status
    body = response.content.decode()
    if status == 403:  # "You need access", and nothing about the document (tests/test_links.py)
        assert "You need access" in body
        assert "Meeting notes" not in body
    else:
        assert "Meeting notes" in body


def test_it_sends_anonymous_readers_to_log_in_and_back(client, document):
    response = client.get(document.get_absolute_url())
    assert is_login_redirect(response)
    assert str(document.id) in response["Location"]


def test_it_labels_the_viewer_view_only_without_a_title_editor(login_as, document):
    body = login_as("viewer").get(document.get_absolute_url()).content.decode()
    assert "view only" in body
    assert 'name="title"' not in body
    assert reverse("document-share", args=[document.id]) not in body


def test_it_gives_editors_inline_title_editing_but_not_sharing(login_as, document):
    body = login_as("editor").get(document.get_absolute_url()).content.decode()
    assert 'name="title"' in body
    assert reverse("document-share", args=[document.id]) not in body


def test_a_document_that_does_not_exist_looks_like_one_without_access(client, owner):
    client.force_login(owner)
    assert client.get(f"/documents/{uuid.uuid4()}/").status_code == 403  # You need access
    assert client.get("/documents/not-a-uuid/").status_code == 404


# -- rename -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,renamed,status",
    [("owner", True, 302), ("editor", True, 302), ("viewer", False, 403), ("stranger", False, 404)],
)
def test_it_lets_owners_and_editors_rename(login_as, document, who, renamed, status):
    response = login_as(who).post(
        reverse("document-rename", args=[document.id]), {"title": "Renamed"}
    )

    assert response.status_code == status
    document.refresh_from_db()
    assert document.title == ("Renamed" if renamed else "Meeting notes")


def test_it_keeps_the_title_when_the_new_one_is_blank(login_as, document):
    client = login_as("owner")
    response = client.post(
        reverse("document-rename", args=[document.id]), {"title": " "}, follow=True
    )

    assert "Give the document a title." in response.content.decode()
    document.refresh_from_db()
    assert document.title == "Meeting notes"


def test_it_does_not_redirect_off_site_after_a_rename(login_as, document):
    response = login_as("owner").post(
        reverse("document-rename", args=[document.id]),
        {"title": "Renamed", "next": "https://evil.example/"},
    )
    assert response["Location"] == document.get_absolute_url()


# -- delete -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,status", [("owner", 200), ("editor", 403), ("viewer", 403), ("stranger", 404)]
)
def test_it_asks_only_the_owner_to_confirm_deletion(login_as, document, who, status):
    response = login_as(who).get(reverse("document-delete", args=[document.id]))
    assert response.status_code == status


@pytest.mark.parametrize(
    "who,status", [("owner", 302), ("editor", 403), ("viewer", 403), ("stranger", 404)]
)
def test_it_lets_only_the_owner_delete(login_as, document, who, status):
    response = login_as(who).post(reverse("document-delete", args=[document.id]))

    assert response.status_code == status
    assert Document.objects.filter(pk=document.pk).exists() is (who != "owner")


# -- share --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who,status", [("owner", 200), ("editor", 403), ("viewer", 403), ("stranger", 404)]
)
def test_it_shows_the_share_page_to_the_owner_only(login_as, document, who, status):
    response = login_as(who).get(reverse("document-share", args=[document.id]))

    assert response.status_code == status
    if status == 200:
        body = response.content.decode()
        assert "eddie" in body and "vera" in body


@pytest.mark.parametrize(
    "who,status", [("owner", 302), ("editor", 403), ("viewer", 403), ("stranger", 404)]
)
def test_it_lets_only_the_owner_add_a_member(login_as, document, stranger, who, status):
    response = login_as(who).post(
        reverse("document-share", args=[document.id]), {"username": "SAM", "role": "viewer"}
    )

    assert response.status_code == status
    added = Membership.objects.filter(document=document, user=stranger, role=Role.VIEWER)
    assert added.exists() is (who == "owner")


@pytest.mark.parametrize(
    "form,message",
    [
        ({"username": "nobody", "role": "editor"}, "There is no user called “nobody”."),
        ({"username": "olive", "role": "editor"}, "olive owns this document already."),
        ({"username": "vera", "role": "editor"}, "vera is already a member"),
        ({"username": "sam", "role": "owner"}, "Select a valid choice."),
        ({"username": "", "role": "viewer"}, "This field is required."),
    ],
)
def test_it_explains_a_bad_share_and_changes_nothing(login_as, document, form, message):
    before = sorted(Membership.objects.values_list("user__username", "role"))
    response = login_as("owner").post(reverse("document-share", args=[document.id]), form)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert sorted(Membership.objects.values_list("user__username", "role")) == before


def member_url(document, user):
    membership = Membership.objects.get(document=document, user=user)
    return reverse("member-update", args=[document.id, membership.id])


@pytest.mark.parametrize(
    "who,status", [("owner", 302), ("editor", 403), ("viewer", 403), ("stranger", 404)]
)
def test_it_lets_only_the_owner_change_a_role(login_as, document, viewer, who, status):
    url = member_url(document, viewer)
    response = login_as(who).post(url, {"action": "change", "role": "editor"})

    assert response.status_code == status
    expected = Role.EDITOR if who == "owner" else Role.VIEWER
    assert Membership.objects.get(document=document, user=viewer).role == expected


def test_it_removes_a_member(login_as, document, viewer):
    url = member_url(document, viewer)
    login_as("owner").post(url, {"action": "remove"})

    assert not Membership.objects.filter(document=document, user=viewer).exists()
    assert login_as("viewer").get(document.get_absolute_url()).status_code == 403


def test_it_refuses_an_unknown_role_and_keeps_the_old_one(login_as, document, viewer):
    url = member_url(document, viewer)
    response = login_as("owner").post(url, {"action": "change", "role": "owner"}, follow=True)

    assert "Choose a role: editor or viewer." in response.content.decode()
    assert Membership.objects.get(document=document, user=viewer).role == Role.VIEWER


def test_it_protects_the_owners_own_membership(login_as, document, owner):
    url = member_url(document, owner)
    response = login_as("owner").post(url, {"action": "remove"}, follow=True)

    assert "The owner’s access cannot be changed." in response.content.decode()
    assert Membership.objects.filter(document=document, user=owner, role=Role.OWNER).exists()


def test_it_answers_404_for_a_membership_of_another_document(login_as, document, stranger):
    other = Document.objects.create_for(stranger, "Elsewhere")
    foreign = Membership.objects.get(document=other)
    url = reverse("member-update", args=[document.id, foreign.id])

    assert login_as("owner").post(url, {"action": "remove"}).status_code == 404
    assert Membership.objects.filter(pk=foreign.pk).exists()
