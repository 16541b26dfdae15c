"""Export in real Chromium (writers' round 2, item 2): the Export menu downloads the text and a
standalone HTML page that opens harmless even when co-authors typed script; Print leaves the
rendered preview alone on the page, in every layout, over as many pages as it needs."""

from pathlib import Path

import pytest

from tests.browser.conftest import type_at_end, wait_text

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = (
    '<img src=x onerror="window.pwned = 1"> <script>window.pwned = 2</script> '
    "[click](javascript:window.pwned=3)"
)


def download(page, label: str):
    page.locator("#export-menu summary").click()
    with page.expect_download() as info:
        page.locator("#export-menu a", has_text=label).click()
    return info.value


def test_the_text_and_a_page_of_it_can_be_downloaded(people, document, owner, viewer, tmp_path):
    olive = people.page(owner, document)
    type_at_end(olive, f"# Plan\n\nShip it -- soon.\n\n{HOSTILE}\n")
    vera = people.page(viewer, document)  # a viewer may export too
    wait_text(vera, "Ship it")

    markdown = download(vera, "Download .md")
    assert markdown.suggested_filename == "Meeting notes.md"
    assert Path(markdown.path()).read_text(encoding="utf-8") == olive.evaluate(
        "() => window.collab.text.toString()"
    )
    assert not vera.locator("#export-menu").evaluate("menu => menu.open")  # closed after

    html = download(vera, "Download .html")
    assert html.suggested_filename == "Meeting notes.html"
    saved = tmp_path / "Meeting notes.html"
    html.save_as(saved)

    # Opened from disk as someone would: it reads like the preview, and nothing in it runs.
    reader = people.page(None)
    reader.goto(saved.as_uri())
    reader.locator("h1", has_text="Plan").wait_for()
    assert reader.title() == "Meeting notes"
    assert "Ship it – soon." in reader.locator("article").inner_text()
    assert reader.locator("script, iframe, [onerror]").count() == 0
    assert reader.locator("a[href^='javascript']").count() == 0
    reader.wait_for_timeout(300)  # an onerror would have fired by now
    assert reader.evaluate("() => window.pwned") is None
    assert olive.errors == [] and vera.errors == []


def test_print_shows_the_preview_alone_in_any_layout(people, document, owner):
    olive = people.page(owner, document)
    paragraphs = "\n\n".join(f"Paragraph {i} of a long plan." for i in range(120))
    type_at_end(olive, "# Printed plan\n\n")
    olive.keyboard.insert_text(paragraphs)  # as a paste
    olive.locator("#preview h1", has_text="Printed plan").wait_for()
    olive.locator("#mode [data-mode=edit]").click()  # writing only: the preview is hidden
    assert not olive.locator("#preview").is_visible()

    olive.evaluate("() => { window.printed = 0; window.print = () => { window.printed += 1 } }")
    olive.locator("#export-menu summary").click()
    olive.locator("#export-menu [data-export=print]").click()
    assert olive.evaluate("() => window.printed") == 1
    assert not olive.locator("#export-menu").evaluate("menu => menu.open")

    olive.emulate_media(media="print")
    for chrome in (".topbar", ".doc-bar", ".editor-pane", "#history"):
        assert not olive.locator(chrome).is_visible(), chrome
    preview = olive.locator("#preview")
    assert preview.is_visible()
    assert preview.locator("p", has_text="Paragraph 119 of a long plan.").is_visible()
    # Nothing clipped to the window: the page grows with the text, so the PDF has many pages.
    assert olive.evaluate("() => document.scrollingElement.scrollHeight") > 2000
    pdf = olive.pdf()
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type/Page") > 2
    olive.emulate_media(media="screen")
    assert olive.locator(".editor-pane").is_visible()
    assert olive.errors == []


def test_the_menu_closes_with_escape_and_outside_clicks(people, document, viewer):
    vera = people.page(viewer, document)
    menu = vera.locator("#export-menu")

    menu.locator("summary").click()
    assert menu.locator("a", has_text="Download .html").is_visible()
    vera.keyboard.press("Escape")
    assert not menu.evaluate("menu => menu.open")
    assert vera.evaluate("() => document.activeElement.tagName") == "SUMMARY"

    menu.locator("summary").click()
    vera.locator("#preview").click(position={"x": 10, "y": 10})  # away from the menu
    assert not menu.evaluate("menu => menu.open")
    assert vera.errors == []
