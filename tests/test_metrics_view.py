"""GET /metrics answers the internal network and holders of METRICS_TOKEN, and no one else.

What the figures say after real traffic is tests/realtime/test_live_metrics.py's business.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.test_settings import GOOD_KEY, load_settings

TOKEN = "t0ken-for-the-scraper-0123456789"
OUTSIDER = "93.184.216.34"


def names(response) -> set[str]:
    return {family.name for family in text_string_to_metric_families(response.content.decode())}


def test_it_answers_loopback_in_prometheus_text_format(client):
    response = client.get("/metrics")  # the test client's REMOTE_ADDR is 127.0.0.1

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = names(response)
    # Counters are listed by family name, without _total.
    assert {
        "collab_websocket_connections",
        "collab_websocket_refusals",
        "collab_updates_applied",
        "collab_event_loop_lag_seconds",
        "collab_event_loop_waiting_seconds",
        "collab_gc_pause_seconds",
        "process_resident_memory_bytes",
        "python_gc_collections",
        "python_info",
    } <= found


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "172.16.0.9", "192.168.1.20", "::1", "fd00::7", "::ffff:10.0.0.1"]
)
def test_it_answers_private_networks(client, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


@pytest.mark.parametrize("address", [OUTSIDER, "2606:4700::1111", "::ffff:8.8.8.8", "", "junk"])
def test_it_refuses_everyone_else(client, address):
    response = client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == 403
    assert b"collab_" not in response.content
    assert b"METRICS_TOKEN" in response.content


def test_it_takes_the_bearer_token_from_outside(client, settings):
    settings.METRICS_TOKEN = TOKEN

    response = client.get(
        "/metrics", REMOTE_ADDR=OUTSIDER, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 200
    assert "collab_websocket_connections" in names(response)


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer "]
)
def test_it_refuses_a_wrong_token(client, settings, header):
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER, headers={"Authorization": header})

    assert response.status_code == 403


def test_it_takes_no_token_when_none_is_set(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics", REMOTE_ADDR=OUTSIDER, headers={"Authorization": "Bearer "})

    assert response.status_code == 403


def test_it_is_not_redirected_to_https(client, settings):
    # Prometheus scrapes each process over plain HTTP, behind the TLS nginx ends.
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/metrics").status_code == 200
    assert client.get("/").status_code == 301


def test_it_rejects_other_methods(client):
    assert client.post("/metrics").status_code == 405


def test_it_refuses_a_short_token(tmp_path):
    result = load_settings(
        tmp_path,
        DEBUG="false",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="x.example",
        METRICS_TOKEN="short",
    )

    assert result.returncode != 0
    assert "METRICS_TOKEN is too short" in result.stderr
