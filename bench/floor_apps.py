"""The servers `python -m bench.floor` measures below collab: each answers a y-websocket
client's handshake (sync step 1 on open, an empty sync step 2 to the client's step 1) and
does nothing else: no check, no room, no presence, no log line.

- ``bare``: a plain ASGI application, for daphne as it comes (``python -m daphne``).
- ``tuned``: the same application in a process that loaded collab's ASGI module, so daphne
  runs with everything collab's start-up gives it (uvloop through collab.eventloop, the
  transport tunings of collab/transport.py, the collector's settings, the stall probe).
- ``consumer``: a plain Channels ``AsyncWebsocketConsumer`` behind Channels' routers, in such
  a process.

``tuned`` and ``consumer`` need ``DJANGO_SETTINGS_MODULE`` and import collab's ASGI module
when first asked for (``__getattr__``), so that ``bare`` stays free of collab and Django.
"""

from __future__ import annotations

from typing import Any

STEP1 = b"\x00\x00\x01\x00"  # sync step 1 of an empty document
STEP2 = b"\x00\x01\x02\x00\x00"  # sync step 2 of an empty document


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "bytes": STEP1})
        elif kind == "websocket.receive":
            data = message.get("bytes")
            if data and data[:2] == STEP1[:2]:
                await send({"type": "websocket.send", "bytes": STEP2})
        elif kind == "websocket.disconnect":
            return


def _consumer() -> Any:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import re_path

    class Plain(AsyncWebsocketConsumer):
        channel_layer_alias = "none: no layer channel, as collab's consumer"

        async def connect(self) -> None:
            await self.accept()
            await self.send(bytes_data=STEP1)

        async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
            if bytes_data and bytes_data[:2] == STEP1[:2]:
                await self.send(bytes_data=STEP2)

    route = re_path(r"^ws/documents/(?P<document_id>[^/]+)$", Plain.as_asgi())
    return ProtocolTypeRouter({"websocket": URLRouter([route])})


def __getattr__(name: str) -> Any:
    if name not in ("tuned", "consumer"):
        raise AttributeError(name)
    import collab.asgi  # noqa: F401  collab's start-up: the tunings, the collector, the probe

    value = bare if name == "tuned" else _consumer()
    globals()[name] = value
    return value
