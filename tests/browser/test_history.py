"""The history panel in real Chromium, against the versions API (issue 6): list, save a named
version, preview one, restore it for everyone; undo a restore; see what changed since a version
or between two; automatic versions (writers' round 2)."""

import time

import pytest

from editor.models import Version
from tests import live
from tests.browser.conftest import People, open_document, text, type_at_end, wait_text

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


def save_version(page, name: str) -> None:
    if not page.locator("#history").is_visible():
        page.locator("#history-toggle").click()
    if page.locator("[data-history=detail]").is_visible():
        page.locator("[data-history=back]").click()
    page.locator("#version-name").fill(name)
    page.locator("[data-history=form] button").click()
    page.locator(".version", has_text=name).wait_for()


def test_a_restore_can_be_undone_from_the_history_panel(people, document, owner, editor_user):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    type_at_end(olive, "Kept draft.")
    save_version(olive, "Draft")
    type_at_end(olive, " Work a restore would lose.")
    wait_text(eddie, "Work a restore would lose.")

    olive.locator(".version", has_text="Draft").click()
    olive.locator("[data-history=restore]").click()
    olive.locator("[data-history=restore-confirm]").click()
    olive.locator("#toast", has_text="The text before it is kept as a version").wait_for()
    for page in (olive, eddie):
        wait_text(page, "Kept draft.", absent=("Work a restore would lose.",))

    # The text the restore replaced is the newest version, by whoever restored.
    kept = olive.locator(".version").first
    kept.locator(".version-name", has_text="Before restore of “Draft”").wait_for()
    assert "olive" in kept.inner_text()
    kept.click()
    olive.locator("[data-history=text]", has_text="Work a restore would lose.").wait_for()
    olive.locator("[data-history=restore]").click()
    olive.locator("[data-history=restore-confirm]").click()

    for page in (olive, eddie):
        wait_text(page, "Kept draft. Work a restore would lose.")
    assert text(olive) == text(eddie) == "Kept draft. Work a restore would lose."
    assert olive.errors == [] and eddie.errors == []


def test_the_changes_since_a_version_are_shown_line_by_line(people, document, owner, viewer):
    olive = people.page(owner, document)
    type_at_end(olive, "# Plan\nkeep this\ndrop me")
    save_version(olive, "First")
    type_at_end(olive, "")
    for _ in "drop me":
        olive.keyboard.press("Backspace")
    olive.keyboard.type("<b>new</b> <script>window.hacked = 1</script> line")
    save_version(olive, "Second")
    type_at_end(olive, "\nand one more")

    vera = people.page(viewer, document)  # viewers may compare too
    vera.locator("#history-toggle").click()
    vera.locator(".version", has_text="First").click()
    vera.locator("[data-history-view=changes]").click()
    diff = vera.locator("[data-history=diff]")
    vera.locator("[data-history=diff-summary]", has_text="to the current text").wait_for()
    assert "2 lines added, 1 removed" in vera.locator("[data-history=diff-summary]").inner_text()
    assert lines(diff, ".diff-del") == ["-drop me"]
    assert lines(diff, ".diff-add") == [
        "+<b>new</b> <script>window.hacked = 1</script> line",
        "+and one more",
    ]
    assert diff.locator(".diff-context", has_text="keep this").count() == 1
    # Shown as text: nothing in it became markup, nothing ran.
    assert diff.locator("b, script").count() == 0
    assert vera.evaluate("() => window.hacked") is None

    # Between two versions, from the older to the newer whichever one is open.
    vera.locator("[data-history=against]").select_option(label=_option(vera, "Second"))
    vera.locator("[data-history=diff-summary]", has_text="to “Second”").wait_for()
    assert diff.locator(".diff-add").count() == 1
    vera.locator("[data-history=back]").click()
    vera.locator(".version", has_text="Second").click()
    vera.locator("[data-history=title]", has_text="Second").wait_for()
    assert vera.locator("[data-history-view=changes]").get_attribute("aria-pressed") == "true"
    vera.locator("[data-history=against]").select_option(label=_option(vera, "First"))
    vera.locator("[data-history=diff-summary]", has_text="From “First” to “Second”").wait_for()
    assert lines(diff, ".diff-del") == ["-drop me"]

    # The same version against the current text: the line added since.
    vera.locator("[data-history=against]").select_option("current")
    vera.locator("[data-history=diff-summary]", has_text="From “Second” to the current").wait_for()
    assert lines(diff, ".diff-add")[-1] == "+and one more"
    vera.locator("[data-history-view=text]").click()
    vera.locator("[data-history=text]", has_text="window.hacked = 1").wait_for()
    assert not diff.is_visible()
    assert olive.errors == [] and vera.errors == []


def lines(diff, kind: str) -> list[str]:
    return [line.rstrip("\n") for line in diff.locator(kind).all_inner_texts()]


def _option(page, name: str) -> str:
    labels = page.locator("[data-history=against] option").all_text_contents()
    found = [label for label in labels if label.startswith(f"{name} · ")]
    assert len(found) == 1, labels
    return found[0]


# -- automatic versions: a server of their own, with a one-second quiet period ----------------


def eventually(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def quick_server(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        servers = live.LiveServers(
            1,
            tmp_path_factory.mktemp("autoversion-server"),
            DJANGO_ALLOW_ASYNC_UNSAFE="",
            AUTO_VERSION_QUIET_SECONDS=1,
        )
        servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def quick_people(transactional_db, quick_server, browser):
    crowd = People(browser, quick_server)
    yield crowd
    crowd.close()
    live.wait_quiet_database()


def test_versions_are_kept_automatically_while_people_write(
    quick_people, document, owner, editor_user
):
    olive = quick_people.page(owner, document)
    type_at_end(olive, "Typed, then a pause.")
    # (A slow machine may also keep a version of part of it, mid-typing: that is a pause too.)
    automatic = Version.objects.filter(document=document, automatic=True)
    eventually(lambda: automatic.filter(text="Typed, then a pause.").exists())

    olive.locator("#history-toggle").click()
    newest = olive.locator(".version").first
    newest.wait_for()
    assert "version-auto" in newest.get_attribute("class")
    assert "Automatic version" in newest.inner_text()
    assert "automatic ·" in newest.inner_text()

    # The next pause brings the next version, which a colleague finds in the panel.
    type_at_end(olive, " And more.")
    eventually(lambda: automatic.filter(text="Typed, then a pause. And more.").exists())
    eddie = quick_people.page(editor_user)
    open_document(eddie, document)
    eddie.locator("#history-toggle").click()
    eddie.locator(".version.version-auto").first.click()
    eddie.locator("[data-history=text]", has_text="Typed, then a pause. And more.").wait_for()

    # Nothing is kept twice: while nobody types, no new version comes.
    olive.wait_for_timeout(2500)
    texts = list(automatic.order_by("created_at").values_list("text", flat=True))
    assert len(texts) == len(set(texts)) and texts[-1] == "Typed, then a pause. And more."
    assert olive.errors == [] and eddie.errors == []
