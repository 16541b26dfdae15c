"""What one client may make the server do, as pure functions and small objects over a clock:
token buckets for messages and bytes per second (per socket, and per user across their sockets
in this process), caps on sockets (per process and per user), and the checks on awareness
states. No I/O: the connection asks, and closes
the socket with the code and reason a refusal names (docs/protocol.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from editor.realtime.codes import (
    CLOSE_MALFORMED,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_LARGE,
    CLOSE_TRY_AGAIN_LATER,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client's message cannot be taken: the close code and a reason it can show."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rates:
    """Sustained rates (per second) and bursts of a budget."""

    messages: float
    message_burst: float
    bytes: float
    byte_burst: float


class Budget:
    """Two token buckets that share a clock: messages and bytes. A message is admitted when
    both have enough tokens; each refills at its rate up to its burst."""

    __slots__ = ("rates", "messages", "bytes", "stamp")

    def __init__(self, rates: Rates, now: float) -> None:
        self.rates = rates
        self.messages = rates.message_burst
        self.bytes = rates.byte_burst
        self.stamp = now

    def spend(self, size: int, now: float) -> bool:
        """Takes one message of ``size`` bytes if both buckets allow it; False takes nothing."""
        self._refill(now)
        if self.messages < 1 or self.bytes < size:
            return False
        self.messages -= 1
        self.bytes -= size
        return True

    def full(self, now: float) -> bool:
        """Whether the budget has refilled to its bursts: nothing to remember of it."""
        self._refill(now)
        return self.messages >= self.rates.message_burst and self.bytes >= self.rates.byte_burst

    def _refill(self, now: float) -> None:
        rates = self.rates
        elapsed = now - self.stamp
        if elapsed > 0:
            self.stamp = now
            self.messages = min(rates.message_burst, self.messages + elapsed * rates.messages)
            self.bytes = min(rates.byte_burst, self.bytes + elapsed * rates.bytes)


class Sockets:
    """This process's open sockets, counted in all and per user, with one budget per user
    shared by all their sockets. A budget is kept while its user has a socket, and after, until
    it has refilled: closing and reconnecting does not give a flooder a fresh one. Per process:
    a user's sockets on several backends are counted, and budgeted, on each separately."""

    def __init__(self, rates: Callable[[], Rates], clock: Callable[[], float]) -> None:
        self._rates = rates
        self._clock = clock
        self._users: dict[int, tuple[Budget, int]] = {}
        self.total = 0
        self._releases = 0

    def admit(self, user_id: int, max_total: int, max_per_user: int) -> Refusal | None:
        """Whether one more socket of this user may open here (0: no cap)."""
        if max_total and self.total >= max_total:
            return Refusal(CLOSE_TRY_AGAIN_LATER, "the server is at capacity; try again later")
        if max_per_user and self.count(user_id) >= max_per_user:
            return Refusal(
                CLOSE_TRY_AGAIN_LATER,
                f"too many open connections for this user ({max_per_user}); close some tabs"
                " or try again later",
            )
        return None

    def acquire(self, user_id: int) -> Budget:
        """Counts one more socket of this user and returns the user's shared budget."""
        budget, holders = self._users.get(user_id) or (Budget(self._rates(), self._clock()), 0)
        self._users[user_id] = (budget, holders + 1)
        self.total += 1
        return budget

    def release(self, user_id: int) -> None:
        entry = self._users.get(user_id)
        if entry is None or entry[1] == 0:
            return
        self.total -= 1
        budget, holders = entry
        if holders > 1:
            self._users[user_id] = (budget, holders - 1)
        elif budget.full(self._clock()):
            del self._users[user_id]
        else:
            self._users[user_id] = (budget, 0)  # resting: forgotten once refilled
        self._releases += 1
        if self._releases % 1024 == 0:
            self._forget_rested()

    def _forget_rested(self) -> None:
        now = self._clock()
        for user_id, (budget, holders) in list(self._users.items()):
            if holders == 0 and budget.full(now):
                del self._users[user_id]

    def count(self, user_id: int) -> int:
        entry = self._users.get(user_id)
        return entry[1] if entry else 0

    def __len__(self) -> int:
        """Users with an open socket, or a budget still refilling."""
        return len(self._users)


@functools.lru_cache(maxsize=8)
def rates(messages: float, message_burst: float, bytes_: float, byte_burst: float) -> Rates:
    """One shared ``Rates`` per set of values (each socket's budget points to it)."""
    return Rates(messages, message_burst, bytes_, byte_burst)


def doubled(one: Rates) -> Rates:
    """A user's sockets together: twice one socket's (two tabs type as fast as one person)."""
    return rates(2 * one.messages, 2 * one.message_burst, 2 * one.bytes, 2 * one.byte_burst)


def over_rate(scope: str, size: int) -> Refusal:
    return Refusal(
        CLOSE_RATE_LIMITED,
        f"too many messages from this {scope}: slow down and reconnect ({size}-byte message)",
    )


# -- awareness ------------------------------------------------------------------------------


def check_awareness_state(state: dict[str, Any], max_bytes: int) -> Refusal | None:
    """A state too large to relay to everyone (its JSON, as clients sent it) is refused."""
    size = len(json.dumps(state, separators=(",", ":")).encode())
    if size > max_bytes:
        return Refusal(
            CLOSE_TOO_LARGE,
            f"awareness state too large ({size} bytes; the limit is {max_bytes})",
        )
    return None


def too_many_client_ids(limit: int) -> Refusal:
    return Refusal(
        CLOSE_MALFORMED, f"too many awareness client ids on one socket (the limit is {limit})"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: object) -> bool:
    """A Yjs ID in JSON: {"client": int, "clock": int}."""
    return (
        isinstance(value, dict)
        and _is_int(value.get("client"))
        and _is_int(value.get("clock"))
        and value["client"] >= 0
        and value["clock"] >= 0
    )


def _is_relative_position(value: object) -> bool:
    """Yjs' ``relativePositionToJSON`` shape: optional ``type`` (ID), ``tname`` (str), ``item``
    (ID) and ``assoc`` (int); nothing else is read by ``createRelativePositionFromJSON``."""
    if not isinstance(value, dict):
        return False
    for key, check in (("type", _is_id), ("item", _is_id)):
        if value.get(key) is not None and not check(value[key]):
            return False
    tname = value.get("tname")
    assoc = value.get("assoc")
    return (tname is None or isinstance(tname, str)) and (assoc is None or _is_int(assoc))


def clean_cursor(state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The state with its ``cursor`` (y-codemirror's {anchor, head} relative positions) kept
    only when well-formed: a malformed one made CodeMirror's remote-cursor plugin throw in every
    other browser. Returns the state to relay and whether the cursor was dropped."""
    cursor = state.get("cursor")
    if cursor is None:
        return state, False
    if (
        isinstance(cursor, dict)
        and _is_relative_position(cursor.get("anchor"))
        and _is_relative_position(cursor.get("head"))
    ):
        return state, False
    return {**state, "cursor": None}, True
