"""The WebSocket side's one middleware (collab/asgi.py puts it in front of the routes). Kept
apart from collab/asgi.py, whose import tunes the whole process, so tests can build the same
stack."""

from __future__ import annotations

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    WebSocketScope,
)
from django.conf import settings
from django.http.cookie import parse_cookie

from editor.realtime import tickets


class SessionUnlessTicket:
    """Sockets with a ticket skip the session; the others get their session cookie's key.

    DocumentConsumer's ``authorize`` reads the session (who logged in, or a guest's links) on
    its own threads, and ignores it whenever a ticket is present. Channels' AuthMiddlewareStack
    did that work on the process's one ORM thread (the session's query, then the user's) and
    kept the session and the user in the socket's scope for its whole life: about a fifth of a
    browser socket's connect time and 4.7 KB of its memory (docs/BENCHMARKS.md, change 18).
    """

    def __init__(self, inner: ASGI3Application) -> None:
        self.inner = inner

    async def __call__(
        self, scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        # Helpers, so that this frame (alive as long as the socket) keeps no parsed query or
        # cookies.
        if not _has_ticket(scope):
            scope = {**scope, "session_key": _session_key(scope)}  # type: ignore[typeddict-unknown-key]
        await self.inner(scope, receive, send)


def _session_key(scope: WebSocketScope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME) or None
    return None


def _has_ticket(scope: WebSocketScope) -> bool:
    return bool(tickets.in_query(scope.get("query_string", b"")))
