"""GET /sw.js: the service worker that keeps the pages of documents opened in this browser, and
the assets they load, so that a document reloads with no network (docs/frontend.md, "Offline
first"). The script is templates/editor/service_worker.js; this fills in what it must know."""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_GET

# The static files the document page loads (templates/base.html and
# templates/editor/document_detail.html); tests/test_offline_views.py checks that they agree.
PAGE_ASSETS = (
    "css/app.css",
    "editor/editor.css",
    "editor/editor.js",
    "js/theme.js",
    "favicon.svg",
)

# Where someone signs in or out (by POST): the worker forgets every page it kept.
SESSION_URLS = ("login", "logout", "signup", "admin:login", "admin:logout")


@require_GET
def service_worker(request: HttpRequest) -> HttpResponse:
    """Served from the root so that its scope is the whole site: it must see the document pages
    and the POSTs that sign people out. Never cached by the browser beyond a revalidation, so a
    deploy reaches every browser on its next page load."""
    urls = [static(name) for name in PAGE_ASSETS]
    # The chunks the bundle imports as it loads (esbuild's code splitting), by the relative URL
    # the module asks for: the page does not start offline without them. Chunks loaded later
    # (a code language's parser) are not kept; their names hold a hash of their contents.
    chunks = [settings.STATIC_URL + name for name in bundle_imports()]
    config = {
        "version": assets_version(tuple(urls)) + "-" + _names_digest(chunks),
        "assets": urls + chunks,
        "sessionPaths": [reverse(name) for name in SESSION_URLS],
    }
    body = render_to_string("editor/service_worker.js", {"config": json.dumps(config)})
    response = HttpResponse(body, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    return response


def assets_version(urls: tuple[str, ...]) -> str:
    """Changes whenever an asset does: with the manifest storage (DEBUG off) its URL holds a hash
    of its contents, but in development it does not, so the contents count too. The same on
    every host and process, so browsers behind a load balancer do not swap workers back and
    forth."""
    digest = hashlib.sha256()
    for name, url in zip(PAGE_ASSETS, urls, strict=True):
        digest.update(f"{url}\0{_contents_digest(name)}\0".encode())
    return digest.hexdigest()[:16]


# A static import in esbuild's minified output: `import{a as b}from"./x.js"` or `import"./x.js"`;
# a lazy one is `import("./x.js")` and does not match.
_STATIC_IMPORT = re.compile(r'(?:\bfrom|\bimport)\s*"\./([^"]+\.js)"')


def bundle_imports() -> list[str]:
    """The static files (names under the static root) that editor/editor.js imports as it
    loads, directly or through one another; none when the bundle is not split."""
    found: dict[str, None] = {}
    pending = [("editor/", "editor.js")]
    while pending:
        folder, name = pending.pop()
        path = finders.find(folder + name)
        if not isinstance(path, str):
            continue
        with open(path, encoding="utf-8") as file:
            head = file.read(64 * 1024)  # the imports come first
        for imported in _STATIC_IMPORT.findall(head):
            full = os.path.normpath(folder + imported)
            if full not in found:
                found[full] = None
                pending.append((os.path.dirname(full) + "/", os.path.basename(full)))
    return list(found)


def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]


def _contents_digest(name: str) -> str:
    path = finders.find(name)
    if not isinstance(path, str):
        return ""
    stat = os.stat(path)
    return _file_digest(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, read again only when its size or time of change does."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
