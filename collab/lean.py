"""Lean sockets: what the handshake left behind is let go once a WebSocket is open.

An idle socket under daphne kept, for its whole life, things it needed only to open
(docs/BENCHMARKS.md, change 21; measured with tracemalloc and ``gc.get_objects`` on a server
holding 1,000 sockets):

- **The upgrade request.** Twisted's HTTP channel keeps every request in ``requests`` until the
  request finishes, and an upgraded one never does: daphne hands the connection to autobahn and
  the request (daphne's ``WebRequest``, its two header tables, its body buffer, its addresses)
  stayed in the channel, which the connection keeps as its registered producer. It is taken out
  of the list once the upgrade is done; nothing reads it again (the channel gets no more bytes,
  and its ``connectionLost`` is never called: the connection belongs to autobahn's protocol).
  About 3 KB per socket.
- **The handshake's text**: autobahn's copies of the request and the response
  (``http_request_data``, ``http_status_line``, ``http_response_data``, ``http_request_uri``,
  the key) and daphne's raw query string, read only while the handshake runs, are dropped when
  the socket opens. About 1 KB.
- **Two empty deques of the application's queue.** daphne gives each socket an unbounded
  ``asyncio.Queue``; an unbounded queue never parks a writer in ``_putters``, and nothing joins
  it, so its ``_finished`` event is never waited on. Both are replaced by one shared, never-used
  pair (an empty deque is 760 bytes). About 1.5 KB.

What is dropped is named exactly; a name a future release renames is simply not found (the
socket keeps it, as before). The self-check (collab/transport.py, ``LEAN_SOCKETS``) confirms
at start-up that daphne and asyncio still have the methods and attributes this relies on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

# Read only during the opening handshake (autobahn's server handshake; daphne's onConnect).
HANDSHAKE_LEFTOVERS = (
    "http_request_data",
    "http_status_line",
    "http_response_data",
    "http_request_uri",
    "_wskey",
    "_raw_query_string",
)

# What every application queue shares instead of its own (never used: see the module's text).
_NO_PUTTERS: collections.deque = collections.deque(maxlen=0)
_NEVER_JOINED = asyncio.Event()


def release_upgrade_request(request: Any) -> None:
    """Takes a request daphne upgraded to a WebSocket out of its HTTP channel's queue."""
    channel = getattr(request, "channel", None)
    if request.transport is None and not request.finished and channel is not None:
        with contextlib.suppress(ValueError):  # not there: nothing kept it
            channel.requests.remove(request)


def drop_handshake_leftovers(protocol: Any) -> None:
    attributes = protocol.__dict__
    for name in HANDSHAKE_LEFTOVERS:
        attributes.pop(name, None)


def share_unused_queue_parts(queue: Any) -> None:
    """An unbounded queue's writers never wait: its ``_putters`` stay empty. Shared, they
    cannot fill either: the shared deque keeps nothing (``maxlen=0``)."""
    if not isinstance(queue, asyncio.Queue) or queue.maxsize != 0:
        return
    parts: Any = queue  # asyncio's own attributes, which its stubs do not list
    if not parts._putters:
        parts._putters = _NO_PUTTERS
        parts._finished = _NEVER_JOINED


def install() -> None:
    """Wraps daphne's ``WebRequest.process``, ``WebSocketProtocol.onOpen`` and
    ``Server.create_application``. Idempotent. Call only once ``missing()`` says nothing."""
    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebRequest.process, "lean", False):
        return
    process, on_open, create_application = (
        WebRequest.process,
        WebSocketProtocol.onOpen,
        Server.create_application,
    )

    def lean_process(self: Any) -> Any:
        result = process(self)
        release_upgrade_request(self)
        return result

    def lean_on_open(self: Any) -> Any:
        result = on_open(self)
        drop_handshake_leftovers(self)
        return result

    def lean_create_application(self: Any, protocol: Any, scope: Any) -> Any:
        queue = create_application(self, protocol, scope)
        if queue is not None:
            share_unused_queue_parts(queue)
        return queue

    lean_process.lean = True  # type: ignore[attr-defined]
    lean_on_open.lean = True  # type: ignore[attr-defined]
    lean_create_application.lean = True  # type: ignore[attr-defined]
    WebRequest.process = lean_process
    WebSocketProtocol.onOpen = lean_on_open
    Server.create_application = lean_create_application


def installed() -> bool:
    from daphne.http_protocol import WebRequest

    return getattr(WebRequest.process, "lean", False)


def missing() -> list[str]:
    """What this relies on and no longer finds in the installed daphne, Twisted and asyncio."""
    import inspect

    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.web import http

    found: list[str] = []
    for owner, name, count in (
        (WebRequest, "process", 1),
        (WebSocketProtocol, "onOpen", 1),
        (Server, "create_application", 3),
    ):
        function = getattr(owner, name, None)
        if function is None:
            found.append(f"{owner.__name__} has no {name}")
        elif len(inspect.signature(function).parameters) != count:
            found.append(f"{owner.__name__}.{name} takes {inspect.signature(function)}")
    from twisted.internet.testing import StringTransport

    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    if not isinstance(getattr(channel, "requests", None), list):
        found.append("Twisted's HTTPChannel keeps no list of requests")
    request = http.Request(channel)
    for attribute in ("transport", "finished", "channel"):
        if not hasattr(request, attribute):
            found.append(f"Twisted's Request has no {attribute}")
    channel.connectionLost(None)
    queue: asyncio.Queue = asyncio.Queue()
    if not isinstance(getattr(queue, "_putters", None), collections.deque):
        found.append("asyncio.Queue has no _putters deque")
    if not isinstance(getattr(queue, "_finished", None), asyncio.Event):
        found.append("asyncio.Queue has no _finished event")
    return found
