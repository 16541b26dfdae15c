import codecs
import json

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def _require_text(data):
    # Lone surrogates ("\ud800") are valid JSON but not text: they would fail deep in the
    # database driver or pycrdt (a 500) instead of here (a 400).
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError("JSON parse error - strings must be valid Unicode text.") from None
    return data


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing strings that are not Unicode text."""

    def parse(self, stream, media_type=None, parser_context=None):
        return _require_text(super().parse(stream, media_type, parser_context))


class LargeJSONParser(parsers.BaseParser):
    """JSON for bodies larger than DATA_UPLOAD_MAX_MEMORY_SIZE (document texts).

    DRF reads the body of its own JSONParser (and of subclasses) through ``request.body``, which
    refuses anything over that setting; this one reads the stream, so the view must bound the
    body's size itself before parsing (ContentView does).
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.load(codecs.getreader(encoding)(stream))
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return _require_text(data)
