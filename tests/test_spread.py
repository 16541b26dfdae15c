"""collab/spread.py: daphne's timeout checks (and the pings they send) a slice at a time."""

import pytest

from collab import spread, transport


class Connection:
    """A connection as daphne's walk sees it: it can be checked."""

    def __init__(self, name, checked):
        self.name, self._checked = name, checked

    def check_timeouts(self):
        self._checked.append(self.name)


class Server:
    """What a step reads of daphne's Server."""

    def __init__(self):
        self.connections = {}

    def timeout_checker(self):
        raise AssertionError("a step schedules the next one; it does not run it")


def one_round(server, checked):
    """Runs the SLICES steps of a round; returns what each step checked and the delays asked."""
    steps, delays = [], []
    for _ in range(spread.SLICES):
        checked.clear()
        spread.step(server, lambda delay, then: delays.append((delay, then)))
        steps.append(list(checked))
    return steps, delays


def walk(server, checked, seconds):
    """Runs the walk as the reactor would for ``seconds`` from time 0, each step at the time
    the one before asked for; returns each step's (time, what it checked)."""
    now, steps, asked = 0.0, [], []
    while now < seconds - 1e-9:
        checked.clear()
        spread.step(server, lambda delay, then: asked.append(delay))
        steps.append((round(now, 6), list(checked)))
        now += asked.pop()
    return steps


def test_a_round_checks_every_connection_once_and_spreads_those_that_came_together():
    checked, server = [], Server()
    server.connections = {Connection(n, checked): {} for n in range(200)}

    steps, delays = one_round(server, checked)

    assert sorted(name for names in steps for name in names) == list(range(200))
    assert [len(names) for names in steps] == [10] * spread.SLICES
    # The first 40 connected together (and fall due for their pings together): 2 a step.
    assert [sum(name < 40 for name in names) for names in steps] == [2] * spread.SLICES
    # One round takes daphne's period, as its own walk repeats.
    assert [delay for delay, _ in delays] == [spread.PERIOD / spread.SLICES] * spread.SLICES
    assert sum(delay for delay, _ in delays) == pytest.approx(spread.PERIOD)
    assert all(then == server.timeout_checker for _, then in delays)


def test_a_connection_gone_is_skipped_and_a_new_one_is_checked_in_the_next_round():
    checked, server = [], Server()
    first, gone = Connection("first", checked), Connection("gone", checked)
    server.connections = {first: {}, gone: {}}
    late = Connection("late", checked)

    slice_ = spread.PERIOD / spread.SLICES
    spread.step(server, lambda delay, then: None)  # lists the round (first, gone), checks first
    del server.connections[gone]
    server.connections[late] = {}
    checked.clear()
    spread.step(server, lambda delay, then: None)  # gone's step: nobody left to check
    assert checked == []

    steps = walk(server, checked, spread.PERIOD)  # the next round

    assert steps == [(0.0, ["first"]), (slice_, ["late"])]


def test_a_connection_whose_check_fails_stops_neither_the_others_nor_the_walk(caplog):
    checked, server = [], Server()

    class Broken(Connection):
        def check_timeouts(self):
            raise RuntimeError("broken")

    server.connections = {Broken("broken", checked): {}, Connection("fine", checked): {}}
    server.connections.update({Connection(n, checked): {} for n in range(spread.SLICES)})

    steps, delays = one_round(server, checked)

    assert "fine" in [name for names in steps for name in names]
    assert len(delays) == spread.SLICES  # every step scheduled the next
    assert any("timeout check of" in r.getMessage() for r in caplog.records)


def test_an_idle_process_wakes_for_the_walk_once_a_period():
    checked, server = [], Server()

    steps = walk(server, checked, 5 * spread.PERIOD)

    # One step a round (daphne's own walk's rate), not SLICES steps that check nobody.
    assert steps == [(n * spread.PERIOD, []) for n in range(5)]


def test_a_few_connections_are_checked_when_a_full_round_would_check_them_and_no_more_often():
    checked, server = [], Server()
    server.connections = {Connection(n, checked): {} for n in range(3)}
    slice_ = spread.PERIOD / spread.SLICES

    steps = walk(server, checked, 2 * spread.PERIOD)

    # Each at its step's time, every period; the round's other 17 steps are not taken.
    assert steps == [
        (round(start + n * slice_, 6), [n]) for start in (0.0, spread.PERIOD) for n in range(3)
    ]


def test_a_connection_that_comes_to_an_idle_process_is_checked_from_the_next_round():
    checked, server = [], Server()
    spread.step(server, lambda delay, then: None)  # an empty round: sleeps a period
    server.connections = {Connection("new", checked): {}}

    steps = walk(server, checked, 2 * spread.PERIOD)

    assert steps == [(0.0, ["new"]), (spread.PERIOD, ["new"])]


def test_daphnes_server_runs_the_spread_walk_once_checked(monkeypatch):
    from daphne.server import Server as DaphneServer

    monkeypatch.setattr(DaphneServer, "timeout_checker", DaphneServer.timeout_checker)
    assert spread.missing() == []
    assert transport.spread_checks() is True
    installed = DaphneServer.timeout_checker
    assert installed.collab_spread
    assert transport.spread_checks() is True
    assert DaphneServer.timeout_checker is installed


def test_it_stays_off_when_daphnes_walk_changed(unchecked, monkeypatch, caplog):
    from daphne.server import Server as DaphneServer

    monkeypatch.setattr(DaphneServer, "timeout_checker", lambda self, now: None)
    changed = DaphneServer.timeout_checker

    assert transport.spread_checks() is False
    assert DaphneServer.timeout_checker is changed
    assert any("transport tuning spread_checks is off" in r.getMessage() for r in caplog.records)
