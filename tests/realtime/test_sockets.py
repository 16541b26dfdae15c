"""How frames reach one socket (editor/realtime/sockets.py)."""

import asyncio

from collab import transport
from editor.realtime import protocol
from editor.realtime.sockets import AsgiSocket


class Consumer:
    """What AsgiSocket needs of a Channels consumer: its ``send``."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, bytes_data: object = None) -> None:
        self.sent.append(bytes_data)


def test_a_big_broadcast_sent_the_ordinary_way_goes_as_bytes():
    # A big broadcast is a view of its raw frame (collab/transport.py, framed_message); a socket
    # that cannot take the frame directly gets the message through daphne and autobahn, which
    # take bytes only.
    frame = transport.encode_binary_frame(protocol.sync_update(b"abc"))
    view = memoryview(frame)[2:]  # a two-byte header
    consumer = Consumer()

    asyncio.run(AsgiSocket(consumer).send(view))

    assert consumer.sent == [protocol.sync_update(b"abc")]
    assert type(consumer.sent[0]) is bytes
