"""`manage.py loadtest MODE --url ws://.../ws/documents`: the load-test tool (bench/loadtest.py).

Against collab it creates its people (CROWD users) and fresh documents in the configured
database (the one the servers use, DATABASE_URL) and connects with tickets signed by
SECRET_KEY, so the servers must share both (``--auth session``: with session cookies instead,
as browsers do). With ``--reference`` the target is a stock y-websocket server: no database, no
tickets, room name = a fresh uuid. The documents it made are deleted at the end.

The engine and its packages (websockets, psutil) come with the ``bench`` extra, so they are
imported only when the command runs: ``editor`` imports without them, and without them the
command says in one line what to install.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import time
from types import ModuleType
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from editor.models import Document, Membership, Role
from editor.realtime import tickets

USERNAME = "loadtest"
# The clients are this many people ("loadtest-1", ...), each an editor of every document of
# the run, taken in turn: thousands of sockets of one person would run into the per-user
# limits (socket count, the messages of all their sockets together), which are meant for one
# person's tabs, and measure those instead of the server.
CROWD = 50
# The flood mode's flooder: another person, so that the per-user rate limit it runs into is
# its own, not that of the clients it is measured against.
OTHER_USERNAME = "loadtest-other"
MISSING = "loadtest needs the bench extra: pip install 'collab[bench]'"


def engine() -> ModuleType:
    """The load-test engine (bench/loadtest.py); raises CommandError naming the extra when it or
    the packages of the extra cannot be imported."""
    try:
        importlib.import_module("psutil")
        return importlib.import_module("bench.loadtest")
    except ImportError as exc:
        raise CommandError(f"{MISSING} ({exc})") from exc


class Command(BaseCommand):
    help = "Runs a y-websocket load test (fanout, throughput, idle, joinstorm); prints JSON."
    requires_system_checks = []

    def run_from_argv(self, argv: list[str]) -> None:
        # The parser needs the engine, and BaseCommand reports a CommandError in one line only
        # when handle() raises it, not when building the parser does.
        try:
            engine()
        except CommandError as exc:
            self.stderr.write(f"CommandError: {exc}")
            sys.exit(exc.returncode)
        super().run_from_argv(argv)

    def add_arguments(self, parser: CommandParser) -> None:
        engine().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        loadtest = engine()
        count = loadtest.documents_needed(options)
        if options["reference"]:
            target = loadtest.Target(options["url"], name="reference")
            documents = loadtest.reference_documents(count)
            report = loadtest.execute(target, documents, options)
        else:
            user, _ = get_user_model().objects.get_or_create(username=USERNAME)
            other, _ = get_user_model().objects.get_or_create(username=OTHER_USERNAME)
            made = [
                Document.objects.create_for(user, f"loadtest {options['mode']} {index}")
                for index in range(count)
            ]
            crowd = [
                get_user_model().objects.get_or_create(username=f"{USERNAME}-{index}")[0]
                for index in range(1, CROWD + 1)
            ]
            Membership.objects.bulk_create(
                Membership(document=document, user=person, role=Role.EDITOR)
                for document in made
                for person in [other, *crowd]
            )
            turns = itertools.cycle(crowd)
            target = loadtest.Target(
                options["url"],
                ticket=lambda document: tickets.issue(next(turns).pk, document)[0],
                other_ticket=lambda document: tickets.issue(other.pk, document)[0],
                server_pids=options["server_pid"],
                name="collab",
                cookies=[session_cookie(person) for person in crowd]
                if options["auth"] == "session"
                else (),
            )
            try:
                report = loadtest.execute(target, [str(d.pk) for d in made], options)
                loadtest.emit(report, options["json_out"], self.stdout)
            finally:
                self.delete(made)
            return
        loadtest.emit(report, options["json_out"], self.stdout)

    def delete(self, documents: list[Document]) -> None:
        """Deletes the run's documents once the servers have written their last updates (a
        delete racing a server's insert fails on the foreign key; the next try wins)."""
        for attempt in range(5):
            time.sleep(0.5 * (attempt + 1))
            try:
                Document.objects.filter(pk__in=[d.pk for d in documents]).delete()
                return
            except DatabaseError as exc:
                error = exc
        self.stderr.write(f"loadtest: could not delete its documents: {error}")


def session_cookie(user: Any) -> str:
    """A logged-in session for ``user``, as Django's login would store it, as a Cookie header."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = importlib.import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}"
