"""Images in real Chromium: a PNG pasted or dropped into the editor is uploaded, its Markdown
lands where it was put, the preview shows it (loaded, not a broken icon) to its author and to
a co-author; refusals leave no placeholder and say why; a viewer cannot add one; someone who
may not view the document cannot load it, even through Markdown of their own.

Paste and drop are synthetic events carrying a DataTransfer with a File of real PNG bytes,
dispatched to the editor's content element, which is what a browser does for a real paste or
drop (Playwright cannot put files on the system clipboard of a headless browser).
"""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from editor.models import Document, DocumentImage
from tests.browser.conftest import text, type_at_end, wait_text

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE_URL = r"/documents/{doc}/images/[0-9a-f-]{{36}}"
PASTE = """([data, name, type]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0))
    const transfer = new DataTransfer()
    transfer.items.add(new File([bytes], name, { type }))
    const event = new ClipboardEvent(
        'paste', { clipboardData: transfer, bubbles: true, cancelable: true })
    window.collab.view.contentDOM.dispatchEvent(event)
    return event.defaultPrevented
}"""
DROP = """([data, name, type, pos]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0))
    const transfer = new DataTransfer()
    transfer.items.add(new File([bytes], name, { type }))
    const view = window.collab.view
    const at = view.coordsAtPos(pos)
    const event = new DragEvent('drop', {
        dataTransfer: transfer, clientX: at.left + 0.5, clientY: (at.top + at.bottom) / 2,
        bubbles: true, cancelable: true,
    })
    view.contentDOM.dispatchEvent(event)
    return event.defaultPrevented
}"""
PREVIEW_IMAGE_LOADED = """(width) => {
    const images = [...document.querySelectorAll('#preview img')]
    return images.length === 1 && images[0].complete && images[0].naturalWidth === width
}"""
WATCH_CSP = """document.addEventListener('securitypolicyviolation', (v) => {
    (window.__csp = window.__csp || []).push(`${v.violatedDirective} ${v.blockedURI}`)
})"""


def png(width: int = 40, height: int = 30) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def uploads_seen(page) -> list[str]:
    """The image uploads the page sends, recorded as they go."""
    sent: list[str] = []
    page.on(
        "request",
        lambda request: sent.append(request.url) if "/images/" in request.url else None,
    )
    return sent


@pytest.fixture(autouse=True)
def remove_stored_files():
    """The live server keeps images under the var dir; the files go with the test."""
    yield
    for image in DocumentImage.objects.all():
        image.file.storage.delete(image.file.name)


def test_a_pasted_image_is_uploaded_and_everyone_sees_it(people, document, owner, editor_user):
    olive = people.page(owner)
    olive.add_init_script(WATCH_CSP)
    olive.goto(f"/documents/{document.pk}/")
    olive.wait_for_function("() => window.collab?.provider.synced")
    eddie = people.page(editor_user, document)
    type_at_end(olive, "Our plan:\n\n")

    assert olive.evaluate(PASTE, [png(40, 30), "diagram.png", "image/png"]) is True

    typed = wait_text(olive, "![diagram](/documents/", absent=("Uploading",))
    pattern = rf"Our plan:\n\n!\[diagram\]\({IMAGE_URL.format(doc=document.pk)}\)"
    assert re.fullmatch(pattern, typed), typed
    image = DocumentImage.objects.get()
    assert (image.uploader, image.width, image.height) == (owner, 40, 30)
    assert image.get_absolute_url() in typed
    for page in (olive, eddie):
        wait_text(page, image.get_absolute_url())
        page.wait_for_function(PREVIEW_IMAGE_LOADED, arg=40)
        assert page.locator("#preview img").get_attribute("alt") == "diagram"
    assert text(eddie) == typed
    assert olive.evaluate("() => window.__csp || []") == []
    assert olive.errors == [] and eddie.errors == []


def test_a_dropped_image_lands_where_it_was_dropped_with_a_harmless_name(people, document, owner):
    olive = people.page(owner, document)
    type_at_end(olive, "First line\nSecond line")
    hostile = "a](javascript:alert(1)) <img src=x onerror=alert(1)>.png"

    dropped = olive.evaluate(DROP, [png(12, 10), hostile, "image/png", len("First line\n")])

    assert dropped is True
    typed = wait_text(olive, "](/documents/", absent=("Uploading",))
    alt = r"a\](javascript:alert(1)) <img src=x onerror=alert(1)>"
    expected = rf"First line\n!\[{re.escape(alt)}\]\({IMAGE_URL.format(doc=document.pk)}\)"
    assert re.fullmatch(expected + "Second line", typed), typed
    olive.wait_for_function(PREVIEW_IMAGE_LOADED, arg=12)
    preview = olive.locator("#preview")
    assert preview.locator("img").get_attribute("alt") == (
        "a](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert preview.locator("a").count() == 0
    assert olive.errors == []  # no alert() dialog, no script error


@pytest.mark.parametrize(
    ("data", "name", "type", "message"),
    [
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
            b"<script>alert(2)</script></svg>",
            "logo.svg",
            "image/svg+xml",
            "“logo.svg” was not added: SVG images are not accepted (they can carry scripts)",
        ),
        (
            b"<html><script>alert(document.cookie)</script></html>",
            "cat.png",
            "image/png",
            "“cat.png” was not added: The file is not an image collab accepts",
        ),
    ],
    ids=["svg", "html-disguised-as-png"],
)
def test_a_refused_file_leaves_no_placeholder_and_says_why(
    people, document, owner, data, name, type, message
):
    olive = people.page(owner, document)
    type_at_end(olive, "Before. ")

    olive.evaluate(PASTE, [b64(data), name, type])

    olive.locator("#toast", has_text=message).wait_for()
    assert wait_text(olive, "Before. ", absent=("Uploading", "![")) == "Before. "
    assert not DocumentImage.objects.exists()
    assert olive.errors == []


def test_an_image_over_the_limit_is_refused_before_it_is_sent(people, document, owner):
    olive = people.page(owner, document)
    sent = uploads_seen(olive)
    type_at_end(olive, "Text.")

    olive.evaluate(
        """() => {
            const transfer = new DataTransfer()
            const bytes = new Uint8Array(11 * 1024 * 1024)
            transfer.items.add(new File([bytes], 'huge.png', { type: 'image/png' }))
            window.collab.view.contentDOM.dispatchEvent(new ClipboardEvent(
                'paste', { clipboardData: transfer, bubbles: true, cancelable: true }))
        }"""
    )

    olive.locator(
        "#toast", has_text="“huge.png” is 11.0 MiB; images are limited to 10.0 MiB."
    ).wait_for()
    assert text(olive) == "Text."
    assert sent == []


def test_text_pasted_with_a_picture_of_it_is_pasted_as_text(people, document, owner):
    # What a word processor puts on the clipboard: the text, and an image of it.
    olive = people.page(owner, document)
    sent = uploads_seen(olive)
    type_at_end(olive, "Quote: ")

    olive.evaluate(
        """([data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0))
            const transfer = new DataTransfer()
            transfer.setData('text/plain', 'copied words')
            transfer.items.add(new File([bytes], 'image.png', { type: 'image/png' }))
            window.collab.view.contentDOM.dispatchEvent(new ClipboardEvent(
                'paste', { clipboardData: transfer, bubbles: true, cancelable: true }))
        }""",
        [png()],
    )

    assert wait_text(olive, "copied words") == "Quote: copied words"
    assert sent == [] and not DocumentImage.objects.exists()


def test_a_viewer_cannot_add_an_image(people, document, owner, viewer):
    olive = people.page(owner, document)
    type_at_end(olive, "Read only here.")
    vera = people.page(viewer, document)
    wait_text(vera, "Read only here.")
    vera.locator("#mode [data-mode=split]").click()  # a reader lands on the preview: the text too
    sent = uploads_seen(vera)

    vera.evaluate(PASTE, [png(), "mine.png", "image/png"])
    vera.evaluate(DROP, [png(), "mine.png", "image/png", 0])

    vera.locator("#toast", has_text="You can only view this document").wait_for()
    assert text(vera) == "Read only here." == text(olive)
    assert sent == [] and not DocumentImage.objects.exists()


def test_someone_who_may_not_view_the_document_cannot_load_its_images(
    people, document, owner, stranger
):
    olive = people.page(owner, document)
    type_at_end(olive, "Secret: ")
    olive.evaluate(PASTE, [png(20, 20), "secret.png", "image/png"])
    wait_text(olive, "](/documents/", absent=("Uploading",))
    olive.wait_for_function(PREVIEW_IMAGE_LOADED, arg=20)
    url = DocumentImage.objects.get().get_absolute_url()

    # The stranger writes the image's URL into a document of their own.
    theirs = Document.objects.create_for(stranger, "Mine")
    sam = people.page(stranger, theirs)
    type_at_end(sam, f"![stolen]({url})")
    sam.wait_for_function(
        """() => {
            const img = document.querySelector('#preview img')
            return img && img.complete
        }"""
    )
    assert sam.evaluate("() => document.querySelector('#preview img').naturalWidth") == 0
    assert sam.request.get(url).status == 404
