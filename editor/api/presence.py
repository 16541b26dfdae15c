"""GET /api/documents/<id>/presence/: who is in a document now, without opening a socket."""

import uuid
from typing import Any

import redis
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from editor.access import get_viewable_document
from editor.realtime.presence import who_is_here


class PresenceView(APIView):
    """Lists the live awareness states of a document, one per connected client.

    Anyone who can view the document may ask; strangers get 404. ``user`` is the identity the
    server wrote, ``cursor`` whatever the client's editor last reported (or null).
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request: Request, document_id: uuid.UUID) -> Response:
        document, _ = get_viewable_document(request.user, document_id)
        try:
            entries = who_is_here(document.pk)
        except redis.RedisError as exc:
            return Response({"detail": f"presence is unavailable: {exc}"}, status=503)
        clients: list[dict[str, Any]] = [
            {
                "client_id": entry.client_id,
                "user": entry.state.get("user"),
                "cursor": entry.state.get("cursor"),
                "expires_at": entry.deadline,
            }
            for entry in entries
        ]
        users = {client["user"]["id"]: client["user"] for client in clients if client["user"]}
        return Response({"id": str(document.pk), "clients": clients, "users": list(users.values())})
