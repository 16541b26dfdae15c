"""Reloading a document with no network: the service worker (templates/editor/service_worker.js)
keeps the page and its assets after one visit, IndexedDB the text; the edits made offline merge
when the network is back. Signing out, or losing access, forgets the kept pages.

The network is cut with Playwright's `set_offline`, which cuts the service worker's fetches as
well as the page's: to tell a kept page from a fresh one, the server renames the document while
the browser is away (the page's title comes from the server's HTML, not from IndexedDB).
"""

import time

import pytest

from editor.models import Document, Membership
from tests.browser.conftest import (
    WAIT_MS,
    status,
    text,
    type_at_end,
    wait_synced,
    wait_text,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The paths of the document pages this browser's worker keeps, in any of its caches.
KEPT_PAGES = """async () => {
    const pages = []
    for (const name of await caches.keys()) {
        const cache = await caches.open(name)
        for (const request of await cache.keys()) {
            const path = new URL(request.url).pathname
            if (path.startsWith('/documents/')) pages.push(path)
        }
    }
    return pages
}"""


def wait_kept(page) -> None:
    """Until the worker controls the page and says it keeps it: going offline before that would
    test nothing."""
    page.locator("#doc-app[data-offline=kept]").wait_for(state="attached")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")


def kept_pages(page) -> list[str]:
    return page.evaluate(KEPT_PAGES)


def wait_forgotten(page) -> None:
    """Until no page is kept (the worker deletes them while the browser goes on)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while kept := kept_pages(page):
        assert time.monotonic() < deadline, f"still kept: {kept}"
        page.wait_for_timeout(50)


def test_a_document_opened_once_reloads_offline_editable_and_syncs_when_back(
    people, document, owner, editor_user
):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    type_at_end(olive, "Written online.")
    wait_text(eddie, "Written online.")
    wait_kept(olive)
    assert kept_pages(olive) == [f"/documents/{document.pk}/"]
    Document.objects.filter(pk=document.pk).update(title="Renamed while Olive was away")

    # No network at all, and a reload: the page is the one kept on the first visit (the old
    # title), its text comes from IndexedDB, and the status says so.
    olive.context.set_offline(True)
    response = olive.reload()
    assert response is not None and response.from_service_worker
    olive.wait_for_function("() => window.collab !== undefined")
    assert olive.locator("#doc-title").input_value() == "Meeting notes"
    wait_text(olive, "Written online.")
    olive.locator(".cm-content", has_text="Written online.").wait_for()
    olive.locator("#status[data-state=offline]").wait_for()
    assert status(olive) == "Offline"

    # Editable: she types on, and it stays in this browser.
    type_at_end(olive, " Typed offline after a reload.")
    wait_text(olive, "Written online. Typed offline after a reload.")
    olive.locator("#preview", has_text="Typed offline after a reload.").wait_for()
    type_at_end(eddie, " Eddie, online.")
    wait_text(eddie, "Eddie, online.")
    assert "Typed offline" not in text(eddie)

    # The network is back: the same page connects by itself, and both converge.
    olive.context.set_offline(False)
    wait_synced(olive)
    final = wait_text(eddie, "Typed offline after a reload.", "Eddie, online.")
    wait_text(olive, "Eddie, online.")
    assert text(olive) == final
    olive.locator("#status[data-state=connected]").wait_for()
    assert status(olive) == "Connected"

    # Online, the page comes from the server again (network first): the new title.
    olive.reload()
    olive.wait_for_function("() => window.collab !== undefined")
    assert olive.locator("#doc-title").input_value() == "Renamed while Olive was away"
    wait_synced(olive)
    assert text(olive) == final
    assert olive.errors == [] and eddie.errors == []


def test_logging_out_forgets_the_kept_pages(people, document, owner):
    olive = people.page(owner, document)
    type_at_end(olive, "Olive's private notes.")
    wait_kept(olive)
    assert kept_pages(olive) == [f"/documents/{document.pk}/"]

    olive.goto("/documents/")  # logging out from any page of the site
    olive.locator(".menu summary").click()
    olive.get_by_role("button", name="Log out").click()
    olive.wait_for_url("**/accounts/login/")
    wait_forgotten(olive)

    # The next person at this computer, with no network, finds nothing of hers.
    olive.context.set_offline(True)
    response = olive.goto(f"/documents/{document.pk}/")
    assert response is not None and response.status == 503
    body = olive.locator("body").inner_text()
    assert "You are offline" in body
    assert "Meeting notes" not in body and "private notes" not in body
    assert olive.evaluate("() => window.collab") is None
    assert olive.errors == []


def test_a_page_the_server_refuses_is_forgotten(people, document, editor_user):
    eddie = people.page(editor_user, document)
    wait_kept(eddie)

    Membership.objects.filter(document=document, user=editor_user).delete()
    eddie.reload()
    eddie.get_by_role("heading", name="You need access").wait_for()
    wait_forgotten(eddie)

    eddie.context.set_offline(True)
    response = eddie.reload()
    assert response is not None and response.status == 503
    assert "You are offline" in eddie.locator("body").inner_text()
