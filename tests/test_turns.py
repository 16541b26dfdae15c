"""collab/turns.py: a turn of the event loop stops calling ready sockets back once its budget is
spent; the sockets passed over are read on the next turns, with the waiting work in between."""

import asyncio
import time

import pytest
import uvloop
from twisted.internet.asyncioreactor import AsyncioSelectorReactor

from collab import transport, turns

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


class SlowReader:
    """A socket whose every read takes ``seconds`` of the loop's time (a close frame, its reply,
    the consumer's end), noting the turn it was read in."""

    def __init__(self, sock, seconds, log, turn):
        self.sock, self.seconds, self.log, self.turn = sock, seconds, log, turn

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "test"

    def doRead(self):
        self.sock.recv(64)
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:
            pass
        self.log.append(("read", self.turn[0]))

    def connectionLost(self, reason):
        pass


def storm(make_loop, count, seconds_each):
    """``count`` sockets made ready at once on a reactor over a fresh loop, each read costing
    ``seconds_each``; a task notes every turn until all are read. Returns what happened, in
    order: ("read", turn) per socket and ("turn", n) per step of the task."""
    import socket

    loop = make_loop()
    pairs = [socket.socketpair() for _ in range(count)]
    log: list[tuple[str, int]] = []
    turn = [0]
    try:
        reactor = AsyncioSelectorReactor(loop)
        readers = []
        for ours, _ in pairs:
            ours.setblocking(False)
            readers.append(SlowReader(ours, seconds_each, log, turn))
            reactor.addReader(readers[-1])
        for _, theirs in pairs:
            theirs.send(b"close")

        async def count_turns():
            while sum(kind == "read" for kind, _ in log) < count and turn[0] < 1000:
                turn[0] += 1
                log.append(("turn", turn[0]))
                await asyncio.sleep(0)

        loop.run_until_complete(count_turns())
        for reader in readers:
            reactor.removeReader(reader)
        reactor.removeReader(reactor.waker)
        reactor.waker.connectionLost(None)
    finally:
        loop.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
    return log


def reads_per_turn(log):
    counts: dict[int, int] = {}
    for kind, turn in log:
        if kind == "read":
            counts[turn] = counts.get(turn, 0) + 1
    return [counts[turn] for turn in sorted(counts)]


@pytest.fixture
def budget(monkeypatch):
    """Installs the cap (process-wide, as collab/asgi.py does) with the test's budget, and puts
    the budget back afterwards."""
    turns.install(0.01)
    monkeypatch.setattr(AsyncioSelectorReactor, "_collab_budget", 0.01)
    return turns.install


@pytest.mark.parametrize("kind", LOOPS)
def test_a_storm_of_ready_sockets_is_read_over_several_turns_with_the_waiting_work_between(
    kind, budget
):
    budget(0.005)
    log = storm(LOOPS[kind], count=12, seconds_each=0.002)
    per_turn = reads_per_turn(log)
    # Every socket is read once; no turn reads more than the budget allows (2 ms each, so at
    # most 3 within 5 ms), where one turn read all 12 before.
    assert sum(per_turn) == 12
    assert len(per_turn) >= 4
    assert max(per_turn) <= 3
    # The task waiting on the loop ran between the storm's reads, not after all of them.
    first_read = next(i for i, (kind_, _) in enumerate(log) if kind_ == "read")
    last_read = max(i for i, (kind_, _) in enumerate(log) if kind_ == "read")
    assert any(kind_ == "turn" for kind_, _ in log[first_read:last_read])


@pytest.mark.parametrize("kind", LOOPS)
def test_quick_sockets_are_all_read_in_one_turn(kind, budget):
    budget(1.0)
    log = storm(LOOPS[kind], count=12, seconds_each=0)
    assert reads_per_turn(log) == [12]


def test_the_self_check_passes_on_the_installed_twisted():
    assert turns.missing() == []
    assert transport.available(transport.TURN_BUDGET)


def test_the_self_check_runs_when_asked_from_inside_a_running_event_loop():
    async def ask():
        return turns.missing()

    assert asyncio.run(ask()) == []


def test_the_self_check_fails_when_the_cap_does_not_pass_sockets_over(monkeypatch):
    monkeypatch.setattr(turns, "_capped", lambda read_or_write: read_or_write)
    assert turns.missing() == [
        "two ready sockets on a reactor with a budget of 0 were read in turns [1, 1]"
    ]


def test_the_self_check_names_a_changed_signature(monkeypatch):
    def _readOrWrite(self, selectable, read, extra):
        pass

    monkeypatch.setattr(AsyncioSelectorReactor, "_readOrWrite", _readOrWrite)
    assert turns.missing() == [
        "Twisted's AsyncioSelectorReactor._readOrWrite takes"
        " ['self', 'selectable', 'read', 'extra'], not (self, selectable, read)"
    ]


def test_a_changed_twisted_is_left_alone_with_one_warning(unchecked, monkeypatch, caplog):
    def _readOrWrite(self, selectable, read, extra):
        pass

    monkeypatch.setattr(AsyncioSelectorReactor, "_readOrWrite", _readOrWrite)
    assert transport.turn_budget(0.01) is False
    assert transport.turn_budget(0.01) is False
    assert AsyncioSelectorReactor._readOrWrite is _readOrWrite
    [warning] = [r.getMessage() for r in caplog.records if r.name == "collab.transport"]
    assert warning.startswith("transport tuning turn_budget is off: Twisted's")
    assert warning.endswith(
        "Each turn of the event loop reads every ready socket, however long that takes."
    )


def test_a_socket_with_no_descriptor_left_is_not_passed_over():
    """Twisted disconnects a selectable whose descriptor is gone when it is called back; the
    poll would never report it again, so the cap lets that call through even over budget."""
    called = []

    class Reactor:
        _collab_budget = 0.0
        _collab_turn_started = 0.0  # this turn's budget long spent

    class Gone:
        def fileno(self):
            return -1

    class Open:
        def fileno(self):
            return 7

    capped = turns._capped(lambda reactor, selectable, read: called.append(selectable))
    gone, still_open = Gone(), Open()
    capped(Reactor(), still_open, True)
    capped(Reactor(), gone, True)
    assert called == [gone]
