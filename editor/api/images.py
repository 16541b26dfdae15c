"""POST /api/documents/<id>/images/: an image for a document (docs/api.md, "Images").

What is accepted and where it is kept is editor/images.py's; the file is served back by
``editor.views.document_image`` at the URL this answers with, to people who may view the
document, never from a public address.
"""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from editor import images
from editor.access import may_edit
from editor.api.errors import PayloadTooLarge, refuse_longer_than
from editor.api.views import DocumentScoped, _user
from editor.models import DocumentImage

# Room for the multipart framing around the file: boundaries, headers, a long file name.
_MULTIPART_OVERHEAD = 64 * 1024


class ImageUploadSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="PNG, JPEG, GIF or WebP; at most MAX_IMAGE_BYTES.")


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = DocumentImage
        fields = ["id", "url", "content_type", "width", "height", "size", "created_at"]


@extend_schema(tags=["images"])
class ImageUploadView(DocumentScoped):
    """Adds an image to a document (owners and editors); the answer's ``url`` shows it to
    anyone who may view the document, and is what the editor writes into the Markdown."""

    parser_classes = [MultiPartParser]
    rules = {"post": (may_edit, "Viewers cannot add images to this document.")}

    @extend_schema(
        request={"multipart/form-data": ImageUploadSerializer}, responses={201: ImageSerializer}
    )
    def post(self, request: Request, document_id: UUID) -> Response:
        self._check_body_size(request)
        upload = ImageUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        try:
            image = DocumentImage.objects.store(
                self.document, _user(request), upload.validated_data["image"]
            )
        except images.ImageTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except images.ImageRefused as exc:
            raise ValidationError({"image": [str(exc)]}) from None
        return Response(ImageSerializer(image).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _check_body_size(request: Request) -> None:
        # Refused before the multipart body is parsed (and its file written to a temporary
        # file): a body this large cannot hold an image within the limit.
        limit = images.max_image_bytes()
        most = images.human_size(limit)
        refuse_longer_than(
            request,
            limit + _MULTIPART_OVERHEAD,
            "The request is {length}; images are limited to " + most + ".",
            size=images.human_size,
        )
