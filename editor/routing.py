"""WebSocket routes. The document consumer arrives with the sync core (docs/protocol.md)."""

websocket_urlpatterns: list = []
