"""Typing latency in the browser editor: a small document and a 2 MB one, in one run.

    .venv/bin/python -m bench.browser_typing            # about two minutes
    .venv/bin/python -m bench.browser_typing --help

Starts, on loopback only, a private Valkey, a scratch database (PostgreSQL on 127.0.0.1:5432
when it answers, else SQLite), one `manage.py serve` (DEBUG off, collected static files: the
committed bundle, or the one `npm run build` wrote) and headless Chromium (the system one, as
tests/browser use, driven by Playwright). A user and two documents are made through the REST
API: a small one (~3 KB) and a large one (2 MB of varied Markdown: headings, paragraphs, lists,
task lists, fenced code, tables). For each document and layout (split: editor and preview side
by side, the default; edit: "Write", the preview hidden) a fresh page opens the document, waits
until it is synced and the preview is drawn, jumps to the end, waits until the editor has parsed
the text up to there, then types like a person, one key every ``--interval`` ms.

Keystroke to screen, per key: from the keydown event's timestamp (when the browser got the
input, so time spent queued behind other work counts) to the end of the first frame drawn
after the editor's state holds the character (a requestAnimationFrame callback, then a task
queued from it: that task runs once the frame has been painted). Printed as percentiles per
document and layout, with the page's load time; `--json-out` keeps every figure.
docs/BENCHMARKS.md ("Typing in the browser") has results and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.run import Database, Servers, free_port, say, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
USER, PASSWORD = "bench", secrets.token_urlsafe(12)
WAIT_MS = 120_000

VOCABULARY = (
    "the team ship editor release notes draft review plan launch server client update sync "
    "merge cursor preview markdown document version history offline network socket process "
    "latency render paragraph heading list table code block quote link image people share "
    "write read type fast slow large small every each before after during while because"
)
WORDS = VOCABULARY.split()


def markdown(size: int, seed: int = 7) -> str:
    """About ``size`` bytes of Markdown as people write it: sections of paragraphs, lists,
    task lists, fenced code and tables (deterministic for a given seed)."""
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        if rng.random() < 0.2:
            words[rng.randrange(len(words))] = f"**{rng.choice(WORDS)}**"
        if rng.random() < 0.15:
            words[rng.randrange(len(words))] = f"`{rng.choice(WORDS)}()`"
        if rng.random() < 0.1:
            words[rng.randrange(len(words))] = f"[{rng.choice(WORDS)}](https://example.com/)"
        return " ".join(words).capitalize() + "."

    parts: list[str] = []
    total = 0
    section = 0
    while total < size:
        section += 1
        block = [f"## Section {section}: {rng.choice(WORDS)} {rng.choice(WORDS)}"]
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            if kind < 0.55:
                block.append(" ".join(sentence() for _ in range(rng.randint(2, 6))))
            elif kind < 0.7:
                block.append("\n".join(f"- {sentence()}" for _ in range(rng.randint(2, 6))))
            elif kind < 0.8:
                block.append(
                    "\n".join(
                        f"- [{'x' if rng.random() < 0.5 else ' '}] {sentence()}"
                        for _ in range(rng.randint(2, 5))
                    )
                )
            elif kind < 0.9:
                lines = [
                    f"def {rng.choice(WORDS)}_{i}(value):\n    return value + {i}"
                    for i in range(rng.randint(1, 4))
                ]
                block.append("```python\n" + "\n\n".join(lines) + "\n```")
            else:
                rows = ["| name | value |", "|---|---|"] + [
                    f"| {rng.choice(WORDS)} | {rng.randint(1, 999)} |"
                    for _ in range(rng.randint(2, 6))
                ]
                block.append("\n".join(rows))
        text = "\n\n".join(block) + "\n\n"
        parts.append(text)
        total += len(text.encode())
    return "# Benchmark document\n\n" + "".join(parts)


def api(base: str, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
        method=method,
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read() or b"{}")


# Installed in each page before typing: one latency figure per keydown (see the module's
# docstring), kept in window.__latencies.
PROBE = """() => {
    const view = window.collab.view
    window.__latencies = []
    window.addEventListener('keydown', (event) => {
        const started = event.timeStamp
        const before = view.state.doc.length
        const afterPaint = () => requestAnimationFrame(() => setTimeout(() => {
            if (view.state.doc.length === before) afterPaint()
            else window.__latencies.push(performance.now() - started)
        }, 0))
        afterPaint()
    }, true)
}"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(browser, base: str, document: dict, mode: str, args) -> dict:
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/accounts/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("form button[type=submit]")
        page.wait_for_url("**/documents/**")
        page.evaluate("(mode) => localStorage.setItem('collab:mode', mode)", mode)
        started = time.monotonic()
        page.goto(f"/documents/{document['id']}/")
        page.wait_for_function(
            "(length) => window.collab && window.collab.provider.synced"
            " && window.collab.view.state.doc.length >= length",
            arg=document["length"],
            polling=100,
        )
        loaded = time.monotonic() - started
        if mode != "edit":
            # The whole preview drawn (it renders in slices, the top first).
            # (An older page without the handle: its own render is all at once, or timed.)
            page.wait_for_function(
                "() => !window.collab.preview || !window.collab.preview.hasWork()", polling=50
            )
        rendered = time.monotonic() - started
        page.locator(".cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")
        # The editor parses the Markdown up to what it shows (here, the end) in the background:
        # the whole text, once, after a jump to the end of a long one.
        page.wait_for_function("() => !window.collab.parsed || window.collab.parsed()", polling=50)
        settled = time.monotonic() - started
        page.wait_for_timeout(args.settle * 1000)  # IndexedDB, the last renders
        page.evaluate(PROBE)
        rng = random.Random(3)
        typed = " ".join(rng.choice(WORDS) for _ in range(args.keys))[: args.keys]
        for char in typed:
            page.keyboard.press("Space" if char == " " else char)
            page.wait_for_timeout(args.interval)
        page.wait_for_function(
            "(count) => window.__latencies.length >= count", arg=len(typed), polling=100
        )
        latencies = page.evaluate("() => window.__latencies")
        tail = page.evaluate("(n) => window.collab.text.toString().slice(-n)", len(typed) + 20)
        return {
            "document": document["name"],
            "bytes": document["bytes"],
            "mode": mode,
            "load_seconds": round(loaded, 2),
            "preview_seconds": round(rendered, 2) if mode != "edit" else None,
            "parsed_seconds": round(settled, 2),
            "keys": len(latencies),
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "mean": statistics.fmean(latencies),
            "over_50ms": sum(1 for value in latencies if value > 50),
            "text_ok": tail.rstrip().endswith(typed.rstrip()),
            "tail": tail,
            "errors": errors,
            "latencies": [round(value, 1) for value in latencies],
        }
    finally:
        context.close()


def table(results: list[dict]) -> str:
    lines = [
        f"{'document':<10}{'size':>9}  {'layout':<7}{'load s':>7}{'drawn s':>8}{'parsed s':>9}"
        f"{'keys':>6}"
        f"{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}{'>50ms':>7}   (ms)"
    ]
    for r in results:
        size = (
            f"{r['bytes'] / 1e6:.1f} MB" if r["bytes"] >= 100_000 else f"{r['bytes'] / 1e3:.0f} KB"
        )
        lines.append(
            f"{r['document']:<10}{size:>9}  {r['mode']:<7}{r['load_seconds']:>7.1f}"
            f"{'-' if r['preview_seconds'] is None else format(r['preview_seconds'], '.1f'):>8}"
            f"{r['parsed_seconds']:>9.1f}"
            f"{r['keys']:>6}"
            f"{r['p50']:>7.1f}{r['p95']:>7.1f}{r['p99']:>7.1f}{r['max']:>7.1f}{r['over_50ms']:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.browser_typing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--size", type=int, default=2_000_000, help="bytes of the large document")
    parser.add_argument("--keys", type=int, default=150, help="keystrokes per page")
    parser.add_argument("--interval", type=int, default=100, help="ms between keystrokes")
    parser.add_argument(
        "--layouts", default="split,edit", help="split (editor and preview), edit (Write), preview"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="s to wait before typing")
    parser.add_argument("--database-url", help="default: scratch PostgreSQL or SQLite")
    parser.add_argument("--json-out", help="write every figure here (JSON)")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("Playwright for Python is missing: pip install -e '.[dev]'") from None
    if not Path(CHROMIUM).exists():
        raise SystemExit(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or CHROMIUM=)"
        )

    folder = Path(tempfile.mkdtemp(prefix="collab-browser-bench-"))
    servers = Servers(folder)
    database = Database(folder, args.database_url)
    redis = None
    results: list[dict] = []
    try:
        from collab.embedded import EmbeddedRedis

        redis = EmbeddedRedis()
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            DATABASE_URL=database.url,
            REDIS_URL=redis.start(),
            COLLAB_VAR_DIR=str(folder / "var"),
            STATIC_ROOT=str(folder / "static"),
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(48),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        manage = [sys.executable, "manage.py"]
        say(f"scratch folder {folder}; database {database.url}")
        for command in (
            ["migrate", "--noinput", "-v", "0"],
            ["collectstatic", "--noinput", "-v", "0"],
        ):
            subprocess.run(manage + command, cwd=ROOT, env=env, check=True, timeout=300)
        subprocess.run(
            manage
            + [
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model;"
                f"get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        process = servers.spawn(
            "collab", manage + ["serve", "--host", "127.0.0.1", "--port", str(port)], env
        )
        wait_healthy(port, process, 60)
        base = f"http://127.0.0.1:{port}"
        token = api(base, "POST", "/api/auth/token/", {"username": USER, "password": PASSWORD})[
            "token"
        ]
        documents = []
        small = "# Small document\n\n" + markdown(2_000, seed=11)
        for name, text in (("small", small), ("large", markdown(args.size))):
            created = api(base, "POST", "/api/documents/", {"title": f"Bench {name}"}, token)
            api(base, "PUT", f"/api/documents/{created['id']}/content/", {"text": text}, token)
            documents.append(
                {
                    "name": name,
                    "id": created["id"],
                    "bytes": len(text.encode()),
                    # CodeMirror counts UTF-16 code units; the text is ASCII.
                    "length": len(text),
                }
            )
            say(f"document {name}: {len(text.encode()):,} bytes")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            say(f"Chromium {browser.version}")
            try:
                for mode in [m.strip() for m in args.layouts.split(",") if m.strip()]:
                    for document in documents:
                        say(
                            f"typing {args.keys} keys into the {document['name']} document ({mode})"
                        )
                        results.append(measure(browser, base, document, mode, args))
            finally:
                browser.close()
    finally:
        servers.stop()
        if redis is not None:
            with contextlib.suppress(Exception):
                redis.stop()
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)
    print(table(results))
    for result in results:
        if result["errors"] or not result["text_ok"]:
            what = f"{result['document']} {result['mode']}"
            print(f"!! {what}: errors {result['errors']}, typed text found {result['text_ok']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
