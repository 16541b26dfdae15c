"""Direct upgrades: a WebSocket upgrade request goes straight to autobahn, parsed once.

Under daphne, a connection starts as Twisted's ``HTTPChannel``. An upgrade request is parsed
there line by line into a ``Request`` with two header tables; daphne's ``WebRequest.process``
then checks it, writes it back out as bytes, hands the connection to autobahn's protocol and
feeds it those bytes, which autobahn parses again for the handshake. So every socket's request
was parsed twice and written once in between: about a tenth of the CPU a connect costs
(docs/BENCHMARKS.md, change 34).

Here the channel's first bytes are looked at once: when they hold a whole request head that is
plainly a WebSocket upgrade (``GET``, HTTP/1.1, ``Upgrade: websocket``, no body, every header
line well-formed by daphne's own rules, within Twisted's size and count limits, over plain
TCP), the connection is handed to daphne's WebSocket protocol as daphne would hand it, and
autobahn gets the bytes as they came (or, once collab/handshake.py is installed, a plain
opening handshake in them is read there, as autobahn reads it). Anything else (a partial
head, a plain HTTP request, a header daphne or Twisted would refuse, TLS) takes Twisted's path
unchanged, which answers it as before. daphne's WebSocket protocol reads the client's
address, proxy headers and query string itself (``onConnect``), so the socket's scope is the
same either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Names daphne's own check of a request uses; if daphne drops them, this module does not load
# and the tuning's check says so (collab/transport.py).
from daphne.utils import HEADER_NAME_RE, INVALID_HEADER_VALUE_BYTES
from twisted.internet import tcp

from collab import transport

# What daphne refuses in a header value, and what Twisted does (RFC 9110 section 5.5).
_REFUSED_IN_VALUES = INVALID_HEADER_VALUE_BYTES | frozenset(b"\x00\r\n")

# A request line collab serves sockets on: a plain path, HTTP/1.1.
_REQUEST_LINE = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")


def upgrade_head(data: bytes, limit: int, max_headers: int) -> tuple[bytes, int] | None:
    """``(query string, end of head)`` when ``data`` starts with a whole, plain WebSocket
    upgrade request head; None for anything Twisted's own path should see."""
    end = data.find(b"\r\n\r\n", 0, limit + 4)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines) - 1 > max_headers:
        return None
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    upgrade = False
    for header in lines[1:]:
        name, colon, value = header.partition(b":")
        if not colon or not HEADER_NAME_RE.fullmatch(name):
            return None
        value = value.strip(b" \t")
        if _REFUSED_IN_VALUES.intersection(value):
            return None
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            return None
        if lowered == b"upgrade":
            if upgrade:
                return None  # Twisted reads the first only; let it
            upgrade = value.lower() == b"websocket"
            if not upgrade:
                return None
    if not upgrade:
        return None
    uri = line.group(1)
    query = uri.partition(b"?")[2]
    return query, end + 4


def hand_over(channel: Any, data: bytes) -> bool:
    """Hands ``channel``'s connection to daphne's WebSocket protocol when ``data``, its first
    bytes, is a plain upgrade request head (``upgrade_head``); says whether it did."""
    connection = channel.transport
    server = getattr(channel.factory, "server", None)
    if server is None or type(connection) is not tcp.Server:
        return False  # not daphne's, or TLS (a wrapping protocol): Twisted's path
    head = upgrade_head(data, channel.totalHeadersSize, channel.maxHeaders)
    if head is None:
        return False
    protocol = server.ws_factory.buildProtocol(connection.getPeer())
    if protocol is None:
        return False  # Twisted's path answers with daphne's 500
    # What daphne's WebRequest.process does for an upgrade, less the parse and the re-write,
    # and the channel left as that path leaves it: handling a request that never finishes, so
    # that when the socket's sends back up (the channel stays the connection's registered
    # producer) Twisted does not stop reading it, the client's pongs and close included.
    channel.setTimeout(None)
    channel._handlingRequest = True
    transport.disarm_head_deadline(channel)
    protocol._raw_query_string = head[0]
    connection.protocol = protocol
    protocol.makeConnection(connection)
    if _read_handshake is None or not _read_handshake(protocol, data, head[1] - 4):
        protocol.dataReceived(data)
    return True


# collab/handshake.py's ``read`` once installed (``read_handshakes``): the opening handshake of
# a socket handed over here, read in one pass when plain; else autobahn's processHandshake.
_read_handshake: Callable[[Any, bytes, int], bool] | None = None


def read_handshakes(reader: Callable[[Any, bytes, int], bool] | None) -> None:
    """Hands the opening handshakes of the sockets handed over here to ``reader`` first (None:
    to autobahn only, as before)."""
    global _read_handshake
    _read_handshake = reader


def install() -> None:
    """Wraps Twisted's ``HTTPChannel.dataReceived``: a channel's first bytes are offered to
    ``hand_over`` once. Idempotent. Call only once ``missing()`` says nothing."""
    from twisted.web import http

    channel_class = http.HTTPChannel
    if getattr(channel_class.dataReceived, "direct", False):
        return
    data_received = channel_class.dataReceived

    def dataReceived(self: Any, data: bytes) -> None:
        attributes = self.__dict__
        if "_offered" not in attributes:
            attributes["_offered"] = True
            if hand_over(self, data):
                return
        data_received(self, data)

    dataReceived.direct = True  # type: ignore[attr-defined]
    channel_class.dataReceived = dataReceived  # type: ignore[method-assign]


def installed() -> bool:
    from twisted.web import http

    return getattr(http.HTTPChannel.dataReceived, "direct", False)


def missing() -> list[str]:
    """What this relies on and no longer finds in the installed Twisted and daphne."""
    import inspect

    from daphne.http_protocol import HTTPFactory
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from twisted.web import http

    found: list[str] = []
    signature = inspect.signature(http.HTTPChannel.dataReceived)
    if len(signature.parameters) != 2:
        found.append(f"Twisted's HTTPChannel.dataReceived takes {signature}")
    marker = object()
    built = HTTPFactory(marker).buildProtocol(("127.0.0.1", 0))
    # Twisted wraps the channel in one that could switch it to HTTP/2; the channel is inside.
    channel = getattr(built, "_channel", built)
    if not isinstance(channel, http.HTTPChannel):
        found.append("daphne's HTTPFactory builds no Twisted HTTPChannel")
    if getattr(getattr(channel, "factory", None), "server", None) is not marker:
        found.append("daphne's HTTPFactory does not give its channels the server")
    for attribute in ("totalHeadersSize", "maxHeaders"):
        if not isinstance(getattr(channel, attribute, None), int):
            found.append(f"Twisted's HTTPChannel has no {attribute}")
    if not callable(getattr(channel, "setTimeout", None)):
        found.append("Twisted's HTTPChannel has no setTimeout")
    # Read by its pauseProducing and resumeProducing: set only by a connection, so one is made.
    from twisted.internet.testing import StringTransport

    channel.makeConnection(StringTransport())
    if not isinstance(channel.__dict__.get("_handlingRequest"), bool):
        found.append("Twisted's HTTPChannel keeps no _handlingRequest flag")
    channel.connectionLost(None)
    if "protocol" not in inspect.signature(tcp.Server.__init__).parameters:
        found.append("Twisted's tcp.Server is not built with its protocol")
    # daphne builds its WebSocket factory in Server.run and reads the query string the
    # upgrade request left on the protocol in onConnect: both only seen in their source.
    if "self.ws_factory = WebSocketFactory(" not in inspect.getsource(Server.run):
        found.append("daphne's Server.run does not build ws_factory")
    if "_raw_query_string" not in inspect.getsource(WebSocketProtocol.onConnect):
        found.append("daphne's WebSocketProtocol.onConnect does not read _raw_query_string")
    if not callable(getattr(WebSocketFactory, "buildProtocol", None)):
        found.append("daphne's WebSocketFactory has no buildProtocol")
    return found
