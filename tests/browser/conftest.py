"""Real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python) against a
live `manage.py serve` process sharing the test database and Redis (tests/live.py).

These tests fail, never skip, when Chromium or Playwright is missing: the editor is the product.
.ci/run installs the chromium package when it is absent. Playwright's own browser download is not
used (`playwright install` is never needed).

Each test gets fresh browser contexts (separate cookies and IndexedDB, like separate people on
separate machines), logged in by injecting a session cookie made with the test client. Every
wait is bounded; nothing measures how long anything took.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.test import Client

from tests import live

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # the bound on any single wait in a page
DESKTOP = {"width": 1280, "height": 800}


# Package scope, not session: while Playwright runs, its event loop makes Django refuse sync ORM
# calls in this thread, which would break every test module collected after this package.
@pytest.fixture(scope="package")
def browser(server, _orm_beside_playwright):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: pip install -e '.[dev]' (no `playwright install`"
            " needed; the tests drive the system Chromium)",
            pytrace=False,
        )
    executable = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if executable is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        # A persistent context would share one profile; a launched browser gives each context a
        # fresh one, in a temporary user data dir of its own.
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="package")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One live server for the whole browser suite; the database is emptied between tests."""
    with django_db_blocker.unblock():
        servers = live.LiveServers(
            1,
            tmp_path_factory.mktemp("browser-server"),
            # The test process allows sync ORM calls next to Playwright's event loop (below);
            # the server keeps Django's guard.
            DJANGO_ALLOW_ASYNC_UNSAFE="",
        )
        servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="package")
def _orm_beside_playwright():
    """Playwright's sync API runs an asyncio loop in this thread, which makes Django refuse ORM
    calls from it ("You cannot call this from an async context"); the tests themselves are
    synchronous. Set for as long as Playwright runs, database flushes between tests included."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


class People:
    """Browser contexts logged in as given users; all closed at the end of the test."""

    def __init__(self, browser, server) -> None:
        self.browser = browser
        self.server = server
        self.contexts = []

    def context(self, user, viewport: dict | None = None):
        context = self.browser.new_context(
            base_url=self.server.http(), viewport=viewport or DESKTOP, color_scheme="light"
        )
        context.set_default_timeout(WAIT_MS)
        if user is not None:
            client = Client()
            client.force_login(user)
            context.add_cookies(
                [
                    {
                        "name": "sessionid",
                        "value": client.cookies["sessionid"].value,
                        "url": self.server.http(),
                    }
                ]
            )
        self.contexts.append(context)
        return context

    def page(self, user, document=None, viewport: dict | None = None):
        page = self.context(user, viewport).new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("dialog", lambda dialog: page.errors.append(f"dialog: {dialog.message}"))
        if document is not None:
            open_document(page, document)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def people(transactional_db, server, browser):
    # Depends on transactional_db so that it is torn down first: the server's last writes
    # must land before the tables are emptied, or PostgreSQL can deadlock.
    crowd = People(browser, server)
    yield crowd
    crowd.close()
    live.wait_quiet_database()


# -- page helpers ------------------------------------------------------------------------------


def open_document(page, document, synced: bool = True) -> None:
    page.goto(f"/documents/{document.pk}/")
    page.wait_for_function("() => window.collab !== undefined")
    if synced:
        wait_synced(page)


def wait_synced(page) -> None:
    page.wait_for_function("() => window.collab.provider.synced")


def text(page) -> str:
    return page.evaluate("() => window.collab.text.toString()")


def wait_text(page, *parts: str, absent: tuple[str, ...] = ()) -> str:
    page.wait_for_function(
        """([parts, absent]) => {
            const text = window.collab.text.toString()
            return parts.every((p) => text.includes(p)) && !absent.some((p) => text.includes(p))
        }""",
        arg=[list(parts), list(absent)],
    )
    return text(page)


def type_at_end(page, words: str) -> None:
    """Clicks into the editor, moves to the end of the text and types like a person."""
    page.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(words)


def status(page) -> str:
    return page.locator("#status .status-text").inner_text()
