"""Settings come from the environment, and unsafe production settings are refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" * 20 + "-random-enough-for-a-test-0123456789"
PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "print(json.dumps({'debug': settings.DEBUG, 'hosts': settings.ALLOWED_HOSTS,"
    " 'db': settings.DATABASES['default']['ENGINE'],"
    " 'db_name': str(settings.DATABASES['default']['NAME']),"
    " 'layer': settings.CHANNEL_LAYERS['default']['BACKEND'],"
    " 'storage': settings.STORAGES['staticfiles']['BACKEND'],"
    " 'csrf': settings.CSRF_TRUSTED_ORIGINS}))"
)
VARIABLES = [
    "DEBUG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
]


def load_settings(tmp_path, **env):
    """Imports the settings in a fresh interpreter with exactly these variables set."""
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    clean.update(DJANGO_SETTINGS_MODULE="collab.settings", COLLAB_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_it_runs_on_laptop_defaults(tmp_path):
    import json

    result = load_settings(tmp_path)

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is True
    assert loaded["db"] == "django.db.backends.sqlite3"
    assert loaded["db_name"] == str(tmp_path / "collab.sqlite3")
    assert loaded["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"


def test_it_refuses_debug_off_without_a_secret_key(tmp_path):
    result = load_settings(tmp_path, DEBUG="false", ALLOWED_HOSTS="docs.example.com")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_reads_the_secret_key_from_secret_key_file(tmp_path):
    # What compose's containers have: the entry point's key in a file, and commands run with
    # `docker compose exec` (which skips the entry point) must find it too.
    key_file = tmp_path / "secret_key"
    key_file.write_text(GOOD_KEY + "\n")
    probe = (
        "import django; from django.conf import settings; django.setup();print(settings.SECRET_KEY)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    clean.update(
        DJANGO_SETTINGS_MODULE="collab.settings",
        COLLAB_VAR_DIR=str(tmp_path),
        DEBUG="false",
        ALLOWED_HOSTS="docs.example.com",
        SECRET_KEY_FILE=str(key_file),
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GOOD_KEY
    # A key given directly wins; a missing file is no key.
    assert (
        load_settings(
            tmp_path,
            DEBUG="false",
            SECRET_KEY_FILE=str(tmp_path / "none"),
            ALLOWED_HOSTS="x.example",
        ).returncode
        != 0
    )


def test_it_refuses_debug_off_with_a_weak_secret_key(tmp_path):
    result = load_settings(tmp_path, DEBUG="false", SECRET_KEY="short", ALLOWED_HOSTS="x.example")

    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr


def test_it_refuses_debug_off_without_allowed_hosts(tmp_path):
    result = load_settings(tmp_path, DEBUG="false", SECRET_KEY=GOOD_KEY)

    assert result.returncode != 0
    assert "ALLOWED_HOSTS is empty" in result.stderr


@pytest.mark.parametrize("value", ["flase", "2", "maybe"])
def test_it_refuses_a_debug_value_it_cannot_read(tmp_path, value):
    result = load_settings(tmp_path, DEBUG=value)

    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr


@pytest.mark.parametrize("value", ["-5", "inf", "nan", "soon"])
def test_it_refuses_a_socket_check_wait_it_cannot_use(tmp_path, value):
    result = load_settings(tmp_path, WS_AUTH_TRIP_WAIT_MS=value)

    assert result.returncode != 0
    assert "WS_AUTH_TRIP_WAIT_MS must be a number" in result.stderr


def test_it_accepts_a_complete_production_configuration(tmp_path):
    import json

    result = load_settings(
        tmp_path,
        DEBUG="false",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="docs.example.com, www.example.com",
        CSRF_TRUSTED_ORIGINS="https://docs.example.com",
        DATABASE_URL="postgres://collab@db.internal:5432/collab",
        REDIS_URL="redis://cache.internal:6379/1",
    )

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is False
    assert loaded["hosts"] == ["docs.example.com", "www.example.com"]
    assert loaded["csrf"] == ["https://docs.example.com"]
    assert loaded["db"] == "django.db.backends.postgresql"
    assert loaded["storage"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
