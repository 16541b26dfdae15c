"""GET /documents/<id>/images/<image id>: a document's image, to people who may view it.

Access is asked on every request, as for the document itself (editor/access.py; for a guest
without an account, the "anyone" link their session holds, editor/links.py): anyone who may not
view the document gets the same 404 as for an image that does not exist. Browsers send their
session cookie; scripts may send the API's ``Authorization: Token <token>`` instead.

The file is streamed from the images storage (a local folder, or S3 through django-storages:
collab reads the object and passes it on; no signed bucket URL is handed out, so access is
checked on every request and the bucket stays private), a chunk at a time through an
asynchronous iterator: under ASGI, Django reads a synchronous iterator (a FileResponse's) whole
into memory before sending any of it, with a warning.

What it is served as comes from the server's own verification (editor/images.py), and the
response is locked down in case a file ever got past it: the stored content type with
``nosniff``, a ``Content-Security-Policy`` that allows nothing and sandboxes the response, and
a download name of the server's making.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from editor import links
from editor.access import get_viewable_document
from editor.models import Document, DocumentImage

if TYPE_CHECKING:
    from editor.access import AnyUser

# Images never change (each upload has a new name); private: only this person's browser may
# keep one, and only for a while, since their access may be taken away.
CACHE_CONTROL = "private, max-age=3600"
POLICY = "default-src 'none'; sandbox"
CHUNK = 64 * 1024


@require_safe
def document_image(request: HttpRequest, document_id: UUID, image_id: UUID) -> HttpResponseBase:
    document = _viewable_document(request, document_id)
    image = DocumentImage.objects.filter(pk=image_id, document=document).first()
    if image is None:
        raise Http404("No such image.")
    try:
        file = image.file.open("rb")
    except FileNotFoundError:
        raise Http404("No such image.") from None
    response: HttpResponseBase
    if request.method == "HEAD":
        file.close()
        response = HttpResponse(content_type=image.content_type)
    else:
        response = StreamingHttpResponse(Chunks(file), content_type=image.content_type)
    response["Content-Length"] = str(image.size)
    response["Content-Disposition"] = f'inline; filename="{image.filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = POLICY  # django-csp leaves a policy already set
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Cache-Control"] = CACHE_CONTROL
    response["Vary"] = "Cookie, Authorization"
    return response


class Chunks:
    """A file's bytes as an asynchronous iterable, read in a thread a chunk at a time (each
    read blocks: a local file, or S3 through boto3). Django calls ``close()`` when the response
    ends, however it ends, before the first chunk included."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await sync_to_async(self.file.read, thread_sensitive=False)(CHUNK):
            yield chunk

    def close(self) -> None:
        self.file.close()


def _viewable_document(request: HttpRequest, document_id: UUID) -> Document:
    """The document, if whoever sent the request may view it (raises Http404 otherwise): a
    member, by session or API token, or a guest reading through an "anyone" link, as the
    document's page lets them (editor/views.py, document_detail)."""
    user = _user(request)
    if not user.is_authenticated:
        found = links.viewable_as_guest(request.session, document_id)
        if found is not None:
            return found[0]
    document, _ = get_viewable_document(user, document_id)
    return document


def _user(request: HttpRequest) -> AnyUser:
    """The session's user, or the owner of the API token the request carries."""
    if request.user.is_authenticated:
        return request.user
    try:
        found = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed:
        found = None
    return found[0] if found else AnonymousUser()
