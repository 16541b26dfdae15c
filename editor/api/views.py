"""REST API views (DRF), docs/api.md. Access decisions come from editor/access.py, the work
from editor/content.py and the models; views check, call one thing and answer.

Under /api/documents/<id>/ the order of answers is fixed: anyone who cannot view the document
gets 404 before anything else is looked at, then a member whose role is too low gets 403, and
only then is the request itself validated (400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import fields as drf_fields
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer, Serializer
from rest_framework.views import APIView

from editor import content, export, logins
from editor.access import get_viewable_document, may_edit, may_manage
from editor.api import serializers
from editor.api.errors import LoginsPaused, PayloadTooLarge, refuse_longer_than
from editor.api.parsers import JSONParser, LargeJSONParser
from editor.models import Document, Membership, Version
from editor.realtime import tickets

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_VIEWERS_CANNOT_EDIT = "Viewers cannot change this document."
_ONLY_THE_OWNER_SHARES = "Only the owner can change who has access."


def _user(request: Request) -> User:
    """The request's user: never anonymous here, every view requires authentication."""
    return cast("User", request.user)


class DocumentScoped(APIView):
    """For views under /api/documents/<document_id>/: sets ``self.document`` and ``self.role``
    (404 for anyone who cannot view it) and applies ``rules``, action (or method) → (the
    access question to ask of the role, message for 403)."""

    rules: dict[str, tuple[Callable[[str | None], bool], str]] = {}
    document: Document
    role: str

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication comes first
        self.document, self.role = get_viewable_document(request.user, kwargs["document_id"])
        rule = self.rules.get(getattr(self, "action", None) or (request.method or "").lower())
        if rule is not None and not rule[0](self.role):
            raise PermissionDenied(rule[1])


@extend_schema(tags=["documents"])
class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Documents the user owns or is a member of. ``?search=`` matches titles."""

    serializer_class = serializers.DocumentSerializer
    filter_backends = [SearchFilter]
    search_fields = ["title"]
    lookup_url_kwarg = "document_id"
    lookup_value_converter = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Document]:
        user = self.request.user
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Document.objects.none()
        # visible_to annotates each document with the user's role (editor/access.py).
        return Document.objects.visible_to(user).select_related("owner")

    def get_object(self) -> Document:
        document, role = get_viewable_document(self.request.user, self.kwargs["document_id"])
        document.role = role
        if self.action == "partial_update" and not may_edit(role):
            raise PermissionDenied("Viewers cannot rename this document.")
        if self.action == "destroy" and not may_manage(role):
            raise PermissionDenied("Only the owner can delete this document.")
        return document

    def perform_create(self, serializer: BaseSerializer[Document]) -> None:
        user = _user(self.request)
        document = Document.objects.create_for(user, serializer.validated_data["title"])
        document.role = document.role_of(user)  # owner, without a query
        serializer.instance = document


@extend_schema(tags=["members"])
class MembershipViewSet(
    DocumentScoped,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Who has access to a document. Any member may list; only the owner changes anything."""

    serializer_class = serializers.MembershipSerializer
    pagination_class = None  # a document has a handful of members
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    rules = {
        "create": (may_manage, _ONLY_THE_OWNER_SHARES),
        "partial_update": (may_manage, _ONLY_THE_OWNER_SHARES),
        "destroy": (may_manage, _ONLY_THE_OWNER_SHARES),
    }

    def get_queryset(self) -> QuerySet[Membership]:
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return self.document.memberships.select_related("user").order_by("created_at", "id")

    @extend_schema(
        request=serializers.NewMemberSerializer, responses={201: serializers.MembershipSerializer}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        new = serializers.NewMemberSerializer(
            data=request.data, context={"document": self.document}
        )
        new.is_valid(raise_exception=True)
        membership = Membership.objects.create(
            document=self.document,
            user=new.validated_data["username"],
            role=new.validated_data["role"],
        )
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=serializers.MemberRoleSerializer, responses=serializers.MembershipSerializer
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        membership = self.get_object()
        if membership.user_id == self.document.owner_id:
            raise ValidationError({"role": ["The owner’s role cannot be changed."]})
        change = serializers.MemberRoleSerializer(data=request.data)
        change.is_valid(raise_exception=True)
        membership.role = change.validated_data["role"]
        membership.save(update_fields=["role"])
        return Response(self.get_serializer(membership).data)

    def perform_destroy(self, membership: Membership) -> None:
        if membership.user_id == self.document.owner_id:
            raise ValidationError({"non_field_errors": ["The owner cannot be removed."]})
        membership.delete()


@extend_schema(tags=["content"])
class ContentView(DocumentScoped, APIView):
    """The document's Markdown text. Writes become CRDT updates that live editors receive and
    that merge with their own edits (editor/content.py)."""

    parser_classes = [LargeJSONParser]
    rules = {
        "put": (may_edit, _VIEWERS_CANNOT_EDIT),
        "patch": (may_edit, _VIEWERS_CANNOT_EDIT),
    }

    @extend_schema(responses=serializers.TextSerializer)
    def get(self, request: Request, document_id: UUID) -> Response:
        return Response({"text": content.read(self.document)})

    @extend_schema(request=serializers.TextSerializer, responses=serializers.TextSerializer)
    def put(self, request: Request, document_id: UUID) -> Response:
        self._check_body_size(request)
        data = self._validate(serializers.TextSerializer, request)
        return self._write(content.replace, data["text"])

    @extend_schema(request=serializers.EditSerializer, responses=serializers.TextSerializer)
    def patch(self, request: Request, document_id: UUID) -> Response:
        self._check_body_size(request)
        data = self._validate(serializers.EditSerializer, request)
        return self._write(content.edit, content.Edit(**data))

    def _write(
        self, change: Callable[[Document, Any, User | None], str], argument: Any
    ) -> Response:
        try:
            text = change(self.document, argument, _user(self.request))
        except content.InvalidEdit as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        except content.ContentTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        return Response({"text": text})

    @staticmethod
    def _validate(serializer_class: type[Serializer[Any]], request: Request) -> dict[str, Any]:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @staticmethod
    def _check_body_size(request: Request) -> None:
        # Refused before parsing. JSON escaping at most sextuples a text ("\u0001" for one
        # byte), so a larger body cannot hold a text within the limit.
        limit = content.max_content_bytes()
        refuse_longer_than(
            request,
            6 * limit + 1024,
            "The request body is {length} bytes; texts are limited to " + f"{limit} bytes.",
        )


@extend_schema(tags=["versions"])
class VersionViewSet(
    DocumentScoped,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Named snapshots of a document, newest first; restoring one is a new change."""

    serializer_class = serializers.VersionSerializer
    lookup_value_converter = "int"
    rules = {
        "create": (may_edit, "Viewers cannot save versions."),
        "restore": (may_edit, "Viewers cannot restore versions."),
    }

    def get_queryset(self) -> QuerySet[Version]:
        if getattr(self, "swagger_fake_view", False):
            return Version.objects.none()
        versions = self.document.versions.select_related("author")
        # A list needs neither the state nor the text, and each may be megabytes.
        return versions.defer("state", "text") if self.action == "list" else versions

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "retrieve":
            return serializers.VersionDetailSerializer
        return serializers.VersionSerializer

    @extend_schema(
        request=serializers.NewVersionSerializer, responses={201: serializers.VersionSerializer}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        new = serializers.NewVersionSerializer(data=request.data)
        new.is_valid(raise_exception=True)
        name = new.validated_data["name"]
        version = content.create_version(self.document, name, _user(request))
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "Restored",
            {
                "text": drf_fields.CharField(),
                "before_restore": serializers.VersionSerializer(allow_null=True),
            },
        ),
    )
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        version.document = self.document
        try:
            restored = content.restore(version, _user(request))
        except content.ContentTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        before = restored.before and serializers.VersionSerializer(restored.before).data
        return Response({"text": restored.text, "before_restore": before})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "against",
                str,
                description='"current" (the default: the text now) or the id of another '
                "version of this document",
            )
        ],
        responses=inline_serializer(
            "VersionDiff",
            {
                "diff": drf_fields.CharField(),
                "from": drf_fields.IntegerField(),
                "against": drf_fields.CharField(),
                "added": drf_fields.IntegerField(),
                "removed": drf_fields.IntegerField(),
            },
        ),
    )
    @action(detail=True, methods=["get"])
    def diff(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The changes from this version to the current text, or to another version, as a
        unified diff."""
        version = self.get_object()
        against = request.query_params.get("against", "current")
        if against == "current":
            new_text, new_label = content.read(self.document), "current text"
            against_id: int | str = "current"
        else:
            if not (against.isascii() and against.isdigit() and len(against) <= 18):
                raise ValidationError({"against": ['Must be "current" or the id of a version.']})
            against_id = int(against)
            other = get_object_or_404(self.get_queryset(), pk=against_id)
            new_text, new_label = content.version_text(other), _version_label(other)
        diff = content.unified_diff(
            content.version_text(version), new_text, _version_label(version), new_label
        )
        return Response({"diff": diff, "from": version.pk, "against": against_id, **_count(diff)})


class _ExportNegotiation(DefaultContentNegotiation):
    """Under /export/, ``?format=`` names the download's format, not one of DRF's renderers,
    and the download is whatever the client accepts: errors are JSON, successes the file."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


@extend_schema(
    tags=["content"],
    parameters=[OpenApiParameter("format", str, enum=list(export.FORMATS), default="md")],
    responses={
        (200, "text/markdown"): OpenApiTypes.STR,
        (200, "text/html"): OpenApiTypes.STR,
    },
)
class ExportView(DocumentScoped, APIView):
    """GET /api/documents/<id>/export/?format=md|html: the text as a Markdown file, or a
    standalone, sanitised HTML page of it (editor/export.py), as a download named after the
    title; for anyone who may view the document."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _ExportNegotiation

    def get(self, request: Request, document_id: UUID) -> HttpResponse:
        format = request.query_params.get("format", "md")
        if format not in export.FORMATS:
            raise ValidationError({"format": ['Must be "md" or "html".']})
        return export.response(export.export(self.document, format))


def _version_label(version: Version) -> str:
    return f"version {version.pk} ({version.name}, {version.created_at.isoformat()})"


def _count(diff: str) -> dict[str, int]:
    """Lines added and removed by a unified diff (its two header lines left out)."""
    lines = diff.split("\n")[2:]
    return {
        "added": sum(1 for line in lines if line.startswith("+")),
        "removed": sum(1 for line in lines if line.startswith("-")),
    }


@extend_schema(
    tags=["tickets"],
    request=None,
    responses={
        201: inline_serializer(
            "Ticket", {"ticket": drf_fields.CharField(), "expires_in": drf_fields.IntegerField()}
        )
    },
)
class TicketView(APIView):
    """POST /api/documents/<id>/ticket/ → {"ticket": ..., "expires_in": seconds}.

    Any member may have one (viewers get read-only sockets); strangers get 404.
    """

    permission_classes = [IsAuthenticated]

    def post(self, request: Request, document_id: UUID) -> Response:
        document, _ = get_viewable_document(request.user, document_id)
        token, ttl = tickets.issue(_user(request).pk, document.pk)
        return Response({"ticket": token, "expires_in": ttl}, status=201)


@extend_schema(tags=["auth"])
class TokenView(ObtainAuthToken):
    """POST /api/auth/token/ {"username", "password"} → {"token": ...}.

    DRF's view with the API's own JSON parser (deep nesting is a 400), and 429 when django-axes
    refuses the login for too many failures (it marks the request it was given).
    """

    parser_classes = (JSONParser, FormParser, MultiPartParser)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            if getattr(request, "axes_locked_out", False):
                username = request.data.get("username") if hasattr(request.data, "get") else None
                message = logins.refuse(request._request, username)
                raise LoginsPaused(message, wait=logins.cooloff_seconds()) from None
            raise
