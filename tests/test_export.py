"""Exports (editor/export.py) and the download page GET /documents/<id>/export/: the Markdown
file, the standalone HTML page, who may have them, file names from any title, and a sanitiser
that hostile titles and Markdown cannot get script through."""

from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import pytest
from django.urls import reverse
from django.utils.html import escape
from markdown_it import MarkdownIt

from editor import content, export
from editor.models import ShareLink

# Markdown that tries to run script once rendered: raw HTML, hostile link and image targets,
# attribute break-outs, entities, autolinks and reference links.
HOSTILE_MARKDOWN = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "<iframe src=//evil.example></iframe>",
    "<svg onload=alert(1)>",
    "<style>body{background:url(javascript:alert(1))}</style>",
    "<details open ontoggle=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](javascript&#58;alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](file:///etc/passwd)",
    "![x](javascript:alert(1))",
    '![x](https://example.com/a.png" onerror="alert(1))',
    '[a](https://example.com "title\\" onmouseover=\\"alert(1)")',
    "<javascript:alert(1)>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "``` onload=alert(1)\ncode\n```",
    "| a |\n|---|\n| <script>alert(1)</script> |",
    "*<b onmouseover=alert(1)>bold</b>*",
]

# Relative URLs stay: in a downloaded page they point at local files, which run nothing.
SAFE_SCHEMES = {"", "http", "https", "mailto"}


class Elements(HTMLParser):
    """Every start tag in a page, with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html)
    return parser.found


def assert_harmless(html: str) -> None:
    for tag, attributes in elements(html):
        assert tag not in {"script", "iframe", "object", "embed", "svg", "form", "base", "link"}
        if tag == "meta":
            assert set(attributes) <= {"charset", "http-equiv", "content", "name"}
        for name, value in attributes.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src"):
                value = (value or "").strip()
                safe = urlsplit(value).scheme.lower() in SAFE_SCHEMES or (
                    tag == "img" and value.lower().startswith("data:image/")
                )
                assert safe, (tag, name, value)
            if name == "style" and tag != "th" and tag != "td":
                raise AssertionError(f"style on {tag}")


# -- rendering ---------------------------------------------------------------------------------


def test_it_renders_markdown_as_the_preview_does():
    html = export.render_markdown(
        "# Plan\n\n*Ship* it -- see https://example.com\n\n| a | b |\n|--:|---|\n| 1 | 2 |\n"
    )

    assert "<h1>Plan</h1>" in html
    assert "<em>Ship</em> it – see" in html  # typographer, as in the browser
    assert (
        '<a href="https://example.com" rel="noopener noreferrer nofollow">https://example.com</a>'
        in html
    )
    assert '<th style="text-align:right">a</th>' in html


@pytest.mark.parametrize("markdown", HOSTILE_MARKDOWN)
def test_hostile_markdown_renders_harmless(markdown):
    html = export.render_markdown(markdown)

    assert_harmless(html)
    assert "<script" not in html.lower()


@pytest.mark.parametrize("markdown", HOSTILE_MARKDOWN)
def test_the_sanitiser_holds_even_if_markdown_let_html_through(monkeypatch, markdown):
    # The second layer alone: markdown-it with raw HTML on, as if its escaping had a bug.
    monkeypatch.setattr(export, "_markdown", MarkdownIt("js-default", {"html": True}))

    assert_harmless(export.render_markdown(markdown))


def test_it_keeps_pasted_images_but_not_data_links():
    html = export.render_markdown(
        "![shot](data:image/png;base64,iVBORw0KGgo=) [page](data:text/html,hi)"
    )

    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="shot">' in html
    assert "data:text" not in html.split("<img")[0] and 'href="data' not in html


def test_the_page_stands_alone_with_its_own_policy():
    html = export.page("Notes", "# Hello\n\ntext")

    assert html.startswith("<!doctype html>")
    assert f'<meta http-equiv="Content-Security-Policy" content="{escape(export.POLICY)}">' in html
    assert "<style>" in html and "@media print" in html
    assert "<h1>Hello</h1>" in html
    assert "<link" not in html and "<script" not in html  # nothing to fetch, nothing to run
    assert "default-src 'none'" in export.POLICY and "script-src" not in export.POLICY


@pytest.mark.parametrize(
    "title",
    [
        "</title><script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "<!-- --><svg onload=alert(1)>",
        "{{ title }} {% debug %}",
    ],
)
def test_a_hostile_title_is_only_text(title):
    html = export.page(title, "body")

    assert_harmless(html)
    assert html.count("<title>") == 1
    assert "<script" not in html and "<img" not in html and "<svg" not in html
    # Escaped, and data for the template, never template code.
    assert f"<title>{escape(title)}</title>" in html


# -- file names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Meeting notes", "Meeting notes.md"),
        ("Réunion “2026”", "Réunion “2026”.md"),
        ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j.md"),
        ("line\nbreak\ttab\x00nul", "line break tab_nul.md"),
        ("../../etc/passwd", "etc_passwd.md"),
        ("...", "document.md"),
        ("", "document.md"),
        ("x" * 300, "x" * 100 + ".md"),
    ],
)
def test_it_makes_a_safe_file_name_from_any_title(title, expected):
    assert export.filename(title, "md") == expected


@pytest.mark.parametrize(
    "title",
    ['"; filename=evil.exe', "x\r\nSet-Cookie: a=b", "日本語のメモ", "Réunion “2026”", ";,=\\"],
)
def test_the_content_disposition_cannot_be_broken_out_of(title):
    header = export.attachment(title, "html")

    assert header.startswith('attachment; filename="')
    plain, _, encoded = header.partition("; filename*=UTF-8''")
    quoted = plain.removeprefix('attachment; filename="').removesuffix('"')
    assert '"' not in quoted and "\\" not in quoted and quoted.isascii() and quoted.isprintable()
    assert quoted.endswith(".html")
    assert all(c.isalnum() or c in "%-._~" for c in encoded)
    assert unquote(encoded) == export.filename(title, "html")


# -- the download page --------------------------------------------------------------------------


def export_url(document, format=None):
    url = reverse("document-export", args=[document.id])
    return url if format is None else f"{url}?format={format}"


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_downloads_the_markdown_for_anyone_who_may_view(login_as, document, owner, who):
    content.replace(document, "# Minutes\n\n- ship it 🎉\n", owner)

    response = login_as(who).get(export_url(document, "md"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == (
        "attachment; filename=\"Meeting notes.md\"; filename*=UTF-8''Meeting%20notes.md"
    )
    assert response["Cache-Control"] == "private, no-store"
    assert response.content.decode("utf-8") == "# Minutes\n\n- ship it 🎉\n"


def test_markdown_is_the_default_format(login_as, document, owner):
    content.replace(document, "text", owner)

    response = login_as("viewer").get(export_url(document))

    assert response["Content-Type"] == "text/markdown; charset=utf-8"


def test_it_downloads_a_sanitised_html_page(login_as, document, owner):
    document.title = "</title><script>alert('title')</script>"
    document.save()
    content.replace(document, "# Plan\n\n<script>alert(1)</script> [x](javascript:alert(2))", owner)

    response = login_as("viewer").get(export_url(document, "html"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == export.HEADER_POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith(
        "attachment; filename=\"title_script_alert('title')_script.html\""
    )
    page = response.content.decode()
    assert_harmless(page)
    assert (
        "<title>&lt;/title&gt;&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;</title>" in page
    )
    assert "<h1>Plan</h1>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_it_refuses_an_unknown_format(login_as, document):
    response = login_as("viewer").get(export_url(document, "pdf"))

    assert response.status_code == 400
    assert b"?format=md or ?format=html" in response.content


def test_it_hides_the_document_from_a_stranger(login_as, document, owner):
    content.replace(document, "secret", owner)

    response = login_as("stranger").get(export_url(document, "md"))

    assert response.status_code == 404
    assert b"secret" not in response.content


def test_it_asks_anyone_else_to_log_in(client, document):
    response = client.get(export_url(document, "md"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_guest_with_an_anyone_link_may_download(client, document, owner):
    content.replace(document, "for everyone", owner)
    link = ShareLink.objects.create(document=document, role="viewer", anyone=True, created_by=owner)
    client.get(link.get_absolute_url())

    response = client.get(export_url(document, "md"))

    assert response.status_code == 200
    assert response.content == b"for everyone"
