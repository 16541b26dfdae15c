"""Exports of a document: its text as a Markdown file, or a standalone HTML page of it rendered,
as downloads named after the title (GET /documents/<id>/export/, GET /api/documents/<id>/export/).

The page renders the text as the preview does in the browser (frontend/src/preview.js), with
the same two layers, because whatever a co-author typed is untrusted and the file will be
opened outside collab, where no Content-Security-Policy header protects it:

1. markdown-it (markdown-it-py, the Python port of the library the preview uses, with the same
   preset and options): raw HTML in the text is shown as text, and links with javascript:,
   vbscript:, file: or data: (except raster images) are not made links.
2. nh3 (Ammonia) cleans the result against an allow-list of the tags and attributes Markdown
   produces; anything else (script, style, event handlers, iframes, forms) cannot get through.

Either layer alone should be enough; both together survive a bug in one of them. The page also
carries its own policy in a <meta> tag (no script at all, inline styles only, images from the
web or data: URLs), which applies wherever it is opened, and the response sends the same policy
as a header.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

import nh3
from django.http import HttpResponse
from django.template.loader import render_to_string
from markdown_it import MarkdownIt

from editor import content
from editor.models import Document

FORMATS = ("md", "html")

_markdown = MarkdownIt("js-default", {"html": False, "linkify": True, "typographer": True})

# What markdown-it's output holds, and nothing more.
_TAGS = {
    *("p", "br", "hr", "blockquote", "pre", "code", "em", "strong", "s"),
    *("h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "a", "img"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    # Column alignment: style="text-align:right", and no other property (below).
    "th": {"style"},
    "td": {"style"},
}
_DATA_IMAGE = re.compile(r"data:image/(gif|png|jpeg|webp);", re.IGNORECASE)


def _only_image_data(tag: str, attribute: str, value: str) -> str | None:
    """data: URLs are allowed as image sources (pasted screenshots), never as links."""
    if value[:5].lower() == "data:" and not (tag == "img" and _DATA_IMAGE.match(value)):
        return None
    return value


_cleaner = nh3.Cleaner(
    tags=_TAGS,
    # The text of anything dropped whole (markdown-it never produces these) goes with it.
    clean_content_tags={"script", "style", "template", "iframe", "object", "textarea"},
    attributes=_ATTRIBUTES,
    attribute_filter=_only_image_data,
    url_schemes={"http", "https", "mailto", "data"},
    link_rel="noopener noreferrer nofollow",
    filter_style_properties={"text-align"},
)

# The policy of an exported page: no script of any kind, its own inline styles, images from the
# web or pasted ones; nothing else is loaded, submitted or framed.
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "base-uri 'none'; form-action 'none'"
)
# Sent with the response too, where frame-ancestors counts (a <meta> policy cannot hold it).
HEADER_POLICY = POLICY + "; frame-ancestors 'none'"


def render_markdown(text: str) -> str:
    """The text as sanitised HTML, as the preview shows it."""
    return _cleaner.clean(_markdown.render(text))


@dataclass(frozen=True)
class Export:
    """One download: its bytes, type and Content-Disposition."""

    body: bytes
    content_type: str
    disposition: str


def export(document: Document, format: str) -> Export:
    """The document's stored text as a download in ``format`` ("md" or "html")."""
    text = content.read(document)
    if format == "md":
        return Export(
            text.encode("utf-8"),
            "text/markdown; charset=utf-8",
            attachment(document.title, "md"),
        )
    if format == "html":
        return Export(
            page(document.title, text).encode("utf-8"),
            "text/html; charset=utf-8",
            attachment(document.title, "html"),
        )
    raise ValueError(f"unknown export format {format!r}")


def response(exported: Export) -> HttpResponse:
    """The download as a response, with the page's policy and no caching (the text changes)."""
    answer = HttpResponse(exported.body, content_type=exported.content_type)
    answer["Content-Disposition"] = exported.disposition
    answer["Content-Security-Policy"] = HEADER_POLICY
    answer["Cache-Control"] = "private, no-store"
    return answer


def page(title: str, text: str) -> str:
    """A standalone HTML page of the rendered text: styles inline, no script, nothing to fetch
    but the images the text shows."""
    return render_to_string(
        "editor/export.html",
        {"title": title, "body": render_markdown(text), "policy": POLICY},
    )


# Characters no file name should hold on any system, and controls.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')


def filename(title: str, extension: str) -> str:
    """A file name for the title: characters no system allows (and controls) become "_",
    whitespace is one space, no leading dot, at most 100 characters before the extension."""
    name = unicodedata.normalize("NFC", title)
    name = _UNSAFE.sub("_", " ".join(name.split())).strip(" ._")
    name = name[:100].rstrip(" .") or "document"
    return f"{name}.{extension}"


def attachment(title: str, extension: str) -> str:
    """Content-Disposition for a download named after the title (RFC 6266): the UTF-8 name in
    ``filename*``, and a plain ASCII one in ``filename`` for clients that do not read it."""
    name = filename(title, extension)
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9 ._()\[\]+,&'!#$%=@~^-]", "_", ascii_name)
    if ascii_name.strip("_ .") in ("", extension):
        ascii_name = f"document.{extension}"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
