"""How the API answers errors: 400 {"field": ["message"]}, 403/404/413/429 {"detail": "..."}."""

from collections.abc import Callable
from typing import Any

from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large."
    default_code = "too_large"


def refuse_longer_than(
    request: Any, most: int, message: str, size: Callable[[int], str] = str
) -> None:
    """Raises ``PayloadTooLarge(message)``, its ``{length}`` filled by ``size``, when the request
    says (Content-Length) that its body is over ``most`` bytes: refused before the body is read
    or parsed. A missing or unreadable length is left to the parser's own checks."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > most:
        raise PayloadTooLarge(message.format(length=size(length)))


class LoginsPaused(APIException):
    """A login refused for too many failures (editor/logins.py); DRF's handler turns ``wait``
    into a Retry-After header."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "locked_out"

    def __init__(self, detail: str, wait: int) -> None:
        super().__init__(detail)
        self.wait = wait


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, except that every missing or hidden object is the same "Not found.": the
    messages Http404 carries are written for pages, and a stranger must not tell them apart."""
    if isinstance(exc, Http404):
        exc = NotFound()
    return drf_exception_handler(exc, context)
