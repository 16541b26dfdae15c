"""The document page in real Chromium: co-editing with named cursors, presence, connection
status, offline edits, view-only, sanitised preview, narrow screens.

Two browser contexts are two people on two machines: separate cookies, separate IndexedDB.
"""

import os
import re
import struct
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from editor.models import Membership, Role
from editor.realtime.presence import identity
from tests.browser.conftest import (
    open_document,
    status,
    text,
    type_at_end,
    wait_synced,
    wait_text,
)
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
WS_ROUTE = re.compile(r"/ws/documents/")

SCREENSHOT_TEXT = """# Launch plan

We ship the **collaborative editor** on Monday. Everyone on the team can edit this page.

## Before the release

- Freeze the API and tag `v1.0`
- Write the upgrade notes
- Run the load test against three daphne processes

## Open questions

> Do we keep the old export format for one more release?

"""


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """docs/<name> when COLLAB_SCREENSHOTS=1 (to refresh the README's pictures), else tmp."""
    if os.environ.get("COLLAB_SCREENSHOTS") == "1":
        return ROOT / "docs" / name
    return tmp_path / name


def test_two_people_co_edit_and_see_each_others_named_cursors(
    people, document, owner, editor_user, tmp_path
):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)

    olive.locator(".cm-content").click()
    olive.keyboard.insert_text(SCREENSHOT_TEXT)
    # Undo steps are typing bursts (500 ms); end this one so the next typing is a step of its own.
    olive.evaluate("() => window.collab.undoManager.stopCapturing()")
    olive.keyboard.type("Olive types here")
    wait_text(eddie, "## Open questions", "Olive types here")

    # Eddie selects a word in the second paragraph and types after the list.
    eddie.locator(".cm-content").click()
    eddie.keyboard.press("Control+End")
    eddie.keyboard.type("\n\nEddie: I can take the upgrade notes.")
    wait_text(olive, "Eddie: I can take the upgrade notes.")
    assert text(olive) == text(eddie)
    eddie.locator(".cm-line", has_text="Write the upgrade notes").click()
    eddie.keyboard.press("End")
    eddie.keyboard.press("Shift+Home")

    # Each sees the other's cursor, labelled with the other's name, and both in the presence bar.
    olive.locator(".cm-ySelectionInfo", has_text="eddie").wait_for()
    eddie.locator(".cm-ySelectionInfo", has_text="olive").wait_for()
    olive.locator(".cm-ySelection").first.wait_for()  # Eddie's selection is highlighted
    for page in (olive, eddie):
        page.locator('#presence .presence-avatar[data-name="olive"]').wait_for()
        page.locator('#presence .presence-avatar[data-name="eddie"]').wait_for()
        assert status(page) == "Connected"
    # The preview renders the shared text.
    assert olive.locator("#preview h1").inner_text() == "Launch plan"
    assert eddie.locator("#preview li", has_text="upgrade notes").count() == 1

    # Per-user undo: Olive's undo takes back her own typing, not Eddie's.
    olive.locator(".cm-content").focus()
    olive.keyboard.press("Control+z")
    wait_text(eddie, "Eddie: I can take the upgrade notes.", absent=("Olive types here",))
    assert "## Open questions" in text(olive)
    olive.keyboard.press("Control+Shift+Z")  # a real keyboard sends "Z" with Shift
    wait_text(eddie, "Olive types here")
    olive.locator(".cm-ySelectionInfo", has_text="eddie").wait_for()

    # A third person joins for the picture: two remote cursors on Olive's screen.
    maria = make_user("maria")
    Membership.objects.create(document=document, user=maria, role=Role.EDITOR)
    third = people.page(maria, document)
    third.locator(".cm-line", has_text="Do we keep the old export format").click()
    third.keyboard.press("End")
    third.keyboard.type(" I say yes")
    wait_text(olive, "one more release? I say yes")
    olive.locator(".cm-ySelectionInfo", has_text="maria").wait_for()
    olive.locator('#presence .presence-avatar[data-name="maria"]').wait_for()

    path = screenshot_path(tmp_path, "screenshot.png")
    olive.screenshot(path=str(path))
    assert png_size(path) == (1280, 800)
    assert olive.errors == [] and eddie.errors == []


def rgb(color: str) -> str:
    """``#rrggbb`` as the browser computes it: ``rgb(r, g, b)``."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def test_each_person_has_the_colour_the_server_gives_them_on_every_screen(
    people, document, owner, editor_user
):
    colors = {"olive": identity(owner)["color"], "eddie": identity(editor_user)["color"]}
    assert colors["olive"] != colors["eddie"]
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    for page, other in ((olive, "eddie"), (eddie, "olive")):
        page.locator(".cm-content").click()
        page.keyboard.type(f"{other} sees me here. ")

    for page, other in ((olive, "eddie"), (eddie, "olive")):
        label = page.locator(".cm-ySelectionInfo", has_text=other)
        label.wait_for()
        caret = page.locator(".cm-ySelectionCaret", has=label)
        assert caret.evaluate("e => getComputedStyle(e).backgroundColor") == rgb(colors[other])
        for name, color in colors.items():
            avatar = page.locator(f'#presence .presence-avatar[data-name="{name}"]')
            avatar.wait_for()
            assert avatar.evaluate("e => e.style.getPropertyValue('--user-color')") == color
    assert olive.errors == [] and eddie.errors == []


def test_edits_made_offline_survive_a_reload_and_merge_on_reconnect(
    people, document, owner, editor_user
):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    type_at_end(olive, "Shared start.")
    wait_text(eddie, "Shared start.")

    # Olive loses the network. Her page says so at once, and she keeps typing.
    olive.context.set_offline(True)
    olive.wait_for_function("() => document.querySelector('#status').dataset.state === 'offline'")
    assert status(olive) == "Offline"
    type_at_end(olive, " Typed on the train.")
    type_at_end(eddie, " Eddie, online.")
    wait_text(olive, "Typed on the train.")
    # It reached IndexedDB, and nobody else.
    stored = olive.evaluate(
        """async (name) => {
            const db = await new Promise((resolve, reject) => {
                const request = indexedDB.open(name)
                request.onsuccess = () => resolve(request.result)
                request.onerror = () => reject(request.error)
            })
            const updates = await new Promise((resolve) => {
                const request = db.transaction('updates').objectStore('updates').getAll()
                request.onsuccess = () => resolve(request.result)
            })
            db.close()
            const { Y } = window.collab
            const doc = new Y.Doc()
            for (const update of updates) Y.applyUpdate(doc, update)
            return doc.getText('codemirror').toString()
        }""",
        f"collab-doc-{document.pk}",
    )
    assert "Typed on the train." in stored
    wait_text(eddie, "Eddie, online.")
    assert "Typed on the train." not in text(eddie)

    # She reloads before the network is really back: the page loads, the socket does not.
    blocked = {"on": True}

    def socket(route):
        if blocked["on"]:
            route.close(code=1011, reason="test: server unreachable")
        else:
            route.connect_to_server()

    olive.context.route_web_socket(WS_ROUTE, socket)
    olive.context.set_offline(False)
    olive.reload()
    olive.wait_for_function("() => window.collab !== undefined")
    # Her offline words come back from IndexedDB alone.
    wait_text(olive, "Shared start.", "Typed on the train.")
    olive.locator(".cm-content", has_text="Typed on the train.").wait_for()
    olive.wait_for_function(
        "() => /^Reconnecting/.test(document.querySelector('#status .status-text').textContent)"
    )
    assert "Typed on the train." not in text(eddie)

    # The server is reachable again: both converge, nothing lost.
    blocked["on"] = False
    olive.evaluate("() => window.collab.provider.retryNow()")  # rather than wait out the backoff
    wait_synced(olive)
    final = wait_text(eddie, "Typed on the train.", "Eddie, online.", "Shared start.")
    wait_text(olive, "Eddie, online.")
    assert text(olive) == final
    assert status(olive) == "Connected"
    assert olive.errors == [] and eddie.errors == []


def test_the_status_counts_down_while_reconnecting_and_recovers(people, document, owner):
    page = people.context(owner).new_page()
    drop = {"on": False}
    routes = []

    def socket(route):
        if drop["on"]:
            route.close(code=1012, reason="test: restarting")
        else:
            routes.append(route.connect_to_server())
            routes.append(route)

    page.context.route_web_socket(WS_ROUTE, socket)
    open_document(page, document)
    assert status(page) == "Connected"

    # Jitter at the top of each window, so the delays are known: 0.5 s, 1 s, 2 s, 4 s...
    page.evaluate("() => { Math.random = () => 0.99 }")
    # The server "restarts": the socket closes and new ones are refused for a while.
    drop["on"] = True
    routes[-1].close(code=1012, reason="test: restarting")
    page.locator("#status[data-state=reconnecting]").wait_for()
    # After a few refusals the wait is long enough to count down in whole seconds.
    page.wait_for_function(
        "() => /^Reconnecting in [2-9] s$/.test("
        "document.querySelector('#status .status-text').textContent)"
    )
    # The server is back; "Retry now" does not wait out the backoff.
    drop["on"] = False
    page.locator("#status .status-retry").click()
    page.wait_for_function("() => document.querySelector('#status').dataset.state === 'connected'")
    wait_synced(page)
    type_at_end(page, "still here")
    wait_text(page, "still here")


def test_an_expired_session_says_to_log_in_again(people, document, owner):
    page = people.page(owner, document)
    page.context.clear_cookies()
    page.evaluate("() => window.collab.provider.ws.close()")  # as if the server restarted

    page.locator("#status[data-state=denied]").wait_for()
    notice = page.locator("#doc-notice")
    assert "Your session expired" in notice.inner_text()
    link = notice.locator("a", has_text="log in again")
    assert link.get_attribute("href") == f"/accounts/login/?next=%2Fdocuments%2F{document.pk}%2F"


def test_logging_out_in_one_tab_signs_the_documents_other_tab_out(people, document, owner):
    editing = people.page(owner, document)
    other_tab = editing.context.new_page()
    other_tab.goto(editing.url)

    other_tab.locator(".topnav .menu summary").click()  # the account menu
    other_tab.get_by_role("button", name="Log out").click()
    other_tab.wait_for_url("**/accounts/login/**")

    editing.locator("#status[data-state=denied]").wait_for()
    assert editing.locator("#status .status-text").inner_text() == "Signed out"
    assert "You logged out — log in again" in editing.locator("#doc-notice").inner_text()


def test_a_new_password_signs_the_other_browsers_out_and_keeps_this_one(people, document, owner):
    # The server checks the old password with its own hashers (the tests' is MD5, not one).
    # Written with update(), which sends no signal: a save would announce a new password.
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "browser-tests")
    type(owner).objects.filter(pk=owner.pk).update(password=hashed)
    owner.refresh_from_db()  # the sessions below hold a hash of the password they log in with
    elsewhere = people.page(owner, document)  # another browser: a session of its own
    here = people.page(owner, document)
    account = here.context.new_page()

    account.goto("/accounts/password_change/")
    account.fill("#id_old_password", PASSWORD)
    for field in ("#id_new_password1", "#id_new_password2"):
        account.fill(field, "a brand new passphrase 73")
    account.get_by_role("button", name="Change password").click()
    account.wait_for_url("**/password_change/done/")

    elsewhere.locator("#status[data-state=denied]").wait_for()
    notice = elsewhere.locator("#doc-notice").inner_text()
    assert "Your password was changed — log in again" in notice
    type_at_end(here, "still editing")
    wait_text(here, "still editing")
    assert status(here) == "Connected"


def test_a_viewer_sees_live_changes_but_cannot_type(people, document, owner, viewer):
    olive = people.page(owner, document)
    vera = people.page(viewer, document)

    assert vera.locator("#role-badge").inner_text() == "view only"
    # A viewer lands on the rendered preview; the text is still there to select and copy.
    assert vera.locator("#workspace").get_attribute("data-mode") == "preview"
    assert not vera.locator(".editor-pane").is_visible()
    vera.locator("#mode [data-mode=split]").click()
    assert vera.locator(".cm-content").get_attribute("contenteditable") == "false"
    assert vera.locator("#doc-title").count() == 0  # no title editing
    assert vera.locator("[data-history=form]").count() == 0  # no "Save version"
    assert vera.locator("[data-history=restore]").count() == 0

    type_at_end(olive, "Owner's words.")
    wait_text(vera, "Owner's words.")
    vera.locator(".cm-content").click()
    vera.keyboard.type("VIEWER WAS HERE")
    vera.keyboard.press("Enter")
    type_at_end(olive, " More.")
    wait_text(vera, "Owner's words. More.")
    assert "VIEWER WAS HERE" not in text(vera)
    assert "VIEWER WAS HERE" not in text(olive)
    # Olive sees Vera in the presence bar.
    olive.locator('#presence .presence-avatar[data-name="vera"]').wait_for()


PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[click me](javascript:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">raw link</a>',
    '<iframe src="javascript:window.__pwned=1"></iframe>',
    '![img](x" onerror="window.__pwned=1)',
]


def test_markdown_cannot_run_script_in_anyones_browser(people, document, owner, editor_user):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)

    olive.locator(".cm-content").click()
    olive.keyboard.insert_text("# Safe\n\n" + "\n\n".join(PAYLOADS) + "\n\nThe end.\n")
    wait_text(eddie, "The end.")
    for page in (olive, eddie):
        page.wait_for_function(
            "() => document.querySelector('#preview').textContent.includes('The end.')"
        )
        preview = page.locator("#preview")
        for selector in ("script", "iframe", "[onerror]", "[onload]", "a[href^='javascript']"):
            assert preview.locator(selector).count() == 0, selector
        for img in preview.locator("img").all():
            assert img.get_attribute("onerror") is None
        # Raw HTML is shown as text, not dropped: the co-author sees what was typed.
        assert "<script>window.__pwned=1</script>" in preview.inner_text()
        # Try the "link" anyway.
        preview.get_by_text("click me", exact=False).first.click()
        assert page.evaluate("() => window.__pwned") is None
        assert page.errors == []


def test_it_works_on_a_phone_sized_screen(people, document, owner, editor_user, tmp_path):
    eddie = people.page(editor_user, document)
    type_at_end(eddie, "# Notes\n\nWritten on a laptop.")
    phone = people.page(owner, document, viewport={"width": 390, "height": 844})
    wait_text(phone, "Written on a laptop.")

    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px)"
    # One pane at a time: the editor, then the preview.
    assert phone.locator(".editor-pane").is_visible()
    assert not phone.locator(".preview-pane").is_visible()
    assert not phone.locator("#mode [data-mode=split]").is_visible()
    for selector in ("#doc-title", "#status", "#presence", "#history-toggle", "#help-toggle"):
        box = phone.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    type_at_end(phone, "\n\nAnd on a phone.")
    wait_text(eddie, "And on a phone.")
    phone.screenshot(path=str(screenshot_path(tmp_path, "screenshot-phone.png")))
    phone.locator("#mode [data-mode=preview]").click()
    phone.locator("#preview h1", has_text="Notes").wait_for()
    assert not phone.locator(".editor-pane").is_visible()


def test_the_title_is_renamed_in_place(people, document, owner):
    page = people.page(owner, document)
    title = page.locator("#doc-title")
    title.fill("Quarterly plan")
    title.press("Escape")
    assert title.input_value() == "Meeting notes"

    title.fill("Quarterly plan")
    title.press("Enter")
    page.locator("#toast", has_text="Renamed").wait_for()
    document.refresh_from_db()
    assert document.title == "Quarterly plan"
    assert page.title().startswith("Quarterly plan")
    assert page.evaluate("() => window.collab.provider.synced")  # no reload happened


def test_keyboard_shortcuts_open_the_help_and_switch_views(people, document, owner):
    page = people.page(owner, document)
    page.locator("#history-toggle").focus()
    page.keyboard.press("?")
    page.locator("#help").wait_for()
    page.keyboard.press("Escape")
    page.locator("#help").wait_for(state="hidden")
    page.locator(".cm-content").click()
    page.keyboard.press("Control+Alt+p")
    page.wait_for_function("() => document.querySelector('#workspace').dataset.mode === 'preview'")
    page.keyboard.press("Control+Alt+p")
    page.wait_for_function("() => document.querySelector('#workspace').dataset.mode === 'edit'")
