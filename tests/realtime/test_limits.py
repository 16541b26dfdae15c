"""limits.py: token buckets on a fake clock, and the awareness checks, with no socket."""

from editor.realtime import limits
from editor.realtime.limits import Budget, Rates, Sockets

RATES = Rates(messages=10, message_burst=20, bytes=1000, byte_burst=5000)


def test_a_budget_admits_a_burst_then_refuses():
    budget = Budget(RATES, now=0.0)

    assert all(budget.spend(10, now=0.0) for _ in range(20))
    assert not budget.spend(10, now=0.0)


def test_a_budget_refills_at_its_rate_up_to_its_burst():
    budget = Budget(RATES, now=0.0)
    for _ in range(20):
        budget.spend(1, now=0.0)

    assert budget.spend(1, now=0.1)  # 0.1 s at 10/s: one message back
    assert not budget.spend(1, now=0.1)
    assert all(budget.spend(1, now=100.0) for _ in range(20))  # full again, never more
    assert not budget.spend(1, now=100.0)


def test_a_budget_counts_bytes_as_well_as_messages():
    budget = Budget(RATES, now=0.0)

    assert budget.spend(4000, now=0.0)
    assert not budget.spend(2000, now=0.0)  # a refusal takes nothing
    assert budget.spend(1000, now=0.0)
    assert budget.spend(500, now=0.5)  # 0.5 s at 1000 bytes/s


def test_a_users_sockets_share_one_budget_while_any_is_open():
    clock = [0.0]
    budgets = Sockets(lambda: RATES, lambda: clock[0])

    first, second = budgets.acquire(7), budgets.acquire(7)
    other = budgets.acquire(8)
    assert first is second
    assert other is not first
    budgets.release(7)
    assert budgets.acquire(7) is first  # still held by the other socket
    budgets.release(7)
    budgets.release(7)
    assert budgets.acquire(7) is not first  # all gone, and it was full: a fresh budget
    assert len(budgets) == 2


def test_a_used_budget_outlives_its_users_sockets_until_it_has_refilled():
    clock = [0.0]
    budgets = Sockets(lambda: RATES, lambda: clock[0])
    budget = budgets.acquire(7)
    for _ in range(20):
        budget.spend(1, clock[0])
    budgets.release(7)

    assert budgets.acquire(7) is budget  # reconnecting at once: the same, empty budget
    assert not budget.spend(1, clock[0])
    budgets.release(7)
    clock[0] = 10.0  # 10 s at 10 messages/s: full again
    budgets.release(7)  # (a release with nothing held changes nothing)
    assert budgets.acquire(7) is budget
    budgets.release(7)
    assert budgets.acquire(7) is not budget


def test_doubled_rates_are_twice_every_figure():
    assert limits.doubled(RATES) == Rates(20, 40, 2000, 10000)


def test_an_awareness_state_over_the_limit_is_refused_with_4413():
    assert limits.check_awareness_state({"name": "a"}, max_bytes=100) is None
    refusal = limits.check_awareness_state({"blob": "x" * 200}, max_bytes=100)
    assert refusal is not None
    assert refusal.code == 4413
    assert "awareness state too large" in refusal.reason


def test_a_well_formed_cursor_is_kept():
    position = {"type": {"client": 1, "clock": 0}, "tname": None, "item": None, "assoc": 0}
    other = {"item": {"client": 5, "clock": 17}, "assoc": -1}
    state = {"cursor": {"anchor": position, "head": other}, "user": {}}

    assert limits.clean_cursor(state) == (state, False)
    assert limits.clean_cursor({"cursor": None}) == ({"cursor": None}, False)
    assert limits.clean_cursor({}) == ({}, False)


def test_a_malformed_cursor_is_dropped_and_the_rest_kept():
    good = {"item": {"client": 5, "clock": 17}, "assoc": 0}
    for cursor in (
        5,
        "x",
        {"anchor": good},
        {"anchor": good, "head": 3},
        {"anchor": good, "head": {"item": {"client": "5", "clock": 1}}},
        {"anchor": good, "head": {"item": {"client": -1, "clock": 1}}},
        {"anchor": good, "head": {"type": [1, 2]}},
        {"anchor": good, "head": {"tname": 7}},
        {"anchor": good, "head": {"assoc": "left"}},
        {"anchor": good, "head": {"item": {"client": True, "clock": 1}}},
    ):
        state = {"cursor": cursor, "name": "kept"}
        assert limits.clean_cursor(state) == ({"cursor": None, "name": "kept"}, True), cursor


def test_sockets_are_counted_in_all_and_per_user_for_the_caps():
    sockets = Sockets(lambda: RATES, lambda: 0.0)
    for user_id in (1, 1, 2):
        assert sockets.admit(user_id, max_total=3, max_per_user=2) is None
        sockets.acquire(user_id)

    full = sockets.admit(3, max_total=3, max_per_user=2)
    assert full is not None and full.code == 1013
    assert "at capacity" in full.reason
    per_user = sockets.admit(1, max_total=10, max_per_user=2)
    assert per_user is not None and per_user.code == 1013
    assert "too many open connections for this user (2)" in per_user.reason
    assert sockets.admit(1, max_total=0, max_per_user=0) is None  # 0: no cap

    sockets.release(1)
    assert sockets.admit(1, max_total=3, max_per_user=2) is None
    assert (sockets.total, sockets.count(1), sockets.count(2)) == (2, 1, 1)
