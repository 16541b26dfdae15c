"""Large binary values (document updates, snapshots, version states) written and read
without holding the event loop.

Django's PostgreSQL backend binds parameters on the client by default (psycopg's
``ClientCursor``): every value is escaped into the text of the statement. For a 16 MB update
that took 340-480 ms in the writer's thread, in steps that held the GIL for about 25 ms each,
so the event loop, and every socket of the process, stalled as long (docs/BENCHMARKS.md, change
19). Bound on the server (psycopg's ``Cursor``, Django's ``ServerBindingCursor``), bytes go to
PostgreSQL as they are, in binary: 80-95 ms, with the GIL released while they travel.

Reading is the mirror image: results come as text by default, and a 16 MB ``bytea`` arrives as
32 MB of hex that psycopg decodes with the GIL held (the catch-up's and the automatic
versions' reads of the log after a big paste). ``server_bound(binary_results=True)`` fetches
them in binary: the bytes as they are.

Only the statements inside ``server_bound()`` are bound on the server: Django's default stays as
it is everywhere else, since some queries Django writes need client-side binding (parameters
whose type PostgreSQL cannot infer). Other databases are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

logger = logging.getLogger(__name__)


def _server_binding_cursor() -> type | None:
    try:
        from django.db.backends.postgresql import base
    except ImportError:  # no psycopg at all
        return None
    # Defined for psycopg 3 only; psycopg 2 binds on the client whatever is asked.
    return getattr(base, "ServerBindingCursor", None)


_binary_results: dict[type, type] = {}


def _fetching_binary(cursor_class: type) -> type:
    """``cursor_class``, fetching results in binary (what psycopg's ``cursor(binary=True)``
    sets on a cursor)."""
    try:
        return _binary_results[cursor_class]
    except KeyError:
        pass
    from psycopg.pq import Format

    parent: Any = cursor_class

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        parent.__init__(self, *args, **kwargs)
        self.format = Format.BINARY

    binary = type(f"Binary{cursor_class.__name__}", (cursor_class,), {"__init__": __init__})
    _binary_results[cursor_class] = binary
    return binary


@contextmanager
def server_bound(binary_results: bool = False) -> Iterator[None]:
    """Within the block, this thread's PostgreSQL connection binds parameters on the server,
    and with ``binary_results`` fetches results in binary (only for queries whose columns
    psycopg loads from binary as Django expects: ids, UUIDs, integers, bytes). Restored
    afterwards, whatever the block raised; nothing changes on other databases."""
    if connection.vendor != "postgresql":
        yield
        return
    cursor_class = _server_binding_cursor()
    if cursor_class is None:
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    previous = raw.cursor_factory
    if issubclass(previous, cursor_class) and not binary_results:
        yield  # OPTIONS["server_side_binding"] already
        return
    raw.cursor_factory = _fetching_binary(cursor_class) if binary_results else cursor_class
    try:
        yield
    finally:
        raw.cursor_factory = previous
