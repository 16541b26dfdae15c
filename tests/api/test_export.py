"""GET /api/documents/<id>/export/?format=md|html: the same downloads as the page, for scripts
(session or token), with the API's access rule and errors."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from editor import content, export
from tests.test_export import assert_harmless


def export_url(document, format=None):
    url = reverse("api-export", args=[document.id])
    return url if format is None else f"{url}?format={format}"


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_exports_markdown_to_anyone_who_may_view(login_as, document, owner, who):
    content.replace(document, "# Minutes\n\nnaïve café ☕\n", owner)

    response = login_as(who).get(export_url(document, "md"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == export.attachment("Meeting notes", "md")
    assert response.content.decode("utf-8") == "# Minutes\n\nnaïve café ☕\n"


def test_it_exports_a_sanitised_html_page(login_as, document, owner):
    document.title = '<img src=x onerror=alert("title")>'
    document.save()
    content.replace(
        document, "## Hi\n\n<script>alert(1)</script>\n\n![x](javascript:alert(2))", owner
    )

    response = login_as("editor").get(export_url(document, "html"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == export.HEADER_POLICY
    page = response.content.decode()
    assert_harmless(page)
    assert "<h2>Hi</h2>" in page and "&lt;script&gt;" in page
    assert response["Content-Disposition"].startswith(
        'attachment; filename="img src=x onerror=alert(_title_).html"'
    )


def test_it_works_with_a_token_and_whatever_the_client_accepts(client, document, viewer, owner):
    content.replace(document, "scripted", owner)
    token = Token.objects.create(user=viewer)

    for accept in ("text/markdown", "application/json", "*/*", "text/html"):
        response = client.get(
            export_url(document, "md"), HTTP_AUTHORIZATION=f"Token {token.key}", HTTP_ACCEPT=accept
        )
        assert response.status_code == 200, accept
        assert response.content == b"scripted"


def test_markdown_is_the_default(login_as, document, owner):
    content.replace(document, "x", owner)

    assert login_as("viewer").get(export_url(document))["Content-Type"].startswith("text/markdown")


@pytest.mark.parametrize("format", ["pdf", "json", "api", ""])
def test_it_rejects_an_unknown_format_in_json(login_as, document, format):
    response = login_as("viewer").get(export_url(document, format), HTTP_ACCEPT="text/html")

    assert response.status_code == 400
    assert response.json() == {"format": ['Must be "md" or "html".']}


def test_it_hides_the_document_from_a_stranger(login_as, document):
    response = login_as("stranger").get(export_url(document, "html"))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_it_needs_credentials(client, document):
    response = client.get(export_url(document, "md"))

    assert response.status_code == 403
    assert response.json() == {"detail": "Authentication credentials were not provided."}
