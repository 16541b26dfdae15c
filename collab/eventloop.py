"""The event loop under daphne: uvloop's by default (``SERVE["EVENT_LOOP"]``, env EVENT_LOOP).

daphne runs Twisted's asyncio reactor on a loop it makes when its server module is first
imported (``daphne.server.twisted_loop = asyncio.new_event_loop()``), so the loop is whatever
the event loop policy makes at that moment. `manage.py serve` therefore starts daphne as
``python -m collab.eventloop NAME DAPHNE-ARGUMENTS...``: with NAME "uvloop", uvloop's policy is
set before daphne is imported, and daphne's command line then runs as ``python -m daphne``
runs it. With "asyncio", nothing is changed.

Why: uvloop (libuv, the loop under Node) does the loop's own work in C: the poll, the handle per
ready socket that calls into Twisted's reactor, timers, and the scheduling of every consumer's
task. In the load test it added about a tenth to the connects per second of ticket sockets and
shortened the event loop's longest stalls while sockets connect (docs/BENCHMARKS.md, change 27).

Twisted documents its asyncio reactor for asyncio's selector loop; what it calls on the loop
(``add_reader``/``add_writer`` and their removal, ``call_at``/``call_later``,
``call_soon_threadsafe``, ``run_forever``/``stop``) uvloop's loop has too. That is checked at
start-up, as collab/transport.py checks its tunings: before daphne is imported, a throw-away
reactor runs on a throw-away uvloop loop, with a timer and a reader on a socket pair. When uvloop
is missing or that fails, asyncio's own loop stays, and collab/asgi.py logs one warning saying
why (``report``); otherwise it logs which loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable

logger = logging.getLogger("collab.eventloop")

UVLOOP = "uvloop"
ASYNCIO = "asyncio"
CHOICES = (UVLOOP, ASYNCIO)

# What main() was asked for and why it could not be had (None: it was), for report().
_asked: str | None = None
_refused: str | None = None


def use(name: str) -> str | None:
    """Makes ``name`` the loop of every event loop made from now on; returns why not, or None."""
    if name == ASYNCIO:
        return None
    missing = uvloop_missing()
    if missing is None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return missing


def uvloop_missing() -> str | None:
    """Why Twisted's asyncio reactor cannot run on uvloop here (None: it can)."""
    try:
        import uvloop
    except ImportError as exc:
        return f"uvloop is not installed ({exc})"
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    left, right = socket.socketpair()
    seen: list[str] = []
    try:
        reactor = asyncioreactor.AsyncioSelectorReactor(loop)

        def saw(what: str) -> None:
            seen.append(what)
            if len(seen) == 2:
                reactor.stop()

        reader = _Reader(left, saw)
        reactor.addReader(reader)
        right.send(b"x")
        reactor.callLater(0.001, saw, "timer")
        bound = reactor.callLater(2.0, reactor.stop)  # should the timer or the read not come
        reactor.run(installSignalHandlers=False)
        reactor.removeReader(reader)
        if bound.active():
            bound.cancel()
        if sorted(seen) != ["read", "timer"]:
            return f"Twisted's asyncio reactor on uvloop saw {seen}, not a timer and a read"
    except Exception as exc:
        return f"Twisted's asyncio reactor does not run on uvloop: {exc!r}"
    finally:
        left.close()
        right.close()
        loop.close()
    return None


class _Reader:
    """The least Twisted's reactor accepts as a reader: reads one byte and says so."""

    def __init__(self, sock: socket.socket, saw: Callable[[str], None]) -> None:
        self.sock = sock
        self.saw = saw

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        self.sock.recv(1)
        self.saw("read")

    def connectionLost(self, reason: object) -> None:  # noqa: N802 (Twisted's name)
        pass

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        return "collab.eventloop check"


def report() -> None:
    """Logs, once the application loads under daphne, which loop runs it and, when that is not
    the loop asked for, why."""
    server = sys.modules.get("daphne.server")
    loop = getattr(server, "twisted_loop", None)
    if loop is None:
        return  # not under daphne
    running = UVLOOP if type(loop).__module__.startswith("uvloop") else ASYNCIO
    if _asked is not None and running != _asked:
        logger.warning(
            "event loop: %s, not %s: %s",
            running,
            _asked,
            _refused or "daphne made its loop otherwise",
            extra={"event": "eventloop.fallback", "loop": running, "asked": _asked},
        )
    else:
        logger.info("event loop: %s", running, extra={"event": "eventloop", "loop": running})


def main(argv: list[str]) -> None:
    """``python -m collab.eventloop NAME DAPHNE-ARGUMENTS...``"""
    global _asked, _refused
    if not argv or argv[0] not in CHOICES:
        choices = ",".join(CHOICES)
        raise SystemExit(f"usage: python -m collab.eventloop {{{choices}}} DAPHNE-ARGS...")
    _asked = argv[0]
    _refused = use(_asked)
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(argv[1:])


if __name__ == "__main__":
    # Run as a script this file is ``__main__``; the application's ``report`` reads the state of
    # the module imported under its own name.
    from collab import eventloop

    eventloop.main(sys.argv[1:])
