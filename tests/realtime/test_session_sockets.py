"""Browser sockets through the application's WebSocket stack (collab/middleware.py in front of the
routes, as collab/asgi.py has it): the session cookie is read by
the socket check itself, on its own threads (editor/realtime/auth.py), with Django's rules for
a login: the user must be active and still have the password the session was made with."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import reverse

from collab.middleware import SessionUnlessTicket
from editor import links
from editor.models import Document, ShareLink
from editor.realtime import protocol
from editor.routing import websocket_urlpatterns
from tests.conftest import PASSWORD
from tests.realtime.conftest import HOST, ORIGIN, Peer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

# collab/asgi.py's WebSocket side (importing that module would tune this whole test process).
STACK = SessionUnlessTicket(URLRouter(websocket_urlpatterns))


def logged_in(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def browser(document, session_key: str | None, origin=ORIGIN) -> Peer:
    headers = [origin, HOST]
    if session_key is not None:
        headers.append(
            (b"cookie", f"csrftoken=x; {settings.SESSION_COOKIE_NAME}={session_key}".encode())
        )
    return Peer(WebsocketCommunicator(STACK, f"/ws/documents/{document.id}", headers=headers))


async def refusal(peer: Peer) -> tuple[protocol.Message, int]:
    assert await peer.connect()
    message = await peer.recv()
    return message, await peer.expect_close()


@pytest.mark.parametrize(
    "engine",
    [
        "django.contrib.sessions.backends.db",  # read by the socket check's own query
        "django.contrib.sessions.backends.cached_db",  # read by the engine's SessionStore
    ],
)
async def test_a_logged_in_browser_gets_its_role(document, owner, viewer, settings, engine):
    settings.SESSION_ENGINE = engine
    for user, scope in ((owner, protocol.SCOPE_READ_WRITE), (viewer, protocol.SCOPE_READ_ONLY)):
        peer = browser(document, await sync_to_async(logged_in)(user))
        assert await peer.connect()
        assert isinstance(await peer.recv(), protocol.SyncStep1)
        assert await peer.recv() == protocol.Authenticated(scope)
        await peer.close()


async def test_a_session_ends_when_the_password_changes(document, owner):
    key = await sync_to_async(logged_in)(owner)
    owner.set_password("a different one, changed elsewhere")
    await sync_to_async(owner.save)()

    message, code = await refusal(browser(document, key))
    assert message == protocol.Auth("session no longer valid: log in again")
    assert code == 4401


async def test_an_inactive_users_session_is_refused(document, owner):
    key = await sync_to_async(logged_in)(owner)
    owner.is_active = False
    await sync_to_async(owner.save)()

    _, code = await refusal(browser(document, key))
    assert code == 4401


@pytest.mark.parametrize("key", [None, "no-such-session-key", ""])
async def test_no_session_or_an_unknown_one_is_told_to_log_in(document, key):
    message, code = await refusal(browser(document, key))
    assert message == protocol.Auth("log in, or pass ?ticket=")
    assert code == 4401


async def test_a_session_from_a_foreign_origin_is_refused(document, owner):
    key = await sync_to_async(logged_in)(owner)
    message, code = await refusal(
        browser(document, key, origin=(b"origin", b"https://evil.example"))
    )
    assert message == protocol.Auth("origin not allowed")
    assert code == 4403


async def test_a_guest_with_an_anyone_link_in_the_session_reads(document, owner):
    link = await sync_to_async(ShareLink.objects.create)(
        document=document, role="viewer", anyone=True, created_by=owner
    )
    session = SessionStore()
    session[links.SESSION_KEY] = {str(document.id): link.token}
    await sync_to_async(session.save)()

    peer = browser(document, session.session_key)
    assert await peer.connect()
    assert isinstance(await peer.recv(), protocol.SyncStep1)
    assert await peer.recv() == protocol.Authenticated(protocol.SCOPE_READ_ONLY)
    await peer.close()


async def test_an_expired_session_is_told_to_log_in(document, owner):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    key = await sync_to_async(logged_in)(owner)
    await sync_to_async(Session.objects.filter(session_key=key).update)(
        expire_date=timezone.now() - timedelta(seconds=1)
    )

    message, code = await refusal(browser(document, key))
    assert message == protocol.Auth("log in, or pass ?ticket=")
    assert code == 4401


async def test_a_session_whose_data_was_tampered_with_is_told_to_log_in(document, owner):
    from django.contrib.sessions.models import Session

    key = await sync_to_async(logged_in)(owner)
    stored = await sync_to_async(Session.objects.get)(session_key=key)
    stored.session_data = stored.session_data[:-3] + "abc"  # the signature no longer matches
    await sync_to_async(stored.save)()

    message, code = await refusal(browser(document, key))
    assert message == protocol.Auth("log in, or pass ?ticket=")
    assert code == 4401


# -- a session's sockets end with it --------------------------------------------------------------


def signed_in(user) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


async def test_logging_out_closes_that_browsers_sockets_and_only_those(document, owner, viewer):
    other = await sync_to_async(Document.objects.create_for)(owner, "Other")
    laptop, laptop_key = await sync_to_async(signed_in)(owner)
    _, phone_key = await sync_to_async(signed_in)(owner)
    _, viewer_key = await sync_to_async(signed_in)(viewer)
    tabs = [browser(doc, laptop_key) for doc in (document, other)]
    stay = [browser(document, phone_key), browser(document, viewer_key)]
    for peer in tabs + stay:
        assert await peer.connect()
        await peer.handshake()

    assert (await sync_to_async(laptop.post)(reverse("logout"))).status_code == 302

    for peer in tabs:
        assert await peer.recv() == protocol.Auth("logged out: log in again")
        assert await peer.expect_close() == 4401
    for peer in stay:
        assert await peer.settle() == []
        await peer.close()


async def two_browsers(document, user) -> tuple[Client, Peer, Peer]:
    """The user on a laptop (its client, to post with, and its socket) and on a phone."""
    laptop, laptop_key = await sync_to_async(signed_in)(user)
    _, phone_key = await sync_to_async(signed_in)(user)
    here, elsewhere = browser(document, laptop_key), browser(document, phone_key)
    for peer in (here, elsewhere):
        assert await peer.connect()
        await peer.handshake()
    return laptop, here, elsewhere


async def change_password(client: Client) -> None:
    """Changes the password on the site's password page, as its form is filled in."""
    new = "a brand new passphrase 73"
    changed = await sync_to_async(client.post)(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert changed.status_code == 302


async def test_a_new_password_closes_the_other_sessions_sockets_and_keeps_this_ones(
    document, owner
):
    laptop, here, elsewhere = await two_browsers(document, owner)

    await change_password(laptop)

    assert await elsewhere.recv() == protocol.Auth("password changed: log in again")
    assert await elsewhere.expect_close() == 4401
    await here.send(protocol.sync_update(here.type("still mine")))
    assert await here.settle() == []
    # It goes on under the key Django gave the session: logging out still closes it.
    await sync_to_async(laptop.post)(reverse("logout"))
    assert await here.recv() == protocol.Auth("logged out: log in again")
    assert await here.expect_close() == 4401


async def test_a_password_set_elsewhere_closes_every_session_socket_of_the_user(
    document, owner, viewer
):
    _, laptop_key = await sync_to_async(signed_in)(owner)
    _, viewer_key = await sync_to_async(signed_in)(viewer)
    tab, stays = browser(document, laptop_key), browser(document, viewer_key)
    for peer in (tab, stays):
        assert await peer.connect()
        await peer.handshake()

    owner.set_password("set by an administrator")  # the admin's form, or changepassword
    await sync_to_async(owner.save)()

    assert await tab.recv() == protocol.Auth("password changed: log in again")
    assert await tab.expect_close() == 4401
    assert await stays.settle() == []
    await stays.close()


async def test_a_change_whose_old_password_check_upgrades_its_hash_still_keeps_this_session(
    document, owner
):
    # A salt this short makes Django re-hash the password as the form checks it: one more
    # write of a new hash before the change itself.
    owner.password = MD5PasswordHasher().encode(PASSWORD, "x")
    await sync_to_async(type(owner).objects.filter(pk=owner.pk).update)(password=owner.password)
    laptop, here, elsewhere = await two_browsers(document, owner)

    await change_password(laptop)

    assert await elsewhere.recv() == protocol.Auth("password changed: log in again")
    assert await elsewhere.expect_close() == 4401
    assert await here.settle() == []
    await here.close()
