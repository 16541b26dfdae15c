"""Plain frames read directly (collab/frames.py): a socket's small, whole binary frames reach
daphne's ``onMessage`` as autobahn would hand them, and everything else still goes through
autobahn. On real daphne and autobahn protocols, and against a real `manage.py serve` (every
live test's frames take this path too); `make bench` measures what it saves
(docs/BENCHMARKS.md, change 55)."""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import pytest
from autobahn.websocket.xormasker import create_xor_masker
from daphne.ws_protocol import WebSocketProtocol

from collab import frames, transport
from editor.realtime import protocol as yjs
from tests import live

MASK = b"\x11\x22\x33\x44"


def frame(payload: bytes, first: int = 0x82, mask: bytes = MASK, length_form: int = 0) -> bytes:
    """A client frame: masked (unless ``mask`` is empty), binary with FIN unless ``first`` says
    otherwise; ``length_form`` 126 or 127 forces a longer length encoding than needed."""
    size = len(payload)
    bit = 0x80 if mask else 0
    if length_form == 127 or size >= 1 << 16:
        head = bytes((first, bit | 127)) + struct.pack("!Q", size)
    elif length_form == 126 or size >= 126:
        head = bytes((first, bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, bit | size))
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- reading one frame -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 1000, 65535])
def test_a_payload_is_unmasked_as_autobahn_unmasks_it(size):
    payload = os.urandom(size)
    masked = frame(payload)[-size:] if size else b""

    assert frames.unmask(MASK, masked) == payload
    assert frames.unmask(MASK, masked) == bytes(create_xor_masker(MASK, size).process(masked))


@pytest.mark.parametrize("size", [0, 40, 125, 126, 4000, 65535])
def test_a_whole_plain_frame_is_read_with_where_it_ends(size):
    payload = os.urandom(size)
    data = frame(payload) + b"next"

    assert frames.plain_frame(data, 0, 0) == (payload, len(data) - 4)
    assert frames.plain_frame(b"xx" + data, 2, 0) == (payload, len(data) - 2)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(b"hello", first=0x81), id="text"),
        pytest.param(frame(b"hello", first=0x02), id="first fragment"),
        pytest.param(frame(b"hello", first=0x80), id="continuation"),
        pytest.param(frame(b"hello", first=0xC2), id="RSV1 set (compressed)"),
        pytest.param(frame(b"hello", first=0x89), id="ping"),
        pytest.param(frame(b"\x03\xe8", first=0x88), id="close"),
        pytest.param(frame(b"hello", mask=b""), id="unmasked"),
        pytest.param(frame(b"hello", length_form=126), id="16-bit length for a short payload"),
        pytest.param(frame(b"x" * 200, length_form=127), id="64-bit length"),
        pytest.param(frame(b"x" * 70_000), id="64 KiB or more"),
        pytest.param(frame(b"hello")[:-1], id="cut short"),
        pytest.param(frame(b"x" * 300)[:3], id="header cut short"),
    ],
)
def test_anything_but_a_whole_plain_frame_is_left_to_autobahn(data):
    assert frames.plain_frame(data, 0, 0) is None


def test_a_frame_over_the_limit_is_left_to_autobahn():
    assert frames.plain_frame(frame(b"x" * 100), 0, 100) is not None
    assert frames.plain_frame(frame(b"x" * 101), 0, 100) is None


# -- on a daphne protocol ----------------------------------------------------------------------


@pytest.fixture
def direct():
    """collab/frames.py installed for the test, and taken out after it."""
    assert frames.missing() == []
    before = WebSocketProtocol.dataReceived
    frames.install()
    yield
    WebSocketProtocol.dataReceived = before


class Opened:
    """A daphne WebSocket protocol, open as a handshake leaves it, on a string transport; what
    reaches daphne's application queue is in ``received``."""

    def __init__(self) -> None:
        self.protocol = protocol = transport._throwaway_websocket()
        protocol.state = protocol.STATE_OPEN
        protocol.inside_message, protocol.current_frame = False, None
        protocol.websocket_version = 13
        protocol.muted = False
        protocol.client_addr = None
        self.received: list[Any] = []
        protocol.application_queue = self
        protocol.server = self  # daphne tells its server when the socket closes
        protocol.transport.registerProducer(protocol, True)  # as a TCP connection has it

    def put_nowait(self, message: dict) -> None:
        self.received.append(message.get("bytes", message.get("text")))

    def protocol_disconnected(self, protocol: Any) -> None:
        pass

    def feed(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.protocol.dataReceived(piece)

    def written(self) -> bytes:
        return self.protocol.transport.value()


def test_plain_frames_in_one_read_reach_daphne_in_order_without_autobahns_parser(
    direct, monkeypatch
):
    socket_ = Opened()

    def parser(self: Any) -> bool:
        raise AssertionError("autobahn's parser read a plain frame")

    monkeypatch.setattr(WebSocketProtocol, "processData", parser)
    socket_.feed(frame(b"one") + frame(b"two" * 100) + frame(b""))

    assert socket_.received == [b"one", b"two" * 100, b""]
    assert socket_.protocol.data == b""


def test_a_ping_between_plain_frames_is_answered_and_the_frames_keep_their_order(direct):
    socket_ = Opened()

    socket_.feed(frame(b"one") + frame(b"are you there", first=0x89) + frame(b"two"))

    assert socket_.received == [b"one", b"two"]
    assert socket_.written() == b"\x8a\x0dare you there"  # the pong, unmasked from the server


def test_a_frame_cut_across_reads_arrives_once_and_whole(direct):
    socket_ = Opened()
    data = frame(b"one") + frame(b"x" * 1000) + frame(b"three")
    cut = len(frame(b"one")) + 10

    socket_.feed(data[:cut], data[cut:])

    assert socket_.received == [b"one", b"x" * 1000, b"three"]
    # autobahn took the cut frame and what came with it, and ended at rest.
    assert frames.reads_directly(socket_.protocol)
    socket_.feed(frame(b"four"))
    assert socket_.received[-1] == b"four"


def test_a_text_frame_still_reaches_daphne_as_text(direct):
    socket_ = Opened()

    socket_.feed(frame(b"one") + frame("héllo".encode(), first=0x81))

    assert socket_.received == [b"one", "héllo"]


def test_a_frame_over_daphnes_limit_still_fails_the_socket(direct):
    socket_ = Opened()
    socket_.protocol.maxFramePayloadSize = socket_.protocol.maxMessagePayloadSize = 100

    socket_.feed(frame(b"ok") + frame(b"x" * 101) + frame(b"never"))

    assert socket_.received == [b"ok"]
    assert socket_.protocol.state == socket_.protocol.STATE_CLOSED  # dropped, as autobahn does


def test_nothing_more_is_read_once_the_socket_is_closed(direct):
    socket_ = Opened()

    def closing(message: dict) -> None:
        socket_.received.append(message["bytes"])
        socket_.protocol.dropConnection(abort=True)  # as a refusal of a flooder does

    socket_.put_nowait = closing  # type: ignore[method-assign]
    socket_.feed(frame(b"one") + frame(b"two") + frame(b"three"))

    assert socket_.received == [b"one"]


def test_a_data_frame_still_ends_a_running_ping_timeout(direct):
    # autobahn cancels the wait for a pong on any data frame (autoPingRestartOnAnyTraffic).
    socket_ = Opened()
    cancelled: list[bool] = []
    socket_.protocol.autoPingTimeoutCall = type(
        "Timer", (), {"cancel": lambda self: cancelled.append(True)}
    )()
    socket_.protocol.autoPingRestartOnAnyTraffic = True

    socket_.feed(frame(b"one"))

    assert socket_.received == [b"one"]
    assert cancelled == [True]


# -- the check -----------------------------------------------------------------------------------


def test_it_is_installed_once_checked(monkeypatch):
    monkeypatch.setattr(WebSocketProtocol, "dataReceived", WebSocketProtocol.dataReceived)
    assert transport.fast_frames() is True
    installed = WebSocketProtocol.dataReceived
    assert frames.installed()
    assert transport.fast_frames() is True
    assert WebSocketProtocol.dataReceived is installed


def test_it_stays_off_when_autobahn_no_longer_opens_as_it_expects(unchecked, monkeypatch, caplog):
    from autobahn.websocket.protocol import WebSocketServerProtocol

    def succeed_handshake(self: Any, res: Any) -> None:  # an autobahn that keeps state elsewhere
        self.state = self.STATE_OPEN

    monkeypatch.setattr(WebSocketServerProtocol, "succeedHandshake", succeed_handshake)
    monkeypatch.setattr(WebSocketProtocol, "dataReceived", WebSocketProtocol.dataReceived)
    before = WebSocketProtocol.dataReceived

    assert transport.fast_frames() is False
    assert WebSocketProtocol.dataReceived is before
    assert any("transport tuning fast_frames is off" in r.getMessage() for r in caplog.records)


def test_it_stays_off_when_autobahn_hands_over_another_payload(unchecked, monkeypatch, caplog):
    from autobahn.websocket.protocol import WebSocketProtocol as Autobahns

    def altered_end(self: Any) -> None:  # an autobahn that changes what it read
        self._onMessage(b"altered", True)

    monkeypatch.setattr(Autobahns, "onMessageEnd", altered_end)

    assert frames.missing() == ["autobahn hands over another payload than the frame's"]
    assert transport.fast_frames() is False


# -- against a real server ---------------------------------------------------------------------


@pytest.fixture
def server(transactional_db, tmp_path):
    with live.LiveServers(1, tmp_path) as servers:
        yield servers


def test_a_real_server_applies_frames_sent_together_and_answers_a_ping_among_them(
    server, owner, document
):
    from tests.realtime.test_live_protection import raw_socket, updates_for

    sock = raw_socket(server, document, owner)
    updates = [frame(yjs.sync_update(u)) for u in updates_for(["alpha ", "beta ", "gamma"])]
    try:
        # One write: two updates, a ping, the third cut in two by a pause.
        data = updates[0] + updates[1] + frame(b"ping!", first=0x89) + updates[2]
        cut = len(data) - 5
        sock.sendall(data[:cut])
        time.sleep(0.2)
        sock.sendall(data[cut:])
        received = b""
        deadline = time.monotonic() + 10
        while b"\x8a\x05ping!" not in received and time.monotonic() < deadline:
            try:
                received += sock.recv(65536)
            except TimeoutError:
                break
    finally:
        sock.close()

    assert b"\x8a\x05ping!" in received  # the pong
    live.wait_stored(document.pk, length=len("alpha beta gamma"), timeout=30)
    assert live.stored_text(document.pk) == "alpha beta gamma"
