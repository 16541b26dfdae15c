"""The role table walked through every entry point: the pages, the REST API and the socket.

``TABLE`` is the rule as docs/architecture.md states it. The first tests pin editor/access.py to
it; the others check that each entry point answers what access.py answers for the person's role.
So a rule changed in access.py fails here, and so does an entry point that decides by itself.
Whoever cannot view gets 404 (4403 on the socket), a member whose role is too low 403.
"""

from typing import NamedTuple

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from editor import content
from editor.access import Role, may_edit, may_manage, may_view
from editor.models import Document, Membership
from editor.realtime import protocol, store
from tests.conftest import make_user
from tests.realtime.conftest import peer_for  # noqa: F401  (a fixture)

#   who          role         view   edit   manage
TABLE = [
    ("owner", Role.OWNER, True, True, True),
    ("editor", Role.EDITOR, True, True, False),
    ("viewer", Role.VIEWER, True, False, False),
    ("stranger", None, False, False, False),
]
ROLES = {who: role for who, role, *_ in TABLE}
WHO = list(ROLES)


class Rights(NamedTuple):
    view: bool
    edit: bool
    manage: bool


def rights(who: str) -> Rights:
    """What access.py lets this person do, from their role alone."""
    role = ROLES[who]
    return Rights(may_view(role), may_edit(role), may_manage(role))


def expected_status(allowed: bool, who: str, ok: int) -> int:
    if allowed:
        return ok
    return 403 if rights(who).view else 404


# -- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who,role,view,edit,manage", TABLE)
def test_access_answers_what_the_table_says(who, role, view, edit, manage):
    assert rights(who) == Rights(view, edit, manage)


@pytest.mark.parametrize("who", WHO)
def test_each_person_has_the_role_of_their_row(document, people, who):
    assert document.role_of(people[who]) == ROLES[who]


# -- pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", WHO)
def test_the_document_page_shows_what_the_role_allows(login_as, document, who):
    can = rights(who)
    response = login_as(who).get(document.get_absolute_url())

    assert response.status_code == (200 if can.view else 403)  # 403: "You need access"
    if not can.view:
        return
    body = response.content.decode()
    assert f'data-role="{ROLES[who]}"' in body
    assert f'data-can-edit="{str(can.edit).lower()}"' in body
    assert ('id="title-form"' in body) is can.edit
    assert ('data-history="form"' in body) is can.edit  # save a version
    assert ('data-history="restore"' in body) is can.edit
    assert ('id="role-badge">view only<' in body) is not can.edit
    assert (reverse("document-share", args=[document.id]) in body) is can.manage


@pytest.mark.parametrize("who", WHO)
def test_the_document_list_offers_sharing_and_deleting_to_managers(login_as, document, who):
    can = rights(who)
    body = login_as(who).get(reverse("document-list")).content.decode()

    assert (document.get_absolute_url() in body) is can.view
    assert (reverse("document-share", args=[document.id]) in body) is can.manage
    assert (reverse("document-delete", args=[document.id]) in body) is can.manage


@pytest.mark.parametrize("who", WHO)
def test_renaming_on_the_page_needs_edit(login_as, document, who):
    can = rights(who)
    url = reverse("document-rename", args=[document.id])

    response = login_as(who).post(url, {"title": "Renamed"})

    assert response.status_code == expected_status(can.edit, who, 302)
    document.refresh_from_db()
    assert (document.title == "Renamed") is can.edit


@pytest.mark.parametrize("who", WHO)
def test_the_share_page_needs_manage(login_as, document, who):
    response = login_as(who).get(reverse("document-share", args=[document.id]))

    assert response.status_code == expected_status(rights(who).manage, who, 200)


@pytest.mark.parametrize("who", WHO)
def test_sharing_on_the_page_needs_manage(login_as, document, who):
    can = rights(who)
    make_user("nick")

    response = login_as(who).post(
        reverse("document-share", args=[document.id]), {"username": "nick", "role": "viewer"}
    )

    assert response.status_code == expected_status(can.manage, who, 302)
    assert document.memberships.filter(user__username="nick").exists() is can.manage


@pytest.mark.parametrize("who", WHO)
def test_changing_a_member_on_the_page_needs_manage(login_as, document, who):
    can = rights(who)
    member = Membership.objects.create(document=document, user=make_user("nina"), role="viewer")
    url = reverse("member-update", args=[document.id, member.pk])

    response = login_as(who).post(url, {"role": "editor", "action": "change"})

    assert response.status_code == expected_status(can.manage, who, 302)
    member.refresh_from_db()
    assert (member.role == Role.EDITOR) is can.manage


@pytest.mark.parametrize("who", WHO)
def test_deleting_on_the_page_needs_manage(login_as, document, who):
    can = rights(who)
    client = login_as(who)
    url = reverse("document-delete", args=[document.id])

    assert client.get(url).status_code == expected_status(can.manage, who, 200)
    assert client.post(url).status_code == expected_status(can.manage, who, 302)
    assert Document.objects.filter(pk=document.pk).exists() is not can.manage


# -- the REST API -------------------------------------------------------------------------------


class Call(NamedTuple):
    needs: str  # "view", "edit" or "manage"
    method: str
    url: str  # formatted with the document's and the fixtures' ids
    body: dict | None
    ok: int
    writes: bool  # whether an allowed call changes the document (title, text, members, ...)


DOC = "/api/documents/{doc}/"
API = {
    "read the document": Call("view", "get", DOC, None, 200, False),
    "rename": Call("edit", "patch", DOC, {"title": "Renamed"}, 200, True),
    "delete": Call("manage", "delete", DOC, None, 204, True),
    "read the text": Call("view", "get", DOC + "content/", None, 200, False),
    "replace the text": Call("edit", "put", DOC + "content/", {"text": "new"}, 200, True),
    "edit the text": Call(
        "edit", "patch", DOC + "content/", {"index": 0, "insert": "x"}, 200, True
    ),
    "list members": Call("view", "get", DOC + "members/", None, 200, False),
    "add a member": Call(
        "manage", "post", DOC + "members/", {"username": "nick", "role": "viewer"}, 201, True
    ),
    "change a member": Call(
        "manage", "patch", DOC + "members/{member}/", {"role": "editor"}, 200, True
    ),
    "remove a member": Call("manage", "delete", DOC + "members/{member}/", None, 204, True),
    "list versions": Call("view", "get", DOC + "versions/", None, 200, False),
    "read a version": Call("view", "get", DOC + "versions/{version}/", None, 200, False),
    "save a version": Call("edit", "post", DOC + "versions/", {"name": "v2"}, 201, True),
    "restore a version": Call("edit", "post", DOC + "versions/{version}/restore/", None, 200, True),
    "get a socket ticket": Call("view", "post", DOC + "ticket/", None, 201, False),
    "see who is here": Call("view", "get", DOC + "presence/", None, 200, False),
}


def snapshot(document_id) -> tuple | None:
    """Everything an API call could change, to tell whether a call changed anything."""
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        return None
    members = sorted(document.memberships.values_list("user__username", "role"))
    return document.title, content.read(document), members, document.versions.count()


@pytest.mark.parametrize("action", API)
@pytest.mark.parametrize("who", WHO)
def test_the_api_answers_what_the_role_allows(login_as, document, owner, who, action):
    call = API[action]
    allowed = getattr(rights(who), call.needs)
    make_user("nick")
    member = Membership.objects.create(document=document, user=make_user("nina"), role="viewer")
    content.replace(document, "first", owner)
    version = content.create_version(document, "v1", owner)
    content.replace(document, "second", owner)  # so that a restore changes the text
    url = call.url.format(doc=document.id, member=member.pk, version=version.pk)
    before = snapshot(document.id)

    client = login_as(who)
    response = getattr(client, call.method)(url, call.body, content_type="application/json")

    assert response.status_code == expected_status(allowed, who, call.ok), response.content
    assert (snapshot(document.id) != before) is (allowed and call.writes)
    if action == "read the document" and allowed:
        assert response.json()["role"] == ROLES[who]


@pytest.mark.parametrize("who", WHO)
def test_the_api_lists_a_document_with_the_role_to_whoever_may_view_it(login_as, document, who):
    results = login_as(who).get("/api/documents/").json()["results"]

    roles = {entry["id"]: entry["role"] for entry in results}
    assert roles == ({str(document.id): ROLES[who]} if rights(who).view else {})


# -- the socket ---------------------------------------------------------------------------------


async def join(peer) -> list[protocol.Message]:
    """Runs the y-websocket handshake; returns the other messages that came meanwhile."""
    others = []
    while not isinstance(first := await peer.recv(), protocol.SyncStep1):
        others.append(first)
    await peer.send(protocol.sync_step1(peer.doc))
    await peer.send(protocol.sync_step2(peer.doc, first.state_vector))
    while not isinstance(reply := await peer.recv(), protocol.SyncStep2):
        others.append(reply)
    peer.doc.apply_update(reply.update)
    return others


async def stored_text(document) -> str:
    await store.get_writer().flush()
    return await sync_to_async(content.read)(document)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", WHO)
async def test_the_socket_allows_what_the_role_allows(peer_for, document, people, who):  # noqa: F811
    can = rights(who)
    peer = peer_for(people[who], document.id)
    assert await peer.connect()  # refusals are accepted first, so that the reason can be sent

    if not can.view:
        assert isinstance(await peer.recv(), protocol.Auth)  # before any document byte
        assert await peer.expect_close() == 4403
        return

    scope = protocol.SCOPE_READ_WRITE if can.edit else protocol.SCOPE_READ_ONLY
    assert protocol.Authenticated(scope) in await join(peer)
    await peer.send(protocol.sync_update(peer.type("typed here")))
    refusals = [m for m in await peer.settle() if isinstance(m, protocol.Auth)]

    assert refusals == ([] if can.edit else [protocol.Auth("view only")])
    assert await stored_text(document) == ("typed here" if can.edit else "")
    await peer.close()
