"""daphne's timeout checks, spread over their period instead of done in one turn.

Every 2 s, daphne's ``Server.timeout_checker`` calls ``check_timeouts`` on every connection of
the process in one turn of the event loop, and that call is also what sends a socket its ping
once ``WS_PING_INTERVAL`` has passed since the last one. Sockets that connected together fall
due together: after 10,000 sockets connected to one process in 12 s, each such turn sent the
pings of some 1,700 of them (and the next turns read their pongs), a stall of up to 151 ms for
every socket of the process, again every 20 s (docs/BENCHMARKS.md, change 30).

Here the same checks run in ``SLICES`` steps over the same period: at the start of a round the
connections are listed, and every ``PERIOD / SLICES`` seconds one step checks every
``SLICES``-th of them (the first step the 1st, 21st, 41st…; the next the 2nd, 22nd…), so
sockets that connected together are spread over the whole round. Each connection is still
checked once a round, by daphne's own ``check_timeouts``; one that appears during a round
waits for the next, so a check (a ping, the connect timeout) may come up to one period later
than daphne's own walk would make it. A connection gone before its step is skipped.

A round of fewer connections than steps skips the steps that would check nobody and sleeps
until the next round's start: an idle process wakes for the walk once a period, as under
daphne's own walk, instead of ``SLICES`` times (each wake cost an idle process about 0.3 ms of
CPU; docs/BENCHMARKS.md, change 79). Every connection is checked when it would have been.

The self-check (collab/transport.py, ``SPREAD_CHECKS``) confirms at start-up that daphne still
starts the walk through ``self.timeout_checker``, that the method takes only the server, and
that its HTTP and WebSocket protocols have ``check_timeouts``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# daphne's Server.run: reactor.callLater(2, self.timeout_checker), and each walk schedules
# the next one 2 s later.
PERIOD = 2.0
SLICES = 20


class _Round:
    """One round's list of connections, and the next step's offset into it."""

    __slots__ = ("connections", "step")

    def __init__(self, connections: list[Any]) -> None:
        self.connections = connections
        self.step = 0


def install() -> None:
    """Replaces daphne's ``Server.timeout_checker`` with the spread walk; idempotent."""
    from daphne.server import Server

    if getattr(Server.timeout_checker, "collab_spread", False):
        return

    def timeout_checker(self: Any) -> None:
        from twisted.internet import reactor

        step(self, reactor.callLater)

    timeout_checker.collab_spread = True  # type: ignore[attr-defined]
    Server.timeout_checker = timeout_checker


def step(server: Any, call_later: Callable[..., Any]) -> None:
    """One step of the walk: checks this step's share of the round's connections, then asks
    ``call_later`` (the reactor's) for the next step."""
    current: _Round | None = getattr(server, "_collab_round", None)
    if current is None or current.step >= SLICES:
        current = _Round(list(server.connections))
        server._collab_round = current
    connections = server.connections
    try:
        for protocol in current.connections[current.step :: SLICES]:
            if protocol in connections:
                try:
                    protocol.check_timeouts()
                except Exception:
                    # One connection's failure is its own: the others are checked, and the
                    # walk goes on (daphne's own walk stopped for good on the first).
                    logger.exception("timeout check of %r failed", protocol)
    finally:
        current.step += 1
        slices = 1
        if current.step >= min(len(current.connections), SLICES):
            # The rest of the round's steps would check nobody (a round of fewer connections
            # than steps, none at all on an idle process): the next step is the next round's
            # first, when it would have come anyway, with no wakes in between.
            slices = SLICES - current.step + 1
            current.step = SLICES
            current.connections = []  # let go of the round's protocols now, not in a step
        call_later(slices * PERIOD / SLICES, server.timeout_checker)


def missing() -> list[str]:
    """What the spread walk relies on in daphne and is not there."""
    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    found = []
    try:
        run = inspect.getsource(Server.run)
    except (OSError, TypeError):
        run = ""
    for needed in ("self.connections = {}", "self.timeout_checker"):
        if needed not in run:
            found.append(f"daphne's Server.run no longer has {needed}")
    parameters = list(inspect.signature(Server.timeout_checker).parameters)
    if parameters != ["self"]:
        found.append(f"daphne's Server.timeout_checker takes {parameters}, not (self)")
    for protocol in (WebRequest, WebSocketProtocol):
        if not callable(getattr(protocol, "check_timeouts", None)):
            found.append(f"daphne's {protocol.__name__} has no check_timeouts")
    if found:
        return found
    # A round on a throw-away daphne Server: every connection checked once, one step apart.
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    checked: list[int] = []
    server.connections = {_Probe(checked, n): {} for n in range(SLICES + 3)}
    delays: list[float] = []
    for _ in range(SLICES):
        step(server, lambda delay, _then: delays.append(delay))
    if sorted(checked) != list(range(SLICES + 3)) or delays != [PERIOD / SLICES] * SLICES:
        found.append("a round on a daphne Server did not check each connection once")
    return found


class _Probe:
    """A connection for the self-check: notes that it was checked."""

    def __init__(self, checked: list[int], number: int) -> None:
        self._checked, self._number = checked, number

    def check_timeouts(self) -> None:
        self._checked.append(self._number)
