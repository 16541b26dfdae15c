"""collab/eventloop.py: daphne on uvloop's event loop, and asyncio's when uvloop cannot run.

The policy is process-wide, so what sets it runs in a fresh interpreter; the served cases run
`manage.py serve` as a user does.
"""

import os
import subprocess
import sys
from pathlib import Path

from collab import eventloop
from tests.test_serve import ROOT, run_python, serving, wait_for_health

LOOP_MADE = (
    "import asyncio\n"
    "from collab import eventloop\n"
    "print(eventloop.use({name!r}))\n"
    "print(type(asyncio.new_event_loop()).__module__)\n"
)


def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails, as where it is not installed."""
    shadow = tmp_path / "shadow" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no uvloop here')\n")
    path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def run(script: str, env: dict[str, str] | None = None) -> list[str]:
    return run_python(script, env).splitlines()


def test_twisteds_reactor_runs_on_uvloop_here():
    assert eventloop.uvloop_missing() is None


def test_uvloop_makes_every_loop_from_then_on():
    assert run(LOOP_MADE.format(name="uvloop")) == ["None", "uvloop"]


def test_asyncio_leaves_asyncios_loop():
    assert run(LOOP_MADE.format(name="asyncio")) == ["None", "asyncio.unix_events"]


def test_without_uvloop_it_keeps_asyncios_loop_and_says_why(tmp_path):
    reason, made = run(LOOP_MADE.format(name="uvloop"), without_uvloop(tmp_path))

    assert reason == "uvloop is not installed (no uvloop here)"
    assert made == "asyncio.unix_events"


def test_a_loop_it_does_not_know_is_refused_with_its_usage():
    result = subprocess.run(
        [sys.executable, "-m", "collab.eventloop", "trio", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "usage: python -m collab.eventloop {uvloop,asyncio}" in result.stderr


def serve(tmp_path: Path, env: dict[str, str]) -> str:
    """Runs `manage.py serve` until it answers /healthz; returns what it logged by then."""
    with serving(tmp_path, env, "--host", "127.0.0.1") as (port, log_path, process):
        health = wait_for_health(f"http://127.0.0.1:{port}/healthz")
        assert health["status"] == "ok", health
    assert process.returncode == 0, log_path.read_text()
    return log_path.read_text()


def test_served_without_uvloop_it_runs_on_asyncio_and_warns(tmp_path):
    output = serve(tmp_path, without_uvloop(tmp_path))

    assert "event loop: asyncio, not uvloop: uvloop is not installed (no uvloop here)" in output


def test_served_with_event_loop_asyncio_it_runs_on_asyncio(tmp_path):
    output = serve(tmp_path, {**os.environ, "EVENT_LOOP": "asyncio"})

    assert "event loop: asyncio" in output
    assert "not uvloop" not in output
