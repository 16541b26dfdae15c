"""Limits on what one client can make a real daphne process do (tests/live.py), with the
server's default limits: a flood of messages, and unfinished frames held in memory."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time

import pytest
from pycrdt import Doc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from editor.models import Membership, Role
from editor.realtime import protocol
from tests import live
from tests.conftest import make_user
from tests.realtime.test_live_protection import (
    client_frame,
    daphne_rss,
    log_since,
    raw_socket,
    synced,
    updates_for,
    url,
    wait_for_log,
)

pytestmark = pytest.mark.django_db(transaction=True)

PER_USER = 4  # WS_MAX_CONNECTIONS_PER_USER of the server under test


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    with live.LiveServers(
        1, tmp_path_factory.mktemp("limits-servers"), WS_MAX_CONNECTIONS_PER_USER=PER_USER
    ) as servers:
        yield servers


@pytest.fixture(autouse=True)
def around_each_test(transactional_db, server):
    start = server.logs[0].stat().st_size
    yield
    live.wait_quiet_database()
    print(f"--- server log during this test ---\n{log_since(server, start)[-20000:]}")


def test_a_flood_from_one_socket_is_closed_with_4429_and_others_go_on(
    server, document, other_document, owner
):
    start = server.logs[0].stat().st_size
    updates = updates_for([f"[{n}]" for n in range(10_000)])

    async def scenario():
        async with (
            connect(url(server, other_document, owner)) as writer,
            connect(url(server, other_document, owner)) as reader,
            connect(url(server, document, owner), max_size=None) as flooder,
        ):
            for ws in (writer, reader, flooder):
                await synced(ws)
            # About 5,000 updates a second, for up to two seconds.
            code = None
            for batch in range(0, len(updates), 50):
                try:
                    for update in updates[batch : batch + 50]:
                        await flooder.send(protocol.sync_update(update))
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                    break
                await asyncio.sleep(0.01)
            if code is None:
                try:
                    while True:
                        await asyncio.wait_for(flooder.recv(), 10)
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
            # Meanwhile and after, the other document's people are served as usual.
            await writer.send(protocol.sync_update(updates_for(["still here"])[0]))
            while b"still here" not in await asyncio.wait_for(reader.recv(), 10):
                pass
            return code

    assert asyncio.run(scenario()) == 4429
    log = wait_for_log(server, start, r"code=4429 reason=too many messages from this socket")
    assert "code=1011" not in log


def test_a_flooder_still_sending_gets_its_close_frame_and_a_clean_end_not_a_reset(
    server, document, owner
):
    # Reproduced in CI: the server closed a flooder with 4429, but the client never saw the
    # close frame. The server closed its socket with the flood's next frames unread, so the
    # kernel answered them with a reset, and the client's next write failed on it before its
    # reader got to the close frame. A client keeps sending for a moment after the server
    # closes (it cannot know before it reads the close frame); that must end cleanly.
    sock = raw_socket(server, document, owner)
    frames = [
        client_frame(protocol.sync_update(u))
        for u in updates_for([f"[{n}]" for n in range(10_000)])
    ]
    failed: list[OSError] = []
    stop = threading.Event()

    def flood() -> None:
        # About 5,000 updates a second, as a busy client might send.
        try:
            for batch in range(0, len(frames), 50):
                if stop.is_set():
                    break
                sock.sendall(b"".join(frames[batch : batch + 50]))
                time.sleep(0.01)
            sock.shutdown(socket.SHUT_WR)  # done sending: the client's half of the close
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        closed, code = read_until_closed(sock)
        time.sleep(0.1)  # still sending a little while after the close frame arrived
        stop.set()
        sender.join(20)
        sock.settimeout(10)
        try:
            rest = sock.recv(65536)
            end = "end of stream" if rest == b"" else f"more data: {rest[:40]!r}"
        except ConnectionResetError:
            end = "reset"
    finally:
        stop.set()
        sender.join(20)
        sock.close()
    assert (closed, code) == (True, 4429)
    assert failed == []
    assert end == "end of stream"


@pytest.fixture
def other_document(owner):
    from editor.models import Document

    return Document.objects.create_for(owner, "Elsewhere")


def read_until_closed(sock, timeout: float = 10) -> tuple[bool, int | None]:
    """Reads what the server sends until it ends the connection: whether it did within
    ``timeout``, and the code of its close frame if one arrived before (autobahn drops the
    connection right after it, so unread input may turn it into a reset first)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True, None
        except TimeoutError:
            break
        if not chunk:
            return True, None
        data += chunk
        at = 0
        while at + 2 <= len(data):  # walk the server's (unmasked) frames
            opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
            header = 2
            if size == 126:
                size, header = struct.unpack("!H", data[at + 2 : at + 4])[0], 4
            elif size == 127:
                size, header = struct.unpack("!Q", data[at + 2 : at + 10])[0], 10
            if at + header + size > len(data):
                break
            if opcode == 0x8:
                return True, struct.unpack("!H", data[at + header : at + header + 2])[0]
            at += header + size
    return False, None


def test_unfinished_frames_larger_than_collabs_limit_are_refused_at_once(
    server, document, owner, viewer
):
    # Reproduced: daphne's 64 MiB message cap applied before collab's own, so 10 sockets each
    # holding an unfinished 60 MiB frame cost 600 MB. daphne's cap is now an eighth above
    # collab's limit: a frame announced larger is refused when its header arrives.
    # Ten readers, not one reader's ten sockets: this server lets a user open PER_USER, and a
    # socket over that cap may be refused (1013) before its frame's header is read.
    readers = [viewer] + [make_user(f"reader{n}") for n in range(9)]
    for reader in readers[1:]:
        Membership.objects.create(document=document, user=reader, role=Role.VIEWER)
    before = daphne_rss(server)
    sockets = []
    for reader in readers:
        sock = raw_socket(server, document, reader)
        mask = b"\x01\x02\x03\x04"
        sock.sendall(bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 60 * 1024 * 1024) + mask)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # already refused
            sock.sendall(b"\x00" * (2 * 1024 * 1024))
        sockets.append(sock)

    ends = [read_until_closed(sock) for sock in sockets]
    for sock in sockets:
        sock.close()

    # Ended by the server at once ("message too big", 1009, from autobahn: collab never sees
    # a byte of it); before, each was held open waiting for the rest of its 60 MiB.
    assert all(ended for ended, _ in ends)
    assert {code for _, code in ends} <= {1009, None}
    assert daphne_rss(server) - before < 100 * 1024 * 1024

    async def still_editing():
        async with connect(url(server, document, owner), max_size=None) as ws:
            await synced(ws)
            await ws.send(protocol.sync_update(updates_for(["fine"])[0]))
            await ws.send(protocol.sync_step1(Doc()))

    asyncio.run(still_editing())
    live.wait_stored(document.pk, length=4)


def test_a_socket_over_the_per_user_cap_is_told_why_and_closed_with_1013(
    server, document, owner, editor_user
):
    start = server.logs[0].stat().st_size

    async def scenario():
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(PER_USER):
                await synced(await stack.enter_async_context(connect(url(server, document, owner))))
            over = await stack.enter_async_context(connect(url(server, document, owner)))
            frames = []
            try:
                while True:
                    frames.append(await asyncio.wait_for(over.recv(), 10))
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            # Someone else still gets in.
            async with connect(url(server, document, editor_user)) as other:
                await synced(other)
            return frames, code

    frames, code = asyncio.run(scenario())
    # 1013 "try again later" itself (autobahn would not send it: collab writes the frame).
    assert code == 1013
    assert protocol.parse_message(frames[-1]) == protocol.Auth(
        f"too many open connections for this user ({PER_USER}); close some tabs or try again later"
    )
    wait_for_log(server, start, r"code=1013 reason=too many open connections")
