"""Token authentication (POST /api/auth/token/), the OpenAPI schema and its interactive docs."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD


def test_it_issues_a_token_for_a_username_and_password(client, owner):
    response = client.post(
        reverse("api-token"), {"username": "olive", "password": PASSWORD}, "application/json"
    )

    assert response.status_code == 200
    assert list(response.json()) == ["token"]


def test_it_explains_bad_credentials(client, owner):
    response = client.post(
        reverse("api-token"), {"username": "olive", "password": "wrong"}, "application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}


def test_it_lets_a_token_in_without_session_or_csrf(document, owner, client):
    token = client.post(
        reverse("api-token"), {"username": "olive", "password": PASSWORD}, "application/json"
    ).json()["token"]
    api = Client(enforce_csrf_checks=True, headers={"authorization": f"Token {token}"})

    response = api.put(
        reverse("api-content", args=[document.id]), {"text": "via token"}, "application/json"
    )

    assert response.status_code == 200
    assert response.json() == {"text": "via token"}


def test_it_refuses_a_wrong_token(document):
    api = Client(headers={"authorization": "Token not-a-token"})
    response = api.get(reverse("api-document-list"))
    assert response.status_code in (401, 403)
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.django_db
def test_it_serves_the_openapi_schema_with_every_endpoint(client):
    response = client.get(reverse("api-schema"), {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/documents/",
        "/api/documents/{document_id}/",
        "/api/documents/{document_id}/members/",
        "/api/documents/{document_id}/members/{id}/",
        "/api/documents/{document_id}/content/",
        "/api/documents/{document_id}/versions/",
        "/api/documents/{document_id}/versions/{id}/",
        "/api/documents/{document_id}/versions/{id}/restore/",
        "/api/documents/{document_id}/ticket/",
        "/api/auth/token/",
    } <= set(paths)
    assert set(paths["/api/documents/{document_id}/content/"]) == {"get", "put", "patch"}


@pytest.mark.django_db
def test_it_serves_the_docs_page_with_local_assets(client):
    response = client.get(reverse("api-docs"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
