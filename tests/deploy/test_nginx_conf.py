"""`manage.py nginx_conf` (editor/deploy/): its output, its arguments, and that
docker/nginx/collab.conf is exactly its output for compose's services."""

import fnmatch
import os
import subprocess
import sys
import tomllib
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from editor.deploy import nginx
from tests import live
from tests.deploy.cluster import nginx_binary

ROOT = live.ROOT
COMPOSE = ROOT / "docker" / "compose.yaml"
COMMITTED = ROOT / "docker" / "nginx" / "collab.conf"
# The settings the output depends on: the committed file is made with their defaults.
SHAPING = ("MAX_CONTENT_BYTES", "WS_PING_INTERVAL", "WS_PING_TIMEOUT")


def nginx_conf(*arguments: str) -> str:
    output = StringIO()
    call_command("nginx_conf", *arguments, stdout=output)
    return output.getvalue()


def compose_arguments() -> list[str]:
    """The command line for compose: its app services, nginx's port and static volume."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    apps = [name for name, service in services.items() if service.get("image") == "collab:latest"]
    apps.remove("migrate")
    arguments = []
    for name in apps:
        arguments += ["--backend", f"{name}:8000"]  # the Dockerfile's CMD port
    [published] = services["nginx"]["ports"]
    arguments += ["--listen", published.rsplit(":", 1)[1]]
    [static] = [v for v in services["nginx"]["volumes"] if v.startswith("static:")]
    arguments += ["--static-root", static.split(":")[1]]
    # Logs go to the container's output (docker logs).
    return arguments + ["--access-log", "/dev/stdout", "--error-log", "stderr"]


def test_the_committed_compose_config_is_the_commands_output():
    arguments = compose_arguments()
    assert arguments[:4] == ["--backend", "app1:8000", "--backend", "app2:8000"]
    env = {k: v for k, v in os.environ.items() if k not in SHAPING}
    result = subprocess.run(
        [sys.executable, "manage.py", "nginx_conf", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    command = "python manage.py nginx_conf " + " ".join(arguments) + " > docker/nginx/collab.conf"
    assert COMMITTED.read_text() == result.stdout, f"stale; regenerate with: {command}"


def test_nginx_accepts_it_as_it_is(tmp_path):
    config = tmp_path / "collab.conf"
    config.write_text(
        nginx_conf(
            *("--backend", "127.0.0.1:8001", "--backend", "127.0.0.1:8002"),
            *("--backend", "[::1]:8003", "--listen", "127.0.0.1:8080"),
            *("--static-root", str(tmp_path / "static")),
        )
    )
    result = subprocess.run(
        [nginx_binary(), "-t", "-p", f"{tmp_path}/", "-c", str(config), "-g", "daemon off;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_it_keys_websockets_by_the_document_in_the_path_and_http_round_robin():
    config = nginx_conf(
        "--backend", "10.0.0.1:8000", "--backend", "10.0.0.2:8000", "--listen", "80"
    )

    ws_upstream = config.split("upstream collab_ws {")[1].split("}")[0]
    http_upstream = config.split("upstream collab_http {")[1].split("}")[0]
    assert "hash $document consistent;" in ws_upstream
    assert "hash" not in http_upstream
    for upstream in (ws_upstream, http_upstream):
        assert "server 10.0.0.1:8000 max_fails=0;" in upstream
        assert "server 10.0.0.2:8000 max_fails=0;" in upstream
    assert "map $uri $document" in config  # $uri: no query string, so no ?ticket=
    assert "daemon" not in config.replace("daemon off;'", "")  # only the comment on how to run


def test_the_body_limit_and_read_timeout_follow_the_settings(settings):
    settings.COLLAB = {**settings.COLLAB, "MAX_CONTENT_BYTES": 1000}
    settings.SERVE = {**settings.SERVE, "PING_INTERVAL": 90, "PING_TIMEOUT": 60}

    config = nginx_conf("--backend", "127.0.0.1:8001", "--listen", "8080")

    assert "client_max_body_size 7024;" in config  # 6 x 1000 + 1024, as the API checks
    assert config.count("proxy_read_timeout 300s;") == 1  # twice interval + timeout


def test_the_read_timeout_outlasts_the_default_ping(settings):
    timeout = nginx.read_timeout(settings.SERVE["PING_INTERVAL"], settings.SERVE["PING_TIMEOUT"])
    assert timeout > settings.SERVE["PING_INTERVAL"] + settings.SERVE["PING_TIMEOUT"]
    assert f"proxy_read_timeout {timeout}s;" in nginx_conf(
        "--backend", "127.0.0.1:8001", "--listen", "8080"
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--backend", "127.0.0.1", "--listen", "80"], "expected HOST:PORT"),
        (["--backend", "127.0.0.1:70000", "--listen", "80"], "expected HOST:PORT"),
        (["--backend", "a:1", "--backend", "a:1", "--listen", "80"], "once"),
        (["--backend", "a;b:1", "--listen", "80"], "expected HOST:PORT"),
        (["--backend", "a:1", "--listen", "80; evil"], "expected PORT or HOST:PORT"),
        (["--backend", "a:1", "--listen", "80", "--static-root", "/srv/my static"], "no spaces"),
    ],
)
def test_it_refuses_what_nginx_could_not_take(arguments, message):
    with pytest.raises(CommandError, match=message):
        nginx_conf(*arguments)


def test_it_needs_a_backend_and_a_port():
    with pytest.raises(CommandError, match="--backend"):
        nginx_conf("--listen", "80")


def test_the_template_ships_in_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["editor.deploy"]
    assert any(fnmatch.fnmatch(nginx.TEMPLATE, pattern) for pattern in patterns)
    assert (ROOT / "editor" / "deploy" / "__init__.py").exists()  # a package, found by setuptools
