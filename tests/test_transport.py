"""collab/transport.py: eager writes on Twisted's TCP server connections, over real sockets
with daphne's asyncio reactor (not installed globally, not running unless a test drives it)."""

import asyncio
import socket

import pytest
from twisted.internet import error, protocol, tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.python import failure

from collab import transport


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


def test_the_asgi_application_installs_it_by_default():
    import collab.asgi  # noqa: F401

    assert transport.installed()


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
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    small = b"after"

    server.write(big)
    assert server in reactor.getWriters()  # the rest waits for writability
    server.write(small)  # must queue behind the rest, not jump ahead of it
    assert server._tempDataLen > 0

    data = receive(client, len(big) + len(small), reactor, server)
    assert data == big + small
    assert server not in reactor.getWriters()


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
