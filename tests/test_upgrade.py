"""Direct upgrades (collab/upgrade.py): a WebSocket upgrade request in one piece goes straight to
daphne's WebSocket protocol, and the socket it opens is the one daphne's own path opens; every
other request takes Twisted's path as before. On real Twisted, daphne and autobahn objects, and
against a real `manage.py serve` (every live test opens its sockets this way too); `make bench`
measures what it saves (docs/BENCHMARKS.md, change 34)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

from collab import transport, upgrade
from tests import live

UPGRADE = (
    b"GET /ws/documents/7d1d6c3e-1111-4222-8333-444455556666?ticket=abc.def HTTP/1.1\r\n"
    b"Host: collab.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: one, two\r\n"
    b"Origin: https://collab.example\r\n"
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"Cookie: sessionid=s3cr3t\r\n"
    b"\r\n"
)


def head(data: bytes) -> tuple[bytes, int] | None:
    return upgrade.upgrade_head(data, limit=16384, max_headers=500)


# -- which requests are plain upgrades --------------------------------------------------------


def test_a_whole_upgrade_head_is_taken_with_its_query_string():
    assert head(UPGRADE) == (b"ticket=abc.def", len(UPGRADE))
    assert head(UPGRADE + b"\x81\x85early frame") == (b"ticket=abc.def", len(UPGRADE))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(UPGRADE[:-2], id="head not complete yet"),
        pytest.param(UPGRADE.replace(b"GET ", b"POST ", 1), id="not a GET"),
        pytest.param(UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0", 1), id="HTTP/1.0"),
        pytest.param(UPGRADE.replace(b"Upgrade: websocket\r\n", b""), id="plain HTTP"),
        pytest.param(UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: h2c"), id="other upgrade"),
        pytest.param(
            UPGRADE.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\nUpgrade: h2c\r\n"),
            id="two upgrade headers",
        ),
        pytest.param(UPGRADE.replace(b"Host:", b"Content-Length: 3\r\nHost:"), id="a body"),
        pytest.param(
            UPGRADE.replace(b"Host:", b"Transfer-Encoding: chunked\r\nHost:"), id="chunked"
        ),
        pytest.param(UPGRADE.replace(b"Host:", b"Bad Name: x\r\nHost:"), id="bad header name"),
        pytest.param(UPGRADE.replace(b"Host:", b" folded\r\nHost:"), id="folded line"),
        pytest.param(UPGRADE.replace(b"Host:", b"NoColon\r\nHost:"), id="no colon"),
        pytest.param(UPGRADE.replace(b"collab.example\r\n", b"a\x00b\r\n", 1), id="NUL"),
        pytest.param(UPGRADE.replace(b"collab.example\r\n", b"a\nb\r\n", 1), id="bare LF"),
        pytest.param(UPGRADE.replace(b"collab.example\r\n", b"a\x0bb\r\n", 1), id="VT"),
        pytest.param(UPGRADE.replace(b"/ws/", "/wś/".encode(), 1), id="non-ASCII path"),
        pytest.param(UPGRADE.replace(b"GET /ws", b"GET http://h/ws", 1), id="absolute form"),
    ],
)
def test_anything_else_is_left_to_twisted(data):
    assert head(data) is None


def test_heads_over_twisteds_limits_are_left_to_twisted():
    many = UPGRADE.replace(b"Host:", b"X-A: 1\r\n" * 10 + b"Host:")

    assert upgrade.upgrade_head(many, limit=16384, max_headers=19) == (b"ticket=abc.def", len(many))
    assert upgrade.upgrade_head(many, limit=16384, max_headers=18) is None
    assert upgrade.upgrade_head(UPGRADE, limit=len(UPGRADE) - 10, max_headers=500) is None


# -- the hand-over, on daphne's own channel and protocol ---------------------------------------


class _Refused(Exception):
    """Raised by the test application: the scope it was given is all the test wants."""


def daphne_server(scopes: list[dict]) -> Server:
    def application(scope: dict, receive: Any, send: Any) -> None:
        scopes.append(scope)
        raise _Refused

    server = Server(
        application=application,
        endpoints=["tcp:port=0:interface=127.0.0.1"],  # not listened on: run() is not called
        proxy_forwarded_address_header="X-Forwarded-For",
        proxy_forwarded_port_header="X-Forwarded-Port",
        proxy_forwarded_proto_header="X-Forwarded-Proto",
    )
    server.connections = {}
    # What Server.run builds, on a reactor of its own that never runs.
    server.ws_factory = WebSocketFactory(server, server="collab-test", reactor=MemoryReactorClock())
    server.ws_factory.setProtocolOptions(openHandshakeTimeout=0)
    server.ws_factory.protocol = type("TestProtocol", (WebSocketProtocol,), {})
    return server


@contextlib.contextmanager
def tcp_connection() -> Iterator[tcp.Server]:
    """A Twisted TCP server connection on a real loopback TCP socket, registered with a
    reactor of its own that never runs."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()),
    ):
        ours, address = listener.accept()
        with ours:
            yield tcp.Server(ours, Protocol(), address, None, 0, MemoryReactor())


def feed(pieces: list[bytes]) -> tuple[dict, Any, Any]:
    """Feeds ``pieces`` to a fresh daphne HTTP channel on a real Twisted TCP connection; gives
    the scope daphne made for it, the connection, and what daphne's factory built (Twisted's
    wrapper, its HTTP channel inside)."""
    scopes: list[dict] = []
    server = daphne_server(scopes)
    with tcp_connection() as connection:
        built = HTTPFactory(server).buildProtocol(("127.0.0.1", 0))
        connection.protocol = built
        built.makeConnection(connection)
        for piece in pieces:
            connection.protocol.dataReceived(piece)
    [scope] = scopes
    return scope, connection, built


@pytest.fixture
def direct():
    """collab/upgrade.py installed for the test, and taken out after it."""
    from twisted.web import http

    assert upgrade.missing() == []
    before = http.HTTPChannel.dataReceived
    upgrade.install()
    yield
    http.HTTPChannel.dataReceived = before


def test_a_socket_opened_directly_has_the_scope_daphnes_path_gives_it(direct):
    # In two pieces the first is not a whole head: Twisted's path, as without the tuning.
    twisteds, _, _ = feed([UPGRADE[:40], UPGRADE[40:]])
    directs, connection, built = feed([UPGRADE])
    channel = built._channel

    assert isinstance(connection.protocol, WebSocketProtocol)
    assert channel.requests == []  # no Twisted request was made for it
    assert channel.__dict__.get("_TimeoutMixin__timeoutCall") is None  # its idle timer is off
    # The same but for the server's port: each connection here is on a listener of its own.
    assert {**directs, "server": None} == {**twisteds, "server": None}
    assert directs["client"][0] == "203.0.113.7"
    assert directs["query_string"] == b"ticket=abc.def"
    assert directs["subprotocols"] == ["one", "two"]
    assert (b"cookie", b"sessionid=s3cr3t") in directs["headers"]


def test_a_socket_opened_directly_is_still_read_while_its_sends_back_up(direct):
    # The channel stays the connection's registered producer either way; when a socket's sends
    # fill Twisted's buffer, Twisted pauses it. Opened through daphne's request, that left the
    # socket read (its pongs, its close); it must do the same when opened directly.
    for pieces in ([UPGRADE[:40], UPGRADE[40:]], [UPGRADE]):
        _, connection, built = feed(pieces)
        assert connection in connection.reactor.getReaders()

        connection.producer.pauseProducing()

        assert connection in connection.reactor.getReaders(), pieces


def test_a_plain_request_stays_with_twisted(direct):
    scope, connection, built = feed([b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"])

    assert connection.protocol is built
    assert (scope["type"], scope["path"]) == ("http", "/healthz")


def test_it_is_installed_once_checked(monkeypatch):
    from twisted.web import http

    monkeypatch.setattr(http.HTTPChannel, "dataReceived", http.HTTPChannel.dataReceived)
    assert transport.direct_upgrades() is True
    installed = http.HTTPChannel.dataReceived
    assert upgrade.installed()
    assert transport.direct_upgrades() is True
    assert http.HTTPChannel.dataReceived is installed


def test_it_stays_off_when_daphne_no_longer_leaves_the_query_string(unchecked, monkeypatch, caplog):
    from twisted.web import http

    def on_connect(self: Any, request: Any) -> None:  # a daphne that reads it elsewhere
        return None

    monkeypatch.setattr(WebSocketProtocol, "onConnect", on_connect)
    before = http.HTTPChannel.dataReceived

    assert transport.direct_upgrades() is False
    assert http.HTTPChannel.dataReceived is before
    assert any("transport tuning direct_upgrades is off" in r.getMessage() for r in caplog.records)


# -- against a real server ---------------------------------------------------------------------


@pytest.fixture
def server(transactional_db, tmp_path):
    with live.LiveServers(1, tmp_path) as servers:
        yield servers


def handshake(port: int, pieces: list[bytes], document, ticket: str) -> bytes:
    request = b"".join(pieces).replace(
        b"/ws/documents/7d1d6c3e-1111-4222-8333-444455556666?ticket=abc.def",
        f"/ws/documents/{document.id}?ticket={ticket}".encode(),
    )
    cut = len(pieces[0]) if len(pieces) > 1 else len(request)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request[:cut])
        if cut < len(request):
            time.sleep(0.2)
            client.sendall(request[cut:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = client.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_real_server_opens_sockets_sent_whole_or_in_pieces(server, owner, document):
    ticket = live.ticket_for(owner, document)
    whole = handshake(server.ports[0], [UPGRADE], document, ticket)
    pieces = handshake(server.ports[0], [UPGRADE[:40], UPGRADE[40:]], document, ticket)

    assert whole.startswith(b"HTTP/1.1 101 ")
    assert pieces.startswith(b"HTTP/1.1 101 ")
    # The proxy's address header is read as before: the log names the client behind nginx.
    deadline = time.monotonic() + 10
    while server.log().count("client=203.0.113.7") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count("client=203.0.113.7") == 2, server.log_tail()


def test_a_real_server_still_refuses_a_bad_upgrade_request(server):
    bad = UPGRADE.replace(b"collab.example\r\n", b"a\x00b\r\n", 1)
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=10) as client:
        client.sendall(bad)
        answer = client.recv(4096)

    assert answer.startswith(b"HTTP/1.1 400 ")
