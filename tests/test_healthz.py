import socket

from django.db import OperationalError


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_reports_ok_when_database_and_redis_answer(client, db):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_it_names_redis_when_redis_is_down(client, db, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"] == {"database": "ok", "redis": "error"}
    assert "errors" not in body  # the exception's text may name hosts: staff only


def test_it_names_the_database_when_it_fails(client, db, monkeypatch):
    # A real outage of the test database would take the test run with it, so the cursor fails.
    from editor import views

    class BrokenConnection:
        def cursor(self):
            raise OperationalError("could not connect to server")

    monkeypatch.setattr(views, "connection", BrokenConnection())
    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["database"]
    assert "could not connect" not in response.content.decode()


def test_it_shows_staff_why_a_check_failed(client, owner, settings):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    response = client.get("/healthz")

    assert response.status_code == 503
    assert "ConnectionError" in response.json()["errors"]["redis"]


def test_it_shows_other_users_no_error_text(client, owner, settings):
    client.force_login(owner)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    response = client.get("/healthz")

    assert response.status_code == 503
    assert "errors" not in response.json()
