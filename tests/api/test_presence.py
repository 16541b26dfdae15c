"""Presence without a socket: the REST endpoint and the admin's "who is editing now"."""

import asyncio

import pytest
from django.urls import reverse

from editor.realtime.presence import Entry, Presence, identity
from tests.conftest import make_user


def put_presence(document, user, client_id: int) -> None:
    async def put():
        presence = Presence()
        state = {"user": identity(user), "cursor": {"anchor": 1, "head": 4}}
        entry = Entry(client_id, 1, state, user.pk, "conn", presence.deadline())
        await presence.put(str(document.id), entry)
        await presence.redis.aclose()

    asyncio.run(put())


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_lists_who_is_here_to_members(login_as, document, owner, who):
    put_presence(document, owner, 5)
    response = login_as(who).get(reverse("api-presence", args=[document.id]))

    assert response.status_code == 200
    body = response.json()
    assert body["users"] == [identity(owner)]
    assert body["clients"][0]["client_id"] == 5
    assert body["clients"][0]["cursor"] == {"anchor": 1, "head": 4}


def test_it_hides_presence_from_strangers(login_as, document, owner):
    put_presence(document, owner, 5)
    assert login_as("stranger").get(reverse("api-presence", args=[document.id])).status_code == 404


def test_it_lists_nobody_in_a_quiet_document(login_as, document):
    body = login_as("owner").get(reverse("api-presence", args=[document.id])).json()
    assert body == {"id": str(document.id), "clients": [], "users": []}


def test_it_shows_who_is_editing_now_in_the_admin(client, document, owner):
    put_presence(document, owner, 5)
    client.force_login(make_user("root", is_staff=True, is_superuser=True))

    response = client.get(reverse("admin:editor_document_editing_now"))

    assert response.status_code == 200
    body = response.content.decode()
    assert "Meeting notes" in body and "olive" in body
    changelist = client.get(reverse("admin:editor_document_changelist")).content.decode()
    assert reverse("admin:editor_document_editing_now") in changelist
