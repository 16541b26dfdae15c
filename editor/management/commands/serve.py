"""`manage.py serve`: the one way collab's server is started (make run, tests, docker).

Every daphne flag the project depends on lives here, so no deployment can forget one. When
neither REDIS_URL nor REDIS_SENTINELS is set, an embedded Valkey server is started first and
lives as long as this command.
"""

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from collab.embedded import EmbeddedRedis

logger = logging.getLogger("collab.serve")


def daphne_command(host: str, port: int) -> list[str]:
    options = settings.SERVE
    command = [
        sys.executable,
        "-m",
        "collab.eventloop",  # daphne's command line, on the loop named next (collab/eventloop.py)
        options["EVENT_LOOP"],
        "--bind",
        host,
        "--port",
        str(port),
        "--ping-interval",
        str(options["PING_INTERVAL"]),
        "--ping-timeout",
        str(options["PING_TIMEOUT"]),
        "--websocket-max-message-size",
        str(options["MAX_MESSAGE_SIZE"]),
        "--websocket-max-frame-size",
        str(options["MAX_MESSAGE_SIZE"]),
    ]
    if options["PROXY_HEADERS"]:
        command.append("--proxy-headers")
    command.append(settings.ASGI_APPLICATION.replace(".application", ":application"))
    return command


def raise_open_files_limit(sockets: int) -> tuple[int, int]:
    """Lifts the soft open-files limit (inherited by daphne) to what ``sockets`` connections
    need, as far as the hard limit allows: one file each, plus room for the database pool,
    Redis and files. Returns (needed, now)."""
    needed = sockets + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return needed, soft


class Command(BaseCommand):
    help = "Runs collab under daphne with the project's options (and an embedded Redis if needed)."
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind (127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on (8000).")

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        env = os.environ.copy()
        # How this process is named in the admin's census (editor/realtime/census.py).
        env.setdefault("COLLAB_PROCESS_NAME", f"{socket.gethostname()}:{port}")
        embedded = None
        if not settings.REDIS_URL and not settings.REDIS_SENTINELS:
            embedded = EmbeddedRedis(data_dir=settings.VAR_DIR / "valkey")
            env["REDIS_URL"] = embedded.start()
            self.say(f"REDIS_URL is unset: started embedded Valkey at {env['REDIS_URL']}")
        shown_host = f"[{host}]" if ":" in host else host
        self.say(
            f"collab is starting on http://{shown_host}:{port}/",
            self.style.SUCCESS,
            "\nCreate an admin account with: .venv/bin/python manage.py createsuperuser"
            "\nStop with Ctrl-C.",
        )
        cap = settings.COLLAB["MAX_CONNECTIONS"] or 65536
        needed, limit = raise_open_files_limit(cap)
        if limit < needed:
            self.say(
                f"open-files limit is {limit}: WS_MAX_CONNECTIONS={cap} needs {needed};"
                " raise the hard limit (ulimit -Hn, systemd LimitNOFILE) or lower the cap",
                self.style.WARNING,
            )
        self.stdout.flush()
        child = subprocess.Popen(daphne_command(host, port), env=env)

        def forward(signum: int, frame: FrameType | None) -> None:
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            returncode = child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=10)
            if embedded is not None:
                embedded.stop()
        if returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            sys.exit(returncode)

    def say(self, message: str, style: Callable[[str], str] | None = None, hint: str = "") -> None:
        """Prints a start-up message (and a hint for whoever runs it in a terminal); with
        LOG_FORMAT=json, logs the message instead, so every line is one JSON object."""
        if settings.LOG_FORMAT == "json":
            warning = style is self.style.WARNING
            logger.log(logging.WARNING if warning else logging.INFO, message)
        else:
            self.stdout.write((style(message) if style else message) + hint)
