"""The history panel in real Chromium, against the versions API (issue 6): list, save a named
version, preview one, restore it for everyone."""

import pytest

from tests.browser.conftest import text, type_at_end, wait_text

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_named_version_can_be_previewed_and_restored_for_everyone(
    people, document, owner, editor_user
):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    type_at_end(olive, "# Plan\n\nFirst draft text.")
    wait_text(eddie, "First draft text.")

    # Ctrl/Cmd-S opens the panel with the name field ready.
    olive.locator(".cm-content").press("Control+s")
    name = olive.locator("#version-name")
    name.wait_for()
    assert olive.evaluate("() => document.activeElement.id") == "version-name"
    name.fill("First draft")
    name.press("Enter")
    saved = olive.locator(".version", has_text="First draft")
    saved.wait_for()
    assert "olive" in saved.inner_text()

    type_at_end(olive, "\n\nLater edits.")
    wait_text(eddie, "Later edits.")

    # Eddie finds the version, previews it and restores it.
    eddie.locator("#history-toggle").click()
    eddie.locator(".version", has_text="First draft").click()
    detail = eddie.locator("[data-history=detail]")
    detail.locator("h1", has_text="Plan").wait_for()
    assert "First draft text." in detail.inner_text()
    assert "Later edits." not in detail.inner_text()
    detail.locator("[data-history=restore]").click()
    detail.locator("[data-history=restore-confirm]").click()
    eddie.locator("#toast", has_text="Restored").wait_for()

    # Both see the restored text arrive live, without reloading.
    for page in (olive, eddie):
        wait_text(page, "First draft text.", absent=("Later edits.",))
        page.locator("#preview p", has_text="First draft text.").wait_for()
    assert text(olive) == text(eddie)
    assert olive.errors == [] and eddie.errors == []


def test_a_viewer_can_read_the_history_but_not_change_it(people, document, owner, viewer):
    olive = people.page(owner, document)
    type_at_end(olive, "Version one.")
    olive.locator("#history-toggle").click()
    olive.locator("#version-name").fill("One")
    olive.locator("[data-history=form] button").click()
    olive.locator(".version", has_text="One").wait_for()

    vera = people.page(viewer, document)
    vera.locator("#history-toggle").click()
    vera.locator(".version", has_text="One").click()
    vera.locator("[data-history=detail]", has_text="Version one.").wait_for()
    assert vera.locator("[data-history=restore]").count() == 0
    assert vera.locator("#version-name").count() == 0
    vera.locator(".cm-content").press("Control+s")  # not the browser's "save page", no panel change
    assert vera.locator("[data-history=detail]").is_visible()
