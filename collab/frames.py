"""Plain frames read directly: a socket's small, whole binary frames skip autobahn's parser.

Every Yjs message a client sends is one binary frame: FIN set, no extension bits, masked (as
every client frame must be), mostly tens of bytes. autobahn reads each one in two passes of its
general parser (the header, then the payload), with a masker object made for the frame, a
message buffer, its hooks for fragments and a Deferred-based event for listeners. Timed inside
a server during the bench's fan-out (a worktree with timestamps, not committed), that took
100-110 µs of the 420 µs between an update's bytes arriving and its first copy going out: cold
code, run once every 50 ms (docs/BENCHMARKS.md, change 55).

Here, when a socket is open and autobahn holds nothing of an earlier frame, the bytes Twisted
read are looked at first: each frame in them that is whole and plain (binary, FIN, no RSV bits,
masked, a payload under 64 KiB and within the protocol's frame and message limits) is unmasked
and handed to the protocol's ``onMessage`` as autobahn would hand it. From the first frame that
is anything else (a ping, a close, text, a fragment, a frame cut across reads, a big one),
the rest of the bytes go to autobahn unchanged, which deals with them as before. So do all the
bytes of a socket with permessage-deflate, frame or octet logging, tracked timings, listeners
on its ``message`` event or a ping timeout running that any traffic would cancel: everything
autobahn would do for such a frame beyond the hand-over.

autobahn's traffic counters (``trafficStats``) do not count the frames read here; nothing in
collab or daphne reads them. The self-check (collab/transport.py, ``FAST_FRAMES``) confirms at
start-up that autobahn still has the attributes this reads and, on a throw-away protocol, that
a frame read by autobahn reaches ``onMessage`` with the payload this module reads from it and
leaves autobahn as this module expects to find it.
"""

from __future__ import annotations

from typing import Any

# A payload length of 126 in the header: a 16-bit length follows (127: a 64-bit one, left to
# autobahn along with any payload from 64 KiB).
_LENGTH_16 = 126
_BINARY_FIN = 0x82  # FIN, no RSV bits, opcode 2 (binary)
_MASKED = 0x80


def unmask(mask: bytes, masked: bytes) -> bytes:
    """``masked`` XOR the 4-byte ``mask`` repeated (RFC 6455 section 5.3), as one big integer
    operation: a few µs for a few KiB, no per-byte Python loop."""
    size = len(masked)
    if not size:
        return b""
    key = (mask * ((size + 3) // 4))[:size]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def plain_frame(data: bytes, start: int, limit: int) -> tuple[bytes, int] | None:
    """``(payload, end)`` when ``data[start:]`` begins with a whole plain frame (binary, FIN, no
    RSV bits, masked, a payload under 64 KiB and at most ``limit`` bytes when ``limit`` is
    positive); None for anything autobahn should read."""
    if len(data) - start < 6 or data[start] != _BINARY_FIN:
        return None
    second = data[start + 1]
    if not second & _MASKED:
        return None
    size = second & 0x7F
    head = start + 2
    if size == _LENGTH_16:
        size = int.from_bytes(data[head : head + 2], "big")
        if size < _LENGTH_16:
            return None  # not the minimal encoding: autobahn fails the connection for it
        head += 2
    elif size > _LENGTH_16:
        return None
    if 0 < limit < size:
        return None
    end = head + 4 + size
    if end > len(data):
        return None
    return unmask(data[head : head + 4], data[head + 4 : end]), end


def reads_directly(protocol: Any) -> bool:
    """Whether ``protocol`` is open, autobahn holds nothing of an earlier frame, and nothing is
    set that autobahn would do more for a frame than hand it over."""
    return (
        protocol.state == protocol.STATE_OPEN
        and not protocol.data
        and protocol.current_frame is None
        and not protocol.inside_message
        and protocol._perMessageCompress is None
        and not protocol.autoPingTimeoutCall
        and not protocol._listeners
        and not protocol.logOctets
        and not protocol.logFrames
        and not protocol.trackedTimings
    )


def _limit(protocol: Any) -> int:
    frame, message = protocol.maxFramePayloadSize, protocol.maxMessagePayloadSize
    if frame > 0 and message > 0:
        return min(frame, message)
    return max(frame, message)


def read(protocol: Any, data: bytes) -> int:
    """Hands the whole plain frames at the start of ``data`` to ``protocol.onMessage`` while
    the protocol stays as ``reads_directly`` wants it; returns how many bytes were read."""
    start = 0
    while start < len(data) and reads_directly(protocol):
        frame = plain_frame(data, start, _limit(protocol))
        if frame is None:
            break
        payload, start = frame
        protocol.onMessage(payload, True)
    return start


def install() -> None:
    """Wraps daphne's ``WebSocketProtocol.dataReceived`` (autobahn's, inherited): plain frames
    are read here first. Idempotent. Call only once ``missing()`` says nothing."""
    from daphne.ws_protocol import WebSocketProtocol

    if installed():
        return
    data_received = WebSocketProtocol.dataReceived

    def dataReceived(self: Any, data: bytes) -> None:
        # ``read`` asks ``reads_directly`` before each frame, the first one included.
        taken = read(self, data)
        if taken:
            if taken == len(data):
                return
            data = data[taken:]
        data_received(self, data)

    dataReceived.direct = True  # type: ignore[attr-defined]
    WebSocketProtocol.dataReceived = dataReceived


def installed() -> bool:
    from daphne.ws_protocol import WebSocketProtocol

    return getattr(WebSocketProtocol.dataReceived, "direct", False)


def missing() -> list[str]:
    """What this relies on and no longer finds in the installed autobahn and daphne."""
    import inspect

    from autobahn.websocket.protocol import WebSocketServerProtocol
    from daphne.ws_protocol import WebSocketProtocol

    from collab import transport

    found: list[str] = []
    # Set when the opening handshake succeeds (a throw-away protocol never gets that far).
    opened = inspect.getsource(WebSocketServerProtocol.succeedHandshake)
    for line in ("self.inside_message = False", "self.current_frame = None"):
        if line not in opened:
            found.append(f"autobahn's succeedHandshake no longer sets {line}")
    for method, count in ((WebSocketProtocol.dataReceived, 2), (WebSocketProtocol.onMessage, 3)):
        if len(inspect.signature(method).parameters) != count:
            found.append(f"daphne's WebSocketProtocol.{method.__name__} takes another count")
    protocol = transport._throwaway_websocket()
    for name in (
        "state",
        "STATE_OPEN",
        "data",
        "_perMessageCompress",
        "autoPingTimeoutCall",
        "_listeners",
        "logOctets",
        "logFrames",
        "trackedTimings",
        "maxFramePayloadSize",
        "maxMessagePayloadSize",
    ):
        if not hasattr(protocol, name):
            found.append(f"autobahn's protocol has no {name}")
    if found:
        return found
    # autobahn, given a plain frame on an open protocol, must hand over the payload read here
    # and end as ``reads_directly`` wants it: nothing buffered, no frame or message under way.
    payload = bytes(range(200))
    frame = b"\x82\xfe\x00\xc8" + b"\x01\x02\x03\x04" + unmask(b"\x01\x02\x03\x04", payload)
    got: list[tuple[bytes, bool]] = []
    protocol.state = protocol.STATE_OPEN
    protocol.inside_message, protocol.current_frame = False, None
    protocol.websocket_version = 13  # what the handshake would have agreed
    protocol.onMessage = lambda message, binary: got.append((bytes(message), binary))
    protocol.autoPingTimeoutCall = None
    if not reads_directly(protocol):
        found.append("a new autobahn protocol, once open, is not ready for a frame")
    protocol._dataReceived(frame)
    if got != [(payload, True)]:
        found.append("autobahn hands over another payload than the frame's")
    if plain_frame(frame, 0, 0) != (payload, len(frame)):
        found.append("a plain frame is not read as autobahn reads it")
    if not reads_directly(protocol):
        found.append("autobahn is not back at rest after a whole frame")
    return found
