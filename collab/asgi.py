"""ASGI entry point: Django for HTTP, Channels consumers for WebSockets."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import reverse  # noqa: E402

from collab import eventloop, logs, transport  # noqa: E402
from collab.middleware import SessionUnlessTicket  # noqa: E402
from editor import metrics  # noqa: E402
from editor.routing import websocket_urlpatterns  # noqa: E402

eventloop.report()  # which loop daphne runs on (collab/eventloop.py)

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
transport.cancel_on_shutdown()  # a fix, always on
if settings.SERVE["LEAN_SOCKETS"]:
    transport.lean_sockets()
if settings.SERVE["SPREAD_CHECKS"]:
    transport.spread_checks()
direct = settings.SERVE["DIRECT_UPGRADES"] and transport.direct_upgrades()
if direct and settings.SERVE["DIRECT_HANDSHAKES"]:
    transport.direct_handshakes()
if settings.SERVE["DIRECT_FRAMES"]:
    transport.available(transport.DIRECT_FRAMES)  # the consumer asks again per socket
if settings.SERVE["FAST_FRAMES"]:
    transport.fast_frames()
if settings.SERVE["TURN_BUDGET"]:
    transport.turn_budget(settings.SERVE["TURN_BUDGET"])
if settings.SERVE["HEADER_TIMEOUT"]:
    transport.limit_request_heads(settings.SERVE["HEADER_TIMEOUT"])
if settings.LOG_FORMAT == "json":
    transport.log_access(logs.log_access)  # daphne's access log as JSON lines too


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The origin check is in DocumentConsumer: it applies to cookie sockets only, since
        # ticket clients (scripts, the stock Node client) send no Origin header.
        "websocket": SessionUnlessTicket(URLRouter(websocket_urlpatterns)),
    }
)

# The URL conf, and with it every view module it names (the REST API, its schema, the admin),
# is loaded now rather than by the process's first HTTP request, which resolved it on the event
# loop: a stall of 170-290 ms for every socket the process held, once per process
# (docs/BENCHMARKS.md, change 83). Loaded before the collector's freeze below, it is frozen
# with the rest of what lives as long as the process.
reverse("healthz")

if settings.SERVE["GC_FREEZE"]:
    # Everything loaded so far (Django, the URL conf, the apps) lives as long as the process:
    # moved out of the collector's generations, full collections stop re-scanning it. With
    # thousands of sockets a full collection pauses the process; this shortens the pauses by
    # a third (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
if settings.SERVE["GC_THRESHOLDS"] is not None:
    # A socket leaves ~150 objects behind, and connecting makes many more that die young: at
    # Python's 700 allocations per young collection, a burst of connects ran a full collection
    # (every tracked object, hundreds of ms with thousands of sockets) again and again. Fewer,
    # larger young collections: the longest stall while 5,000 sockets connect 257 / 404 ms ->
    # 153 / 136 ms (docs/BENCHMARKS.md, change 20). Young collections every 10,000, and the
    # middle generation every second one instead of every 21st of 20,000: what sockets keep
    # piled up there (most of each young collection while they connect), and one process's
    # 5,000 connects ended in one 200 ms collection of 330,000 objects (change 45). Young
    # collections every 5,000, and every other one takes the middle generation too (its
    # threshold 0): a middle collection examines one young collection's survivors and the
    # young generation, about 10,000 objects instead of 30,000: the longest pause while 10,000
    # sockets connect 26-31 ms -> 12-15 ms, and the collector's time then fell by about a
    # third (change 71). Full collections are tried as often as before, every
    # 4.6 million net allocations.
    gc.set_threshold(*settings.SERVE["GC_THRESHOLDS"])

# Under daphne: GC pauses and ping round trips are timed, and once the server runs, the
# event-loop stall probe and the census start (editor/metrics.py). Log records then skip the
# look-ups (the caller's line, the thread, the process) that no handler of the server shows.
if metrics.when_serving() and settings.SERVE["LEAN_LOG_RECORDS"]:
    logs.lean_records()
