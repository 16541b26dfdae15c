"""Writing polish in real Chromium (writers' round 2, items 6 and 7): the live preview renders
incrementally, never while hidden, and stays what one render of the whole text would be; a
2 MB document re-renders only what changed. (Typing latency itself is measured by
bench/browser_typing.py, not here: nothing in these tests times anything.)
"""

from __future__ import annotations

import pytest

from bench.browser_typing import markdown
from editor.models import Document
from editor.realtime.presence import identity
from tests.browser.conftest import text, type_at_end, wait_text

pytestmark = pytest.mark.django_db(transaction=True)

# Markdown whose blocks depend on each other across blank lines: loose lists, fences holding
# blank lines (and lines that look like new blocks), a lazy quote, indented code, a table, link
# references defined at the end.
TRICKY = """# Title

Para with a [reference link][one] and a [shortcut].

- loose item one

- loose item two

  continued inside item two

1. ordered
2. list

```python
def f():

# not a heading

    return 1
```

> a quote
continued lazily

    indented code

    more of it

| a | b |
|---|---|
| 1 | 2 |

~~~
a tilde fence

```
not its end
~~~

Text after.

[one]: https://example.com/one
[shortcut]: https://example.com/two "Two"
"""

# The preview's blocks against one render of the whole text, as HTML.
COMPARE = r"""() => {
    const whole = document.createElement('template')
    whole.innerHTML = window.collab.renderMarkdown(window.collab.text.toString())
    // (The history's renders have disabled task boxes, the live preview an editor's; a task's
    // line counts from the start of its chunk there, of the text here.)
    const html = (e) => e.outerHTML.replace(/ disabled=""| data-task-line="\d+"/g, '')
    const want = [...whole.content.children].map(html)
    const got = [...document.querySelectorAll('#preview .preview-chunk > *')].map(html)
    return { want, got }
}"""
IDLE = "() => !window.collab.preview.hasWork()"


def edit(page, at: str, insert: str = "", delete: int = 0, after: bool = False) -> None:
    """Replaces ``delete`` characters at the first ``at`` in the text (or just after it)."""
    page.evaluate(
        """([at, insert, remove, after]) => {
            const view = window.collab.view
            let from = view.state.doc.toString().indexOf(at)
            if (from < 0) throw new Error(`not in the text: ${at}`)
            if (after) from += at.length
            view.dispatch({ changes: { from, to: from + remove, insert } })
        }""",
        [at, insert, delete, after],
    )


def rendered_like_the_whole(page) -> None:
    page.wait_for_function(IDLE)
    result = page.evaluate(COMPARE)
    assert result["got"] == result["want"]


def test_the_preview_renders_what_one_render_of_the_whole_text_would(people, document, owner):
    olive = people.page(owner, document)
    olive.locator(".cm-content").click()
    olive.keyboard.insert_text(TRICKY)
    wait_text(olive, "[shortcut]: https://example.com/two")
    rendered_like_the_whole(olive)
    preview = olive.locator("#preview")
    assert preview.locator("a", has_text="reference link").get_attribute("href") == (
        "https://example.com/one"
    )
    assert preview.locator("ul > li > p").count() == 3  # still one loose list

    # A fence opened above the end swallows everything after it, then gives it back.
    edit(olive, "Text after.", insert="```\n")
    rendered_like_the_whole(olive)
    # The definitions are code now: the link at the top is text again.
    assert preview.locator("a", has_text="reference link").count() == 0
    edit(olive, "```\nText after.", delete=4)
    rendered_like_the_whole(olive)
    assert preview.locator("a", has_text="reference link").count() == 1
    # A blank line deleted joins two blocks; one typed inside a fence splits nothing.
    edit(olive, "- loose item one\n", delete=1, after=True)
    rendered_like_the_whole(olive)
    edit(olive, "def f():\n", insert="\n\n", after=True)
    rendered_like_the_whole(olive)
    # A reference defined at the end changes a link at the top.
    edit(olive, "example.com/one", insert="example.org/uno", delete=len("example.com/one"))
    rendered_like_the_whole(olive)
    assert preview.locator("a", has_text="reference link").get_attribute("href") == (
        "https://example.org/uno"
    )
    # And typing as a person does, here and there.
    olive.locator(".cm-line", has_text="a quote").click()
    olive.keyboard.press("End")
    olive.keyboard.type("\n\n## New section\n\n- [ ] one\n\n```\ncode")
    olive.keyboard.press("Control+Home")
    olive.keyboard.type("Opening words.\n\n")
    rendered_like_the_whole(olive)
    olive.keyboard.press("Control+a")
    olive.keyboard.press("Delete")
    olive.locator("#preview .preview-empty", has_text="Nothing here yet.").wait_for()
    assert olive.errors == []


def test_the_preview_is_not_rendered_while_hidden(people, document, owner, editor_user):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    type_at_end(olive, "# Plan\n\nShown at once.")
    olive.locator("#preview p", has_text="Shown at once.").wait_for()

    olive.locator("#mode [data-mode=edit]").click()  # Write: the preview is hidden
    olive.wait_for_function(IDLE)
    before = olive.evaluate("() => window.collab.preview.stats.chunksRendered")
    type_at_end(olive, "\n\nTyped while the preview is hidden.")
    wait_text(eddie, "Typed while the preview is hidden.")
    type_at_end(eddie, "\n\nEddie's words, while Olive writes.")
    wait_text(olive, "Typed while the preview is hidden.", "Eddie's words")
    olive.wait_for_timeout(300)  # frames pass: nothing is drawn
    assert olive.evaluate("() => window.collab.preview.stats.chunksRendered") == before
    assert "hidden" not in olive.locator("#preview").text_content()

    olive.locator("#mode [data-mode=split]").click()
    olive.locator("#preview p", has_text="Typed while the preview is hidden.").wait_for()
    olive.locator("#preview p", has_text="words, while Olive writes.").wait_for()  # Eddie’s
    rendered_like_the_whole(olive)
    assert olive.errors == [] and eddie.errors == []


def test_a_2_mb_document_renders_only_what_changed(people, document, owner, editor_user):
    big = markdown(2_000_000)
    sections = big.count("\n## Section ")
    eddie = people.page(editor_user, document)
    eddie.evaluate(
        "(text) => window.collab.view.dispatch({ changes: { from: 0, insert: text } })", big
    )
    olive = people.page(owner, document)  # opens it as it is stored
    olive.wait_for_function("(n) => window.collab.view.state.doc.length >= n", arg=len(big))
    olive.wait_for_function(IDLE, timeout=60_000)
    assert olive.locator("#preview h2").count() == sections
    stats = olive.evaluate("() => window.collab.preview.stats")
    assert stats["renders"] > 10, "the first render was not sliced over frames"

    # Typing in the middle of it re-renders that paragraph alone.
    olive.locator("#preview h2").nth(sections // 2).scroll_into_view_if_needed()
    middle = f"Section {sections // 2 + 1}:"
    olive.evaluate(
        """(at) => {
            const view = window.collab.view
            const pos = view.state.doc.toString().indexOf(at)
            view.dispatch({ selection: { anchor: pos + at.length }, scrollIntoView: true })
            view.focus()
        }""",
        middle,
    )
    before = olive.evaluate("() => window.collab.preview.stats.chunksRendered")
    olive.keyboard.type(" typed in the middle")
    olive.locator("#preview h2", has_text="typed in the middle").wait_for()
    olive.wait_for_function(IDLE)
    after = olive.evaluate("() => window.collab.preview.stats.chunksRendered")
    assert 1 <= after - before <= len(" typed in the middle")
    assert olive.locator("#preview h2").count() == sections
    assert text(olive).count("typed in the middle") == 1
    assert olive.errors == [] and eddie.errors == []


def test_the_words_and_characters_are_counted_as_anyone_types(people, document, owner, editor_user):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    counts = olive.locator("#doc-counts")
    assert counts.inner_text() == "0 words · 0 characters"
    type_at_end(olive, "# Plan\n\n- Ship the editor")
    # "#" and "-" are Markdown, not words; line breaks are not characters.
    olive.wait_for_function(
        "() => document.querySelector('#doc-counts').textContent === '4 words · 23 characters'"
    )
    wait_text(eddie, "Ship the editor")
    type_at_end(eddie, " 🚀 today")  # an emoji is one character, and no word
    wait_text(olive, "today")
    for page in (olive, eddie):
        page.wait_for_function(
            "() => document.querySelector('#doc-counts').textContent === '5 words · 31 characters'"
        )
    # Deleting across lines counts again only what changed, and right.
    olive.evaluate(
        "() => window.collab.view.dispatch({ changes: { from: 2, to: 10, insert: 'x\\ny' } })"
    )
    wait_text(eddie, "# x\nyShip the editor")
    expected = olive.evaluate(
        """() => {
            const text = window.collab.text.toString()
            const words = text.split(/\\s+/).filter((t) => /[\\p{L}\\p{N}]/u.test(t)).length
            const characters = [...text.replace(/\\n/g, '')].length
            return `${words} words · ${characters} characters`
        }"""
    )
    assert counts.inner_text() == expected
    assert olive.errors == [] and eddie.errors == []


def test_viewers_land_on_the_rendered_preview(people, document, owner, viewer):
    olive = people.page(owner, document)
    type_at_end(olive, "# Agenda\n\n- Ship it")
    vera = people.page(viewer, document)
    assert vera.locator("#workspace").get_attribute("data-mode") == "preview"
    assert vera.locator("#mode [data-mode=preview]").get_attribute("aria-pressed") == "true"
    vera.locator("#preview h1", has_text="Agenda").wait_for()
    assert vera.locator("#preview").is_visible()
    assert not vera.locator(".editor-pane").is_visible()
    # What a viewer chooses is kept for the next document they view, and apart from editing.
    vera.locator("#mode [data-mode=split]").click()
    vera.reload()
    vera.wait_for_function("() => window.collab !== undefined")
    assert vera.locator("#workspace").get_attribute("data-mode") == "split"
    assert olive.locator("#workspace").get_attribute("data-mode") == "split"
    own = Document.objects.create_for(viewer, "Vera's own notes")
    vera.goto(f"/documents/{own.pk}/")
    vera.wait_for_function("() => window.collab !== undefined")
    assert vera.locator("#workspace").get_attribute("data-mode") == "split"
    assert vera.errors == [] and olive.errors == []


def test_a_rename_shows_at_once_in_every_open_tab(people, document, owner, editor_user, viewer):
    olive = people.page(owner, document)
    olive_again = people.page(owner, document)  # a second tab of hers, in another window
    eddie = people.page(editor_user, document)
    vera = people.page(viewer, document)
    for page in (olive, olive_again, eddie, vera):
        assert page.locator("h1").count() == 1
        assert page.locator("h1").text_content() == "Meeting notes"

    title = olive.locator("#doc-title")
    title.fill("Quarterly plan")
    title.press("Enter")
    for page in (olive_again, eddie):
        page.wait_for_function(
            "() => document.querySelector('#doc-title').value === 'Quarterly plan'"
        )
    for page in (olive, olive_again, eddie, vera):
        page.wait_for_function("() => document.title.startsWith('Quarterly plan')")
        assert page.locator("h1").text_content() == "Quarterly plan"
    assert vera.locator("h1.doc-title").is_visible()

    # Through the API (a script), and a title that looks like markup stays text.
    hostile = '<img src=x onerror="window.pwned=1">'
    eddie.locator("#doc-title").click()
    eddie.locator("#doc-title").fill("Eddie is typing a name")  # not saved yet
    answer = olive.evaluate(
        """async ([url, title]) => {
            const token = document.querySelector('[name=csrfmiddlewaretoken]').value
            const response = await fetch(url, {
                method: 'PATCH', credentials: 'same-origin',
                headers: { 'Content-Type': 'application/json', 'X-CSRFToken': token },
                body: JSON.stringify({ title }),
            })
            return response.status
        }""",
        [f"/api/documents/{document.pk}/", hostile],
    )
    assert answer == 200
    for page in (olive, olive_again, vera):
        page.wait_for_function("(t) => document.querySelector('h1').textContent === t", arg=hostile)
        assert page.locator("#doc-bar img, h1 img").count() == 0
    # Eddie was typing a title of his own: what he typed stays in the field.
    eddie.wait_for_function("(t) => document.title.startsWith(t)", arg=hostile)
    assert eddie.locator("#doc-title").input_value() == "Eddie is typing a name"
    for page in (olive, olive_again, eddie, vera):
        assert page.evaluate("() => window.pwned") is None
        assert page.errors == []


TASKS = """# Launch

Some words first.

- [ ] Write the notes
- [x] Book the room
- Not a task: [ ] here

> - [ ] Quoted task

1. [ ] Numbered task
   - [X] Nested done

```
- [ ] not a task, code
```
"""


def boxes(page) -> list[tuple[bool, bool]]:
    """(checked, disabled) of each task box in the preview, in order."""
    return page.evaluate(
        "() => [...document.querySelectorAll('#preview .task-checkbox')]"
        ".map((box) => [box.checked, box.disabled])"
    )  # lists, as JSON has them


def test_task_lists_are_checkboxes_that_toggle_the_text(
    people, document, owner, editor_user, viewer
):
    olive = people.page(owner, document)
    olive.locator(".cm-content").click()
    olive.keyboard.insert_text(TASKS)
    eddie = people.page(editor_user, document)
    vera = people.page(viewer, document)
    wait_text(vera, "Nested done")
    for page in (olive, eddie, vera):
        page.wait_for_function(IDLE)
    # Ticked or not as the text says; enabled for editors only.
    assert [checked for checked, _ in boxes(olive)] == [False, True, False, False, True]
    assert [disabled for _, disabled in boxes(olive)] == [False] * 5
    assert [checked for checked, _ in boxes(vera)] == [False, True, False, False, True]
    assert [disabled for _, disabled in boxes(vera)] == [True] * 5
    item = olive.locator("#preview li", has_text="Write the notes")
    assert item.locator(".task-checkbox").get_attribute("aria-label") == "To do: Write the notes"
    assert "[ ]" not in item.inner_text()

    # Eddie ticks "Write the notes", then the quoted and the nested ones; Olive unticks a box.
    eddie.locator("#preview li", has_text="Write the notes").locator(".task-checkbox").click()
    wait_text(olive, "- [x] Write the notes")
    eddie.locator("#preview li", has_text="Quoted task").locator(".task-checkbox").click()
    wait_text(olive, "> - [x] Quoted task")
    eddie.locator("#preview").get_by_role("checkbox", name="Done: Nested done").click()
    wait_text(olive, "   - [ ] Nested done")
    olive.locator("#preview li", has_text="Book the room").locator(".task-checkbox").click()
    final = wait_text(eddie, "- [ ] Book the room")
    assert "- [ ] not a task, code" in final and "Not a task: [ ] here" in final
    for page in (olive, eddie, vera):
        page.wait_for_function(
            "() => document.querySelectorAll('#preview .task-checkbox:checked').length === 2"
        )
    assert [checked for checked, _ in boxes(vera)] == [True, False, True, False, False]

    # A viewer's boxes do nothing, even forced.
    vera.locator("#preview .task-checkbox").first.click(force=True)
    vera.wait_for_timeout(200)
    assert text(vera) == final
    assert boxes(vera)[0] == [True, True]
    assert olive.errors == [] and eddie.errors == [] and vera.errors == []


def test_hostile_task_items_stay_text(people, document, owner, editor_user):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    olive.locator(".cm-content").click()
    olive.keyboard.insert_text(
        '- [ ] <img src=x onerror="window.pwned=1">\n'
        "- [x] [click](javascript:window.pwned=1)\n"
        '- [ ] <input type="checkbox" onclick="window.pwned=1">\n'
        "- [ ]<script>window.pwned=1</script>\n\nThe end.\n"
    )
    wait_text(eddie, "The end.")
    eddie.wait_for_function(IDLE)
    preview = eddie.locator("#preview")
    assert preview.locator("img, script, [onerror], [onclick], a[href^=javascript]").count() == 0
    # Each task item gets a box made by the page; the raw <input> is text.
    assert preview.locator("input").count() == preview.locator("input.task-checkbox").count() == 3
    assert "<input type=" in preview.inner_text()
    for box in preview.locator(".task-checkbox").all():
        box.click()
    wait_text(olive, "- [x] <img", "- [ ] [click]")
    assert eddie.evaluate("() => window.pwned") is None
    assert olive.evaluate("() => window.pwned") is None
    assert olive.errors == [] and eddie.errors == []


def test_enter_continues_lists_and_keeps_code_fences_whole(people, document, owner, viewer):
    olive = people.page(owner, document)
    cases = [
        ("- one|", "- one\n- two"),
        ("- [x] done|", "- [x] done\n- [ ] two"),
        ("1. first|", "1. first\n2. two"),
        ("> quoted|", "> quoted\n> two"),
        ("```js\nlet a = 1|\n```", "```js\nlet a = 1\ntwo\n```"),
        ("- item\n\n  ```\n  code|\n  ```", "- item\n\n  ```\n  code\n  two\n  ```"),
        ("```\ncode\n```|", "```\ncode\n```\ntwo"),
    ]
    for before, after in cases:
        olive.evaluate(
            """([text, at]) => {
                const view = window.collab.view
                view.dispatch({
                    changes: { from: 0, to: view.state.doc.length, insert: text },
                    selection: { anchor: at },
                })
                view.focus()
            }""",
            [before.replace("|", ""), before.index("|")],
        )
        olive.keyboard.press("Enter")
        olive.keyboard.type("two")
        assert text(olive) == after, before
    # An empty item ends the list (a tight list first becomes loose, as CodeMirror does).
    olive.keyboard.press("Control+a")
    olive.keyboard.type("- one")
    for _ in range(3):
        olive.keyboard.press("Enter")
    olive.keyboard.type("after")
    assert text(olive) == "- one\n\nafter"

    # A viewer's Enter changes nothing, not even in their own browser.
    vera = people.page(viewer, document)
    wait_text(vera, "after")
    vera.locator("#mode [data-mode=split]").click()
    vera.locator(".cm-line", has_text="one").click()
    vera.keyboard.press("End")
    vera.keyboard.press("Enter")
    vera.keyboard.press("Backspace")
    assert text(vera) == "- one\n\nafter"
    assert olive.errors == [] and vera.errors == []


def rgb(color: str) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def test_presence_avatars_are_named_and_coloured_by_the_server(
    people, document, owner, editor_user
):
    olive = people.page(owner, document)
    eddie = people.page(editor_user, document)
    presence = olive.locator("#presence")
    assert presence.get_attribute("role") == "group"
    presence.get_by_role("img", name="eddie", exact=True).wait_for()
    mine = presence.get_by_role("img", name="olive (you)", exact=True)
    theirs = presence.get_by_role("img", name="eddie", exact=True)
    colors = {"olive": identity(owner)["color"], "eddie": identity(editor_user)["color"]}
    assert mine.evaluate("e => getComputedStyle(e).backgroundColor") == rgb(colors["olive"])
    assert theirs.evaluate("e => getComputedStyle(e).backgroundColor") == rgb(colors["eddie"])
    # The account menu's avatar is the same person in the same colour.
    for page, name in ((olive, "olive"), (eddie, "eddie")):
        avatar = page.locator(".topbar .avatar")
        assert avatar.evaluate("e => getComputedStyle(e).backgroundColor") == rgb(colors[name])
    assert olive.errors == [] and eddie.errors == []


def test_every_page_has_one_heading_and_the_favicon(people, document, owner, viewer):
    olive = people.page(owner)
    for path in (
        "/",
        "/documents/",
        f"/documents/{document.pk}/",
        f"/documents/{document.pk}/share/",
        "/accounts/password_change/",
    ):
        olive.goto(path)
        assert olive.locator("h1").count() == 1, path
        icon = olive.locator("link[rel=icon]")
        assert icon.get_attribute("type") == "image/svg+xml", path
    answer = olive.request.get(icon.get_attribute("href"))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    vera = people.page(viewer, document)
    assert vera.locator("h1").count() == 1
    assert vera.locator("h1").is_visible()
    stranger = people.page(None)
    stranger.goto("/accounts/login/")
    assert stranger.locator("h1").count() == 1


BACKGROUND = "() => getComputedStyle(document.body).backgroundColor"


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(people, document, owner):
    olive = people.page(owner, document)  # a light system (the tests' default)
    light = olive.evaluate(BACKGROUND)
    assert olive.locator("#theme-toggle").get_attribute("aria-pressed") == "false"

    dark_context = people.context(owner)
    dark_page = dark_context.new_page()
    dark_page.emulate_media(color_scheme="dark")
    dark_page.goto(f"/documents/{document.pk}/")
    dark_page.wait_for_function("() => window.collab !== undefined")
    dark = dark_page.evaluate(BACKGROUND)
    assert dark != light
    assert dark_page.locator("#theme-toggle").get_attribute("aria-pressed") == "true"
    # Text stays readable on it: the preview's and the editor's text are light on dark.
    type_at_end(dark_page, "# Night shift")
    heading = dark_page.locator("#preview h1", has_text="Night shift")
    heading.wait_for()
    assert heading.evaluate("e => getComputedStyle(e).color") == "rgb(230, 232, 235)"

    # Olive chooses dark by hand: every page follows, and still does after a reload.
    olive.locator("#theme-toggle").click()
    assert olive.evaluate(BACKGROUND) == dark
    assert olive.locator("#theme-toggle").get_attribute("aria-pressed") == "true"
    olive.goto("/documents/")
    assert olive.evaluate(BACKGROUND) == dark
    olive.locator("#theme-toggle").click()  # and back
    assert olive.evaluate(BACKGROUND) == light
    olive.reload()
    assert olive.evaluate(BACKGROUND) == light
    assert olive.errors == []


CODE = """Some code:

```python
def greet(name):
    return "hello " + name  # say it
```

```js
</code></pre><img src=x onerror="window.pwned=1">
```
"""


def test_fenced_code_is_highlighted_in_the_editor_and_the_preview(people, document, owner):
    olive = people.page(owner, document)
    olive.locator(".cm-content").click()
    olive.keyboard.insert_text(CODE)
    keyword = rgb("#a626a4")  # --code-keyword, light
    # The editor loads Python's parser for the fence and colours its keyword.
    olive.wait_for_function(
        """(color) => [...document.querySelectorAll('.cm-line span')].some(
            (span) => span.textContent === 'def' && getComputedStyle(span).color === color)""",
        arg=keyword,
    )
    olive.wait_for_function(
        """() => [...document.querySelectorAll('.cm-line span')].some(
            (span) => span.textContent.startsWith('"hello')
                && getComputedStyle(span).color === 'rgb(80, 161, 79)')"""
    )
    # The preview too, and code that looks like markup is text.
    preview = olive.locator("#preview")
    definition = preview.locator("pre code.language-python .hljs-keyword", has_text="def")
    definition.wait_for()
    assert definition.evaluate("e => getComputedStyle(e).color") == keyword
    assert preview.locator("pre code .hljs-comment", has_text="say it").count() == 1
    assert preview.locator("img, [onerror]").count() == 0
    assert "<img src=x" in preview.locator("pre code.language-js").inner_text()
    assert olive.evaluate("() => window.pwned") is None
    assert olive.errors == []


# The height in the editor's document shown at the top of its scroller, and the line there.
EDITOR_TOP = """() => {
    const view = window.collab.view
    const at = view.scrollDOM.getBoundingClientRect().top - view.documentTop
    return view.state.doc.lineAt(view.lineBlockAtHeight(at + 2).from).text
}"""
# The headings of the preview near the top of its pane (within 40 px of it).
PREVIEW_TOP = """() => {
    const pane = document.querySelector('.preview-pane').getBoundingClientRect().top
    return [...document.querySelectorAll('#preview h2')]
        .filter((h) => Math.abs(h.getBoundingClientRect().top - pane) < 40)
        .map((h) => h.textContent)
}"""

# Scrolls the preview to a heading, again after each frame until it stays at the top (parts of
# the preview laid out for the first time as they come into view change its heights).
TO_HEADING = """(name) => {
    const pane = document.querySelector('.preview-pane')
    const heading = [...document.querySelectorAll('#preview h2')]
        .find((h) => h.textContent === name)
    const off = heading.getBoundingClientRect().top - pane.getBoundingClientRect().top
    if (Math.abs(off) < 1) return true
    pane.scrollTop += off
    return false
}"""


def test_the_editor_and_the_preview_scroll_together(people, document, owner):
    # Sections of different lengths: a line of the editor is not a fixed height of the preview.
    body = "\n\n".join(
        f"## Part {n}\n\n" + f"Words of part {n}. " * (10 + (n * 37) % 90) for n in range(1, 61)
    )
    olive = people.page(owner, document)
    olive.set_viewport_size({"width": 1300, "height": 800})
    olive.evaluate(
        "(text) => window.collab.view.dispatch({ changes: { from: 0, insert: text } })", body
    )
    olive.wait_for_function(IDLE)
    pane = olive.locator(".preview-pane")
    assert pane.evaluate("(p) => p.scrollTop") == 0

    # The writer scrolls the editor (the wheel, over the text): the preview follows.
    box = olive.locator(".cm-scroller").bounding_box()
    olive.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(10):
        olive.mouse.wheel(0, 600)
    olive.wait_for_function("() => document.querySelector('.preview-pane').scrollTop > 1000")

    # To a heading (again after each frame, until the heading is the editor's top line:
    # CodeMirror measures the lines it comes to, and its estimate of where they are changes):
    # the same heading comes to the top of the preview.
    # CodeMirror may measure again a frame after the heading reached the top and move it (a
    # blank line read once, under load): lined up again then, a few times at most.
    for _ in range(5):
        olive.wait_for_function(
            """(at) => {
                const view = window.collab.view
                const block = view.lineBlockAt(view.state.doc.toString().indexOf(at))
                const scroller = view.scrollDOM
                const top = scroller.getBoundingClientRect().top - view.documentTop
                const off = block.top - top
                const shown = view.state.doc.lineAt(view.lineBlockAtHeight(top + 2).from).text
                if (Math.abs(off) < 1 && shown === at.trim()) return true
                scroller.scrollTop += off
                return false
            }""",
            arg="## Part 40\n",
        )
        olive.wait_for_timeout(100)  # a few frames: any measuring left is done
        if olive.evaluate(EDITOR_TOP) == "## Part 40":
            break
    assert olive.evaluate(EDITOR_TOP) == "## Part 40"
    olive.wait_for_function(f"() => ({PREVIEW_TOP})().includes('Part 40')")

    # The reader scrolls the preview back to an earlier heading: the editor follows, and the
    # preview stays where the reader put it (following does not scroll it back).
    box = pane.bounding_box()
    olive.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    olive.mouse.wheel(0, -300)
    olive.wait_for_function(f"() => ({TO_HEADING})('Part 15')")
    put = pane.evaluate("(p) => p.scrollTop")
    olive.wait_for_function(f"() => ({EDITOR_TOP})() === '## Part 15'")
    olive.wait_for_timeout(300)
    assert abs(pane.evaluate("(p) => p.scrollTop") - put) <= 1
    assert olive.evaluate(EDITOR_TOP) == "## Part 15"
    assert olive.errors == []


def test_the_split_layout_comes_back_where_the_reader_was(people, document, owner):
    body = "\n\n".join(f"## Part {n}\n\n" + f"Words of part {n}. " * 60 for n in range(1, 41))
    olive = people.page(owner, document)
    olive.set_viewport_size({"width": 1300, "height": 800})
    olive.evaluate(
        "(text) => window.collab.view.dispatch({ changes: { from: 0, insert: text } })", body
    )
    olive.wait_for_function(IDLE)
    # Read in the "Preview" layout…
    olive.locator("#mode [data-mode=preview]").click()
    olive.wait_for_function(f"() => ({TO_HEADING})('Part 30')")
    olive.wait_for_timeout(300)
    # …then split: the editor comes to what was being read.
    olive.locator("#mode [data-mode=split]").click()
    olive.wait_for_function(f"() => ({EDITOR_TOP})() === '## Part 30'")
    olive.wait_for_function(f"() => ({PREVIEW_TOP})().includes('Part 30')")
    # Written in the "Write" layout: the preview comes to what was being written.
    olive.locator("#mode [data-mode=edit]").click()
    box = olive.locator(".cm-scroller").bounding_box()
    olive.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(20):
        olive.mouse.wheel(0, -5000)
    olive.wait_for_function("() => window.collab.view.scrollDOM.scrollTop === 0")
    olive.wait_for_timeout(300)
    olive.locator("#mode [data-mode=split]").click()
    olive.wait_for_function(f"() => ({PREVIEW_TOP})().includes('Part 1')")
    assert olive.evaluate(EDITOR_TOP) == "## Part 1"
    assert olive.errors == []
