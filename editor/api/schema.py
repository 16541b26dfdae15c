"""The OpenAPI schema (/api/schema/), built once per process for each format.

drf-spectacular's own view builds the schema again for every request: about 50 ms of Python
in the thread that serves the request, holding the GIL that the event loop needs for its
sockets. The schema is public and the same for every caller (``SERVE_PUBLIC``), so a client
fetching it back to back made every socket of the process wait: their round trips went from
0.7 to 5.9 ms at the median (docs/BENCHMARKS.md, change 84). Built once and kept, the bytes are
served like a static file.

Only the format selects a variant (content negotiation or ``?format=``, as before), so what is
kept is bounded: four renderings at most. Dropped for that, since any of them would let a
client ask for a new build with every request: ``?lang=`` (collab is in English, the setting
``LANGUAGE_CODE``; another language only translated a few of Django REST framework's own
strings), ``?version=`` (the API is not versioned; drf-spectacular only wrote the caller's
string into ``info.version``) and an ``indent`` in the Accept header.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.utils import translation
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView


class SchemaView(SpectacularAPIView):
    # Left out of the schema it serves, as drf-spectacular's own view is (SERVE_INCLUDE_SCHEMA).
    @extend_schema(exclude=not spectacular_settings.SERVE_INCLUDE_SCHEMA)
    def get(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        renderer = request.accepted_renderer
        content = _built(self.renderer_classes.index(type(renderer)))
        content_type = renderer.media_type
        if renderer.charset:
            content_type = f"{content_type}; charset={renderer.charset}"
        response = HttpResponse(content, content_type=content_type)
        title = spectacular_settings.TITLE or "schema"
        response["Content-Disposition"] = f'inline; filename="{title}.{renderer.format}"'
        return response


@functools.cache
def _built(renderer: int) -> bytes:
    """The schema, rendered by ``SchemaView.renderer_classes[renderer]``."""
    with translation.override(settings.LANGUAGE_CODE):
        generator = SchemaView.generator_class()
        built = generator.get_schema(request=None, public=SchemaView.serve_public)
        renderer_class = SchemaView.renderer_classes[renderer]
        return renderer_class().render(built, renderer_class.media_type, {})
