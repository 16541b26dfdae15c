"""collab/transport.py: eager writes on Twisted's TCP server connections, over real sockets
with daphne's asyncio reactor (not installed globally, not running unless a test drives it)."""

import asyncio
import contextlib
import functools
import json
import logging
import os
import pprint
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet import error, protocol, tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.python import failure

from collab import transport
from editor.realtime import protocol as messages


class Recorder(protocol.Protocol):
    def __init__(self):
        self.lost = []

    def connectionLost(self, reason):
        self.lost.append(reason)


@pytest.fixture
def eager():
    previous = tcp.Server.write
    transport.install()
    yield
    tcp.Server.write = previous


@pytest.fixture
def plain():
    previous = tcp.Server.write
    tcp.Server.write = transport._buffered_write
    yield
    tcp.Server.write = previous


@pytest.fixture
def connection():
    """A Twisted server-side connection and the raw client socket at its other end."""
    loop = asyncio.new_event_loop()
    reactor = AsyncioSelectorReactor(eventloop=loop)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, address = listener.accept()
    accepted.setblocking(False)
    recorder = Recorder()
    server = tcp.Server(accepted, recorder, address, None, 1, reactor)
    recorder.makeConnection(server)
    yield server, client, reactor
    client.close()
    if server.connected:
        server.connectionLost(failure.Failure(error.ConnectionDone()))
    accepted.close()
    loop.close()


def receive(client: socket.socket, size: int, reactor=None, server=None) -> bytes:
    """Reads exactly ``size`` bytes, letting the reactor flush ``server``'s buffer if given."""
    client.settimeout(0.05)
    data = b""
    for _ in range(10_000):
        if server is not None and server in reactor.getWriters():
            server.doWrite()
        try:
            chunk = client.recv(1 << 20)
        except TimeoutError:
            continue
        data += chunk
        if len(data) >= size:
            return data
    raise AssertionError(f"received {len(data)} of {size} bytes")


def test_install_replaces_the_server_write(eager):
    assert transport.installed()
    assert tcp.Server.write is transport.eager_write


def test_a_small_write_leaves_at_once_without_the_reactor(eager, connection):
    server, client, reactor = connection

    server.write(b"hello")

    client.settimeout(1)
    assert client.recv(100) == b"hello"
    # Nothing was queued, so the socket was never registered for writing.
    assert server not in reactor.getWriters()
    assert server.dataBuffer == b"" and server._tempDataLen == 0


def test_twisted_alone_waits_for_the_reactor(plain, connection):
    """What the eager write changes: Twisted's own write only buffers and registers."""
    server, client, reactor = connection

    server.write(b"hello")

    assert server in reactor.getWriters()
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.recv(100)
    server.doWrite()
    assert client.recv(100) == b"hello"


def test_what_the_kernel_does_not_take_is_buffered_and_flushed_in_order(eager, connection):
    server, client, reactor = connection
    chunk = bytes(range(256)) * (server.SEND_LIMIT // 256)  # each written eagerly if it can
    chunks = 80  # 10 MB: more than the socket buffers hold
    small = b"after"

    for _ in range(chunks):
        server.write(chunk)
    assert server in reactor.getWriters()  # the rest waits for writability
    server.write(small)  # must queue behind the rest, not jump ahead of it
    assert server._tempDataLen > 0

    data = receive(client, len(chunk) * chunks + len(small), reactor, server)
    assert data == chunk * chunks + small
    assert server not in reactor.getWriters()


def test_a_write_over_twisteds_send_limit_is_queued_whole_not_copied(eager, connection):
    """Twisted sends at most SEND_LIMIT per call: a big frame written eagerly would leave a
    remainder to copy, 16 MB per reader of a big paste."""
    server, client, reactor = connection
    big = bytes(range(256)) * 40_000

    server.write(big)

    assert server._tempDataBuffer == [big] and server._tempDataBuffer[0] is big
    assert receive(client, len(big), reactor, server) == big


def test_a_write_to_a_dead_peer_ends_in_connection_lost_not_an_exception(eager, connection):
    server, client, reactor = connection
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST

    for _ in range(3):
        server.write(b"x" * 1000)  # never raises
    # The failed write went to Twisted's path, whose next doWrite reports the loss.
    assert server in reactor.getWriters()
    assert server.doWrite() is not None


def test_writes_after_lose_connection_follow_twisted(eager, connection):
    server, client, reactor = connection
    server.write(b"first")
    server.loseConnection()

    server.write(b"late")

    # Twisted's path: buffered behind the close, sent when the reactor flushes.
    assert server._tempDataLen == len(b"late")
    client.settimeout(1)
    assert client.recv(100) == b"first"


@pytest.fixture
def daphne_factory():
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    previous = WebSocketProtocol._connectionMade
    transport.share_protocol_options()
    factory = WebSocketFactory(None, server="collab-test")
    # What daphne's Server.run sets, with values of our own.
    factory.setProtocolOptions(
        autoPingTimeout=7,
        allowNullOrigin=True,
        openHandshakeTimeout=3,
        maxMessagePayloadSize=12345,
        maxFramePayloadSize=6789,
    )
    yield factory
    WebSocketProtocol._connectionMade = previous
    for name in [*WebSocketProtocol.CONFIG_ATTRS, "_options_of"]:
        if name in WebSocketProtocol.__dict__:
            delattr(WebSocketProtocol, name)


def connect(factory, connection):
    server, client, reactor = connection
    ws = factory.buildProtocol(("127.0.0.1", 1))
    ws.makeConnection(server)
    return ws


def test_connections_see_the_factory_options_without_copying_them(daphne_factory, connection):
    ws = connect(daphne_factory, connection)

    for name in ws.CONFIG_ATTRS:
        assert name not in ws.__dict__, name
        assert getattr(ws, name) == getattr(daphne_factory, name), name
    assert (ws.autoPingTimeout, ws.openHandshakeTimeout) == (7, 3)
    assert (ws.maxMessagePayloadSize, ws.maxFramePayloadSize) == (12345, 6789)
    # A function-valued option stays a plain function, not a method of the connection.
    assert ws.perMessageCompressionAccept is daphne_factory.perMessageCompressionAccept


def test_a_new_factory_replaces_the_shared_options(daphne_factory, connection):
    from daphne.ws_protocol import WebSocketFactory

    connect(daphne_factory, connection)
    other = WebSocketFactory(None, server="another")
    other.setProtocolOptions(autoPingTimeout=99)

    ws = connect(other, connection)

    assert ws.autoPingTimeout == 99


def test_a_connection_has_no_options_walked_unless_debug_lines_are_logged(
    daphne_factory, connection, monkeypatch
):
    # autobahn walks the options on every connection to list them (and where it found each)
    # for its debug line: with debug lines off, a connection gives it none to walk.
    import txaio
    from autobahn.websocket import protocol as autobahn

    listed: list[list] = []
    monkeypatch.setattr(autobahn, "pformat", lambda value, *a, **k: listed.append(value) or "")
    connect(daphne_factory, connection)  # the first: the options go on the class

    ws = connect(daphne_factory, connection)

    assert listed[-1] == []
    assert "CONFIG_ATTRS" not in ws.__dict__  # given for the one call only
    assert (ws.autoPingTimeout, ws.maxMessagePayloadSize) == (7, 12345)

    monkeypatch.setattr(txaio, "get_global_log_level", lambda: "debug")
    ws = connect(daphne_factory, connection)

    assert [name for name, _, _ in listed[-1]] == list(ws.CONFIG_ATTRS)
    assert len(listed[-1]) > 20


# -- raw frames ------------------------------------------------------------------------------


@pytest.fixture
def open_socket(connection):
    """A daphne WebSocket protocol on a real TCP connection, in the state a completed handshake
    leaves it (the handshake itself needs daphne's whole server loop: the live tests do that),
    and the raw client socket at the other end."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory

    server, client, reactor = connection
    daphne = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    daphne.connections = {}  # what Server.run() starts with
    factory = WebSocketFactory(daphne, server="collab-test")
    factory.setProtocolOptions(maxMessagePayloadSize=1 << 20)
    ws = factory.buildProtocol(("127.0.0.1", 1))
    ws.makeConnection(server)
    ws.server = daphne
    ws.client_addr = ["127.0.0.1", 1]  # what onConnect sets; daphne logs it when it sends
    daphne.protocol_connected(ws)
    ws.state = ws.STATE_OPEN
    client.settimeout(1)
    return ws, client, daphne


def read_all(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += client.recv(size - len(data))
    return data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_are_encoded_as_autobahn_encodes_them(open_socket, eager, size):
    ws, client, _ = open_socket
    payload = bytes(i % 251 for i in range(size))

    ws.sendMessage(payload, isBinary=True)
    expected = read_all(client, len(transport.encode_binary_frame(payload)))

    assert expected == transport.encode_binary_frame(payload)


def test_an_open_socket_gets_the_frame_directly(open_socket, eager):
    ws, client, _ = open_socket
    frame = transport.encode_binary_frame(b"\x00\x02hello")

    assert transport.write_message(ws, b"\x00\x02hello") is True
    assert read_all(client, len(frame)) == frame


def test_several_messages_leave_in_one_write(open_socket, eager, monkeypatch):
    ws, client, _ = open_socket
    payloads = [b"\x00\x00\x01\x00", b"\x02\x00\x0aread-write", b"\x00\x02" + b"x" * 300]
    writes = []
    write = ws.transport.write
    monkeypatch.setattr(ws.transport, "write", lambda data: writes.append(data) or write(data))

    assert transport.write_messages(ws, payloads) is True

    frames = b"".join(transport.encode_binary_frame(payload) for payload in payloads)
    assert writes == [frames]
    assert read_all(client, len(frames)) == frames


def test_several_messages_are_not_written_to_a_socket_that_is_not_plainly_open(open_socket, eager):
    ws, client, _ = open_socket
    ws.state = ws.STATE_CLOSING

    assert transport.write_messages(ws, [b"\x00\x02a", b"\x00\x02b"]) is False
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(64)


def test_one_payload_is_encoded_once_for_many_sockets(open_socket, eager):
    ws, client, _ = open_socket
    payload = b"\x00\x02" + b"x" * 300

    transport.write_message(ws, payload)
    first = transport._last[1]
    transport.write_message(ws, payload)

    assert transport._last[1] is first
    frame = transport.encode_binary_frame(payload)
    assert read_all(client, 2 * len(frame)) == frame + frame


def test_a_large_payload_is_encoded_once_per_broadcast_then_let_go(open_socket, eager):
    ws, client, _ = open_socket
    payload = b"\x00\x02" + b"x" * 100_000  # over the size kept between broadcasts

    async def broadcast() -> tuple[bool, bytes]:
        transport.write_message(ws, payload)
        first = transport._last[1]
        transport.write_message(ws, payload)
        same = transport._last[0] is payload and transport._last[1] is first
        await asyncio.sleep(0)  # the loop's next turn: the broadcast is over
        return same, transport._last[0]

    encoded_once, kept = asyncio.run(broadcast())

    assert encoded_once
    assert kept is not payload
    frame = transport.encode_binary_frame(payload)
    assert read_all(client, 2 * len(frame)) == frame + frame


def test_a_big_broadcast_and_its_frame_are_one_copy(open_socket, eager):
    ws, client, _ = open_socket
    update = b"y" * 100_000  # over the size kept between broadcasts, under Twisted's send slice
    parts = messages.sync_update_parts(update)

    async def broadcast() -> tuple[object, bool, bytes]:
        message = transport.framed_message(parts)
        written = transport.write_message(ws, message) and transport.write_message(ws, message)
        frame = transport._last[1]
        await asyncio.sleep(0)  # the loop's next turn: the broadcast is over
        return message, written, frame

    message, written, frame = asyncio.run(broadcast())

    assert written
    assert bytes(message) == messages.sync_update(update)
    assert message.obj is frame  # the message is the frame's tail, not a copy of its own
    assert frame == transport.encode_binary_frame(messages.sync_update(update))
    assert read_all(client, 2 * len(frame)) == frame + frame
    assert transport._last == (b"", b"")


def test_a_small_broadcast_is_joined_as_before():
    parts = messages.sync_update_parts(b"a small update")

    assert transport.framed_message(parts) == messages.sync_update(b"a small update")
    assert type(transport.framed_message(parts)) is bytes


@pytest.mark.parametrize(
    "state",
    [
        "connecting",
        "closing",
        "muted",
        "disconnected",
        "queued",
        "compressed",
        "too large",
        "fragmenting",
    ],
)
def test_anything_but_a_plainly_open_socket_takes_the_ordinary_path(open_socket, eager, state):
    ws, client, daphne = open_socket
    payload = b"\x00\x02hello"
    if state == "connecting":
        ws.state = ws.STATE_CONNECTING
    elif state == "closing":
        ws.state = ws.STATE_CLOSING
    elif state == "muted":
        ws.muted = True
    elif state == "disconnected":
        daphne.protocol_disconnected(ws)
    elif state == "queued":
        ws.send_queue.append((b"pending", False))
    elif state == "compressed":
        ws._perMessageCompress = object()
    elif state == "too large":
        payload = b"x" * ((1 << 20) + 1)
    elif state == "fragmenting":
        ws.autoFragmentSize = 3

    assert transport.write_message(ws, payload) is False

    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.recv(100)


def test_the_protocol_is_found_behind_daphnes_send_and_the_session_wrapper():
    from channels.sessions import InstanceSessionWrapper
    from daphne.server import Server

    daphne = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    protocol = object()
    send = functools.partial(daphne.handle_reply, protocol)
    wrapper = InstanceSessionWrapper({"type": "websocket", "cookies": {}}, send)

    assert transport.websocket_of(send) is protocol
    assert transport.websocket_of(wrapper.send) is protocol

    async def other_server_send(message):
        pass

    assert transport.websocket_of(other_server_send) is None
    assert transport.websocket_of(functools.partial(print, protocol)) is None


# -- the self-check ----------------------------------------------------------------------------
# Each test breaks one thing a tuning relies on (as a release that renamed or changed it would),
# asks for the tuning, and then writes for real: the tuning must stay off with one warning, and
# the write must take the ordinary path and arrive.


@pytest.fixture
def untuned(monkeypatch):
    """Twisted's write and autobahn's _connectionMade as the libraries ship them."""
    from daphne.ws_protocol import WebSocketProtocol

    monkeypatch.setattr(tcp.Server, "write", transport._buffered_write)
    connection_made = WebSocketProtocol._connectionMade
    monkeypatch.setattr(
        WebSocketProtocol,
        "_connectionMade",
        getattr(connection_made, "__wrapped__", connection_made),
    )
    # Options an earlier test's connection set on the class (when this process loaded
    # collab.asgi, the options are shared): gone, as autobahn ships the class.
    for name in [*WebSocketProtocol.CONFIG_ATTRS, "_options_of"]:
        if name in WebSocketProtocol.__dict__:
            monkeypatch.delattr(WebSocketProtocol, name)


def hide(patch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Instances of ``cls`` no longer have ``name``: a release that renamed it, from outside."""
    original = cls.__getattribute__

    def __getattribute__(self, attribute):
        if attribute == name:
            raise AttributeError(attribute)
        return original(self, attribute)

    patch.setattr(cls, "__getattribute__", __getattribute__)


def warnings_for(caplog, tuning: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "collab.transport"
        and record.levelno == logging.WARNING
        and f"tuning {tuning} is off" in record.getMessage()
    ]


def assert_written_by_twisted(server, client, reactor) -> None:
    """A write Twisted buffers and its reactor flushes: the ordinary path, not the eager one."""
    server.write(b"hello")
    assert server in reactor.getWriters()
    server.doWrite()
    client.settimeout(1)
    assert client.recv(100) == b"hello"


def test_every_tuning_passes_its_check_on_the_installed_libraries(unchecked, caplog):
    assert transport.check() == {
        "eager_writes": True,
        "shared_protocol_options": True,
        "raw_frames": True,
        "queued_bytes": True,
        "header_deadline": True,
        "access_log": True,
        "quiet_handshake": True,
        "lean_sockets": True,
        "shutdown_cancel": True,
        "spread_checks": True,
        "direct_upgrades": True,
        "direct_handshakes": True,
        "direct_frames": True,
        "lingering_close": True,
        "fast_frames": True,
        "turn_budget": True,
    }
    assert [r for r in caplog.records if r.name == "collab.transport"] == []


def test_autobahn_formats_its_debug_lines_only_when_they_are_logged(unchecked, monkeypatch):
    import txaio
    from autobahn.websocket import protocol

    monkeypatch.setattr(protocol, "pformat", protocol.pformat)  # put back afterwards
    assert transport.quiet_handshake()
    assert transport.quiet_handshake()  # idempotent
    options = [("openHandshakeTimeout", 5, "WebSocketServerFactory")]
    txaio.use_twisted()
    level = txaio.get_global_log_level()
    try:
        txaio.set_global_log_level("info")
        assert protocol.pformat(options) == "(not formatted: debug logging is off)"
        txaio.set_global_log_level("debug")
        assert protocol.pformat(options) == pprint.pformat(options)
    finally:
        txaio.set_global_log_level(level)


@pytest.fixture
def highlighting_as_shipped(monkeypatch):
    """autobahn's modules with autobahn.util's highlighters, as autobahn ships them (put back
    afterwards)."""
    from autobahn import util
    from autobahn.twisted import websocket
    from autobahn.websocket import protocol

    monkeypatch.setattr(protocol, "pformat", pprint.pformat)
    for module in (protocol, websocket):
        for name in ("hltype", "hlval"):
            monkeypatch.setattr(module, name, getattr(util, name))


def test_autobahn_highlights_only_what_a_written_line_shows(
    unchecked, highlighting_as_shipped, monkeypatch
):
    import click
    import txaio
    from autobahn import util
    from autobahn.twisted import websocket
    from autobahn.websocket import protocol

    calls = []
    style = click.style

    def counted(text, **kwargs):
        calls.append(text)
        return style(text, **kwargs)

    monkeypatch.setattr(click, "style", counted)  # what autobahn.util.hl colours with
    assert transport.quiet_handshake()
    assert transport.quiet_handshake()  # idempotent: wrapped once
    method = protocol.WebSocketServerProtocol().processHandshake
    txaio.use_twisted()
    level = txaio.get_global_log_level()
    log = txaio.make_logger()
    try:
        txaio.set_global_log_level("info")
        log.debug("{peer}", peer=websocket.hlval("tcp:127.0.0.1:1"))
        assert calls == []  # not logged: nothing highlighted
        # Formatted, the text is autobahn's own, colours and all.
        assert f"{websocket.hlval('tcp:127.0.0.1:1')}" == util.hlval("tcp:127.0.0.1:1")
        assert calls == ["tcp:127.0.0.1:1"] * 2  # ours, when formatted, and autobahn's
        assert str(protocol.hltype(method)) == util.hltype(method)
        assert f"{protocol.hlval(7):>3}" == f"{util.hlval(7):>3}"
    finally:
        txaio.set_global_log_level(level)


def test_it_leaves_autobahns_highlighting_when_autobahn_changed(
    unchecked, highlighting_as_shipped, monkeypatch, caplog
):
    from autobahn.twisted import websocket

    def own(value):
        return f"*{value}*"

    monkeypatch.setattr(websocket, "hltype", own)
    assert transport.quiet_handshake() is False
    assert websocket.hltype is own
    [warning] = warnings_for(caplog, "quiet_handshake")
    assert "autobahn.twisted.websocket no longer uses autobahn.util.hltype" in warning


def test_it_leaves_autobahns_pformat_when_autobahn_changed(unchecked, monkeypatch, caplog):
    from autobahn.websocket import protocol

    def other(value):
        return repr(value)

    monkeypatch.setattr(protocol, "pformat", other)
    assert transport.quiet_handshake() is False
    assert protocol.pformat is other
    [warning] = warnings_for(caplog, "quiet_handshake")
    assert "no longer uses pprint.pformat" in warning


def test_it_keeps_twisteds_write_when_its_signature_changed(
    unchecked, untuned, connection, caplog, monkeypatch
):
    twisted_write = tcp.Server.write

    def write(self, data, urgent=False):  # an argument eager_write would not pass on
        twisted_write(self, data)

    monkeypatch.setattr(tcp.Server, "write", write)

    assert transport.install() is False
    assert transport.install() is False
    assert tcp.Server.write is write
    assert transport.check()["eager_writes"] is False
    [warning] = warnings_for(caplog, "eager_writes")
    assert "tcp.Server.write takes (self, data, urgent=False)" in warning
    assert_written_by_twisted(*connection)


@pytest.mark.parametrize(
    "name",
    [
        "SEND_LIMIT",
        "dataBuffer",
        "_tempDataLen",
        "disconnecting",
        "connected",
        "_writeDisconnected",
        "TLS",
    ],
)
def test_it_keeps_twisteds_write_when_a_connection_lacks_what_it_reads(
    unchecked, untuned, connection, caplog, name
):
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, tcp.Server, name)
        assert transport.install() is False
        assert transport.check()["eager_writes"] is False
    # Twisted is whole again, but the answer stands for the process.
    assert transport.install() is False
    assert not transport.installed()
    [warning] = warnings_for(caplog, "eager_writes")
    assert re.search(rf"has no {name}\b", warning)
    assert_written_by_twisted(*connection)


def assert_a_connection_keeps_its_own_options(connection) -> None:
    """autobahn's ordinary path: options copied into the connection, which still sends."""
    from daphne.ws_protocol import WebSocketFactory

    factory = WebSocketFactory(None, server="collab-test")
    factory.setProtocolOptions(autoPingTimeout=7)
    ws = connect(factory, connection)
    assert ws.__dict__["autoPingTimeout"] == 7
    ws.state = ws.STATE_OPEN
    ws.sendMessage(b"hello", isBinary=True)
    server, client, reactor = connection
    frame = transport.encode_binary_frame(b"hello")
    assert receive(client, len(frame), reactor, server) == frame


def test_options_stay_per_connection_when_connection_made_changed(
    unchecked, untuned, connection, caplog, monkeypatch
):
    from daphne.ws_protocol import WebSocketProtocol

    autobahn_connection_made = WebSocketProtocol._connectionMade

    def _connectionMade(self, details=None):
        autobahn_connection_made(self)

    monkeypatch.setattr(WebSocketProtocol, "_connectionMade", _connectionMade)

    assert transport.share_protocol_options() is False
    assert transport.share_protocol_options() is False
    assert WebSocketProtocol._connectionMade is _connectionMade
    [warning] = warnings_for(caplog, "shared_protocol_options")
    assert "_connectionMade takes (self, details=None)" in warning
    assert_a_connection_keeps_its_own_options(connection)


def test_options_stay_per_connection_without_config_attrs(unchecked, untuned, connection, caplog):
    from autobahn.websocket.protocol import WebSocketServerProtocol
    from daphne.ws_protocol import WebSocketProtocol

    with pytest.MonkeyPatch.context() as broken:
        broken.delattr(WebSocketServerProtocol, "CONFIG_ATTRS")
        assert transport.share_protocol_options() is False
    assert transport.share_protocol_options() is False
    assert not getattr(WebSocketProtocol._connectionMade, "shares_options", False)
    [warning] = warnings_for(caplog, "shared_protocol_options")
    assert "has no CONFIG_ATTRS" in warning
    assert_a_connection_keeps_its_own_options(connection)


def assert_sent_the_asgi_way(send, ws, client) -> None:
    """The ordinary path: daphne's ASGI send, autobahn's framing, Twisted's write."""
    payload = b"\x00\x02hello"
    asyncio.run(send({"type": "websocket.send", "bytes": payload}))
    frame = transport.encode_binary_frame(payload)
    assert receive(client, len(frame), ws.transport.reactor, ws.transport) == frame


@pytest.mark.parametrize(
    "name",
    [
        "STATE_OPEN",
        "SEND_STATE_GROUND",
        "state",
        "send_state",
        "muted",
        "send_queue",
        "_perMessageCompress",
        "maskServerFrames",
        "logFrames",
        "logOctets",
        "autoFragmentSize",
        "maxMessagePayloadSize",
    ],
)
def test_raw_frames_stay_off_when_a_protocol_lacks_what_they_read(
    unchecked, open_socket, caplog, name
):
    from daphne.ws_protocol import WebSocketProtocol

    ws, client, daphne = open_socket
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, WebSocketProtocol, name)
        assert transport.write_message(ws, b"\x00\x02hello") is False
    assert transport.write_message(ws, b"\x00\x02hello") is False
    [warning] = warnings_for(caplog, "raw_frames")
    assert re.search(rf"\b{name}\b", warning)
    # The send-buffer count needs none of it: the socket is still found, its bytes still counted.
    send = functools.partial(daphne.handle_reply, ws)
    assert transport.websocket_of(send) is ws
    assert transport.queued_bytes(ws) == 0
    assert_sent_the_asgi_way(send, ws, client)


class Captured(Exception):
    pass


def test_no_socket_is_found_when_daphne_hands_over_send_differently(
    unchecked, open_socket, caplog, monkeypatch
):
    import daphne.server

    def partial(function, *args):  # a closure instead of functools.partial
        async def send(message):
            await function(*args, message)

        return send

    monkeypatch.setattr(daphne.server, "partial", partial)
    ws, client, server = open_socket

    def application(scope, receive, send):
        raise Captured(send)

    server.application = application
    with pytest.raises(Captured) as captured:
        server.create_application(ws, {"type": "websocket"})
    send = captured.value.args[0]

    assert transport.websocket_of(send) is None
    assert transport.write_message(ws, b"\x00\x02hello") is False
    assert transport.queued_bytes(ws) is None
    for tuning in ("raw_frames", "queued_bytes"):
        [warning] = warnings_for(caplog, tuning)
        assert "daphne's send is not partial(Server.handle_reply, protocol)" in warning
    assert_sent_the_asgi_way(send, ws, client)


@pytest.mark.parametrize("name", ["dataBuffer", "offset", "_tempDataLen"])
def test_queued_bytes_are_unknown_when_a_connection_lacks_its_buffers(
    unchecked, open_socket, caplog, name
):
    ws, client, daphne = open_socket
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, tcp.Server, name)
        assert transport.queued_bytes(ws) is None
    assert transport.queued_bytes(ws) is None
    [warning] = warnings_for(caplog, "queued_bytes")
    assert re.search(rf"has no {name}\b", warning)
    # Raw frames need no Twisted buffers: the socket is still found and written to directly.
    send = functools.partial(daphne.handle_reply, ws)
    assert transport.websocket_of(send) is ws
    assert transport.write_message(ws, b"\x00\x02hello") is True
    frame = transport.encode_binary_frame(b"\x00\x02hello")
    assert receive(client, len(frame), ws.transport.reactor, ws.transport) == frame


def test_no_socket_is_found_when_neither_raw_frames_nor_queued_bytes_can_run(
    unchecked, open_socket, caplog
):
    from daphne.ws_protocol import WebSocketProtocol

    ws, client, daphne = open_socket
    send = functools.partial(daphne.handle_reply, ws)
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, tcp.Server, "offset")
        hide(broken, WebSocketProtocol, "send_state")
        assert transport.websocket_of(send) is None
    assert transport.websocket_of(send) is None
    assert len(warnings_for(caplog, "raw_frames")) == len(warnings_for(caplog, "queued_bytes")) == 1
    assert_sent_the_asgi_way(send, ws, client)


def test_no_socket_is_found_through_a_changed_session_wrapper(unchecked, open_socket, caplog):
    from channels.sessions import InstanceSessionWrapper

    ws, client, daphne = open_socket
    send = functools.partial(daphne.handle_reply, ws)
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, InstanceSessionWrapper, "real_send")
        wrapper = InstanceSessionWrapper({"type": "websocket", "cookies": {}}, send)
        assert transport.websocket_of(wrapper.send) is None
    assert transport.websocket_of(send) is None
    for tuning in ("raw_frames", "queued_bytes"):
        [warning] = warnings_for(caplog, tuning)
        assert "InstanceSessionWrapper.send does not keep it as real_send" in warning
    assert_sent_the_asgi_way(send, ws, client)


ASGI_WITH_A_CHANGED_TWISTED = """
import json
from twisted.internet import tcp
twisted_write = tcp.Server.write
def write(self, data, urgent=False):
    twisted_write(self, data)
tcp.Server.write = write
import collab.asgi
from collab import transport
print(json.dumps({"write_kept": tcp.Server.write is write, **transport.check()}))
"""


def test_loading_the_application_leaves_a_changed_twisted_alone():
    result = subprocess.run(
        [sys.executable, "-c", ASGI_WITH_A_CHANGED_TWISTED],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "write_kept": True,
        "eager_writes": False,
        "shared_protocol_options": True,
        "raw_frames": True,
        "queued_bytes": True,
        "header_deadline": True,
        "access_log": True,
        "quiet_handshake": True,
        "lean_sockets": True,
        "shutdown_cancel": True,
        "spread_checks": True,
        "direct_upgrades": True,
        "direct_handshakes": True,
        "direct_frames": True,
        "lingering_close": True,
        "fast_frames": True,
        "turn_budget": True,
    }
    assert result.stderr.count("transport tuning eager_writes is off") == 1
    assert result.stderr.count("transport tuning") == 1


# -- the request-head deadline ----------------------------------------------------------------


def test_request_heads_get_no_deadline_when_twisteds_channel_lost_a_hook(unchecked, caplog):
    from twisted.web import http

    original = http.HTTPChannel.connectionMade
    with pytest.MonkeyPatch.context() as broken:
        broken.delattr(http.HTTPChannel, "allHeadersReceived")
        assert transport.limit_request_heads(5) is False
    assert transport.limit_request_heads(5) is False  # the answer stands for the process
    assert http.HTTPChannel.connectionMade is original  # Twisted's own, untouched
    [warning] = warnings_for(caplog, "header_deadline")
    assert "HTTPChannel has no allHeadersReceived" in warning


def test_request_heads_get_no_deadline_when_a_hook_takes_other_arguments(unchecked, caplog):
    from twisted.web import http

    original = http.HTTPChannel.connectionMade

    def connectionLost(self, reason, extra):  # a release that added an argument
        pass

    with pytest.MonkeyPatch.context() as changed:
        changed.setattr(http.HTTPChannel, "connectionLost", connectionLost)
        assert transport.limit_request_heads(5) is False
    assert http.HTTPChannel.connectionMade is original
    [warning] = warnings_for(caplog, "header_deadline")
    assert "HTTPChannel.connectionLost takes" in warning


# -- daphne's access log through logging ---------------------------------------------------------


@pytest.fixture
def daphne_log_action(monkeypatch):
    """daphne's Server.log_action as it ships, put back after the test."""
    from daphne.server import Server

    monkeypatch.setattr(Server, "log_action", Server.log_action)
    return Server.log_action


def a_server(action_logger):
    from daphne.server import Server

    return Server(
        application=None,
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        action_logger=action_logger,
    )


def test_the_access_log_goes_to_the_function_given(unchecked, daphne_log_action):
    entries, written = [], []

    def log(protocol, action, details):
        entries.append((protocol, action, details))

    assert transport.log_access(log) is True
    assert transport.log_access(log) is True
    details = {"path": "/healthz", "status": 200, "method": "GET", "client": "1.2.3.4:5"}
    a_server(lambda *entry: written.append(entry)).log_action("http", "complete", details)
    # No access log asked for (daphne's verbosity 0): nothing, as before.
    a_server(None).log_action("websocket", "connected", {"path": "/ws", "client": None})

    assert entries == [("http", "complete", details)]
    assert written == []  # daphne's own writer is no longer called


def test_daphne_keeps_its_access_log_when_log_action_takes_other_arguments(
    unchecked, daphne_log_action, caplog
):
    from daphne.server import Server

    def log_action(self, protocol, action, details, extra):  # a release that added one
        pass

    with pytest.MonkeyPatch.context() as changed:
        changed.setattr(Server, "log_action", log_action)
        assert transport.log_access(print) is False
        assert Server.log_action is log_action
    assert Server.log_action is daphne_log_action
    [warning] = warnings_for(caplog, "access_log")
    assert "daphne's Server.log_action takes" in warning
    assert "whatever LOG_FORMAT says" in warning


# -- every consumer cancelled at shutdown -------------------------------------------------------


@pytest.fixture
def daphne_kill_all(monkeypatch):
    """daphne's Server.kill_all_applications as it ships, put back after the test."""
    from daphne.server import Server

    monkeypatch.setattr(Server, "kill_all_applications", Server.kill_all_applications)
    return Server.kill_all_applications


def shut_down(server) -> None:
    """What daphne does on SIGTERM, inside a running loop as daphne's reactor has it."""

    async def stop() -> None:
        server.kill_all_applications()
        await asyncio.sleep(0)

    asyncio.run(stop())


def connections_after_an_upgrade():
    """A server just after a WebSocket opened: the HTTP request it was upgraded from is still
    listed (daphne's checker sweeps it within a second), without an application; the socket's
    consumer is running. Returns the server, the upgraded entry and the consumer's task."""
    loop = asyncio.new_event_loop()
    server = a_server(None)
    consumer = loop.create_future()
    upgraded = {"connected": 1.0, "disconnected": 2.0}
    server.connections = {"request": upgraded, "socket": {"application_instance": consumer}}
    return server, upgraded, consumer, loop


def test_daphne_alone_cancels_no_consumer_when_a_request_was_just_upgraded(daphne_kill_all):
    server, _, consumer, loop = connections_after_an_upgrade()
    with pytest.raises(KeyError, match="application_instance"):
        shut_down(server)
    assert not consumer.cancelled()  # the socket would go on being served
    loop.close()


def test_a_stop_cancels_every_consumer_even_after_an_upgrade(unchecked, daphne_kill_all):
    server, upgraded, consumer, loop = connections_after_an_upgrade()
    assert transport.cancel_on_shutdown() is True
    assert transport.cancel_on_shutdown() is True  # idempotent: wrapped once
    from daphne.server import Server

    assert Server.kill_all_applications.__wrapped__ is daphne_kill_all

    shut_down(server)

    assert consumer.cancelled()
    assert upgraded == {"connected": 1.0, "disconnected": 2.0}  # daphne's entry as it was
    assert set(server.connections) == {"request", "socket"}  # daphne's checker sweeps them
    loop.close()


def test_a_stop_with_every_consumer_running_goes_straight_to_daphne(unchecked, daphne_kill_all):
    server, _, consumer, loop = connections_after_an_upgrade()
    del server.connections["request"]
    transport.cancel_on_shutdown()
    shut_down(server)
    assert consumer.cancelled()
    loop.close()


def test_daphnes_own_trigger_stays_when_it_takes_other_arguments(
    unchecked, daphne_kill_all, caplog
):
    from daphne.server import Server

    def kill_all_applications(self, reason):  # a release that added one
        pass

    with pytest.MonkeyPatch.context() as changed:
        changed.setattr(Server, "kill_all_applications", kill_all_applications)
        assert transport.cancel_on_shutdown() is False
        assert Server.kill_all_applications is kill_all_applications
    [warning] = warnings_for(caplog, "shutdown_cancel")
    assert "kill_all_applications takes" in warning


def test_daphnes_own_trigger_stays_when_it_no_longer_cancels_instances(
    unchecked, daphne_kill_all, caplog
):
    from daphne.server import Server

    def kill_all_applications(self):  # a release that stops them some other way
        for details in self.connections.values():
            details.get("application_instance")

    with pytest.MonkeyPatch.context() as changed:
        changed.setattr(Server, "kill_all_applications", kill_all_applications)
        assert transport.cancel_on_shutdown() is False
        assert Server.kill_all_applications is kill_all_applications
    [warning] = warnings_for(caplog, "shutdown_cancel")
    assert "no longer cancels" in warning


# -- direct frames ----------------------------------------------------------------------------


def test_direct_frames_stay_off_when_daphne_puts_frames_differently(unchecked, monkeypatch, caplog):
    from daphne.ws_protocol import WebSocketProtocol

    def on_message(self, payload, is_binary):
        self.application_queue.put_nowait({"type": "websocket.receive", "data": payload})

    monkeypatch.setattr(WebSocketProtocol, "onMessage", on_message)

    assert transport.check()["direct_frames"] is False
    assert caplog.text.count("transport tuning direct_frames is off") == 1
    assert "onMessage does not put_nowait a frame" in caplog.text


# -- hanging up: a lingering close --------------------------------------------------------------


class Reader(Recorder):
    def __init__(self):
        super().__init__()
        self.data = []

    def dataReceived(self, data):
        self.data.append(data)


@pytest.fixture
def hung_up(connection):
    """A connection whose protocol wrote a close frame and hung up."""
    server, client, reactor = connection
    reader = Reader()
    reader.makeConnection(server)
    server.protocol = reader
    server.write(b"close frame")
    transport.hang_up(reader)
    return server, client, reactor, reader


def spin(reactor, until, timeout: float = 5) -> None:
    """Runs the reactor's event loop until ``until()`` is true."""
    loop = reactor._asyncioEventloop
    deadline = loop.time() + timeout
    while not until():
        assert loop.time() < deadline, "the reactor did not get there in time"
        loop.run_until_complete(asyncio.sleep(0.01))


def read_to_end(client: socket.socket) -> bytes:
    client.settimeout(5)
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def test_a_hung_up_socket_sends_its_close_frame_then_its_end_and_reads_on(hung_up):
    server, client, reactor, reader = hung_up
    spin(reactor, lambda: server._writeDisconnected)
    # The client reads the close frame, then the end of the server's half (not a reset) ...
    assert read_to_end(client) == b"close frame"
    # ... while what it still sends is read and thrown away, not handed to the protocol.
    client.sendall(b"a frame sent before the client read the close")
    client.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: reader.lost)
    assert reader.data == []
    [end] = reader.lost
    assert end.check(error.ConnectionDone)
    assert reactor.getDelayedCalls() == []  # the drop was called off


def test_a_client_that_goes_on_sending_is_dropped_after_the_linger(hung_up):
    server, client, reactor, reader = hung_up
    dropping = reactor.getDelayedCalls()
    assert [call.getTime() - reactor.seconds() for call in dropping] == [
        pytest.approx(transport.LINGER_SECONDS, abs=0.1)
    ]
    client.sendall(b"x" * 1000)
    dropping[0].reset(0.05)  # the linger, shortened
    spin(reactor, lambda: reader.lost)
    [end] = reader.lost
    assert end.check(error.ConnectionAborted)
    assert reader.data == []


def test_a_flood_while_lingering_is_no_longer_read(hung_up):
    server, client, reactor, reader = hung_up
    assert server in reactor.getReaders()  # lingering, it reads what comes
    client.setblocking(False)
    sent = 0
    with contextlib.suppress(BlockingIOError):
        while sent < 4 * transport.LINGER_BYTES:
            sent += client.send(b"x" * 65536)
    spin(reactor, lambda: server not in reactor.getReaders())
    assert not reader.lost  # still lingering: dropped when its time is up


def test_a_socket_closed_by_daphne_lingers_its_whole_time(open_socket, connection):
    # Seen in CI: a flooder closed with 4429 was dropped 40 ms after its close frame, its next
    # frames unread, so its next write failed on a reset. autobahn's close-handshake timeout
    # did it: txaio's batched timer rounds the time it is due down to a whole second of the
    # clock, so it comes anywhere from 0 to 1 s after the close.
    from txaio._common import _BatchedTimer

    ws, client, _ = open_socket
    server, _, reactor = connection
    server.protocol = ws  # what daphne's server connection hands its data to
    # autobahn's timer (txaio.make_batched_timer(0.2, ...)), on this test's reactor.
    ws.factory._batched_timer = _BatchedTimer(200, 1000, reactor.seconds, reactor.callLater)
    ws.serverClose(code=4429)  # the consumer's close, as daphne sends it
    transport.hang_up(ws)

    # Only the linger's drop is due, a whole LINGER_SECONDS away.
    assert [call.getTime() - reactor.seconds() for call in reactor.getDelayedCalls()] == [
        pytest.approx(transport.LINGER_SECONDS, abs=0.1)
    ]
    spin(reactor, lambda: server._writeDisconnected)
    assert read_to_end(client) == b"\x88\x02" + (4429).to_bytes(2, "big")
    # The client, not yet aware, sends on for half the linger, then ends its half: a clean end.
    client.setblocking(False)
    until = reactor.seconds() + transport.LINGER_SECONDS / 2
    spin(reactor, lambda: client.send(b"\x82\x80xxxx") and reactor.seconds() > until)
    client.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: server.disconnected)
    assert reactor.getDelayedCalls() == []  # ended by the client's end: the drop was called off


def test_without_the_lingering_close_a_hang_up_closes_once_flushed(unchecked, connection, caplog):
    with pytest.MonkeyPatch.context() as broken:
        hide(broken, tcp.Server, "loseWriteConnection")
        assert transport.check()["lingering_close"] is False
    [warning] = warnings_for(caplog, "lingering_close")
    assert "has no loseWriteConnection" in warning
    server, client, reactor = connection
    server.write(b"close frame")
    transport.hang_up(server.protocol)
    assert server.disconnecting  # Twisted's loseConnection, as before
    assert reactor.getDelayedCalls() == []


def test_the_lingering_close_stays_off_when_autobahn_keeps_its_close_timeout_elsewhere(
    unchecked, monkeypatch, caplog
):
    from autobahn.websocket.protocol import WebSocketProtocol

    send_close_frame = WebSocketProtocol.sendCloseFrame

    def elsewhere(self, *args, **kwargs):  # a release that renamed it
        send_close_frame(self, *args, **kwargs)
        self.closingTimeout, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None

    monkeypatch.setattr(WebSocketProtocol, "sendCloseFrame", elsewhere)
    assert transport.check()["lingering_close"] is False
    [warning] = warnings_for(caplog, "lingering_close")
    assert "does not keep its close-handshake timeout in closeHandshakeTimeoutCall" in warning


def test_the_lingering_close_stays_off_when_twisted_reads_past_the_protocol(
    unchecked, monkeypatch, caplog
):
    monkeypatch.setattr(tcp.Connection, "_dataReceived", lambda self, data: None)
    assert transport.check()["lingering_close"] is False
    [warning] = warnings_for(caplog, "lingering_close")
    assert "does not hand what it reads to its protocol" in warning
