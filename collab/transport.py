"""Three per-socket habits of daphne's Twisted + autobahn stack, changed for collab's load
(measurements in docs/BENCHMARKS.md; docs/architecture.md, "Under daphne: the transport").

**Eager writes** (``install``). Twisted never writes in ``transport.write``: it appends to a
buffer and registers the socket for writability; on the next turn of the event loop the
reactor sends the buffer and unregisters the socket again. Under daphne's asyncio reactor that
is, per write, two ``epoll_ctl`` calls, an asyncio handle and a loop turn before the bytes
leave; one update to 100 sockets paid that 100 times, about a third of a busy server's time in
py-spy. Node (libuv's ``uv_try_write``) and asyncio's own transports write at once when nothing
is queued, and fall back to the buffer only for what the kernel did not take; Twisted's TCP
server connections now do the same. Order is kept: a write goes straight to the socket only
when nothing is buffered before it, and everything else (a partial send, an error, a closing or
TLS connection) takes Twisted's own path unchanged, so the reactor still flushes the remainder,
pauses producers and reports lost connections as before.

**Options on the class** (``share_protocol_options``): autobahn's ~30 protocol options are
read from daphne's protocol class instead of being copied into every connection.

**Raw frames** (``websocket_of``, ``write_message``): a document message is framed once and
written straight to each open socket, instead of one trip per socket through Channels, daphne
and autobahn.
"""

from __future__ import annotations

import functools

from twisted.internet import tcp

# Twisted's own write (through its TLS mixin, which buffers plain connections).
_buffered_write = tcp.Server.write


def eager_write(self: tcp.Connection, data: bytes) -> None:
    if (
        self.dataBuffer
        or self._tempDataLen
        or self.disconnecting
        or not self.connected
        or self._writeDisconnected
        or getattr(self, "TLS", False)
        or type(data) is not bytes
        or not data
    ):
        _buffered_write(self, data)
        return
    sent = self.writeSomeData(data)
    if isinstance(sent, BaseException):
        # Connection lost: let the reactor's write path notice it and close as it always does.
        _buffered_write(self, data)
    elif sent < len(data):
        _buffered_write(self, data[sent:])


def install() -> None:
    """Makes TCP server connections (what daphne accepts) write eagerly. Idempotent."""
    tcp.Server.write = eager_write


def installed() -> bool:
    return tcp.Server.write is eager_write


# -- autobahn's per-connection copy of the factory's options ----------------------------------


def _options_on_the_class(connection_made):
    def _connectionMade(self) -> None:
        cls = type(self)
        if cls.__dict__.get("_options_of") is not self.factory:
            for name in self.CONFIG_ATTRS:
                value = getattr(self.factory, name)
                # A function on a class would become a method (perMessageCompressionAccept).
                setattr(cls, name, staticmethod(value) if callable(value) else value)
            cls._options_of = self.factory
        connection_made(self)

    _connectionMade.shares_options = True
    return _connectionMade


def share_protocol_options() -> None:
    """autobahn copies its factory's ~30 protocol options into every connection's ``__dict__``
    (``_connectionMade``), unless the protocol already has them. daphne configures one factory
    once, at start-up, so the values are the same for every connection: set on the protocol
    class on the first connection, they are found there and each connection's dict stays a
    third smaller. Idempotent."""
    from daphne.ws_protocol import WebSocketProtocol

    if not getattr(WebSocketProtocol._connectionMade, "shares_options", False):
        WebSocketProtocol._connectionMade = _options_on_the_class(WebSocketProtocol._connectionMade)


# -- one encoded frame for many sockets -------------------------------------------------------


def websocket_of(send) -> object | None:
    """daphne's WebSocket protocol behind an ASGI ``send`` callable (daphne passes
    ``partial(server.handle_reply, protocol)``), or None under any other server or wrapper.

    Channels' session middleware wraps ``send`` to save the session on HTTP responses; it does
    nothing to WebSocket messages, so the protocol is looked up through it."""
    from channels.sessions import InstanceSessionWrapper
    from daphne.server import Server

    while getattr(send, "__func__", None) is InstanceSessionWrapper.send:
        send = send.__self__.real_send
    if (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is Server.handle_reply
        and len(send.args) == 1
    ):
        return send.args[0]
    return None


def encode_binary_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked binary WebSocket frame (RFC 6455 §5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x82, size))
    elif size < 1 << 16:
        header = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return header + payload


# The last payload and its frame: a room sends the same bytes object to every socket in turn,
# so it is encoded once per broadcast, not once per socket.
_last: tuple[bytes, bytes] = (b"", b"")
_CACHE_BELOW = 64 * 1024


def write_message(protocol, payload: bytes) -> bool:
    """Writes ``payload`` as one binary message straight to the socket, skipping the per-socket
    trips through Channels, daphne and autobahn's framing. Says False, having written nothing,
    whenever the socket is not plainly open (handshake, closing, muted, disconnected), or would
    need anything a plain frame cannot give (compression, masking, fragmentation, autobahn's
    send queue, frame logging, a message over its size limit): the caller then sends the
    ordinary way, which handles every such case as before. autobahn's traffic counters, which
    nothing in daphne or collab reads, do not count these messages."""
    global _last
    try:
        if (
            protocol.state != protocol.STATE_OPEN
            or protocol.send_state != protocol.SEND_STATE_GROUND
            or protocol.muted
            or protocol.send_queue
            or protocol._perMessageCompress is not None
            or protocol.maskServerFrames
            or protocol.logFrames
            or protocol.logOctets
            or 0 < protocol.autoFragmentSize < len(payload)
            or 0 < protocol.maxMessagePayloadSize < len(payload)
            or protocol.server.connections.get(protocol, {"disconnected": True}).get("disconnected")
        ):
            return False
    except AttributeError:  # not a daphne/autobahn protocol after all
        return False
    cached, frame = _last
    if cached is not payload:
        frame = encode_binary_frame(payload)
        if len(payload) < _CACHE_BELOW:  # a large one-off (a document's first sync) is not kept
            _last = (payload, frame)
    protocol.transport.write(frame)
    return True


def queued_bytes(protocol) -> int | None:
    """Bytes written to this socket that the kernel has not taken yet: what Twisted holds in
    the connection's buffers (the peer is not reading, or reads slowly). None when the socket
    is not a Twisted connection daphne serves."""
    try:
        connection = protocol.transport
        return len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    except (AttributeError, TypeError):
        return None
