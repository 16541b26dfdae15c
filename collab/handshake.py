"""Direct handshakes: autobahn's reading of a plain opening handshake, in a few steps.

A socket opened directly (collab/upgrade.py) gave autobahn its request head as it came, and
autobahn's ``processHandshake`` read it: the head decoded and parsed into a header table
(``parseHttpHeader``), the request line split again, the URI through ``urlparse``, then a dozen
checks, each a few dict look-ups and string splits, most of them written for the unusual
request. Timed on its own (a daphne protocol on a string transport, collab's tunings loaded),
that is about 50 µs of the 65 µs autobahn spends from the request's bytes to the 101; the
whole connect costs the server about 0.8 ms (docs/BENCHMARKS.md, change 62).

Here a request that ``upgrade.upgrade_head`` took (so: a GET of a plain path over HTTP/1.1,
every header line a token name and a colon, no body) is read once more, in one pass, and
checked as autobahn checks it, with autobahn's own helpers where it has them (the Origin's
parse and policy, the extensions' parse). What autobahn would refuse, and
what only autobahn's slower branches handle (a URI with ``//``, ``;`` or ``#``, a header value
autobahn refuses, ``X-Forwarded-For`` trusted by autobahn, a connection cap reached, octet
logging), is not read here: nothing is changed and the bytes go to autobahn, which answers as
before. Otherwise the protocol ends with the attributes autobahn's reading leaves, and
``onConnect`` (daphne's) gets the same ``ConnectionRequest``; daphne's answer then takes
autobahn's own ``succeedHandshake``, as before.

The self-check (collab/transport.py, ``DIRECT_HANDSHAKES``) reads sample requests both ways on
throw-away protocols at start-up and compares what each left: the protocol's attributes, the
request ``onConnect`` got, the bytes written.
"""

from __future__ import annotations

import re
import sys
from typing import Any
from urllib import parse

import txaio as _txaio

# autobahn's own helpers and its rule for header values; if autobahn drops them, this module
# does not load and the tuning's check says so (collab/transport.py).
from autobahn.websocket.protocol import (
    _HTTP_FIELD_VALUE_INVALID,
    WebSocketProtocol,
    _is_same_origin,
    _url_to_origin,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

# txaio's API is bound at run time (``use_twisted``), which type checkers cannot see.
txaio: Any = _txaio

# A key of 16 bytes in base64, as autobahn checks it (24 characters, "==" at the end).
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")

# What autobahn's processHandshake sets on the protocol, in its order: compared by the check.
READ_ATTRIBUTES = (
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "websocket_version",
    "websocket_protocols",
    "websocket_origin",
    "websocket_extensions",
    "data",
    "_wskey",
)


def read(protocol: Any, data: bytes, end: int) -> bool:
    """Reads the opening handshake in ``data`` as autobahn's ``processHandshake`` would and
    starts ``onConnect`` when the request is plain; says whether it did. ``data`` is what
    ``upgrade.upgrade_head`` took, its head ending at ``end`` (the blank line's first byte);
    the protocol has just been connected and has read nothing. False: nothing was changed,
    and autobahn should read the bytes."""
    factory = protocol.factory
    if (
        protocol.state != WebSocketProtocol.STATE_CONNECTING
        or protocol.data
        or protocol.trustXForwardedFor
        or protocol.logOctets
        or (protocol.maxConnections > 0 and factory.countConnections > protocol.maxConnections)
    ):
        return False
    text = data[:end].decode("iso-8859-1")
    lines = text.split("\r\n")
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        if _HTTP_FIELD_VALUE_INVALID.search(value):
            return False
        key = name.lower()
        if key in headers:
            headers[key] += f", {value}"
            counts[key] += 1
        else:
            headers[key] = value
            counts[key] = 1
    status = lines[0]
    uri = status[4:-9]  # "GET " uri " HTTP/1.1", as upgrade_head matched it
    if uri.startswith("//") or "#" in uri:
        return False  # urlparse would find a host or a fragment in it: autobahn's to answer
    path, _, query = uri.partition("?")
    if ";" in path:
        return False  # urlparse would cut parameters off the path
    # Kept for the socket's life (daphne keeps the request): one string per document's path
    # and per host, shared, as urlparse's cache shared a path when the whole URI repeated.
    path = sys.intern(path)
    # The Host: once; a port after the last colon (not an IPv6 address's) must be a number,
    # and the server's external port when one is set.
    if counts.get("host") != 1:
        return False
    host = headers["host"].strip()
    if ":" in host and not host.endswith("]"):
        host, port = host.rsplit(":", 1)
        try:
            number = int(str(port.strip()))
        except ValueError:
            return False
        if factory.externalPort and number != factory.externalPort:
            return False
    host = sys.intern(host)
    if not any(u.strip().lower() == "websocket" for u in headers["upgrade"].split(",")):
        return False
    connection = headers.get("connection")
    if connection is None or not any(c.strip().lower() == "upgrade" for c in connection.split(",")):
        return False
    if counts.get("sec-websocket-version") != 1:
        return False
    try:
        version = int(headers["sec-websocket-version"])
    except ValueError:
        return False
    if version not in protocol.versions:
        return False
    protocols: list[str] = []
    if "sec-websocket-protocol" in headers:
        protocols = [str(x.strip()) for x in headers["sec-websocket-protocol"].split(",")]
        if len(set(protocols)) != len(protocols):
            return False
    origin = ""
    origin_key = "origin" if version >= 13 else "sec-websocket-origin"
    if origin_key in headers:
        if counts[origin_key] > 1:
            return False
        origin = headers[origin_key].strip()
        try:
            origin_tuple = _url_to_origin(origin)
        except ValueError:
            return False
        if not (origin_tuple == "null" and factory.allowNullOrigin) and not _is_same_origin(
            origin_tuple,
            "https" if factory.isSecure else "http",
            factory.externalPort or factory.port,
            protocol.allowedOriginsPatterns,
        ):
            return False
    if counts.get("sec-websocket-key") != 1:
        return False
    key = headers["sec-websocket-key"].strip()
    if not _KEY.fullmatch(key):
        return False
    extensions: list[Any] = []
    if "sec-websocket-extensions" in headers:
        if counts["sec-websocket-extensions"] > 1:
            return False
        extensions = protocol._parseExtensionsHeader(headers["sec-websocket-extensions"])

    # Read: the protocol as autobahn's reading leaves it.
    protocol.trafficStats.preopenIncomingOctetsWireLevel += len(data)
    protocol.http_request_data = data[: end + 4]
    protocol.http_status_line = status
    protocol.http_headers = headers
    protocol.http_request_uri = uri
    protocol.http_request_path = path
    protocol.http_request_params = parse.parse_qs(query) if query else {}
    protocol.http_request_host = host
    protocol.websocket_version = version
    protocol.websocket_protocols = protocols
    protocol.websocket_origin = origin
    protocol.websocket_extensions = extensions
    protocol.data = data[end + 4 :]
    protocol._wskey = key
    request = ConnectionRequest(
        protocol.peer,
        headers,
        host,
        path,
        protocol.http_request_params,
        version,
        origin,
        protocols,
        extensions,
    )
    answered = txaio.as_future(protocol.onConnect, request)
    txaio.add_callbacks(answered, protocol.succeedHandshake, _refused(protocol))
    return True


def _refused(protocol: Any) -> Any:
    """What autobahn does when ``onConnect`` refuses or fails: its ``forward_error``."""

    def forward_error(err: Any) -> Any:
        if isinstance(err.value, ConnectionDeny):
            protocol.failHandshake(err.value.reason, err.value.code)
            return None
        protocol.log.warn("Unexpected exception in onConnect ['{err.value}']", err=err)
        protocol.log.warn("{tb}", tb=txaio.failure_format_traceback(err))
        return protocol.failHandshake(
            f"Internal server error: {err.value}", ConnectionDeny.INTERNAL_SERVER_ERROR
        )

    return forward_error


# -- the start-up check ------------------------------------------------------------------------

_SAMPLES = (
    # A script's socket: a ticket in the query string, nothing else.
    b"GET /ws/documents/7d1d6c3e-1111-4222-8333-444455556666?ticket=abc.def&x=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n",
    # A browser's, behind a proxy: an Origin, an extension offer, subprotocols, cookies, a
    # header given twice, and the first bytes of a frame after the head.
    b"GET /ws/documents/7d1d6c3e-1111-4222-8333-444455556666 HTTP/1.1\r\n"
    b"Host: collab.example\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: https://collab.example\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Sec-WebSocket-Protocol: one, two\r\n"
    b"Cookie: sessionid=s3cr3t\r\n"
    b"Accept-Language: en\r\n"
    b"Accept-Language: fr \r\n"
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"\r\n\x82\x80",
)


_REQUEST_FIELDS = (
    "peer",
    "headers",
    "host",
    "path",
    "params",
    "version",
    "origin",
    "protocols",
    "extensions",
)


def _answer(seen: list[Any], request: Any) -> str | None:
    """A throw-away protocol's onConnect: keeps the request, takes its last subprotocol."""
    seen.append(request)
    return request.protocols[-1] if request.protocols else None


def _fields(request: Any) -> list[Any]:
    return [getattr(request, name) for name in _REQUEST_FIELDS]


def missing() -> list[str]:
    """What this relies on and no longer finds in the installed autobahn: each sample request
    read here and by autobahn, on throw-away daphne protocols, must leave the same attributes,
    give ``onConnect`` the same request and, once it answers, write the same bytes."""
    import inspect

    from autobahn.websocket.protocol import WebSocketServerProtocol

    from collab import transport, upgrade

    found: list[str] = []
    for name in ("as_future", "add_callbacks", "failure_format_traceback"):
        if not callable(getattr(txaio, name, None)):
            found.append(f"txaio has no {name}")
    source = inspect.getsource(WebSocketServerProtocol.processHandshake)
    for name in READ_ATTRIBUTES:
        if f"self.{name}" not in source:
            found.append(f"autobahn's processHandshake no longer sets {name}")
    if tuple(inspect.signature(ConnectionRequest).parameters) != _REQUEST_FIELDS:
        found.append("autobahn's ConnectionRequest takes other arguments")
    if found:
        return found
    for sample in _SAMPLES:
        head = upgrade.upgrade_head(sample, 16384, 100)
        if head is None:
            found.append("a sample request is not a plain upgrade")
            continue
        theirs, ours = transport._throwaway_websocket(), transport._throwaway_websocket()
        got: list[list[Any]] = [[], []]
        for protocol, seen in ((theirs, got[0]), (ours, got[1])):
            protocol.onConnect = lambda request, seen=seen: _answer(seen, request)
            protocol._onOpen = lambda: None
        theirs._dataReceived(sample)
        if not read(ours, sample, head[1] - 4):
            found.append("a plain sample request is not read here")
            continue
        for name in READ_ATTRIBUTES:
            if getattr(theirs, name, None) != getattr(ours, name, None):
                found.append(f"the handshake's {name} differs from autobahn's")
        if [_fields(request) for request in got[0]] != [_fields(request) for request in got[1]]:
            found.append("onConnect gets another request than autobahn gives it")
        if theirs.transport.value() != ours.transport.value() or not ours.transport.value():
            found.append("the answer written differs from autobahn's")
        if theirs.state != ours.state:
            found.append("the protocol's state differs from autobahn's")
    # What autobahn refuses is left to it: a second Host header, here.
    doubled = _SAMPLES[0].replace(b"Host:", b"Host: a\r\nHost:")
    protocol = transport._throwaway_websocket()
    head = upgrade.upgrade_head(doubled, 16384, 100)
    if head is None or read(protocol, doubled, head[1] - 4) or protocol.data:
        found.append("a request autobahn refuses is not left to it")
    return found
