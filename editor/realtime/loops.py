"""What a daphne process has one of (its rooms, its update writer, its presence client), kept one
per event loop rather than in a module global.

A daphne process runs one event loop, so that is one per process. Tests run each scenario on a
fresh loop, and these objects hold tasks, futures and connections bound to the loop that made
them: keyed by loop, a test never meets another test's. The loop is held weakly, so what a
closed loop had goes with it.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def per_event_loop(factory: Callable[[], T]) -> Callable[[], T]:
    """Turns ``factory`` into a getter that makes one object per running event loop, on first
    use, and returns that object ever after. Must be called from inside the loop."""
    made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    @functools.wraps(factory)
    def get() -> T:
        loop = asyncio.get_running_loop()
        try:
            return made[loop]
        except KeyError:
            made[loop] = instance = factory()
            return instance

    return get
