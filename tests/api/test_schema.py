"""The OpenAPI schema's view (editor/api/schema.py): built once per process for each format, and
served byte for byte as drf-spectacular's own view serves it."""

import pytest
from django.test import RequestFactory
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView

from editor.api import schema

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def nothing_built_yet():
    schema._built.cache_clear()
    yield
    schema._built.cache_clear()


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Every schema build, counted (the real build runs)."""
    built: list[str] = []
    real = SchemaGenerator.get_schema

    def counted(self, *args, **kwargs):
        built.append("built")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SchemaGenerator, "get_schema", counted)
    return built


def as_drf_spectacular_serves_it(query: dict[str, str], accept: str) -> tuple[bytes, str]:
    request = RequestFactory().get("/api/schema/", query, HTTP_HOST="127.0.0.1", HTTP_ACCEPT=accept)
    response = SpectacularAPIView.as_view()(request)
    response.render()
    return response.content, response["Content-Type"]


def test_callers_fetching_the_schema_again_and_again_get_it_built_once(client, builds):
    """Building it is about 50 ms of Python holding the GIL: one client fetching it back to
    back held up every socket of the process (change 84)."""
    first = client.get(reverse("api-schema"), {"format": "json"})
    again = [client.get(reverse("api-schema"), {"format": "json"}) for _ in range(5)]

    assert first.status_code == 200
    assert [response.content for response in again] == [first.content] * 5
    assert builds == ["built"]

    # Another format is another rendering, built once too.
    yaml = [client.get(reverse("api-schema")) for _ in range(3)]
    assert {response.content for response in yaml} == {yaml[0].content}
    assert builds == ["built", "built"]


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ({}, "*/*"),
        ({"format": "json"}, "*/*"),
        ({"format": "yaml"}, "*/*"),
        ({}, "application/json"),
        ({}, "application/yaml"),
        ({}, "application/vnd.oai.openapi+json"),
    ],
)
def test_it_serves_what_drf_spectacular_builds(client, query, accept):
    response = client.get(reverse("api-schema"), query, headers={"accept": accept})

    assert response.status_code == 200
    assert (response.content, response["Content-Type"]) == as_drf_spectacular_serves_it(
        query, accept
    )
    expected = "json" if "json" in query.get("format", accept) else "yaml"
    assert response["Content-Disposition"] == f'inline; filename="collab API.{expected}"'
    assert response["Vary"] == "Accept, Cookie"


def test_what_a_caller_asks_for_besides_the_format_builds_nothing_new(client, builds):
    """Only the format selects a variant: anything else a caller could vary would let it ask
    for a new build with every request."""
    default = client.get(reverse("api-schema"), {"format": "json"})
    for query in [{"lang": "de"}, {"lang": "xx-yy"}, {"version": "zz"}]:
        response = client.get(reverse("api-schema"), {"format": "json", **query})
        assert response.content == default.content
    indented = client.get(
        reverse("api-schema"), headers={"accept": "application/vnd.oai.openapi+json; indent=8"}
    )
    assert indented.content == default.content

    assert builds == ["built"]
