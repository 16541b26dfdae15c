import codecs
import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# json nests by recursion: a body of 100,000 "[" (100 kB) exhausts the interpreter's stack and
# raised RecursionError, which DRF does not catch (a 500 on every endpoint that reads JSON).
# The requests here nest two levels; the bound keeps checking the text (below) far from the
# stack's limit too.
MAX_DEPTH = 32
_TOO_DEEP = f"JSON parse error - nested deeper than {MAX_DEPTH} levels."


def _check(data: Any) -> Any:
    """Refuses nesting deeper than MAX_DEPTH, and strings that are not Unicode text: lone
    surrogates ("\\ud800") are valid JSON but would fail deep in the database driver or pycrdt
    (a 500) instead of here (a 400)."""
    _check_depth(data, 1)
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError("JSON parse error - strings must be valid Unicode text.") from None
    return data


def _check_depth(data: Any, depth: int) -> None:
    if isinstance(data, Mapping):
        children: Any = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return
    if depth > MAX_DEPTH:
        raise ParseError(_TOO_DEEP)
    for child in children:
        _check_depth(child, depth + 1)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing deep nesting and strings that are not Unicode text."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        return _check(data)


class LargeJSONParser(parsers.BaseParser):
    """JSON for bodies larger than DATA_UPLOAD_MAX_MEMORY_SIZE (document texts).

    DRF reads the body of its own JSONParser (and of subclasses) through ``request.body``, which
    refuses anything over that setting; this one reads the stream, so the view must bound the
    body's size itself before parsing (ContentView does).
    """

    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.load(codecs.getreader(encoding)(stream))
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return _check(data)
