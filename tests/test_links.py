"""Share links and access requests (editor/links.py, editor/link_views.py): who gets what by
opening a link, what revoking takes away (open sockets included), and "You need access"."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse
from pycrdt import Doc, Text

from editor.models import AccessRequest, Document, Membership, ShareLink
from editor.realtime import protocol
from editor.realtime.codes import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from editor.routing import websocket_urlpatterns
from tests.conftest import make_user
from tests.realtime.conftest import HOST, ORIGIN, Peer
from tests.realtime.test_consumer import stored_text


def make_link(document, role="viewer", anyone=False) -> ShareLink:
    return ShareLink.objects.create(
        document=document, role=role, anyone=anyone, created_by=document.owner
    )


# -- making and revoking links ---------------------------------------------------------------


def test_the_owner_makes_and_revokes_links_on_the_share_page(client, owner, document):
    client.force_login(owner)
    client.post(reverse("link-create", args=[document.id]), {"role": "editor"})
    client.post(reverse("link-create", args=[document.id]), {"role": "editor", "anyone": "on"})
    page = client.get(reverse("document-share", args=[document.id])).content.decode()
    made = list(document.links.order_by("id"))
    assert [(link.role, link.anyone) for link in made] == [("editor", False), ("editor", True)]
    for link in made:
        assert f"http://testserver/s/{link.token}/" in page
    assert "anyone · view" in page  # an "anyone" link never writes, whatever its role says

    client.post(reverse("link-revoke", args=[document.id, made[0].id]))
    assert list(document.links.all()) == [made[1]]


@pytest.mark.parametrize("who", ["editor", "viewer", "stranger"])
def test_only_the_owner_makes_or_revokes_links(client, people, document, who):
    link = make_link(document)
    client.force_login(people[who])
    made = client.post(reverse("link-create", args=[document.id]), {"role": "editor"})
    revoked = client.post(reverse("link-revoke", args=[document.id, link.id]))
    assert made.status_code == revoked.status_code == (403 if who != "stranger" else 404)
    assert list(document.links.all()) == [link]


def test_a_link_of_another_document_cannot_be_revoked_through_this_one(client, owner, document):
    other = Document.objects.create_for(owner, "Other")
    link = make_link(other)
    client.force_login(owner)
    assert client.post(reverse("link-revoke", args=[document.id, link.id])).status_code == 404
    assert ShareLink.objects.filter(pk=link.pk).exists()


def test_a_link_cannot_grant_ownership(client, owner, document):
    client.force_login(owner)
    client.post(reverse("link-create", args=[document.id]), {"role": "owner"})
    assert not document.links.exists()


# -- opening a link --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_someone_logged_in_who_opens_a_link_gets_its_role(client, stranger, document, role):
    link = make_link(document, role)
    client.force_login(stranger)
    response = client.get(link.get_absolute_url())
    assert response["Location"] == document.get_absolute_url()
    assert Membership.objects.get(document=document, user=stranger).role == role
    page = client.get(document.get_absolute_url())
    assert page.status_code == 200
    assert page.context["role"] == role
    assert document.title in client.get(reverse("document-list")).content.decode()


def test_a_link_does_not_lower_or_take_over_a_role_the_owner_gave(client, editor_user, document):
    link = make_link(document, "viewer")
    client.force_login(editor_user)
    client.get(link.get_absolute_url())
    membership = Membership.objects.get(document=document, user=editor_user)
    assert (membership.role, membership.link) == ("editor", None)
    link.delete()
    assert Membership.objects.filter(document=document, user=editor_user).exists()


def test_a_better_link_raises_access_that_came_through_a_link(client, stranger, document):
    viewing, editing = make_link(document, "viewer"), make_link(document, "editor")
    client.force_login(stranger)
    client.get(viewing.get_absolute_url())
    client.get(editing.get_absolute_url())
    client.get(viewing.get_absolute_url())  # a worse link later does not lower it
    membership = Membership.objects.get(document=document, user=stranger)
    assert (membership.role, membership.link) == ("editor", editing)


def test_someone_not_logged_in_is_asked_to_log_in_by_a_members_link(client, stranger, document):
    link = make_link(document, "editor")
    response = client.get(link.get_absolute_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert f"next=/s/{link.token}/" in response["Location"]
    assert not Membership.objects.filter(user=stranger).exists()


def test_anyone_with_an_anyone_link_reads_without_an_account(client, document):
    link = make_link(document, "editor", anyone=True)
    assert client.get(link.get_absolute_url())["Location"] == document.get_absolute_url()
    page = client.get(document.get_absolute_url())
    body = page.content.decode()
    assert page.status_code == 200
    assert (page.context["role"], page.context["can_edit"], page.context["guest"]) == (
        "viewer",
        False,
        True,
    )
    assert 'name="title"' not in body  # no rename form
    assert '"name": "Guest"' in body  # the name others see in presence
    # The link opens this document only.
    other = Document.objects.create_for(document.owner, "Other")
    assert client.get(other.get_absolute_url()).status_code == 302


def test_a_revoked_or_unknown_link_says_it_no_longer_works(client, stranger, document):
    link = make_link(document)
    link.delete()
    for url in (link.get_absolute_url(), "/s/not-a-token/"):
        response = client.get(url)
        assert response.status_code == 404
        assert "This link no longer works" in response.content.decode()


def test_revoking_removes_what_the_link_gave_and_only_that(client, owner, stranger, document):
    link = make_link(document, "editor")
    guest_link = make_link(document, "viewer", anyone=True)
    client.force_login(stranger)
    client.get(link.get_absolute_url())
    guest = client_class_instance(client)
    guest.get(guest_link.get_absolute_url())
    assert guest.get(document.get_absolute_url()).status_code == 200

    link.delete()
    guest_link.delete()
    page = client.get(document.get_absolute_url())
    assert page.status_code == 403
    assert "You need access" in page.content.decode()
    assert guest.get(document.get_absolute_url()).status_code == 302  # to log in
    # Members the owner added keep their access.
    assert sorted(document.memberships.values_list("user__username", flat=True)) == [
        "eddie",
        "olive",
        "vera",
    ]


def client_class_instance(client):
    return type(client)()


def test_the_owner_making_a_link_member_permanent_survives_the_revoke(
    client, owner, stranger, document
):
    link = make_link(document, "viewer")
    joined = client_class_instance(client)
    joined.force_login(stranger)
    joined.get(link.get_absolute_url())
    membership = Membership.objects.get(document=document, user=stranger)
    client.force_login(owner)
    client.post(reverse("member-update", args=[document.id, membership.id]), {"role": "editor"})
    link.delete()
    assert Membership.objects.get(document=document, user=stranger).role == "editor"


# -- revoking closes sockets opened through the link -----------------------------------------


def _socket(document, user, session=None) -> Peer:
    app = URLRouter(websocket_urlpatterns)
    communicator = WebsocketCommunicator(
        app, f"/ws/documents/{document.id}", headers=[ORIGIN, HOST]
    )
    communicator.scope["user"] = user
    if session is not None:
        communicator.scope["session"] = session
    return Peer(communicator)


async def _until_closed(peer: Peer) -> int:
    return await peer.expect_close(timeout=5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_revoking_a_link_closes_the_sockets_it_opened_and_only_those(document, owner):
    member_link = await sync_to_async(make_link)(document, "editor")
    guest_link = await sync_to_async(make_link)(document, "viewer", anyone=True)
    joiner = await sync_to_async(make_user)("june")
    await sync_to_async(Membership.objects.create)(
        document=document, user=joiner, role="editor", link=member_link
    )
    session = SessionStore()
    session["share_links"] = {str(document.id): guest_link.token}
    await sync_to_async(session.save)()

    stays = _socket(document, owner)
    joined = _socket(document, joiner)
    guest = _socket(document, AnonymousUser(), session)
    for peer in (stays, joined, guest):
        assert await peer.connect()
        await peer.handshake()

    await sync_to_async(member_link.delete)()
    assert await _until_closed(joined) == CLOSE_FORBIDDEN
    await sync_to_async(guest_link.delete)()
    assert await _until_closed(guest) == CLOSE_FORBIDDEN
    await stays.send(protocol.sync_update(stays.type("still here")))
    await stays.settle()
    for peer in (stays, joined, guest):
        await peer.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_guest_socket_reads_but_cannot_write(document, owner):
    link = await sync_to_async(make_link)(document, "editor", anyone=True)
    session = SessionStore()
    session["share_links"] = {str(document.id): link.token}
    await sync_to_async(session.save)()
    writer, guest = _socket(document, owner), _socket(document, AnonymousUser(), session)
    for peer in (writer, guest):
        assert await peer.connect()
        await peer.handshake()
    await guest.send(protocol.sync_update(guest.type("sneaky")))
    await writer.send(protocol.sync_update(writer.type("hello")))
    await writer.settle()
    received = [m.update for m in await guest.settle() if isinstance(m, protocol.SyncUpdate)]
    watcher = Doc()
    for update in received:
        watcher.apply_update(update)
    assert str(watcher.get("codemirror", type=Text)) == "hello"  # it reads live
    assert await stored_text(document.id) == "hello"  # its own edit was refused
    for peer in (writer, guest):
        await peer.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_session_without_a_link_is_told_to_log_in(document):
    session = SessionStore()
    await sync_to_async(session.save)()
    peer = _socket(document, AnonymousUser(), session)
    assert await peer.connect()
    assert await _until_closed(peer) == CLOSE_UNAUTHENTICATED


# -- you need access -------------------------------------------------------------------------


def test_someone_without_access_sees_you_need_access_and_nothing_of_the_document(
    client, stranger, document
):
    client.force_login(stranger)
    response = client.get(document.get_absolute_url())
    body = response.content.decode()
    assert response.status_code == 403
    assert "You need access" in body
    assert document.title not in body
    assert document.owner.username not in body
    # The same page for a document that does not exist.
    missing = client.get(reverse("document-detail", args=["0" * 8 + "-0000-0000-0000-" + "0" * 12]))
    assert missing.status_code == 403
    assert "You need access" in missing.content.decode()


def test_a_request_for_access_reaches_the_owner_who_shares_or_dismisses_it(
    client, owner, stranger, document
):
    asker = client_class_instance(client)
    asker.force_login(stranger)
    sent = asker.post(reverse("request-access", args=[document.id]))
    asker.post(reverse("request-access", args=[document.id]))  # asking twice is one request
    assert "Request sent" in sent.content.decode()
    assert AccessRequest.objects.filter(document=document, user=stranger).count() == 1

    client.force_login(owner)
    listing = client.get(reverse("document-list")).content.decode()
    assert "sam</strong> asks for access to" in listing
    request_id = AccessRequest.objects.get().pk
    client.post(
        reverse("access-request-answer", args=[document.id, request_id]), {"action": "viewer"}
    )
    assert Membership.objects.get(document=document, user=stranger).role == "viewer"
    assert not AccessRequest.objects.exists()
    assert asker.get(document.get_absolute_url()).status_code == 200


def test_the_owner_can_dismiss_a_request(client, owner, stranger, document):
    request = AccessRequest.objects.create(document=document, user=stranger)
    client.force_login(owner)
    client.post(
        reverse("access-request-answer", args=[document.id, request.pk]), {"action": "dismiss"}
    )
    assert not AccessRequest.objects.exists()
    assert not Membership.objects.filter(user=stranger).exists()


def test_a_request_for_a_missing_document_looks_the_same_and_records_nothing(client, stranger):
    client.force_login(stranger)
    missing = "12345678-1234-1234-1234-123456789012"
    response = client.post(reverse("request-access", args=[missing]))
    assert response.status_code == 403
    assert "Request sent" in response.content.decode()
    assert not AccessRequest.objects.exists()


@pytest.mark.parametrize("who", ["editor", "viewer"])
def test_only_the_owner_answers_requests(client, people, stranger, document, who):
    request = AccessRequest.objects.create(document=document, user=stranger)
    client.force_login(people[who])
    answer = client.post(
        reverse("access-request-answer", args=[document.id, request.pk]), {"action": "editor"}
    )
    assert answer.status_code == 403
    assert not Membership.objects.filter(user=stranger).exists()
