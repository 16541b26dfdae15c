"""Direct handshakes (collab/handshake.py): a plain opening handshake read in one pass leaves a
daphne protocol exactly as autobahn's own reading leaves it, and whatever autobahn would refuse
or treat specially is left to autobahn untouched. Each request is read both ways on real daphne
protocols (autobahn's code, daphne's factory) and what each left is compared: the protocol's
attributes, the request ``onConnect`` got, the bytes written. `make bench` measures what it saves
(docs/BENCHMARKS.md, change 62)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from autobahn.websocket.types import ConnectionDeny
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from collab import handshake, transport, upgrade

TICKET = (
    b"GET /ws/documents/7d1d6c3e-1111-4222-8333-444455556666?ticket=abc.def&a=1&a=2 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

BROWSER = (
    b"GET /ws/documents/7d1d6c3e-1111-4222-8333-444455556666 HTTP/1.1\r\n"
    b"Host: collab.example\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: https://collab.example\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-GB,en;q=0.9\r\n"
    b"Cookie: sessionid=s3cr3t; csrftoken=abc\r\n"
    b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Sec-WebSocket-Protocol: one, two\r\n"
    b"\r\n"
)


def protocol_on(factory_options: dict[str, Any] | None = None, answer: Any = None) -> Any:
    """A daphne WebSocket protocol after autobahn's connectionMade, on a string transport; its
    ``onConnect`` keeps the request it is given in ``.requests`` and returns ``answer`` (a
    value, or a callable of the request)."""
    factory = WebSocketFactory(None, server="collab-test", reactor=MemoryReactorClock())
    options = dict(factory_options or {})
    factory.externalPort = options.pop("externalPort", None)  # the factory's, not an option
    factory.setProtocolOptions(openHandshakeTimeout=0, **options)
    factory.protocol = type("TestProtocol", (WebSocketProtocol,), {})
    protocol = factory.buildProtocol(("127.0.0.1", 0))
    protocol.makeConnection(StringTransport())
    protocol.requests = []

    def on_connect(request: Any) -> Any:
        protocol.requests.append(request)
        return answer(request) if callable(answer) else answer

    protocol.onConnect = on_connect
    protocol._onOpen = lambda: None  # daphne's would reach for its server
    return protocol


def read_here(protocol: Any, data: bytes) -> bool:
    head = upgrade.upgrade_head(data, 16384, 100)
    assert head is not None, "not a request upgrade.py hands over"
    return handshake.read(protocol, data, head[1] - 4)


def assert_left_as_autobahn_leaves_it(data: bytes, **kwargs: Any) -> None:
    theirs, ours = protocol_on(**kwargs), protocol_on(**kwargs)
    theirs.dataReceived(data)

    assert read_here(ours, data)

    for name in handshake.READ_ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert [handshake._fields(r) for r in ours.requests] == [
        handshake._fields(r) for r in theirs.requests
    ]
    assert ours.transport.value() == theirs.transport.value()
    assert ours.state == theirs.state
    assert ours.trafficStats.preopenIncomingOctetsWireLevel == len(data)


def assert_left_to_autobahn(data: bytes, **kwargs: Any) -> None:
    protocol = protocol_on(**kwargs)

    assert not read_here(protocol, data)

    assert protocol.state == protocol.STATE_CONNECTING
    assert protocol.data == b""
    assert protocol.requests == []
    assert protocol.transport.value() == b""
    assert not hasattr(protocol, "http_headers")


# -- plain requests: read here, as autobahn reads them ------------------------------------------


@pytest.mark.parametrize(
    ("data", "options"),
    [
        pytest.param(TICKET, {}, id="a script's ticket socket"),
        pytest.param(BROWSER, {}, id="a browser's socket"),
        pytest.param(BROWSER + b"\x82\x80\x01\x02\x03\x04", {}, id="a frame after the head"),
        pytest.param(TICKET.replace(b"?ticket=abc.def&a=1&a=2", b""), {}, id="no query string"),
        pytest.param(
            TICKET.replace(b"127.0.0.1:8000", b"[::1]:8000"), {}, id="an IPv6 host and port"
        ),
        pytest.param(TICKET.replace(b"127.0.0.1:8000", b"[::1]"), {}, id="an IPv6 host"),
        pytest.param(
            BROWSER.replace(b"Cookie:", b"Accept: a\r\nAccept: b\r\nCookie:"),
            {},
            id="a header given twice",
        ),
        pytest.param(
            BROWSER.replace(b"https://collab.example", b"null"),
            {"allowNullOrigin": True},  # as daphne sets it
            id="the null origin",
        ),
        pytest.param(
            BROWSER.replace(b"https://collab.example", b"http://collab.example:8000"),
            {"allowedOrigins": ["http://collab.example:*"]},
            id="an origin the policy allows",
        ),
        pytest.param(
            TICKET.replace(b"Version: 13", b"Version: 8")
            + b"",  # version 8's origin header is Sec-WebSocket-Origin
            {},
            id="protocol version 8",
        ),
        pytest.param(
            TICKET.replace(b"Connection: Upgrade", b"Connection: Upgrade\r\nConnection: close"),
            {},
            id="two Connection headers",
        ),
        pytest.param(TICKET.replace(b"Host: ", b"Host:\t"), {}, id="a tab before a value"),
        pytest.param(BROWSER, {"allowNullOrigin": False}, id="the null origin refused, not sent"),
        pytest.param(
            TICKET.replace(b"127.0.0.1:8000", b"127.0.0.1:8000"),
            {"externalPort": 8000},
            id="the external port",
        ),
    ],
)
def test_a_plain_request_is_read_here_as_autobahn_reads_it(data, options):
    assert_left_as_autobahn_leaves_it(data, factory_options=options)


def test_the_subprotocol_daphne_accepts_is_answered_as_autobahn_answers_it():
    assert_left_as_autobahn_leaves_it(BROWSER, answer=lambda request: request.protocols[-1])


def test_a_later_answer_is_written_as_autobahns():
    theirs = protocol_on(answer=lambda request: theirs_later)
    theirs_later: defer.Deferred = defer.Deferred()
    ours = protocol_on(answer=lambda request: ours_later)
    ours_later: defer.Deferred = defer.Deferred()
    theirs.dataReceived(BROWSER)
    assert read_here(ours, BROWSER)
    assert ours.transport.value() == theirs.transport.value() == b""  # daphne's app decides

    theirs_later.callback("one")
    ours_later.callback("one")

    assert ours.transport.value() == theirs.transport.value()
    assert ours.transport.value().startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: one\r\n" in ours.transport.value()
    assert ours.state == ours.STATE_OPEN


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(ConnectionDeny(403, "no"), id="refused"),
        pytest.param(RuntimeError("boom"), id="failed"),
    ],
)
def test_a_refusal_is_answered_as_autobahn_answers_it(refusal):
    def refuse(request: Any) -> Any:
        raise refusal

    theirs, ours = protocol_on(answer=refuse), protocol_on(answer=refuse)
    theirs.dataReceived(TICKET)
    assert read_here(ours, TICKET)

    assert ours.transport.value() == theirs.transport.value()
    status = re.match(rb"HTTP/1.1 (\d+) ", ours.transport.value())
    assert status is not None
    assert status.group(1) == (b"403" if isinstance(refusal, ConnectionDeny) else b"500")


# -- anything else: left to autobahn, untouched ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "options"),
    [
        pytest.param(TICKET.replace(b"Host: 127.0.0.1:8000\r\n", b""), {}, id="no Host"),
        pytest.param(TICKET.replace(b"Host:", b"Host: a\r\nHost:"), {}, id="two Hosts"),
        pytest.param(TICKET.replace(b"127.0.0.1:8000", b"h:port"), {}, id="a port not a number"),
        pytest.param(TICKET, {"externalPort": 9000}, id="another port than the external one"),
        pytest.param(TICKET.replace(b"Connection: Upgrade\r\n", b""), {}, id="no Connection"),
        pytest.param(
            TICKET.replace(b"Connection: Upgrade", b"Connection: close"), {}, id="no upgrade"
        ),
        pytest.param(TICKET.replace(b"Version: 13", b"Version: 12"), {}, id="version 12"),
        pytest.param(TICKET.replace(b"Version: 13", b"Version: x"), {}, id="version not a number"),
        pytest.param(
            TICKET.replace(b"Version: 13", b"Version: 13\r\nSec-WebSocket-Version: 13"),
            {},
            id="two versions",
        ),
        pytest.param(TICKET.replace(b"Sec-WebSocket-Version: 13\r\n", b""), {}, id="no version"),
        pytest.param(TICKET.replace(b"Sec-WebSocket-Key: ", b"X-Key: "), {}, id="no key"),
        pytest.param(TICKET.replace(b"jZQ==", b"jQ=="), {}, id="a short key"),
        pytest.param(TICKET.replace(b"dGhl", b"dG!l"), {}, id="a key not base64"),
        pytest.param(
            TICKET.replace(b"Key: ", b"Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Key: "),
            {},
            id="two keys",
        ),
        pytest.param(
            BROWSER.replace(b"one, two", b"one, one"), {}, id="a subprotocol offered twice"
        ),
        pytest.param(
            BROWSER.replace(b"https://collab.example", b"https://"), {}, id="an origin with no host"
        ),
        pytest.param(
            BROWSER.replace(b"Origin: ", b"Origin: https://a.example\r\nOrigin: "),
            {},
            id="two origins",
        ),
        pytest.param(
            BROWSER, {"allowedOrigins": ["https://other.example"]}, id="an origin not allowed"
        ),
        pytest.param(
            BROWSER.replace(b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions: x\r\nX"),
            {},
            id="two extension headers",
        ),
        pytest.param(TICKET.replace(b"GET /ws", b"GET //ws", 1), {}, id="a path starting //"),
        pytest.param(TICKET.replace(b"?ticket", b"#ticket", 1), {}, id="a fragment"),
        pytest.param(TICKET.replace(b"6666?", b"6666;p?", 1), {}, id="path parameters"),
        pytest.param(
            TICKET.replace(b"127.0.0.1:8000", b"127.0.0.1\x01:8000"), {}, id="a control character"
        ),
        pytest.param(TICKET, {"trustXForwardedFor": 1}, id="X-Forwarded-For trusted by autobahn"),
        pytest.param(TICKET, {"maxConnections": 1}, id="autobahn's connection cap"),
    ],
)
def test_anything_else_is_left_to_autobahn_untouched(data, options):
    if options.get("maxConnections"):
        protocol = protocol_on(factory_options=options)
        protocol.factory.countConnections = 2  # this one and another
        assert not read_here(protocol, data)
        assert protocol.data == b""
        return
    assert_left_to_autobahn(data, factory_options=options)


def test_a_protocol_that_already_read_bytes_is_left_to_autobahn():
    protocol = protocol_on()
    protocol.dataReceived(TICKET[:20])

    assert not read_here(protocol, TICKET)


# -- installed through direct upgrades ---------------------------------------------------------


@pytest.fixture
def upgrades(monkeypatch):
    """collab/upgrade.py installed for the test, and taken out after it."""
    from twisted.web import http

    monkeypatch.setattr(http.HTTPChannel, "dataReceived", http.HTTPChannel.dataReceived)
    monkeypatch.setattr(upgrade, "_read_handshake", None)
    assert transport.direct_upgrades() is True


def test_it_is_installed_with_direct_upgrades_once_checked(unchecked, upgrades):
    assert transport.direct_handshakes() is True
    assert upgrade._read_handshake is handshake.read


def test_it_stays_off_when_autobahn_reads_a_request_differently(
    unchecked, upgrades, monkeypatch, caplog
):
    from autobahn.websocket import protocol as autobahn

    process = autobahn.WebSocketServerProtocol.processHandshake

    def process_handshake(self: Any) -> None:  # an autobahn that cuts the query string off
        process(self)
        self.http_request_params = {}

    monkeypatch.setattr(autobahn.WebSocketServerProtocol, "processHandshake", process_handshake)
    # Its source is read as well: keep the wrapped one's.
    monkeypatch.setattr(handshake, "missing", _source_of(process, handshake.missing))

    assert transport.direct_handshakes() is False
    assert upgrade._read_handshake is None
    assert any(
        "transport tuning direct_handshakes is off" in r.getMessage()
        and "http_request_params differs" in r.getMessage()
        for r in caplog.records
    )


def _source_of(process: Any, missing: Any) -> Any:
    """``missing`` reading autobahn's source from ``process`` (what a changed autobahn would
    still have written), so that only its behaviour differs."""
    import inspect

    def checked() -> list[str]:
        real = inspect.getsource

        def getsource(thing: Any) -> str:
            if getattr(thing, "__name__", "") == "process_handshake":
                return real(process)
            return real(thing)

        inspect.getsource = getsource
        try:
            return missing()
        finally:
            inspect.getsource = real

    return checked


def test_a_socket_upgraded_directly_gets_the_scope_daphnes_path_gives_it(unchecked, upgrades):
    from tests.test_upgrade import UPGRADE, feed

    twisteds, _, _ = feed([UPGRADE[:40], UPGRADE[40:]])  # in pieces: Twisted's path
    assert transport.direct_handshakes() is True
    read: list[bool] = []
    installed = upgrade._read_handshake
    assert installed is not None
    upgrade.read_handshakes(lambda *args: read.append(installed(*args)) or read[-1])

    directs, connection, _ = feed([UPGRADE])

    assert read == [True]
    assert {**directs, "server": None} == {**twisteds, "server": None}
    assert connection.protocol.websocket_protocols == ["one", "two"]
