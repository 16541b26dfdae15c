"""API writes meet live editors: they reach connected sockets and merge with their edits.

The views are sync and publish through async_to_sync, so the test calls them from a thread
(sync_to_async) to keep the event loop, where the rooms and sockets live, free.
"""

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse
from pycrdt import Text

from editor import content
from editor.realtime import protocol, store

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def no_catch_up(settings):
    # Rooms re-read the log every CATCHUP_INTERVAL and would deliver API writes that were never
    # published; pushed out of reach, only the group message can deliver them.
    settings.COLLAB = {**settings.COLLAB, "CATCHUP_INTERVAL": 3600}


async def connected(peer_for, user, document):
    peer = peer_for(user, document.id)
    assert await peer.connect()
    await peer.handshake()
    return peer


async def next_update(peer) -> bytes:
    """The next document update the peer receives (awareness frames are skipped)."""
    while not isinstance(message := await peer.recv(), protocol.SyncUpdate):
        pass
    return message.update


async def api(login_as, who, method, url, data=None):
    client = await sync_to_async(login_as)(who)
    call = getattr(client, method)
    if data is None:
        return await sync_to_async(call)(url)
    return await sync_to_async(call)(url, data, "application/json")


async def stored_text(document) -> str:
    await store.get_writer().flush()
    return await sync_to_async(content.read)(document)


async def test_it_sends_a_put_to_a_connected_editor(peer_for, login_as, document, editor_user):
    peer = await connected(peer_for, editor_user, document)

    response = await api(
        login_as, "owner", "put", reverse("api-content", args=[document.id]), {"text": "héllo 🎉"}
    )

    assert response.status_code == 200
    peer.doc.apply_update(await next_update(peer))
    assert str(peer.text) == "héllo 🎉"
    await peer.close()


async def test_it_merges_an_api_patch_with_a_concurrent_socket_edit(
    peer_for, login_as, document, owner, editor_user
):
    alice = await connected(peer_for, owner, document)
    bob = await connected(peer_for, editor_user, document)
    await alice.send(protocol.sync_update(alice.type("hello world")))
    bob.doc.apply_update(await next_update(bob))
    await stored_text(document)  # the API starts from "hello world"

    # Alice types at the start without having seen the API's edit at the end, and vice versa.
    before = alice.doc.get_state()
    alice.doc.get("codemirror", type=Text).insert(0, "Alice: ")
    concurrent = alice.doc.get_update(before)
    response = await api(
        login_as,
        "editor",
        "patch",
        reverse("api-content", args=[document.id]),
        {"index": 11, "insert": " — via API ✓"},
    )
    await alice.send(protocol.sync_update(concurrent))

    assert response.json() == {"text": "hello world — via API ✓"}
    alice.doc.apply_update(await next_update(alice))
    for update in [await next_update(bob), await next_update(bob)]:
        bob.doc.apply_update(update)
    expected = "Alice: hello world — via API ✓"
    assert str(alice.text) == str(bob.text) == expected
    assert await stored_text(document) == expected
    await alice.close()
    await bob.close()


async def test_it_sends_a_restored_version_to_live_editors(
    peer_for, login_as, document, owner, viewer
):
    await sync_to_async(content.replace)(document, "# Plan\n\nship it\n", owner)
    version = await sync_to_async(content.create_version)(document, "v1", owner)
    await sync_to_async(content.replace)(document, "# Plan\n\nscrap it all\n", owner)
    peer = await connected(peer_for, viewer, document)
    assert str(peer.text) == "# Plan\n\nscrap it all\n"

    response = await api(
        login_as, "editor", "post", reverse("api-version-restore", args=[document.id, version.pk])
    )

    answer = response.json()
    assert answer["text"] == "# Plan\n\nship it\n"
    assert answer["before_restore"]["name"] == "Before restore of “v1”"
    peer.doc.apply_update(await next_update(peer))
    assert str(peer.text) == "# Plan\n\nship it\n"
    await peer.close()
