"""`python -m bench.sendpath`: what one small message to one open socket costs on each layer of
collab's send path, against the socket's own ``send`` in the same run.

A broadcast is this path once per reader (a 1 → 100 fan-out: 99 times in one turn of the event
loop), so its cost per socket is what a reader further down the list waits for. The figures are
microseconds per message, each the best of ``--rounds`` rounds of ``--messages`` writes over a
real loopback TCP connection that a plain socket on the other end keeps draining:

- ``socket.send``: the kernel's part, the floor (the same connection, written directly);
- ``Twisted write``: daphne's TCP connection with collab's eager writes (collab/transport.py);
- ``write_message``: collab's raw frame, framed and checked, through that write;
- ``Connection.send_frame``: what a room calls per reader (the send-buffer cap included).

Nothing is started but that connection: no server, no database, no Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Callable


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sendpath", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=30, help="the update's bytes")
    args = parser.parse_args()
    for name, micros in measure(args.messages, args.rounds, args.size):
        print(f"{name:24s} {micros:6.2f} µs per message")


def measure(messages: int, rounds: int, size: int) -> list[tuple[str, float]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
    import django

    django.setup()
    from collab import transport
    from editor.realtime import protocol
    from editor.realtime.auth import Access, Person
    from editor.realtime.connection import Connection
    from editor.realtime.sockets import DaphneSocket

    if not transport.install():
        raise SystemExit("collab's eager writes are off on this Twisted: nothing to measure")
    loop = asyncio.new_event_loop()
    ws, peer, server_socket = _open_websocket(loop)
    payload = protocol.sync_update(b"x" * size)
    frame = transport.encode_binary_frame(payload)
    person = Person(pk=1, username="bench", full_name="Bench")
    access = Access(person, "5e171ae1-0000-4000-8000-00000000d0c5", "editor", "ticket")
    connection = Connection(access, DaphneSocket(None, ws, raw=True), client="127.0.0.1:1")

    async def send_frames(count: int) -> None:
        for n in range(count):
            await connection.send_frame(payload)
            if n % 256 == 0:
                _drain(peer)

    def best(write: Callable[[], object]) -> float:
        times = []
        for _ in range(rounds):
            _drain(peer)
            started = time.perf_counter()
            for n in range(messages):
                write()
                if n % 256 == 0:
                    _drain(peer)
            times.append(time.perf_counter() - started)
        return min(times) / messages * 1e6

    def best_frames() -> float:
        times = []
        for _ in range(rounds):
            _drain(peer)
            started = time.perf_counter()
            loop.run_until_complete(send_frames(messages))
            times.append(time.perf_counter() - started)
        return min(times) / messages * 1e6

    try:
        return [
            ("socket.send", best(lambda: server_socket.send(frame))),
            ("Twisted write", best(lambda: ws.transport.write(frame))),
            ("write_message", best(lambda: transport.write_message(ws, payload))),
            ("Connection.send_frame", best_frames()),
        ]
    finally:
        peer.close()
        server_socket.close()
        loop.close()


def _open_websocket(loop: asyncio.AbstractEventLoop) -> tuple:
    """A daphne WebSocket protocol on a Twisted TCP connection, in the state a completed
    handshake leaves it, and the plain socket at the other end."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet import protocol, tcp
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    reactor = AsyncioSelectorReactor(eventloop=loop)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        accepted, address = listener.accept()
    accepted.setblocking(False)
    accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer.setblocking(False)
    placeholder = protocol.Protocol()
    connection = tcp.Server(accepted, placeholder, address, None, 1, reactor)
    placeholder.makeConnection(connection)
    daphne = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    daphne.connections = {}  # what Server.run() starts with
    factory = WebSocketFactory(daphne, server="collab-bench")
    ws = factory.buildProtocol(("127.0.0.1", 1))
    ws.makeConnection(connection)
    ws.server = daphne
    ws.client_addr = ["127.0.0.1", 1]
    daphne.protocol_connected(ws)
    ws.state = ws.STATE_OPEN
    return ws, peer, accepted


def _drain(peer: socket.socket) -> None:
    try:
        while peer.recv(1 << 20):
            pass
    except BlockingIOError:
        pass


if __name__ == "__main__":
    main()
