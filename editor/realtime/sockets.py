"""How frames reach one socket, chosen once when it connects: the plain ASGI path (any server),
or daphne's socket written directly (collab/transport.py: a broadcast is framed once, not once
per socket, and the bytes queued for a socket that does not read can be counted).

A ``Connection`` only sees this small interface, so it can be driven without any socket at all
(tests give it a socket of their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from django.conf import settings

from collab import transport


class Socket(Protocol):
    """What a connection needs of its socket."""

    def queued(self) -> int | None:
        """Bytes written and not yet taken by the peer; None when that cannot be known."""

    def write(self, frame: bytes) -> bool:
        """Writes one message at once if the socket allows it; False (nothing written) means
        ``send`` must be used."""

    def write_together(self, frames: Sequence[bytes]) -> bool:
        """Writes several messages at once, in one piece, if the socket allows it; False
        (nothing written) means each must be sent on its own."""

    async def send(self, frame: bytes) -> None:
        """Sends one binary message; raises when the socket is closing."""

    async def close(self, code: int) -> None:
        """Closes with ``code``; raises when the socket is already closing."""

    def hang_up(self) -> None:
        """After a close: parses nothing more the client sends, and ends the connection once
        what was written is flushed, without waiting for the client's half of the close
        handshake (with daphne: a lingering close, collab/transport.py ``hang_up``)."""


class AsgiSocket:
    """Any ASGI server: every message goes through the consumer's ``send``."""

    __slots__ = ("_consumer",)

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def queued(self) -> int | None:
        return None

    def write(self, frame: bytes) -> bool:
        return False

    def write_together(self, frames: Sequence[bytes]) -> bool:
        """Writes several messages in one piece, or nothing (False: send them one by one)."""
        return False

    async def send(self, frame: bytes) -> None:
        # A big broadcast comes as a view of its raw frame (transport.framed_message); autobahn
        # takes bytes only.
        await self._consumer.send(bytes_data=frame if type(frame) is bytes else bytes(frame))

    async def close(self, code: int) -> None:
        if code in transport.SERVER_CODES_AUTOBAHN_REFUSES:
            # daphne's autobahn refuses to send these: the nearest private code instead (4011,
            # 4013), which docs/protocol.md lists beside them.
            code = 4000 + code % 1000
        await self._consumer.close(code=code)

    def hang_up(self) -> None:
        pass  # the server's own close handshake timeout applies


class DaphneSocket(AsgiSocket):
    """daphne's own protocol object behind the consumer: queued bytes can be read, and (with
    ``WS_RAW_FRAMES``) a message is written straight to it whenever it is plainly open."""

    __slots__ = ("_protocol", "_raw")

    def __init__(self, consumer: Any, protocol: object, raw: bool) -> None:
        super().__init__(consumer)
        self._protocol = protocol
        self._raw = raw

    def queued(self) -> int | None:
        return transport.queued_bytes(self._protocol)

    def write(self, frame: bytes) -> bool:
        return self._raw and transport.write_message(self._protocol, frame)

    def write_together(self, frames: Sequence[bytes]) -> bool:
        return self._raw and transport.write_messages(self._protocol, frames)

    async def close(self, code: int) -> None:
        if code in transport.SERVER_CODES_AUTOBAHN_REFUSES and transport.write_close(
            self._protocol, code
        ):
            return
        await super().close(code)

    def hang_up(self) -> None:
        transport.hang_up(self._protocol)


def socket_of(consumer: Any) -> AsgiSocket:
    """The way to write to this consumer's socket, chosen once at connect."""
    protocol = transport.websocket_of(consumer.base_send)
    if protocol is None:
        return AsgiSocket(consumer)
    return DaphneSocket(consumer, protocol, raw=settings.SERVE["RAW_FRAMES"])
