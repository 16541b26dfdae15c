"""Lean sockets (collab/lean.py): what a WebSocket's handshake left behind is let go once it is
open, and nothing a socket still uses is touched. On real Twisted, daphne and asyncio objects;
the live tests open every socket through daphne with this installed, and `make bench` measures
the memory it saves (docs/BENCHMARKS.md, change 21)."""

import asyncio
import gc
import weakref

from twisted.internet.testing import StringTransport
from twisted.web import http

from collab import lean, transport


def channel_with_request() -> tuple[http.HTTPChannel, http.Request]:
    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET /ws/documents/x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
    return channel, channel.requests[0]


def test_an_upgraded_request_leaves_its_channel_and_is_freed():
    channel, request = channel_with_request()
    request.transport = None  # what daphne does when it hands the connection to autobahn
    gone = weakref.ref(request)

    lean.release_upgrade_request(request)
    del request
    gc.collect()

    assert channel.requests == []
    assert gone() is None


def test_a_plain_request_stays_with_its_channel():
    channel, request = channel_with_request()

    lean.release_upgrade_request(request)

    assert channel.requests == [request]


def test_only_the_handshake_text_is_dropped_when_a_socket_opens():
    socket = transport._throwaway_websocket()
    for name in lean.HANDSHAKE_LEFTOVERS:
        setattr(socket, name, "from the handshake")
    kept = {name: value for name, value in vars(socket).items()}

    lean.drop_handshake_leftovers(socket)

    assert not set(lean.HANDSHAKE_LEFTOVERS) & set(vars(socket))
    assert vars(socket) == {
        name: value for name, value in kept.items() if name not in lean.HANDSHAKE_LEFTOVERS
    }


def test_queues_sharing_their_unused_parts_still_deliver_in_order_each_their_own():
    async def scenario() -> tuple[list[int], list[int], bool]:
        first: asyncio.Queue[int] = asyncio.Queue()
        second: asyncio.Queue[int] = asyncio.Queue()
        lean.share_unused_queue_parts(first)
        lean.share_unused_queue_parts(second)
        shared = first._putters is second._putters and first._finished is second._finished
        waiting = asyncio.ensure_future(first.get())  # a reader parked before anything came
        await asyncio.sleep(0)
        for number in range(5):
            first.put_nowait(number)
            await second.put(number * 10)
        got_first = [await waiting] + [first.get_nowait() for _ in range(4)]
        got_second = [second.get_nowait() for _ in range(5)]
        return got_first, got_second, shared

    got_first, got_second, shared = asyncio.run(scenario())

    assert shared
    assert got_first == [0, 1, 2, 3, 4]
    assert got_second == [0, 10, 20, 30, 40]


def test_a_bounded_queue_keeps_its_own_parts():
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    putters = queue._putters

    lean.share_unused_queue_parts(queue)

    assert queue._putters is putters


def test_it_is_installed_on_daphne_once_and_checked_first(unchecked, monkeypatch):
    from daphne.http_protocol import WebRequest
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    # Put back as daphne ships them after the test.
    monkeypatch.setattr(WebRequest, "process", WebRequest.process)
    monkeypatch.setattr(WebSocketProtocol, "onOpen", WebSocketProtocol.onOpen)
    monkeypatch.setattr(Server, "create_application", Server.create_application)

    assert lean.missing() == []
    assert transport.lean_sockets() is True
    wrapped = WebRequest.process
    assert transport.lean_sockets() is True
    assert WebRequest.process is wrapped
    assert lean.installed()


def test_it_stays_off_when_daphne_changed(unchecked, monkeypatch, caplog):
    from daphne.http_protocol import WebRequest
    from daphne.server import Server

    process = WebRequest.process
    monkeypatch.setattr(Server, "create_application", lambda self, protocol: None)

    assert transport.lean_sockets() is False
    assert WebRequest.process is process
    assert any("transport tuning lean_sockets is off" in r.getMessage() for r in caplog.records)
