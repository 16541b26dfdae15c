"""A bounded, schema-driven fuzz run (schemathesis): no request the schema allows, and none of
the malformed ones it derives, may get a 5xx. Every operation runs against a real document the
token's user owns, so the handlers are reached rather than 404s."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from editor import content

# Per operation (about 20 of them): enough to try every field with odd values, fast enough for
# every test run (~30 s in all).
EXAMPLES = 15


@pytest.fixture(autouse=True)
def keep_the_test_connection(db):
    # As Django's test client does: a real WSGI handler closes the connection after each
    # request, which would end the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def target(document, owner):
    """Real ids to aim at: the document, a member's row, a version, and the owner's token."""
    content.replace(document, "# Notes\n\nsome text with é and 🎉\n", owner)
    return {
        "document_id": str(document.id),
        "members": document.memberships.exclude(user=owner).first().pk,
        "versions": content.create_version(document, "v1", owner).pk,
        "token": Token.objects.create(user=owner).key,
    }


# Loaded at import, from the app itself (the schema view needs no database). Not through
# schemathesis.pytest.from_fixture: with pytest 9 it fails (it sets Function._nodeid).
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_it_never_answers_with_a_server_error(case, target):
    if "document_id" in case.path_parameters:
        case.path_parameters["document_id"] = target["document_id"]
    if "id" in (case.path_parameters or {}):
        kind = "members" if "/members/" in case.operation.path else "versions"
        case.path_parameters["id"] = target[kind]
    case.call_and_validate(
        headers={"Authorization": f"Token {target['token']}"}, checks=[not_a_server_error]
    )
