"""REST API views (DRF). Access decisions come from editor/access.py."""

from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from editor.access import get_viewable_document
from editor.realtime import tickets


class TicketView(APIView):
    """POST /api/documents/<id>/ticket/ → {"ticket": ..., "expires_in": seconds}.

    Any member may have one (viewers get read-only sockets); strangers get 404.
    """

    permission_classes = [IsAuthenticated]

    def post(self, request, document_id):
        document, _ = get_viewable_document(request.user, document_id)
        token, ttl = tickets.issue(request.user.pk, document.pk)
        return Response({"ticket": token, "expires_in": ttl}, status=201)
