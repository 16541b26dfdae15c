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
and autobahn. ``queued_bytes`` reads the same socket's Twisted buffers for the consumer's
send-buffer cap.

**The access log as log records** (``log_access``): with LOG_FORMAT=json, daphne's access log
entries go through logging (collab/logs.py) instead of daphne's NCSA-style text on stdout.

**Lean sockets** (``lean_sockets``, collab/lean.py): what a socket's handshake left behind
is let go once it is open.

**Timeout checks spread** (``spread_checks``, collab/spread.py): daphne's every-2-s walk over
all connections, which also sends the pings that are due, runs a slice at a time.

**Direct upgrades** (``direct_upgrades``, collab/upgrade.py): a WebSocket upgrade request goes
straight to autobahn, parsed once instead of twice.

**Direct handshakes** (``direct_handshakes``, collab/handshake.py): the opening handshake of
a socket upgraded directly is read in one pass when it is plain, as autobahn reads it.

**Direct frames** (``direct_frames``, editor/realtime/consumer.py): an open socket's frames go
to its connection as daphne puts them in the consumer's queue.

**Plain frames read directly** (``fast_frames``, collab/frames.py): a socket's small, whole
binary frames skip autobahn's parser.

**A turn's socket work capped** (``turn_budget``, collab/turns.py): a turn of the event loop
stops calling ready sockets back once they have taken ``WS_TURN_BUDGET_MS``; the rest are read
next turn, after the timers and tasks that were waiting.

**A lingering close** (``hang_up``): a socket the server closes without waiting for the
client's reply (a flood, 1011, 1013) ends its own half once the close frame is out, throws away
what the client still sends and closes when the client ends, instead of closing with unread
input, which the kernel answers with a reset that can reach the client before the close frame.

**Every consumer cancelled at shutdown** (``cancel_on_shutdown``): a fix for daphne's shutdown
trigger, which gave up on the first connection it did not expect (see there).

**The self-check.** All of this uses names private to Twisted, autobahn, daphne and Channels.
pyproject.toml pins Twisted and autobahn to the release lines it was tested with, but names may
still move, so each tuning (``EAGER_WRITES``, ``SHARED_PROTOCOL_OPTIONS``, ``RAW_FRAMES``,
``QUEUED_BYTES``, ``HEADER_DEADLINE``, ``ACCESS_LOG``, ``QUIET_HANDSHAKE``, ``LEAN_SOCKETS``,
``SHUTDOWN_CANCEL``, ``SPREAD_CHECKS``, ``DIRECT_UPGRADES``, ``DIRECT_HANDSHAKES``,
``DIRECT_FRAMES``, ``LINGERING_CLOSE``, ``FAST_FRAMES``, ``TURN_BUDGET``)
first checks, once per process, that what it relies on is there (``available(tuning)``;
``check()`` asks for all of them): the functions it replaces or calls take the arguments it
passes (``inspect.signature``); throw-away objects built off the live server (a Twisted
connection on a socket pair with a reactor of its own, a daphne protocol on a string transport,
a daphne ``Server`` whose application only catches the ``send`` it is given) still have the
attributes it reads and still hand over ``send`` the way ``websocket_of`` looks through it.
When anything is missing the tuning logs one warning naming itself and what is missing, and
stays off: ``install`` and ``share_protocol_options`` leave Twisted and autobahn alone,
``write_message`` says False and ``queued_bytes`` None for every socket, and ``websocket_of``
finds no socket when neither of those two can use it; the consumer then takes the ordinary ASGI
path. collab/asgi.py asks at start-up, so the warning comes at load, not on the first socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import pprint
import socket
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from typing import Any, NamedTuple

from twisted.internet import tcp

logger = logging.getLogger(__name__)

EAGER_WRITES = "eager_writes"
SHARED_PROTOCOL_OPTIONS = "shared_protocol_options"
RAW_FRAMES = "raw_frames"
QUEUED_BYTES = "queued_bytes"
HEADER_DEADLINE = "header_deadline"
ACCESS_LOG = "access_log"
QUIET_HANDSHAKE = "quiet_handshake"
LEAN_SOCKETS = "lean_sockets"
SHUTDOWN_CANCEL = "shutdown_cancel"
SPREAD_CHECKS = "spread_checks"
DIRECT_UPGRADES = "direct_upgrades"
DIRECT_HANDSHAKES = "direct_handshakes"
DIRECT_FRAMES = "direct_frames"
LINGERING_CLOSE = "lingering_close"
FAST_FRAMES = "fast_frames"
TURN_BUDGET = "turn_budget"

# Twisted's own write (through its TLS mixin, which buffers plain connections); what
# eager_write falls back to. install() takes it again from tcp.Server when it replaces it.
_buffered_write = tcp.Server.write


def eager_write(self: tcp.Connection, data: bytes) -> None:
    if (
        self.dataBuffer
        or self._tempDataLen
        or self.disconnecting
        or not self.connected
        or self._writeDisconnected
        or self.TLS
        or type(data) is not bytes
        or not data
        # Twisted sends at most SEND_LIMIT per call: a larger frame would leave a remainder to
        # copy (16 MB to each reader of a big paste); queued whole, it is sent from as it is.
        or len(data) > self.SEND_LIMIT
    ):
        _buffered_write(self, data)
        return
    # The socket's own send, as Twisted's writeSomeData makes it, without the wrapping that
    # costs a broadcast about a microsecond per socket (docs/BENCHMARKS.md, change 42): a view
    # cut to SEND_LIMIT (checked above) and a retry on EINTR, which Python does itself (PEP 475).
    try:
        sent = self.socket.send(data)
    except OSError:
        # Nothing taken (EWOULDBLOCK, ENOBUFS), or the connection is lost: Twisted's own path
        # buffers it, or notices the loss and closes, as it always does.
        _buffered_write(self, data)
        return
    if sent < len(data):
        _buffered_write(self, data[sent:])


def install() -> bool:
    """Makes TCP server connections (what daphne accepts) write eagerly, if Twisted has what
    eager writes rely on; says whether they do. Idempotent."""
    global _buffered_write
    if installed():
        return True
    if not available(EAGER_WRITES):
        return False
    _buffered_write = tcp.Server.write
    tcp.Server.write = eager_write  # type: ignore[method-assign,assignment]
    return True


def installed() -> bool:
    return tcp.Server.write is eager_write


# -- autobahn's per-connection copy of the factory's options ----------------------------------


def _options_on_the_class(connection_made: Callable[[Any], None]) -> Callable[[Any], None]:
    from daphne.ws_protocol import WebSocketProtocol

    names = tuple(WebSocketProtocol.CONFIG_ATTRS)

    @functools.wraps(connection_made)
    def _connectionMade(self: Any) -> None:
        cls = type(self)
        if cls.__dict__.get("_options_of") is not self.factory:
            for name in names:
                value = getattr(self.factory, name)
                # A function on a class would become a method (perMessageCompressionAccept).
                setattr(cls, name, staticmethod(value) if callable(value) else value)
            cls._options_of = self.factory
        if _debug_logged():
            connection_made(self)
            return
        # autobahn's _connectionMade walks the options only to find each one on the class and
        # list it, with where it was found, for its debug line: a look-up, a tuple and an
        # append per option (29), for every connection. With debug lines off, this connection
        # gives it none to walk, for that call only (docs/BENCHMARKS.md, change 63).
        self.CONFIG_ATTRS = ()
        try:
            connection_made(self)
        finally:
            del self.CONFIG_ATTRS

    _connectionMade.shares_options = True  # type: ignore[attr-defined]
    return _connectionMade


def share_protocol_options() -> bool:
    """autobahn copies its factory's ~30 protocol options into every connection's ``__dict__``
    (``_connectionMade``), unless the protocol already has them. daphne configures one factory
    once, at start-up, so the values are the same for every connection: set on the protocol
    class on the first connection, they are found there and each connection's dict stays a
    third smaller. Says whether the options are shared (autobahn has what this relies on).
    Idempotent."""
    from daphne.ws_protocol import WebSocketProtocol

    connection_made = getattr(WebSocketProtocol, "_connectionMade", None)
    if getattr(connection_made, "shares_options", False):
        return True
    if connection_made is None or not available(SHARED_PROTOCOL_OPTIONS):
        return False
    WebSocketProtocol._connectionMade = _options_on_the_class(connection_made)
    return True


# -- autobahn's debug formatting on every connection -----------------------------------------


def _pformat_when_logged(value: Any, *args: Any, **kwargs: Any) -> str:
    """autobahn's WebSocket protocol module formats its ~30 options (``pformat``) for a debug
    line on every connection, whether or not debug lines are logged: a tenth of a connect's
    CPU (py-spy, docs/BENCHMARKS.md change 17). This stands in for that module's ``pformat``:
    it formats only when txaio logs debug lines, and otherwise returns a placeholder that
    nothing shows."""
    if _debug_logged():
        return pprint.pformat(value, *args, **kwargs)
    return "(not formatted: debug logging is off)"


def _debug_logged() -> bool:
    import txaio

    try:
        return getattr(txaio, "get_global_log_level")() in ("debug", "trace")  # noqa: B009
    except RuntimeError:  # no framework selected yet: format, as autobahn would
        return True


class _Highlighted:
    """What autobahn's ``hltype``/``hlval`` would return, made only if a log line is written.

    autobahn highlights values for its debug lines (ANSI colours through click, and the
    qualified name of a method found with ``inspect``) before it calls the logger, whether or
    not debug lines are logged: on every chunk a socket receives (``dataReceived``) and a dozen
    times per handshake, about 3 % of a connecting process's time (py-spy, docs/BENCHMARKS.md
    change 28). txaio formats a line only when it writes it, with ``str.format``, which asks
    this object: the text is then exactly what autobahn would have made."""

    __slots__ = ("_highlight", "_args", "_kwargs")

    def __init__(
        self, highlight: Callable[..., str], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._highlight = highlight
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        return self._highlight(*self._args, **self._kwargs)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _highlighted_later(highlight: Callable[..., str]) -> Callable[..., _Highlighted]:
    def later(*args: Any, **kwargs: Any) -> _Highlighted:
        return _Highlighted(highlight, args, kwargs)

    later.highlights = highlight  # type: ignore[attr-defined]
    return later


# autobahn's modules that highlight on the socket path, and the names they call.
_HIGHLIGHTERS = ("hltype", "hlval")


def _highlighting_modules() -> list[Any]:
    from autobahn.twisted import websocket
    from autobahn.websocket import protocol

    return [protocol, websocket]


def quiet_handshake() -> bool:
    """Installs ``_pformat_when_logged`` in autobahn's protocol module, and highlighting made
    only when a line is written (``_Highlighted``) in it and in autobahn's Twisted WebSocket
    module. Says whether it is in place (autobahn still has what this relies on).
    Idempotent."""
    from autobahn.websocket import protocol

    if getattr(protocol, "pformat", None) is _pformat_when_logged:
        return True
    if not available(QUIET_HANDSHAKE):
        return False
    setattr(protocol, "pformat", _pformat_when_logged)  # noqa: B010
    for module in _highlighting_modules():
        for name in _HIGHLIGHTERS:
            found = getattr(module, name)
            if not hasattr(found, "highlights"):
                setattr(module, name, _highlighted_later(found))
    return True


def _quiet_handshake_missing() -> list[str]:
    import txaio
    from autobahn import util
    from autobahn.websocket import protocol

    found = getattr(protocol, "pformat", None)
    missing = []
    if found is not pprint.pformat and found is not _pformat_when_logged:
        missing.append("autobahn.websocket.protocol no longer uses pprint.pformat")
    if not callable(getattr(txaio, "get_global_log_level", None)):
        missing.append("txaio has no get_global_log_level")
    for module in _highlighting_modules():
        for name in _HIGHLIGHTERS:
            found = getattr(module, name, None)
            if found is not getattr(util, name, None) and not hasattr(found, "highlights"):
                missing.append(f"{module.__name__} no longer uses autobahn.util.{name}")
    return missing


# -- one encoded frame for many sockets -------------------------------------------------------


def websocket_of(send: Callable[..., Any]) -> Any | None:
    """daphne's WebSocket protocol behind an ASGI ``send`` callable (daphne passes
    ``partial(server.handle_reply, protocol)``), or None under any other server or wrapper,
    or when neither raw frames nor the queued-bytes count can run on the installed libraries.

    Channels' session middleware wraps ``send`` to save the session on HTTP responses; it does
    nothing to WebSocket messages, so the protocol is looked up through it."""
    if not (available(QUEUED_BYTES) or available(RAW_FRAMES)):
        return None
    return _protocol_behind(send)


def _protocol_behind(send: Any) -> Any | None:
    from channels.sessions import InstanceSessionWrapper
    from daphne.server import Server

    while getattr(send, "__func__", None) is InstanceSessionWrapper.send:
        send = getattr(send.__self__, "real_send", None)
    if (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is Server.handle_reply
        and len(send.args) == 1
    ):
        return send.args[0]
    return None


def encode_binary_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked binary WebSocket frame (RFC 6455 §5.2), as a server sends it."""
    return _frame_header(len(payload)) + payload


def _frame_header(size: int) -> bytes:
    if size < 126:
        return bytes((0x82, size))
    if size < 1 << 16:
        return bytes((0x82, 126)) + size.to_bytes(2, "big")
    return bytes((0x82, 127)) + size.to_bytes(8, "big")


# The last payload and its frame: a room sends the same bytes object to every socket in turn,
# so it is encoded once per broadcast, not once per socket. One from _CACHE_BELOW up (a
# document's first sync, a big paste) is kept only until the event loop's next turn, so an idle
# process holds no copy of it.
_last: tuple[bytes, bytes] = (b"", b"")
_CACHE_BELOW = 64 * 1024


def _forget(payload: bytes) -> None:
    global _last
    if _last[0] is payload:
        _last = (b"", b"")


def _remember(payload: bytes, frame: bytes) -> None:
    """Keeps ``frame`` as ``payload``'s until the event loop's next turn (a broadcast's)."""
    global _last
    _last = (payload, frame)
    try:
        asyncio.get_running_loop().call_soon(_forget, payload)
    except RuntimeError:  # no loop to say when the broadcast is over: keep nothing
        _last = (b"", b"")


def framed_message(parts: Sequence[bytes]) -> bytes | memoryview:
    """A message to broadcast, joined from ``parts``. From _CACHE_BELOW up, with raw frames, it
    is joined behind its WebSocket frame's header in one copy and returned as a view of that
    frame's tail, and the frame is what ``write_message`` writes for it: the message and its
    frame were two copies of the same bytes, made in one turn of the event loop (a 16 MB paste:
    4,096 first touches of memory each, a page fault apiece; docs/BENCHMARKS.md, change 32).
    The view is bytes-like; ``bytes()`` of it is the message."""
    size = sum(len(part) for part in parts)
    if size < _CACHE_BELOW or not available(RAW_FRAMES):
        return b"".join(parts)
    header = _frame_header(size)
    frame = b"".join((header, *parts))
    message = memoryview(frame)[len(header) :]
    _remember(message, frame)
    return message


def _plainly_open(protocol: Any) -> bool:
    """Open, between frames, and not yet known to daphne as gone."""
    return bool(
        protocol.state == protocol.STATE_OPEN
        and protocol.send_state == protocol.SEND_STATE_GROUND
        and not protocol.server.connections.get(protocol, {"disconnected": True}).get(
            "disconnected"
        )
    )


def write_message(protocol: Any, payload: bytes) -> bool:
    """Writes ``payload`` as one binary message straight to the socket, skipping the per-socket
    trips through Channels, daphne and autobahn's framing. Says False, having written nothing,
    whenever the socket is not plainly open (handshake, closing, muted, disconnected), or would
    need anything a plain frame cannot give (compression, masking, fragmentation, autobahn's
    send queue, frame logging, a message over its size limit), or raw frames failed their
    check: the caller then sends the ordinary way, which handles every such case as before.
    autobahn's traffic counters, which nothing in daphne or collab reads, do not count these
    messages."""
    global _last
    if not _takes_plain_frames(protocol, len(payload)):
        return False
    cached, frame = _last
    if cached is not payload:
        frame = encode_binary_frame(payload)
        if len(payload) >= _CACHE_BELOW:
            _remember(payload, frame)
        else:
            _last = (payload, frame)
    protocol.transport.write(frame)
    return True


def write_messages(protocol: Any, payloads: Sequence[bytes]) -> bool:
    """Writes several binary messages straight to the socket in one write, as ``write_message``
    writes one (and says False, having written nothing, in the same cases): the server's half
    of a handshake (sync step 1 and the socket's scope) leaves in one send and one TCP segment
    instead of one each, and the client reads them in one go (docs/BENCHMARKS.md, change 40)."""
    if not _takes_plain_frames(protocol, max(map(len, payloads), default=0)):
        return False
    protocol.transport.write(b"".join([encode_binary_frame(payload) for payload in payloads]))
    return True


def _takes_plain_frames(protocol: Any, largest: int) -> bool:
    """Whether messages up to ``largest`` bytes can be written to the socket as plain frames:
    raw frames passed their check, the socket is plainly open, and nothing a plain frame cannot
    give is asked for (``write_message``)."""
    if not available(RAW_FRAMES):
        return False
    try:
        return not (
            not _plainly_open(protocol)
            or protocol.muted
            or protocol.send_queue
            or protocol._perMessageCompress is not None
            or protocol.maskServerFrames
            or protocol.logFrames
            or protocol.logOctets
            or 0 < protocol.autoFragmentSize < largest
            or 0 < protocol.maxMessagePayloadSize < largest
        )
    except AttributeError:  # not a daphne/autobahn protocol after all
        return False


# Close codes autobahn refuses to send from a server (it allows 1000 and 3000-4999 only), though
# RFC 6455 defines them for servers: 1011 "internal error", 1013 "try again later".
SERVER_CODES_AUTOBAHN_REFUSES = frozenset({1011, 1013})


def write_close(protocol: Any, code: int, reason: str = "") -> bool:
    """Closes the socket with ``code``, which autobahn would refuse to send: writes the close
    frame straight to it and hangs up (``hang_up``), without waiting for the client's reply.
    Says False, having done nothing, when the socket is not plainly open or raw frames failed
    their check; the caller then closes the ordinary way with a code autobahn allows."""
    if not available(RAW_FRAMES):
        return False
    try:
        if not _plainly_open(protocol):
            return False
    except AttributeError:
        return False
    payload = code.to_bytes(2, "big") + reason.encode()[:123]  # a control frame: 125 at most
    protocol.transport.write(bytes((0x88, len(payload))) + payload)
    hang_up(protocol)
    return True


# -- a deadline for request heads ---------------------------------------------------------------


def limit_request_heads(seconds: float) -> bool:
    """Closes an HTTP connection whose first request head is not complete ``seconds`` after it
    opened: daphne has no such option, and Twisted only drops a connection that sends nothing
    at all for a minute, so clients sending their headers a byte at a time could hold
    connections without end. The deadline starts when the connection is made and ends when
    the head is in (a WebSocket's upgrade comes after it, so sockets are never touched). Says
    whether it is installed; idempotent."""
    if not available(HEADER_DEADLINE):
        return False
    from twisted.web import http

    channel = http.HTTPChannel
    if getattr(channel.connectionMade, "head_deadline", None) is not None:
        return True
    made, heads_in, lost = (
        channel.connectionMade,
        channel.allHeadersReceived,
        channel.connectionLost,
    )

    def expire(self: Any) -> None:
        self.__dict__.pop("_head_deadline", None)
        logger.warning(
            "http request head not complete within %ss peer=%s: connection closed",
            seconds,
            self.transport.getPeer() if self.transport is not None else "?",
        )
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self: Any) -> None:
        from twisted.internet import reactor

        made(self)
        clock: Any = reactor  # daphne's asyncio reactor, installed before the app loads
        self._head_deadline = clock.callLater(seconds, expire, self)

    def allHeadersReceived(self: Any) -> None:
        disarm_head_deadline(self)
        heads_in(self)

    def connectionLost(self: Any, reason: Any) -> None:
        disarm_head_deadline(self)
        lost(self, reason)

    connectionMade.head_deadline = seconds  # type: ignore[attr-defined]
    channel.connectionMade = connectionMade  # type: ignore[method-assign]
    channel.allHeadersReceived = allHeadersReceived  # type: ignore[method-assign]
    channel.connectionLost = connectionLost  # type: ignore[method-assign]
    return True


def disarm_head_deadline(channel: Any) -> None:
    """Ends an HTTP channel's head deadline: its head is in."""
    timer = channel.__dict__.pop("_head_deadline", None)
    if timer is not None and timer.active():
        timer.cancel()


def _header_deadline_missing() -> list[str]:
    from twisted.internet import tcp as twisted_tcp
    from twisted.web import http

    channel = http.HTTPChannel
    missing = _lacks(
        channel, ("connectionMade", "allHeadersReceived", "connectionLost"), "HTTPChannel"
    )
    if missing:
        return missing
    missing += _takes_only(channel.connectionMade, 1, "HTTPChannel.connectionMade")
    missing += _takes_only(channel.allHeadersReceived, 1, "HTTPChannel.allHeadersReceived")
    missing += _takes_only(channel.connectionLost, 2, "HTTPChannel.connectionLost")
    missing += _lacks(twisted_tcp.Server, ("abortConnection", "getPeer"), "tcp.Server")
    return missing


# -- lean sockets (collab/lean.py) -------------------------------------------------------------


def lean_sockets() -> bool:
    """What the handshake left behind is let go once a socket is open (collab/lean.py). Says
    whether it is installed; idempotent."""
    if not available(LEAN_SOCKETS):
        return False
    from collab import lean

    lean.install()
    return True


def _lean_sockets_missing() -> list[str]:
    from collab import lean

    return lean.missing()


# -- daphne's timeout checks spread over their period ------------------------------------------


def spread_checks() -> bool:
    """daphne's every-2-s walk over all connections (timeouts, and the pings that are due) runs
    a slice at a time (collab/spread.py). Says whether it is installed; idempotent."""
    if not available(SPREAD_CHECKS):
        return False
    from collab import spread

    spread.install()
    return True


def _spread_checks_missing() -> list[str]:
    from collab import spread

    return spread.missing()


# -- a cap on one turn's socket callbacks (collab/turns.py) ------------------------------------


def turn_budget(seconds: float) -> bool:
    """Each turn of the event loop stops calling ready sockets back once they have taken
    ``seconds``; the rest are read next turn (collab/turns.py). Says whether it is installed;
    idempotent."""
    if not available(TURN_BUDGET):
        return False
    from collab import turns

    turns.install(seconds)
    return True


def _turn_budget_missing() -> list[str]:
    from collab import turns

    return turns.missing()


# -- upgrade requests handed to autobahn directly (collab/upgrade.py) ---------------------------


def direct_upgrades() -> bool:
    """A WebSocket upgrade request goes straight to autobahn, parsed once (collab/upgrade.py).
    Says whether it is installed; idempotent."""
    if not available(DIRECT_UPGRADES):
        return False
    from collab import upgrade

    upgrade.install()
    return True


def _direct_upgrades_missing() -> list[str]:
    from collab import upgrade

    return upgrade.missing()


def direct_handshakes() -> bool:
    """The opening handshake of a socket upgraded directly is read in one pass when it is plain
    (collab/handshake.py). Says whether it is installed; idempotent. Needs direct upgrades."""
    if not available(DIRECT_HANDSHAKES):
        return False
    from collab import handshake, upgrade

    if not upgrade.installed():
        return False
    upgrade.read_handshakes(handshake.read)
    return True


def _direct_handshakes_missing() -> list[str]:
    from collab import handshake

    return handshake.missing()


def fast_frames() -> bool:
    """A socket's small, whole binary frames skip autobahn's parser (collab/frames.py). Says
    whether it is installed; idempotent."""
    if not available(FAST_FRAMES):
        return False
    from collab import frames

    frames.install()
    return True


def _fast_frames_missing() -> list[str]:
    from collab import frames

    return frames.missing()


# -- every consumer cancelled at shutdown -----------------------------------------------------


def cancel_on_shutdown() -> bool:
    """Makes daphne's shutdown trigger cancel every application instance, as it means to.

    daphne 4.2's ``Server.kill_all_applications`` (run on SIGTERM and SIGINT, before the loop
    stops) reads ``details["application_instance"]`` of every entry of ``Server.connections``.
    Some entries have none: the HTTP request a WebSocket was upgraded from, marked disconnected
    at the upgrade and only swept by daphne's once-a-second checker; a request still arriving;
    a connection whose application already ended. One such entry raises KeyError, Twisted logs
    it nowhere, and no consumer is cancelled: a server stopped within a second of any socket
    opening (on a busy server, nearly always) went on serving its sockets, and the shutdown
    flush (editor/realtime/store.py) waited its full 8 s for typing that never paused, then
    left updates unwritten. Here every such entry lends daphne a finished placeholder for the
    call, which daphne skips, and gets its own state back afterwards. Says whether it is
    installed; idempotent."""
    if not available(SHUTDOWN_CANCEL):
        return False
    from daphne.server import Server

    if getattr(Server.kill_all_applications, "collab_tolerant", False):
        return True
    Server.kill_all_applications = _tolerant(Server.kill_all_applications)
    return True


def _tolerant(kill_all_applications: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(kill_all_applications)
    def tolerant(self: Any) -> Any:
        without = [d for d in self.connections.values() if "application_instance" not in d]
        if not without:
            return kill_all_applications(self)
        placeholder = asyncio.get_running_loop().create_future()
        placeholder.set_result(None)
        for details in without:
            details["application_instance"] = placeholder
        try:
            return kill_all_applications(self)
        finally:
            for details in without:
                if details.get("application_instance") is placeholder:
                    del details["application_instance"]

    tolerant.collab_tolerant = True  # type: ignore[attr-defined]
    return tolerant


def _shutdown_cancel_missing() -> list[str]:
    """Runs the wrapped trigger on a throw-away daphne Server holding one entry without an
    application and one with a pending one: the pending one must be cancelled, and the other
    entry left as it was."""
    from daphne.server import Server

    missing = _takes_only(Server.kill_all_applications, 1, "daphne's Server.kill_all_applications")
    if missing:
        return missing
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    loop = asyncio.new_event_loop()
    daphne_logger = logging.getLogger("daphne.server")
    level = daphne_logger.level
    daphne_logger.setLevel(logging.WARNING)  # no "Killed 1 pending application instances"
    try:
        running = loop.create_future()
        upgraded = {"connected": 0.0, "disconnected": 0.0}
        server.connections = {"upgraded": upgraded, "open": {"application_instance": running}}

        async def shut_down() -> None:
            _tolerant(Server.kill_all_applications)(server)
            await asyncio.sleep(0)

        loop.run_until_complete(shut_down())
    finally:
        daphne_logger.setLevel(level)
        loop.close()
    if not running.cancelled():
        missing.append(
            "daphne's kill_all_applications no longer cancels Server.connections'"
            " application_instance"
        )
    if upgraded != {"connected": 0.0, "disconnected": 0.0}:
        missing.append("a connection without an application came out changed")
    return missing


# -- daphne's access log, through logging -----------------------------------------------------


def log_access(log: Callable[[str, str, dict[str, Any]], None]) -> bool:
    """Hands each entry of daphne's access log to ``log`` (the arguments daphne gives its
    ``action_logger``: protocol, action, details) instead of daphne's own writer, which prints
    NCSA-style text to stdout: with LOG_FORMAT=json the entries become log records like every
    other line (collab/logs.py). Only while daphne keeps an access log at all (its verbosity or
    ``--access-log`` say so). Says whether it is installed; idempotent."""
    if not available(ACCESS_LOG):
        return False
    from daphne.server import Server

    if getattr(Server.log_action, "logs_to", None) is log:
        return True

    def log_action(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if self.action_logger:
            log(protocol, action, details)

    log_action.logs_to = log  # type: ignore[attr-defined]
    Server.log_action = log_action
    return True


def _access_log_missing() -> list[str]:
    from daphne.server import Server

    missing = _takes_only(Server.log_action, 4, "daphne's Server.log_action")
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    return missing + _lacks(server, ["action_logger"], "a daphne Server")


def queued_bytes(protocol: Any) -> int | None:
    """Bytes written to this socket that the kernel has not taken yet: what Twisted holds in
    the connection's buffers (the peer is not reading, or reads slowly). None when the socket
    is not a Twisted connection daphne serves, or Twisted's buffers failed their check."""
    if not available(QUEUED_BYTES):
        return None
    try:
        return _queued(protocol.transport)
    except (AttributeError, TypeError):
        return None


# How long a hung-up socket's client gets to read its close frame and end the connection itself
# before the server drops it: as long as autobahn gives a close handshake (closeHandshakeTimeout).
LINGER_SECONDS = 1.0
# What a hung-up socket's client may still send, thrown away unread, while it lingers: a client
# cannot know it was closed before it reads the close frame. Past this, nothing more is read
# (a flood costs no more) until the socket is dropped.
LINGER_BYTES = 1 << 20


def hang_up(protocol: Any) -> None:
    """Ends a socket whose close frame was just written, without waiting for the client's half
    of the close handshake (for a client that floods, whose frames must not be parsed any more).

    With ``LINGERING_CLOSE``, as a web server's lingering close: once the close frame is
    flushed the server ends its half (``loseWriteConnection``, a FIN), throws away what the
    client still sends (up to ``LINGER_BYTES``) and closes when the client ends its own, or
    drops it after ``LINGER_SECONDS``. Closing at once, with the client's next frames unread,
    would make the kernel answer them with a reset, which can reach the client before it has
    read the close frame: its next write fails, and it never learns why it was closed.
    autobahn's own close-handshake timeout, started by the close frame, is called off: the
    linger's drop takes its place. Without the tuning (or on a socket that is not a plain
    Twisted TCP one): ``loseConnection``."""
    connection = getattr(protocol, "transport", None)
    if connection is None:
        return
    if (
        available(LINGERING_CLOSE)
        and isinstance(connection, tcp.Server)
        and not connection.TLS
        and connection.protocol is protocol
        and connection.connected
        and not connection.disconnecting
        and not connection._writeDisconnecting
    ):
        _call_off_close_timeout(protocol)
        connection.protocol = _Lingering(protocol, connection)  # type: ignore[assignment]
        connection.loseWriteConnection()
        connection.resumeProducing()  # the client's close and its end are read, not left
        return
    lose = getattr(connection, "loseConnection", None)
    if lose is not None:
        lose()


def _call_off_close_timeout(protocol: Any) -> None:
    """Calls off autobahn's close-handshake timeout, which the close frame it sent started:
    the linger's own drop takes its place. Left running, it would abort the connection with the
    client's frames unread, and well before its second is up: txaio's batched timer rounds the
    time it is due down to a whole second of the clock, so it comes anywhere from 0 to 1 s
    after the close (seen in CI: 40 ms)."""
    timeout = getattr(protocol, "closeHandshakeTimeoutCall", None)
    if timeout is not None:
        timeout.cancel()
        protocol.closeHandshakeTimeoutCall = None


class _Lingering:
    """Stands in for a hung-up socket's protocol on its Twisted connection: throws away what
    the client still sends, and hands the connection's end to the protocol it replaced, which
    tells daphne the socket is gone as any other end would."""

    __slots__ = ("_left", "_protocol", "_connection", "_drop")

    def __init__(self, protocol: Any, connection: tcp.Server) -> None:
        self._protocol = protocol
        self._connection = connection
        self._left = LINGER_BYTES
        self._drop = connection.reactor.callLater(LINGER_SECONDS, connection.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self._connection.pauseProducing()  # read no more; dropped when the time is up

    def connectionLost(self, reason: object) -> None:
        if self._drop.active():
            self._drop.cancel()
        self._protocol.connectionLost(reason)


def _queued(connection: Any) -> int:
    return len(connection.dataBuffer) - connection.offset + connection._tempDataLen


# -- the self-check ---------------------------------------------------------------------------


class _Tuning(NamedTuple):
    check: Callable[[], list[str]]
    # What the process does instead when the check fails.
    without: str


# Tuning name -> whether it passed its check; each is checked once per process.
_checked: dict[str, bool] = {}


def available(tuning: str) -> bool:
    """Whether ``tuning`` (one of the names at the top of this module, EAGER_WRITES to
    TURN_BUDGET) finds what it relies on in the installed Twisted, autobahn,
    daphne and Channels. Checked on the first ask, once per process; a failed check logs one
    warning, and the tuning stays off."""
    try:
        return _checked[tuning]
    except KeyError:
        pass
    spec = _TUNINGS[tuning]
    try:
        missing = spec.check()
    except Exception as exc:  # a probe that cannot even be built is a change too
        missing = [f"its check could not run ({exc!r})"]
    if missing:
        logger.warning(
            "transport tuning %s is off: %s. Installed: %s; pyproject.toml pins the tested"
            " releases. %s.",
            tuning,
            "; ".join(missing),
            _versions(),
            spec.without,
        )
    _checked[tuning] = not missing
    return not missing


def check() -> dict[str, bool]:
    """Every tuning and whether it passed its check (``available``)."""
    return {tuning: available(tuning) for tuning in _TUNINGS}


def _versions() -> str:
    found = []
    for name in ("Twisted", "autobahn", "daphne", "channels"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not found)")
    return ", ".join(found)


def _lacks(thing: object, names: Iterable[str], what: str) -> list[str]:
    return [f"{what} has no {name}" for name in names if not hasattr(thing, name)]


def _takes_only(function: Callable[..., Any], count: int, what: str) -> list[str]:
    """[] when ``function`` takes exactly ``count`` plain positional arguments: the shape a
    function collab replaces or wraps must keep, since a new argument would be lost."""
    signature = inspect.signature(function)
    plain = all(
        p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
        for p in signature.parameters.values()
    )
    if plain and len(signature.parameters) == count:
        return []
    return [f"{what} takes {signature}, not {count} plain arguments"]


def _callable_as(function: Callable[..., Any], args: tuple[Any, ...], what: str) -> list[str]:
    """[] when ``function`` accepts the arguments collab calls it with."""
    signature = inspect.signature(function)
    try:
        signature.bind(*args)
    except TypeError:
        return [f"{what} takes {signature}, which collab's call does not fit"]
    return []


@contextlib.contextmanager
def _throwaway_pair() -> Iterator[tuple[tcp.Server, socket.socket]]:
    """A Twisted TCP server connection on a socket pair, registered with a reactor of its own
    that never runs, and the socket at its other end: Twisted sets the write buffers'
    attributes in its constructor, so an instance is the only place to see them."""
    from twisted.internet.protocol import Protocol
    from twisted.internet.testing import MemoryReactor

    ours, theirs = socket.socketpair()
    try:
        # (zope interfaces, which mypy does not see, make the arguments' types fit)
        yield (
            tcp.Server(ours, Protocol(), ("127.0.0.1", 0), None, 0, MemoryReactor()),  # type: ignore[arg-type]
            theirs,
        )
    finally:
        ours.close()
        theirs.close()


@contextlib.contextmanager
def _throwaway_connection() -> Iterator[tcp.Server]:
    with _throwaway_pair() as (connection, _):
        yield connection


def _throwaway_websocket() -> Any:
    """A daphne WebSocket protocol after autobahn's connectionMade, on a string transport, from
    a factory with a reactor of its own (building one must not install the process's)."""
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    factory = WebSocketFactory(None, server="collab-check", reactor=MemoryReactorClock())
    factory.setProtocolOptions(openHandshakeTimeout=0)  # no timer
    # A class of its own, on which shared options (if installed) set this factory's values.
    factory.protocol = type("CheckedProtocol", (WebSocketProtocol,), {})
    protocol = factory.buildProtocol(("127.0.0.1", 0))
    protocol.makeConnection(StringTransport())
    return protocol


class _Sent(Exception):
    """Carries what daphne hands an application (``receive``, ``send``) out of
    Server.create_application."""


def _daphne_hands_over() -> tuple[Any, object, Any, Any] | None:
    """A throw-away daphne Server with one connection (a placeholder for its protocol), and
    what its create_application hands an application for it: (server, protocol, receive,
    send); None when it does not call the application at all."""
    from daphne.server import Server

    def application(scope: dict, receive: object, send: object) -> None:
        raise _Sent(receive, send)

    server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}  # what Server.run() starts with
    probe = object()
    server.protocol_connected(probe)
    try:
        server.create_application(probe, {"type": "websocket"})
    except _Sent as sent:
        return server, probe, sent.args[0], sent.args[1]
    server.protocol_disconnected(probe)
    return None


def _socket_lookup_missing() -> list[str]:
    """What websocket_of and write_message rely on in daphne and Channels: daphne hands each
    application ``partial(server.handle_reply, protocol)``, Channels' session wrapper keeps it
    as ``real_send``, and daphne marks a protocol's entry in ``server.connections``
    ``disconnected`` when it goes."""
    from channels.sessions import InstanceSessionWrapper

    handed = _daphne_hands_over()
    if handed is None:
        return ["daphne's Server.create_application does not call the application"]
    server, probe, _, send = handed
    missing = []
    wrapper = InstanceSessionWrapper({"type": "websocket", "cookies": {}}, send)
    if _protocol_behind(send) is not probe:
        missing.append("daphne's send is not partial(Server.handle_reply, protocol)")
    elif _protocol_behind(wrapper.send) is not probe:
        missing.append("Channels' InstanceSessionWrapper.send does not keep it as real_send")
    entry = server.connections.get(probe)
    server.protocol_disconnected(probe)
    if not (isinstance(entry, dict) and entry.get("disconnected")):
        missing.append("daphne's Server.connections does not mark a gone socket disconnected")
    return missing


def _direct_frames_missing() -> list[str]:
    """What the consumer's direct frames (editor/realtime/consumer.py, ``_DirectInbox``) rely
    on: daphne hands each application its input queue's ``get`` as ``receive``, an asyncio
    queue, and puts a socket's frames in it with ``put_nowait``; asyncio's queue keeps its
    waiting getters and its items in the deques ``_getters`` and ``_queue``."""
    handed = _daphne_hands_over()
    if handed is None:
        return ["daphne's Server.create_application does not call the application"]
    server, probe, receive, _ = handed
    server.protocol_disconnected(probe)
    missing = []
    if type(getattr(receive, "__self__", None)) is not asyncio.Queue or (
        getattr(receive, "__func__", None) is not asyncio.Queue.get
    ):
        missing.append("daphne's receive is not an asyncio.Queue's get")
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for name in ("_getters", "_queue"):
        if not isinstance(getattr(queue, name, None), collections.deque):
            missing.append(f"asyncio.Queue has no {name} deque")
    protocol = _throwaway_websocket()
    put: list[Any] = []
    protocol.application_queue = types.SimpleNamespace(put_nowait=put.append)
    protocol.muted = False  # what daphne's onConnect sets, with the client's address
    protocol.client_addr = None
    protocol.onMessage(b"\x00", True)
    if put != [{"type": "websocket.receive", "bytes": b"\x00"}]:
        missing.append("daphne's WebSocketProtocol.onMessage does not put_nowait a frame")
    return missing


def _lingering_close_missing() -> list[str]:
    """What hang_up relies on in a Twisted TCP server connection: it hands what it reads, and
    its end, to whatever its ``protocol`` is when they come (hang_up puts ``_Lingering`` there),
    and half-closes, pauses, resumes and aborts as ITCPTransport says."""
    from twisted.internet import main
    from twisted.python import failure

    with _throwaway_pair() as (connection, theirs):
        missing = _lacks(
            connection,
            [
                "protocol",
                "reactor",
                "TLS",
                "connected",
                "disconnecting",
                "_writeDisconnecting",
                "doRead",
                "readConnectionLost",
            ],
            "a Twisted tcp.Server",
        )
        for name in ("loseWriteConnection", "resumeProducing", "pauseProducing", "abortConnection"):
            function = getattr(connection, name, None)
            if function is None:
                missing.append(f"a Twisted tcp.Server has no {name}")
            else:
                missing += _callable_as(function, (), f"Twisted's tcp.Server.{name}")
        if missing:
            return missing
        seen: list[object] = []
        connection.protocol = types.SimpleNamespace(  # type: ignore[assignment]
            dataReceived=seen.append, connectionLost=lambda reason: seen.append("end")
        )
        theirs.sendall(b"late")
        theirs.shutdown(socket.SHUT_WR)
        first, then = connection.doRead(), connection.doRead()  # the data, then the client's end
        if seen != [b"late"] or first is not None or then is not main.CONNECTION_DONE:
            missing.append("a Twisted tcp.Server does not hand what it reads to its protocol")
        connection.readConnectionLost(failure.Failure(main.CONNECTION_DONE))
        if seen[-1:] != ["end"]:
            missing.append("a Twisted tcp.Server does not hand its end to its protocol")
    return missing + _close_timeout_missing()


def _close_timeout_missing() -> list[str]:
    """What ``_call_off_close_timeout`` relies on: autobahn keeps the close-handshake timeout
    that its close frame starts in ``closeHandshakeTimeoutCall``, a call it can cancel."""
    protocol = _throwaway_websocket()
    pending: list[object] = []

    class Call:
        def cancel(self) -> None:
            pending.remove(self)

    def call_later(delay: float, function: Callable[[], None]) -> object:
        pending.append(Call())
        return pending[-1]

    protocol.factory._batched_timer = types.SimpleNamespace(call_later=call_later)
    protocol.closeHandshakeTimeout = 1
    protocol.state = protocol.STATE_OPEN
    protocol.sendClose(code=4429)
    if len(pending) != 1 or getattr(protocol, "closeHandshakeTimeoutCall", None) is not pending[0]:
        return ["autobahn does not keep its close-handshake timeout in closeHandshakeTimeoutCall"]
    _call_off_close_timeout(protocol)
    return [] if pending == [] else ["autobahn's close-handshake timeout cannot be called off"]


def _eager_writes_missing() -> list[str]:
    write = _buffered_write if installed() else tcp.Server.write
    missing = _takes_only(write, 2, "twisted.internet.tcp.Server.write")
    with _throwaway_connection() as connection:
        if not callable(getattr(getattr(connection, "socket", None), "send", None)):
            missing.append("a Twisted tcp.Server has no socket with a send method")
        missing += _lacks(
            connection,
            [
                "SEND_LIMIT",
                "dataBuffer",
                "_tempDataLen",
                "disconnecting",
                "connected",
                "_writeDisconnected",
                "TLS",
            ],
            "a Twisted tcp.Server",
        )
    return missing


def _shared_protocol_options_missing() -> list[str]:
    from daphne.ws_protocol import WebSocketProtocol

    connection_made = getattr(WebSocketProtocol, "_connectionMade", None)
    if connection_made is None:
        return ["autobahn's WebSocketProtocol has no _connectionMade"]
    missing = _takes_only(connection_made, 1, "autobahn's WebSocketProtocol._connectionMade")
    names = getattr(WebSocketProtocol, "CONFIG_ATTRS", None)
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        return [*missing, "autobahn's WebSocketProtocol has no CONFIG_ATTRS list"]
    factory = _throwaway_websocket().factory
    return missing + _lacks(factory, names, "a daphne WebSocketFactory")


def _raw_frames_missing() -> list[str]:
    protocol = _throwaway_websocket()
    missing = _lacks(
        protocol,
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
        "a daphne WebSocketProtocol",
    )
    return missing + _socket_lookup_missing()


def _queued_bytes_missing() -> list[str]:
    with _throwaway_connection() as connection:
        missing = _lacks(
            connection, ["dataBuffer", "offset", "_tempDataLen"], "a Twisted tcp.Server"
        )
        if not missing:
            # Twisted's own write only buffers (its reactor here never runs): all of it counts.
            _buffered_write(connection, b"queued")
            if _queued(connection) != len(b"queued"):
                missing.append("Twisted's buffers do not add up to what was written")
    return missing + _socket_lookup_missing()


_TUNINGS: dict[str, _Tuning] = {
    EAGER_WRITES: _Tuning(_eager_writes_missing, "Twisted's own buffered write is used"),
    SHARED_PROTOCOL_OPTIONS: _Tuning(
        _shared_protocol_options_missing, "Each connection keeps its own copy of the options"
    ),
    RAW_FRAMES: _Tuning(_raw_frames_missing, "Every message takes the ordinary ASGI send"),
    QUEUED_BYTES: _Tuning(
        _queued_bytes_missing,
        "Sockets' queued bytes are unknown: WS_MAX_SEND_BUFFER is not applied",
    ),
    HEADER_DEADLINE: _Tuning(
        _header_deadline_missing,
        "Request heads have no deadline (HTTP_HEADER_TIMEOUT is not applied)",
    ),
    ACCESS_LOG: _Tuning(
        _access_log_missing,
        "daphne writes its own access log, as text on stdout, whatever LOG_FORMAT says",
    ),
    QUIET_HANDSHAKE: _Tuning(
        _quiet_handshake_missing, "autobahn formats its debug lines on every connection"
    ),
    LEAN_SOCKETS: _Tuning(
        _lean_sockets_missing, "Each socket keeps its upgrade request and handshake text"
    ),
    SHUTDOWN_CANCEL: _Tuning(
        _shutdown_cancel_missing,
        "daphne's own shutdown trigger is used: a stop within a second of a socket opening"
        " cancels no consumer and waits out the shutdown flush",
    ),
    SPREAD_CHECKS: _Tuning(
        _spread_checks_missing,
        "daphne checks every connection's timeouts, and sends the pings that are due, in one"
        " turn every 2 s",
    ),
    DIRECT_UPGRADES: _Tuning(
        _direct_upgrades_missing,
        "Upgrade requests take Twisted's HTTP parsing and daphne's hand-over, as before",
    ),
    DIRECT_HANDSHAKES: _Tuning(
        _direct_handshakes_missing,
        "Opening handshakes are read by autobahn's processHandshake, as before",
    ),
    DIRECT_FRAMES: _Tuning(
        _direct_frames_missing,
        "Every frame waits in the consumer's queue for the consumer's task, as before",
    ),
    FAST_FRAMES: _Tuning(
        _fast_frames_missing, "Every frame is read by autobahn's parser, as before"
    ),
    TURN_BUDGET: _Tuning(
        _turn_budget_missing,
        "Each turn of the event loop reads every ready socket, however long that takes",
    ),
    LINGERING_CLOSE: _Tuning(
        _lingering_close_missing,
        "A hung-up socket is closed as soon as its close frame is flushed: a client still"
        " sending may get a reset before it reads the close frame",
    ),
}
