"""Helpers for socket tests: real Redis (the session's), a real database, pycrdt peers."""

import asyncio
import contextlib

import pytest_asyncio
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from pycrdt import Doc, Text

from editor.realtime import protocol
from editor.routing import websocket_urlpatterns

ORIGIN = (b"origin", b"http://localhost")
# The page's own origin is the Host the socket asked for (editor/realtime/auth.py).
HOST = (b"host", b"localhost")


class Peer:
    """A y-websocket client: a pycrdt Doc and a communicator to the consumer."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.doc = Doc()
        self.text = self.doc.get("codemirror", type=Text)

    async def connect(self) -> bool:
        connected, _ = await self.ws.connect(timeout=10)
        return connected

    async def recv(self, timeout: float = 5) -> protocol.Message:
        return protocol.parse_message(await self.ws.receive_from(timeout=timeout))

    async def send(self, frame: bytes) -> None:
        # send_input rather than send_to, which refuses an empty frame (a case we test).
        await self.ws.send_input({"type": "websocket.receive", "bytes": frame})

    def type(self, text: str) -> bytes:
        """Appends text locally and returns the Yjs update that describes the change."""
        before = self.doc.get_state()
        self.text += text
        return self.doc.get_update(before)

    async def handshake(self) -> None:
        """Runs the y-websocket handshake until this peer holds the server's document."""
        first = await self.recv()
        assert isinstance(first, protocol.SyncStep1)
        await self.send(protocol.sync_step1(self.doc))
        await self.send(protocol.sync_step2(self.doc, first.state_vector))
        reply = await self.recv()
        while not isinstance(reply, protocol.SyncStep2):  # awareness may come first
            reply = await self.recv()
        self.doc.apply_update(reply.update)

    async def settle(self) -> list[protocol.Message]:
        """Waits until the server has handled everything sent so far (a consumer handles one
        message at a time, so the answer to a fresh step 1 comes after them) and returns the
        other messages that arrived meanwhile."""
        await self.send(protocol.sync_step1(self.doc))
        others = []
        while not isinstance(message := await self.recv(), protocol.SyncStep2):
            others.append(message)
        return others

    async def expect_close(self, timeout: float = 5) -> int:
        """Reads until the socket is closed and returns the close code."""
        while True:
            output = await self.ws.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return output.get("code", 1000)

    async def close(self) -> None:
        await self.ws.disconnect()


@pytest_asyncio.fixture
async def peer_for():
    """Builds a peer for a user (scope user, as the session middleware would set it). Peers a
    test left open are closed when it ends, while the loop still runs: left to the loop's
    teardown, their consumers would be cancelled all at once, in the middle of whatever they
    were awaiting."""
    made = []

    def build(user, document_id, query: str = "", headers=(ORIGIN, HOST), path=None) -> Peer:
        app = URLRouter(websocket_urlpatterns)
        url = path or f"/ws/documents/{document_id}" + (f"?{query}" if query else "")
        communicator = WebsocketCommunicator(app, url, headers=list(headers))
        if user is not None:
            communicator.scope["user"] = user
        peer = Peer(communicator)
        made.append(peer)
        return peer

    yield build
    for peer in made:
        # Never connected, refused, already closed, or cancelled by the test (as daphne would).
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(peer.close(), 5)
