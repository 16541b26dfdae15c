"""The committed bundle (static/editor/) is what frontend/src builds to, and the provider's backoff
spreads reconnects. Both need Node (as the interop tests do); neither needs a browser."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"

_installed = False


def npm_ci() -> None:
    """Installs frontend/'s pinned packages (npm ci) unless they are already in place."""
    global _installed
    if _installed:
        return
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"`{tool}` is not on PATH: checking the editor bundle needs Node.js 18+ and npm",
                pytrace=False,
            )
    marker = FRONTEND / "node_modules" / ".package-lock.json"
    lock = FRONTEND / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=FRONTEND,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    _installed = True


def node(*args: str) -> subprocess.CompletedProcess:
    npm_ci()
    return subprocess.run(
        ["node", *args], cwd=FRONTEND, capture_output=True, text=True, timeout=120
    )


def test_the_committed_bundle_is_built_from_the_sources():
    result = node("build.mjs", "--check")

    assert result.returncode == 0, result.stdout + result.stderr


BACKOFF_SAMPLES = """
import { backoffDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from './src/provider.js'
const out = { base: BACKOFF_BASE_MS, cap: BACKOFF_CAP_MS, attempts: [] }
for (let attempt = 0; attempt <= 12; attempt++) {
  const delays = Array.from({ length: 4000 }, () => backoffDelay(attempt))
  out.attempts.push({ min: Math.min(...delays), max: Math.max(...delays),
                      distinct: new Set(delays).size })
}
console.log(JSON.stringify(out))
"""


def test_reconnect_delays_grow_exponentially_with_full_jitter_up_to_a_cap():
    result = node("--input-type=module", "-e", BACKOFF_SAMPLES)
    assert result.returncode == 0, result.stderr
    samples = json.loads(result.stdout)
    base, cap = samples["base"], samples["cap"]
    assert (base, cap) == (500, 30_000)

    for attempt, seen in enumerate(samples["attempts"]):
        ceiling = min(cap, base * 2**attempt)
        # Never beyond the ceiling of its attempt, and never beyond the cap.
        assert seen["min"] >= 0 and seen["max"] < ceiling
        # Spread over the whole window (full jitter), not bunched at its end: a crowd of
        # clients that lost the same server returns over the window, not in the same second.
        assert seen["min"] < ceiling * 0.05
        assert seen["max"] > ceiling * 0.95
        assert seen["distinct"] > min(ceiling, 4000) * 0.5
