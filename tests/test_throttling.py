"""Repeated failed logins are refused for a while, per username and per client address, on the
login form, the admin's and POST /api/auth/token/ (django-axes, editor/logins.py).

Failures are counted in the database, so each test starts from none.
"""

import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse
from django.utils import timezone

from tests.conftest import PASSWORD

LIMIT = 3


@pytest.fixture(autouse=True)
def low_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def log_in(client, username, password, address="192.0.2.1"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def ask_token(client, username, password, address="192.0.2.1"):
    return client.post(
        reverse("api-token"),
        {"username": username, "password": password},
        "application/json",
        REMOTE_ADDR=address,
    )


def test_it_still_says_wrong_password_below_the_limit(client, owner):
    for _ in range(LIMIT - 1):
        response = log_in(client, "olive", "nope")

        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()


def test_it_pauses_a_username_tried_from_many_addresses(client, owner):
    for n in range(LIMIT):
        log_in(client, "olive", "nope", address=f"192.0.2.{n + 10}")

    response = log_in(client, "olive", PASSWORD, address="198.51.100.7")

    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "Try again in 15 minutes" in response.content.decode()
    assert response["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_it_pauses_an_address_that_tries_many_usernames(client, owner, editor_user):
    for name in ("ann", "bob", "cid"):
        log_in(client, name, "nope", address="192.0.2.50")

    refused = log_in(client, "olive", PASSWORD, address="192.0.2.50")
    elsewhere = log_in(client, "eddie", PASSWORD, address="192.0.2.51")

    assert refused.status_code == 429
    assert elsewhere.status_code == 302  # another address, another username: in


def test_it_lets_the_username_in_again_after_the_cooloff(client, owner):
    for _ in range(LIMIT):
        log_in(client, "olive", "nope")
    assert log_in(client, "olive", PASSWORD).status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))

    assert log_in(client, "olive", PASSWORD).status_code == 302


def test_it_logs_one_line_per_refusal(client, owner, caplog):
    for _ in range(LIMIT):
        log_in(client, "olive", "nope")

    caplog.clear()
    with caplog.at_level(logging.INFO):
        log_in(client, "olive", PASSWORD)

    # django.request adds its usual "Too Many Requests" line, as for every 4xx; axes, none.
    lines = [r for r in caplog.records if r.name != "django.request"]
    assert [(r.name, r.levelno) for r in lines] == [("editor.logins", logging.WARNING)]
    assert "username='olive'" in lines[0].getMessage()
    assert "address=192.0.2.1" in lines[0].getMessage()


def test_it_pauses_the_token_endpoint_with_a_json_message(client, owner):
    for _ in range(LIMIT - 1):
        assert ask_token(client, "olive", "nope").status_code == 400

    response = ask_token(client, "olive", "nope")
    again = ask_token(client, "olive", PASSWORD)

    assert response.status_code == 429
    assert again.status_code == 429
    assert "Too many failed logins" in again.json()["detail"]
    assert again["Retry-After"] == "900"
    assert "token" not in again.json()


def test_it_counts_the_form_and_the_api_together(client, owner):
    for _ in range(LIMIT):
        ask_token(client, "olive", "nope")

    assert log_in(client, "olive", PASSWORD).status_code == 429


def test_it_pauses_the_admin_login_too(client, owner):
    owner.is_staff = True
    owner.save()
    for _ in range(LIMIT):
        client.post(
            reverse("admin:login"),
            {"username": "olive", "password": "nope"},
            REMOTE_ADDR="192.0.2.1",
        )

    response = client.post(
        reverse("admin:login"),
        {"username": "olive", "password": PASSWORD},
        REMOTE_ADDR="192.0.2.1",
    )

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_leaves_sessions_and_tokens_already_issued_alone(client, owner, document):
    token = ask_token(client, "olive", PASSWORD).json()["token"]
    client.force_login(owner)
    for _ in range(LIMIT):
        ask_token(client.__class__(), "olive", "nope")

    assert client.get(document.get_absolute_url()).status_code == 200
    api = client.__class__(headers={"authorization": f"Token {token}"})
    assert api.get(reverse("api-content", args=[document.id])).status_code == 200


def test_it_counts_a_username_too_long_for_any_account(client, db):
    long_name = "x" * 5000

    assert ask_token(client, long_name, "nope").status_code == 400
    assert log_in(client, long_name, "nope").status_code == 200
    assert log_in(client, long_name, "nope", address="198.51.100.9").status_code == 429
