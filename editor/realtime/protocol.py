"""The y-websocket wire protocol: parse and build single WebSocket frames.

Pure functions over bytes (no Django, no Channels, no I/O), built on pycrdt's encoding
helpers and checked against frames written by the real Yjs client
(``tests/realtime/fixtures/yjs_frames.json``).

Handshake (client-server, as in y-protocols' sync.js and y-websocket):

1. On connect the client sends ``sync step 1`` (its state vector) and, if it has one, an
   ``awareness`` frame with its local state.
2. The server answers the step 1 with ``sync step 2`` (the update the client is missing)
   and sends its own ``sync step 1``; the client answers that with its ``sync step 2``.
   After this both sides hold the same document.
3. From then on each local change is broadcast as a ``sync update``, awareness changes as
   ``awareness`` frames. ``query awareness`` asks the peer to resend every awareness state
   it knows; ``auth``/permission-denied tells a client its access was refused.

Grammar (every integer is a lib0 varUint: 7 bits per byte, least significant group first,
high bit set on all but the last byte; a varBuffer is a varUint length and that many bytes;
a varString is a varBuffer of UTF-8)::

    frame          = messageType:varUint body             ; exactly one message per frame
    body(0 sync)   = 0 stateVector:varBuffer               ; sync step 1
                   | 1 update:varBuffer                    ; sync step 2
                   | 2 update:varBuffer                    ; update
    body(1 awareness)       = awarenessUpdate:varBuffer
    body(2 auth)            = 0 reason:varString           ; permission denied
    body(3 query awareness) = (empty)
    awarenessUpdate = count:varUint (clientID:varUint clock:varUint state:varString)*count
                                                           ; state is JSON, "null" = removed

Strictness: y-websocket writes one message per frame and the real client never appends
anything after it (verified against the fixtures), so bytes left after the message are
rejected rather than silently ignored. ``parse_message`` validates framing and the
awareness payload; the Yjs update and state-vector bytes inside sync messages stay opaque
here and are checked by pycrdt when applied (``Doc.apply_update`` raises ``ValueError``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pycrdt import (
    Decoder,
    Doc,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    write_message,
    write_var_uint,
)

__all__ = [
    "AUTH_AUTHENTICATED",
    "AUTH_PERMISSION_DENIED",
    "MESSAGE_AUTH",
    "MESSAGE_AWARENESS",
    "MESSAGE_QUERY_AWARENESS",
    "MESSAGE_STATELESS",
    "MESSAGE_SYNC",
    "SCOPE_READ_ONLY",
    "SCOPE_READ_WRITE",
    "Auth",
    "Authenticated",
    "Awareness",
    "AwarenessEntry",
    "Message",
    "ProtocolError",
    "QueryAwareness",
    "Stateless",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "authenticated",
    "awareness",
    "decode_awareness",
    "encode_awareness",
    "parse_message",
    "permission_denied",
    "query_awareness",
    "sync_step1",
    "sync_step2",
    "stateless",
    "sync_update",
    "title_changed",
]

MESSAGE_SYNC = int(YMessageType.SYNC)
MESSAGE_AWARENESS = int(YMessageType.AWARENESS)
# pycrdt's YMessageType stops at AWARENESS; these two come from y-websocket itself.
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3
# y-protocols/auth.js defines only subtype 0; 2 ("authenticated", with a scope) is Hocuspocus's
# convention for telling a client what it may do. y-protocols' readAuthMessage ignores any
# subtype but 0, so stock clients are unaffected.
AUTH_PERMISSION_DENIED = 0
AUTH_AUTHENTICATED = 2
# Hocuspocus's "stateless" message: a string for the application, outside the document (here,
# server → client only: a document's new title). Hocuspocus clients emit it as "stateless";
# the stock y-websocket client has no handler for type 5 and logs "Unable to compute message"
# for it, then carries on (docs/protocol.md).
MESSAGE_STATELESS = 5
SCOPE_READ_WRITE = "read-write"
SCOPE_READ_ONLY = "readonly"

# lib0's readVarUint refuses anything above Number.MAX_SAFE_INTEGER; matching it also keeps
# a frame of endless continuation bytes from building a huge Python int.
_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_VAR_UINT_BYTES = 8  # 8 * 7 = 56 bits, enough for any safe integer


class ProtocolError(ValueError):
    """A frame or payload that does not follow the y-websocket protocol."""


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """The sender's state vector; answer with ``sync_step2(doc, state_vector)``."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The update the receiver was missing, in answer to its step 1."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; ``state`` is None when the client went away."""

    client_id: int
    clock: int
    state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Awareness:
    """An awareness update.

    ``payload`` is kept verbatim so it can be relayed unchanged; ``entries`` is its decoded
    form (a server needs the client IDs to announce their removal on disconnect).
    """

    payload: bytes
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class Auth:
    """Permission denied (the only auth subtype y-protocols defines)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """What the server lets this socket do: ``SCOPE_READ_WRITE`` or ``SCOPE_READ_ONLY``."""

    scope: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request to resend all known awareness states."""


@dataclass(frozen=True, slots=True)
class Stateless:
    """A string for the application, outside the document (JSON here: ``title_changed``)."""

    payload: str


Message: TypeAlias = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | Awareness
    | Auth
    | Authenticated
    | QueryAwareness
    | Stateless
)


class _Reader:
    """Bounds-checked reads on top of pycrdt's Decoder.

    pycrdt's Decoder assumes well-formed input: a truncated varUint raises IndexError and a
    truncated buffer comes back short without complaint. Every read is therefore checked
    against what is left before the Decoder is allowed to consume it.
    """

    def __init__(self, data: bytes) -> None:
        self._decoder = Decoder(bytes(data))

    @property
    def remaining(self) -> int:
        return self._decoder.length

    def _peek_var_uint(self, what: str) -> tuple[int, int]:
        """Return (value, encoded size) of the varUint at the cursor without consuming it."""
        decoder = self._decoder
        head = decoder.stream[decoder.i0 : decoder.i0 + _MAX_VAR_UINT_BYTES]
        size = next((i + 1 for i, byte in enumerate(head) if byte < 0x80), None)
        if size is None:
            if len(head) == _MAX_VAR_UINT_BYTES:
                raise ProtocolError(f"{what}: varUint longer than {_MAX_VAR_UINT_BYTES} bytes")
            if not head:
                raise ProtocolError(f"truncated frame: missing {what}")
            raise ProtocolError(f"truncated frame: {what} varUint runs past the end")
        value = Decoder(head[:size]).read_var_uint()
        if value > _MAX_SAFE_INTEGER:
            raise ProtocolError(f"{what}: {value} exceeds the largest safe integer")
        return value, size

    def var_uint(self, what: str) -> int:
        self._peek_var_uint(what)
        return self._decoder.read_var_uint()

    def var_buffer(self, what: str) -> bytes:
        length, size = self._peek_var_uint(f"{what} length")
        available = self.remaining - size
        if length > available:
            raise ProtocolError(
                f"truncated frame: {what} declares {length} bytes but only {available} follow"
            )
        # Not None: the peek above proved there is at least a length prefix to read.
        return self._decoder.read_message() or b""

    def var_string(self, what: str) -> str:
        data = self.var_buffer(what)
        try:
            # lib0 decodes with a fatal TextDecoder, so invalid UTF-8 is an error there too.
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what} is not valid UTF-8: {exc}") from exc

    def expect_end(self, what: str) -> None:
        if self.remaining:
            raise ProtocolError(f"{self.remaining} unexpected trailing byte(s) after {what}")


# The sync messages by their subtype, for ``_whole_sync_message``.
_SYNC_MESSAGES: dict[int, type[SyncStep1] | type[SyncStep2] | type[SyncUpdate]] = {
    int(YSyncMessageType.SYNC_STEP1): SyncStep1,
    int(YSyncMessageType.SYNC_STEP2): SyncStep2,
    int(YSyncMessageType.SYNC_UPDATE): SyncUpdate,
}


def _whole_sync_message(frame: bytes) -> SyncStep1 | SyncStep2 | SyncUpdate | None:
    """A sync message whose one field fills the rest of the frame: nearly every frame a client
    sends. Read in a few steps (its length's varUint, inline) rather than through ``_Reader``'s
    checked reads: 1.0 µs instead of 5.5, and after change 55 the largest part of a frame's
    way from the socket to the room (docs/BENCHMARKS.md, change 56). None for anything else
    (another message, a length that does not end exactly at the frame's end, a length past the
    safe integers): the full parser reads it, and refuses it with its reason when it must."""
    if len(frame) < 3 or frame[0] != MESSAGE_SYNC:
        return None
    kind = _SYNC_MESSAGES.get(frame[1])
    if kind is None:
        return None
    length = shift = 0
    for index in range(2, min(len(frame), 2 + _MAX_VAR_UINT_BYTES)):
        byte = frame[index]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            if length > _MAX_SAFE_INTEGER or index + 1 + length != len(frame):
                return None
            return kind(bytes(frame[index + 1 :]))
        shift += 7
    return None


def parse_message(frame: bytes) -> Message:
    """Parse one y-websocket frame.

    Raises ProtocolError for an empty frame, an unknown message type or subtype, truncated
    data, trailing bytes, or a malformed awareness payload.
    """
    if not frame:
        raise ProtocolError("empty frame")
    sync = _whole_sync_message(frame)
    if sync is not None:
        return sync
    reader = _Reader(frame)
    message_type = reader.var_uint("message type")
    message: Message
    if message_type == MESSAGE_SYNC:
        sync_type = reader.var_uint("sync message type")
        if sync_type == YSyncMessageType.SYNC_STEP1:
            message = SyncStep1(reader.var_buffer("sync step 1 state vector"))
        elif sync_type == YSyncMessageType.SYNC_STEP2:
            message = SyncStep2(reader.var_buffer("sync step 2 update"))
        elif sync_type == YSyncMessageType.SYNC_UPDATE:
            message = SyncUpdate(reader.var_buffer("sync update"))
        else:
            raise ProtocolError(f"unknown sync message type {sync_type}")
    elif message_type == MESSAGE_AWARENESS:
        payload = reader.var_buffer("awareness update")
        message = Awareness(payload, tuple(decode_awareness(payload)))
    elif message_type == MESSAGE_AUTH:
        auth_type = reader.var_uint("auth message type")
        if auth_type == AUTH_PERMISSION_DENIED:
            message = Auth(reader.var_string("permission-denied reason"))
        elif auth_type == AUTH_AUTHENTICATED:
            message = Authenticated(reader.var_string("authenticated scope"))
        else:
            raise ProtocolError(f"unknown auth message type {auth_type}")
    elif message_type == MESSAGE_QUERY_AWARENESS:
        message = QueryAwareness()
    elif message_type == MESSAGE_STATELESS:
        message = Stateless(reader.var_string("stateless payload"))
    else:
        raise ProtocolError(f"unknown message type {message_type}")
    reader.expect_end(type(message).__name__)
    return message


def sync_step1(doc: Doc) -> bytes:
    """Frame announcing ``doc``'s state vector."""
    return create_sync_message(doc)


def sync_step2(doc: Doc, state_vector: bytes) -> bytes:
    """Frame carrying what ``doc`` has beyond ``state_vector`` (the peer's step 1)."""
    try:
        update = doc.get_update(state_vector)
    except ValueError as exc:
        # The state vector is peer input, so a bad one is a protocol error, not a bug here.
        raise ProtocolError(f"invalid state vector in sync step 1: {exc}") from exc
    return (
        write_var_uint(MESSAGE_SYNC)
        + write_var_uint(YSyncMessageType.SYNC_STEP2)
        + write_message(update)
    )


_SYNC_UPDATE = bytes((YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE))


def sync_update(update: bytes) -> bytes:
    """Frame broadcasting one document update: the bytes of pycrdt's ``create_update_message``,
    joined in one copy instead of two (a 16 MB paste: one 16 MB copy less)."""
    return b"".join(sync_update_parts(update))


def sync_update_parts(update: bytes) -> tuple[bytes, bytes, bytes]:
    """``sync_update``'s message in its parts, to be joined once by whoever sends it."""
    return (_SYNC_UPDATE, write_var_uint(len(update)), update)


def awareness(payload: bytes) -> bytes:
    """Frame carrying an encoded awareness update (see ``encode_awareness``)."""
    return create_awareness_message(payload)


def permission_denied(reason: str) -> bytes:
    """Auth frame telling the client its access was refused."""
    # Not pycrdt's Encoder.write_var_string: it prefixes the *character* count, which is
    # wrong for any non-ASCII reason; lib0 expects the UTF-8 byte count.
    return (
        write_var_uint(MESSAGE_AUTH)
        + write_var_uint(AUTH_PERMISSION_DENIED)
        + write_message(reason.encode("utf-8"))
    )


def authenticated(scope: str) -> bytes:
    """Auth frame telling the client what it may do: ``SCOPE_READ_WRITE`` or
    ``SCOPE_READ_ONLY``. Sent at connect and whenever the socket's role changes."""
    return (
        write_var_uint(MESSAGE_AUTH)
        + write_var_uint(AUTH_AUTHENTICATED)
        + write_message(scope.encode("utf-8"))
    )


def query_awareness() -> bytes:
    """Frame asking the peer to resend every awareness state it knows."""
    return write_var_uint(MESSAGE_QUERY_AWARENESS)


def stateless(payload: str) -> bytes:
    """Stateless frame carrying ``payload`` (UTF-8, byte-counted as lib0 reads it)."""
    return write_var_uint(MESSAGE_STATELESS) + write_message(payload.encode("utf-8"))


def title_changed(title: str) -> bytes:
    """Frame telling a client the document's title is now ``title``."""
    return stateless(json.dumps({"type": "title", "title": title}, ensure_ascii=False))


def _reject_constant(name: str) -> Any:
    # JSON.parse has no NaN/Infinity; Python's json accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is inf in Python (and Infinity in JSON.parse), which JSON cannot carry on: a state
    # holding one could be neither stored nor relayed.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode a y-protocols awareness update into its entries, in wire order."""
    reader = _Reader(payload)
    count = reader.var_uint("awareness entry count")
    entries = []
    for index in range(count):
        client_id = reader.var_uint(f"awareness entry {index} client ID")
        clock = reader.var_uint(f"awareness entry {index} clock")
        raw_state = reader.var_string(f"awareness entry {index} state")
        try:
            state = json.loads(
                raw_state, parse_constant=_reject_constant, parse_float=_finite_float
            )
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(
                f"awareness entry {index} (client {client_id}) state is not valid JSON: {exc}"
            ) from exc
        if state is not None and not isinstance(state, dict):
            raise ProtocolError(
                f"awareness entry {index} (client {client_id}) state must be a JSON object or "
                f"null, got {type(state).__name__}"
            )
        entries.append(AwarenessEntry(client_id, clock, state))
    reader.expect_end("awareness entries")
    return entries


def _state_json(state: dict[str, Any] | None) -> bytes:
    # Same text as JSON.stringify: no whitespace, non-ASCII left as is.
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON.parse accepts "\ud83d") cannot be UTF-8; JSON.stringify
        # escapes it, and so does ensure_ascii, which parses back to the same value.
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode("ascii")


def plausible_update(update: bytes) -> bool:
    """Whether a Yjs (v1) update's first counts fit in its length: the number of clients, and
    the number of structs of the first, each taking at least a byte. Found by fuzzing: yrs
    spends seconds and hundreds of MB refusing small updates whose counts are absurd, on the
    event loop, so these are refused before it sees them. A cheap first check, not a parser:
    yrs still validates everything else by applying."""
    position = 0
    for _ in range(2):
        value = shift = 0
        while True:
            if position >= len(update) or shift > 56:
                return False
            byte = update[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if value > len(update) - position:
            return False
        if value == 0:
            return True
    return True


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode entries as a y-protocols awareness update (the inverse of ``decode_awareness``)."""
    entries = list(entries)
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        for name, value in (("client_id", entry.client_id), ("clock", entry.clock)):
            if type(value) is not int or not 0 <= value <= _MAX_SAFE_INTEGER:
                raise ProtocolError(f"awareness {name} must be an int in [0, 2**53), got {value!r}")
        if entry.state is not None and not isinstance(entry.state, dict):
            raise ProtocolError(
                f"awareness state must be a dict or None, got {type(entry.state).__name__}"
            )
        try:
            state = _state_json(entry.state)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"awareness state of client {entry.client_id} is not JSON-serialisable: {exc}"
            ) from exc
        parts += [write_var_uint(entry.client_id), write_var_uint(entry.clock)]
        parts.append(write_message(state))
    return b"".join(parts)
