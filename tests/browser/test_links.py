"""Share links in a real browser: the owner makes a link on the share page, someone without an
account opens it and reads along live, the owner revokes it and the reader's page says so at
once; "Copy link" in the editor; someone logged in without access asks for it."""

from __future__ import annotations

import pytest

from editor.models import AccessRequest
from tests.browser.conftest import People, open_document, status, type_at_end, wait_text

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_guest_reads_through_an_anyone_link_until_it_is_revoked(people: People, document):
    owner = people.page(document.owner, document)
    type_at_end(owner, "Agenda for Monday")

    share = people.page(document.owner)
    share.goto(f"/documents/{document.pk}/share/")
    share.select_option("#id_role", "viewer")
    share.check("#id_anyone")
    share.get_by_role("button", name="Make a link").click()
    url = share.locator(".link-url").input_value()
    assert "/s/" in url

    guest = people.page(None)
    guest.goto(url)
    guest.wait_for_function("() => window.collab !== undefined && window.collab.provider.synced")
    wait_text(guest, "Agenda for Monday")
    assert guest.locator("#role-badge").inner_text() == "view only"
    assert guest.locator("#history-toggle").is_hidden()
    # Others see the guest by name in presence; the guest sees the owner's typing live.
    owner.wait_for_selector('.presence-avatar[data-name="Guest"]')
    type_at_end(owner, ", then lunch")
    wait_text(guest, "Agenda for Monday, then lunch")
    # Typing as a guest changes nothing anywhere (a reader lands on the preview: back to the text).
    guest.locator("#preview", has_text="then lunch").wait_for()
    guest.locator("#mode [data-mode=split]").click()
    guest.locator(".cm-content").click()
    guest.keyboard.type("graffiti")
    assert "graffiti" not in owner.evaluate("() => window.collab.text.toString()")

    share.get_by_role("button", name="Revoke").click()
    share.wait_for_selector("text=Link revoked")
    guest.wait_for_function(
        "() => document.querySelector('#status').dataset.state === 'denied'", timeout=10_000
    )
    assert status(guest) == "No access"
    assert "You no longer have access" in guest.locator("#doc-notice").inner_text()
    guest.goto(url)
    assert guest.get_by_role("heading", name="This link no longer works").is_visible()
    assert not owner.errors and not guest.errors


def test_copy_link_puts_the_document_address_on_the_clipboard(people: People, document):
    page = people.page(document.owner)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_document(page, document)
    page.get_by_role("button", name="Copy link").click()
    page.wait_for_selector(".toast >> text=Link copied")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied.endswith(f"/documents/{document.pk}/")
    assert copied.startswith("http")


def test_someone_without_access_asks_and_the_owner_shares(people: People, document, stranger):
    asker = people.page(stranger)
    asker.goto(f"/documents/{document.pk}/")
    assert asker.get_by_role("heading", name="You need access").is_visible()
    assert document.title not in asker.content()
    asker.get_by_role("button", name="Request access").click()
    asker.wait_for_selector("text=Request sent")
    assert AccessRequest.objects.filter(document=document, user=stranger).exists()

    owner = people.page(document.owner)
    owner.goto("/documents/")
    row = owner.locator(".requests li", has_text="sam")
    row.get_by_role("button", name="as viewer").click()
    owner.wait_for_selector("text=Shared “Meeting notes” with sam")

    open_document(asker, document)
    assert asker.locator("#role-badge").inner_text() == "view only"
