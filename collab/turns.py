"""A cap on the socket work of one turn of the event loop.

daphne's Twisted reactor runs on an asyncio event loop (uvloop by default). Each turn the loop
polls, calls the reactor back for every socket that is ready, one after another
(``AsyncioSelectorReactor._readOrWrite``: the socket's ``doRead`` or ``doWrite``), and only then
runs the timers and the tasks that are waiting. When many sockets are ready at once, that turn
lasts as long as all of them take. In a close storm (a proxy restarting, a network blip, every
tab of an office closing) each socket's close frame, its reply, its teardown and its consumer's
end are all in that one read: 2,500 sockets closing on one process made turns of 33–72 ms, a
stall for every other socket of the process (docs/BENCHMARKS.md, change 73).

Here a turn's socket callbacks stop once they have taken ``budget`` seconds: the first callback
of a turn always runs, and each later one runs only if the turn's callbacks so far took less
than the budget. A socket passed over is left as it is, still ready: the loop polls its sockets
level-triggered (epoll, as libuv and asyncio's selector use it), so the next poll reports it
again, after the timers and tasks that were waiting have had their turn. The kernel keeps a
passed-over socket ahead of those that become ready later, so it is served first next turn.
Nothing on any one socket changes order: a socket is read whole or not at all in a turn.

A connect storm is not much changed: its turns are mostly the tasks that the sockets' reads
started (checks, rooms, replies), which this does not cap.

The self-check (collab/transport.py, ``TURN_BUDGET``) confirms at start-up that Twisted's
asyncio reactor still registers ``self._readOrWrite`` for its readers and writers with the
arguments wrapped here, and runs a throw-away reactor on a loop of the process's kind with a
budget of 0: two ready sockets must be read in two turns, one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_perf = time.perf_counter


def install(seconds: float) -> None:
    """Caps each turn's socket callbacks at ``seconds``; idempotent (a second call changes the
    budget)."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    reactor: Any = AsyncioSelectorReactor
    reactor._collab_budget = seconds  # read by every reactor on each socket callback
    if getattr(reactor._readOrWrite, "collab_budget", False):
        return
    reactor._readOrWrite = _capped(reactor._readOrWrite)
    reactor._collab_turn_started = None
    reactor._collab_turn_over = _turn_over


def budget() -> float | None:
    """The installed budget in seconds; None when the cap is not installed."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not getattr(AsyncioSelectorReactor._readOrWrite, "collab_budget", False):
        return None
    return getattr(AsyncioSelectorReactor, "_collab_budget", None)


def _capped(read_or_write: Callable[[Any, Any, bool], None]) -> Callable[[Any, Any, bool], None]:
    def _readOrWrite(self: Any, selectable: Any, read: bool) -> None:
        started = self._collab_turn_started
        if started is None:
            self._collab_turn_started = _perf()
            # Runs before the next turn's socket callbacks: a new turn, a new budget.
            self._asyncioEventloop.call_soon(self._collab_turn_over)
        elif _perf() - started >= self._collab_budget and selectable.fileno() != -1:
            # Still ready: the next poll reports it again. (A socket with no descriptor left
            # would never be reported again: Twisted's own call disconnects it now.)
            return
        read_or_write(self, selectable, read)

    _readOrWrite.collab_budget = True  # type: ignore[attr-defined]
    _readOrWrite.__wrapped__ = read_or_write  # type: ignore[attr-defined]
    return _readOrWrite


def _turn_over(self: Any) -> None:
    self._collab_turn_started = None


def missing() -> list[str]:
    """What the cap relies on in Twisted and is not there, or what a throw-away reactor with
    a budget of 0 did not do."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    found = []
    read_or_write = getattr(AsyncioSelectorReactor, "_readOrWrite", None)
    if read_or_write is None:
        return ["Twisted's AsyncioSelectorReactor has no _readOrWrite"]
    original = getattr(read_or_write, "__wrapped__", read_or_write)
    parameters = list(inspect.signature(original).parameters)
    if parameters != ["self", "selectable", "read"]:
        found.append(
            f"Twisted's AsyncioSelectorReactor._readOrWrite takes {parameters},"
            " not (self, selectable, read)"
        )
    for method in ("addReader", "addWriter"):
        try:
            source = inspect.getsource(getattr(AsyncioSelectorReactor, method))
        except (OSError, TypeError, AttributeError):
            source = ""
        if "self._readOrWrite" not in source:
            found.append(
                f"Twisted's AsyncioSelectorReactor.{method} no longer registers self._readOrWrite"
            )
    if found:
        return found
    # On a thread of its own: the process may already be running an event loop on this one.
    outcome: list[list[str]] = []

    def live_round() -> None:
        try:
            outcome.append(_one_a_turn(original))
        except Exception as exc:
            outcome.append([f"a throw-away reactor with a budget of 0 could not run ({exc!r})"])

    thread = threading.Thread(target=live_round, name="collab-turns-check")
    thread.start()
    thread.join(10)
    return outcome[0] if outcome else ["a throw-away reactor's two turns took over 10 s"]


def _one_a_turn(original: Callable[[Any, Any, bool], None]) -> list[str]:
    """Two ready sockets on a throw-away reactor with a budget of 0 (each callback of a turn
    after the first passed over): each must be read, in a turn of its own."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    class Reactor(AsyncioSelectorReactor):
        _readOrWrite = _capped(original)
        _collab_budget = 0.0
        _collab_turn_started = None
        _collab_turn_over = _turn_over

    loop = asyncio.new_event_loop()
    try:
        with _socket_pairs(2) as pairs:
            reactor = Reactor(loop)
            turns: list[int] = []
            turn = [0]
            readers = [_Reader(ours, turns, turn) for ours, _ in pairs]
            for reader in readers:
                reactor.addReader(reader)
            for _, theirs in pairs:
                theirs.send(b"x")

            async def two_reads() -> None:
                for _ in range(50):
                    if len(turns) == 2:
                        return
                    turn[0] += 1
                    await asyncio.sleep(0)

            loop.run_until_complete(two_reads())
            for reader in readers:
                reactor.removeReader(reader)
            waker = getattr(reactor, "waker", None)
            if waker is not None:
                reactor.removeReader(waker)
                waker.connectionLost(None)
    finally:
        loop.close()
    if len(turns) != 2 or turns[0] == turns[1]:
        return [f"two ready sockets on a reactor with a budget of 0 were read in turns {turns}"]
    return []


class _Reader:
    """A throw-away socket reader for the self-check: notes the turn it was read in."""

    def __init__(self, sock: socket.socket, turns: list[int], turn: list[int]) -> None:
        self._socket, self._turns, self._turn = sock, turns, turn

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "collab.turns"

    def doRead(self) -> None:
        self._socket.recv(64)
        self._turns.append(self._turn[0])

    def connectionLost(self, reason: Any) -> None:
        pass


@contextlib.contextmanager
def _socket_pairs(count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        for ours, _ in pairs:
            ours.setblocking(False)
        yield pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
