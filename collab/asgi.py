"""ASGI entry point: Django for HTTP, Channels consumers for WebSockets."""

import gc
import os
from urllib.parse import parse_qs

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    WebSocketScope,
)
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http.cookie import parse_cookie  # noqa: E402

from collab import logs, transport  # noqa: E402
from editor import metrics  # noqa: E402
from editor.routing import websocket_urlpatterns  # noqa: E402

# Each tuning first checks the library internals it relies on; one that fails logs a warning
# and stays off (collab/transport.py). Checked here, at load, rather than on the first socket.
if settings.SERVE["EAGER_WRITES"] and transport.available(transport.EAGER_WRITES):
    transport.install()
if settings.SERVE["SHARED_PROTOCOL_OPTIONS"] and transport.available(
    transport.SHARED_PROTOCOL_OPTIONS
):
    transport.share_protocol_options()
if settings.SERVE["QUIET_HANDSHAKE"]:
    transport.quiet_handshake()
if settings.SERVE["RAW_FRAMES"]:
    transport.available(transport.RAW_FRAMES)
transport.available(transport.QUEUED_BYTES)  # the send-buffer cap, always on
if settings.SERVE["HEADER_TIMEOUT"]:
    transport.limit_request_heads(settings.SERVE["HEADER_TIMEOUT"])
if settings.LOG_FORMAT == "json":
    transport.log_access(logs.log_access)  # daphne's access log as JSON lines too


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
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    return bool(query.get("ticket", [None])[0])


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The origin check is in DocumentConsumer: it applies to cookie sockets only, since
        # ticket clients (scripts, the stock Node client) send no Origin header.
        "websocket": SessionUnlessTicket(URLRouter(websocket_urlpatterns)),
    }
)

if settings.SERVE["GC_FREEZE"]:
    # Everything loaded so far (Django, the URL conf, the apps) lives as long as the process:
    # moved out of the collector's generations, full collections stop re-scanning it. With
    # thousands of sockets a full collection pauses the process; this shortens the pauses by
    # a third (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()

# Under daphne: GC pauses and ping round trips are timed, and once the server runs, the
# event-loop stall probe and the census start (editor/metrics.py).
metrics.when_serving()
