"""`manage.py serve`: the command behind `make run`, exercised as a user runs it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from editor.management.commands.serve import daphne_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def run_python(script: str, env: dict[str, str] | None = None) -> str:
    """Runs ``script`` in a fresh interpreter in the project's folder, which must succeed;
    returns what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_health(url: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_it_passes_the_project_options_to_daphne(settings):
    command = daphne_command("0.0.0.0", 9000)

    assert command[1:4] == ["-m", "collab.eventloop", "uvloop"]  # daphne's CLI on uvloop
    assert command[command.index("--port") + 1] == "9000"
    assert command[command.index("--ping-interval") + 1] == str(settings.SERVE["PING_INTERVAL"])
    assert command[command.index("--ping-timeout") + 1] == str(settings.SERVE["PING_TIMEOUT"])
    size = str(settings.SERVE["MAX_MESSAGE_SIZE"])
    assert command[command.index("--websocket-max-message-size") + 1] == size
    assert "--proxy-headers" in command
    assert command[-1] == "collab.asgi:application"


@contextlib.contextmanager
def serving(
    tmp_path: Path, env: dict[str, str], *arguments: str
) -> Iterator[tuple[int, Path, subprocess.Popen]]:
    """`manage.py serve` on a free port until the block ends, then stopped with SIGTERM:
    yields the port, the file its output goes to, and the process."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", *arguments, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield port, log_path, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_it_serves_with_an_embedded_redis_and_stops_it_on_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["COLLAB_VAR_DIR"] = str(tmp_path)
    with serving(tmp_path, env) as (port, _, _):
        health = wait_for_health(f"http://127.0.0.1:{port}/healthz")
        assert health == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
        output = (tmp_path / "serve.log").read_text()
        assert f"collab is starting on http://127.0.0.1:{port}/" in output
        assert "createsuperuser" in output
        assert "event loop: uvloop" in output
        redis_url = next(
            line.split(" at ")[1] for line in output.splitlines() if "embedded Valkey at" in line
        )
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        assert accepts(redis_port)
    assert not accepts(port)
    assert not accepts(redis_port), "the embedded Redis outlived the server"


def test_it_raises_the_open_files_limit_its_connection_cap_needs():
    script = (
        "import resource\n"
        "from editor.management.commands.serve import raise_open_files_limit\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "needed, now = raise_open_files_limit(2000)\n"
        "assert needed == 3024, needed\n"
        "assert now == resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "assert now == min(3024, hard), (now, hard)\n"
    )
    run_python(
        "import django; django.setup()\n" + script,
        {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"},
    )
