"""Helpers for live tests: real `manage.py serve` processes and the stock Node y-websocket client.

Not a test module. The live tests (tests/test_interop.py, tests/realtime/test_live.py) start
server processes on free ports, pointed at the test database and at the session's Redis, and
drive `tests/interop/client.mjs` (the npm y-websocket client) against them.

- ``LiveServers``: N `manage.py serve` processes, each in a process group of its own so that
  `kill(i)` takes daphne down with it; logs under a directory the test gives.
- ``ensure_node_modules()``: `npm ci` in tests/interop once, if node_modules is missing.
- ``NodeClient``: one run of client.mjs, its JSON events read as they come.
- Tickets (valid, expired, forged), an HTTP session that logs in and asks the API for one,
  and the stored text of a document (``editor.realtime.store``).

Every wait is bounded; nothing here measures how long anything took.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from django.conf import settings
from django.core import signing

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "interop"
CLIENT = INTEROP / "client.mjs"

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database the tests use *now* (pytest-django's test database)."""
    db = settings.DATABASES["default"]
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError(f"live servers cannot share an in-memory SQLite database ({name})")
        return f"sqlite:///{Path(name).resolve()}"
    if engine in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        user = urllib.parse.quote(db.get("USER") or "", safe="")
        password = db.get("PASSWORD") or ""
        auth = user + (":" + urllib.parse.quote(password, safe="") if password else "")
        host = db.get("HOST") or ""
        if host.startswith("/"):  # a Unix socket directory
            query = "?host=" + urllib.parse.quote(host, safe="")
            host = ""
        else:
            query = ""
        port = f":{db['PORT']}" if db.get("PORT") else ""
        at = "@" if auth else ""
        return f"postgres://{auth}{at}{host}{port}/{urllib.parse.quote(db['NAME'])}{query}"
    raise RuntimeError(f"live servers do not know how to share a {engine} database")


def server_env(**overrides: object) -> dict[str, str]:
    """The environment of a live server: this process's (REDIS_URL, COLLAB_VAR_DIR, SECRET_KEY
    and DEBUG included, so every process shares Redis and the signing key) plus the test
    database's URL."""
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        raise RuntimeError("REDIS_URL is unset: the collab.testing plugin should have set it")
    env["DATABASE_URL"] = database_url()
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's default, collab.settings
    # No automatic versions unless a test asks for them: one taken when a test's last socket
    # leaves would write while the test's tables are being emptied (a deadlock in PostgreSQL).
    env["AUTO_VERSION_QUIET_SECONDS"] = "0"
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ServerFailed(AssertionError):
    pass


class LiveServers:
    """N `manage.py serve` processes on free ports, sharing the test database and Redis.

    Use as a context manager, or call ``start()`` and ``stop()``. ``env`` overrides apply to
    every process (e.g. STORE_FLUSH_INTERVAL).
    """

    def __init__(self, count: int, log_dir: Path, **env: object) -> None:
        self.count = count
        self.log_dir = Path(log_dir)
        self.env = server_env(**env)
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    # -- addresses ---------------------------------------------------------------------------

    def http(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def ws(self, index: int = 0) -> str:
        """The `serverUrl` a WebsocketProvider takes: the document id is appended to it."""
        return f"ws://127.0.0.1:{self.ports[index]}/ws/documents"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LiveServers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports: set[int] = set()
        while len(ports) < self.count:
            ports.add(free_port())
        self.ports = sorted(ports)
        for index, port in enumerate(self.ports):
            log = self.log_dir / f"server-{index}-{port}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
                        + ["--port", str(port)],
                        cwd=ROOT,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        # Its own process group: kill() reaches daphne, not just manage.py.
                        start_new_session=True,
                    )
                )
        try:
            for index in range(self.count):
                self.wait_healthy(index)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, index: int, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        url = self.http(index) + "/healthz"
        last = "no answer"
        while time.monotonic() < deadline:
            if self.processes[index].poll() is not None:
                raise ServerFailed(
                    f"server {index} exited with {self.processes[index].returncode} during "
                    f"startup:\n{self.log_tail(index)}"
                )
            try:
                status, body = _get(url)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise ServerFailed(
            f"server {index} not healthy after {timeout:.0f} s (last: {last}):\n"
            + self.log_tail(index)
        )

    def alive(self, index: int) -> bool:
        return self.processes[index].poll() is None

    def kill(self, index: int) -> None:
        """SIGKILL: the process (and its daphne) dies at once, flushing nothing."""
        self._killpg(index, signal.SIGKILL)
        self.processes[index].wait(timeout=STOP_TIMEOUT)

    def terminate(self, index: int, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, as a supervisor stops a server; returns the exit status of manage.py.

        If it has not exited within ``timeout``, SIGKILL and fail.
        """
        process = self.processes[index]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # manage.py forwards it to daphne
        return self._wait_stopped(index, timeout)

    def _wait_stopped(self, index: int, timeout: float) -> int:
        process = self.processes[index]
        if process.poll() is None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._killpg(index, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
                raise ServerFailed(
                    f"server {index} did not exit within {timeout:.0f} s of SIGTERM:\n"
                    + self.log_tail(index)
                ) from None
        # Nothing of the group may outlive manage.py (daphne is waited for by it, normally).
        self._wait_group_gone(index, timeout)
        return process.returncode

    def stop(self) -> None:
        for process in self.processes:  # all at once; each is then waited for in turn
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for index in range(len(self.processes)):
            try:
                self._wait_stopped(index, STOP_TIMEOUT)
            except ServerFailed as exc:
                print(exc)  # teardown: shown with the test's output, the test keeps its result
            finally:
                self._killpg(index, signal.SIGKILL)

    def _killpg(self, index: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.processes[index].pid, signum)

    def _wait_group_gone(self, index: int, timeout: float) -> None:
        pgid = self.processes[index].pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        self._killpg(index, signal.SIGKILL)

    def __enter__(self) -> LiveServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- logs --------------------------------------------------------------------------------

    def log(self, index: int = 0) -> str:
        return self.logs[index].read_text(errors="replace")

    def log_tail(self, index: int = 0, lines: int = 60) -> str:
        text = self.log(index).splitlines()[-lines:]
        return f"--- {self.logs[index]} (last {len(text)} lines) ---\n" + "\n".join(text)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(self.log_tail(index, lines) for index in range(len(self.logs)))


# -- the Node client ---------------------------------------------------------------------------

_node_ready = False


def ensure_node_modules() -> Path:
    """Installs tests/interop's pinned packages (npm ci) unless they are already there.

    Fails (never skips) when node or npm is missing: these tests are the project's proof that
    the stock client works.
    """
    global _node_ready
    if _node_ready:
        return INTEROP
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"`{tool}` is not on PATH: the interop and live tests run the stock npm "
                "y-websocket client (tests/interop). Install Node.js 18+ with npm.",
                pytrace=False,
            )
    installed = INTEROP / "node_modules" / ".package-lock.json"
    lock = INTEROP / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        # y-websocket's optional deps (y-leveldb, a native module) serve only its own server.
        command = ["npm", "ci", "--omit=optional", "--no-audit", "--no-fund"]
        try:
            result = subprocess.run(
                command, cwd=INTEROP, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(command)}` in {INTEROP} took over 300 s", pytrace=False)
        if result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` in {INTEROP} failed ({result.returncode}):\n"
                + result.stdout[-3000:]
                + result.stderr[-3000:],
                pytrace=False,
            )
    _node_ready = True
    return INTEROP


class ClientFailed(AssertionError):
    pass


class NodeClient:
    """One run of tests/interop/client.mjs with a scenario (see the top of that file).

    Its stdout events are collected by a thread as they arrive; ``wait_for`` follows them in
    order, ``finish`` waits for the exit and fails with everything it printed unless it
    succeeded.
    """

    def __init__(self, scenario: dict, name: str = "client") -> None:
        self.name = name
        self.scenario = scenario
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self._cursor = 0
        self._changed = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            ["node", str(CLIENT), json.dumps(scenario)],
            cwd=INTEROP,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "stdout", "line": line}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))

    def describe(self) -> str:
        events = "\n".join(json.dumps(event)[:500] for event in self.events[-40:])
        errors = "\n".join(self.stderr[-40:])
        return (
            f"node client {self.name!r} (exit {self.process.poll()}):\n"
            f"--- events (last 40) ---\n{events}\n--- stderr ---\n{errors}"
        )

    def wait_for(self, event: str, timeout: float = 60.0, **match: object) -> dict:
        """The next event named ``event`` (with the given fields) after the last one waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for position in range(self._cursor, len(self.events)):
                    candidate = self.events[position]
                    if candidate.get("event") == "error":
                        raise ClientFailed(f"{candidate['message']}\n{self.describe()}")
                    if candidate.get("event") == event and all(
                        candidate.get(key) == value for key, value in match.items()
                    ):
                        self._cursor = position + 1
                        return candidate
                if self._eof:
                    raise ClientFailed(f"exited before printing {event!r}\n{self.describe()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientFailed(
                        f"no {event!r} event within {timeout:.0f} s\n{self.describe()}"
                    )
                self._changed.wait(remaining)

    def send(self, line: str = "go") -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = CLIENT_TIMEOUT) -> list[dict]:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ClientFailed(f"still running after {timeout:.0f} s\n{self.describe()}") from None
        for thread in self._threads:
            thread.join(timeout=10)
        if self.process.returncode != 0:
            raise ClientFailed(self.describe())
        return self.events

    def last(self, event: str) -> dict:
        """The last event of this name printed so far."""
        for candidate in reversed(self.events):
            if candidate.get("event") == event:
                return candidate
        raise ClientFailed(f"no {event!r} event\n{self.describe()}")

    def all(self, event: str) -> list[dict]:
        return [candidate for candidate in self.events if candidate.get("event") == event]

    def text(self) -> str:
        """The text of the last "print" step."""
        return self.last("text")["text"]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class NodeClients:
    """Starts clients and kills whatever is still running at the end of a test."""

    def __init__(self) -> None:
        self.started: list[NodeClient] = []

    def start(self, scenario: dict, name: str = "client") -> NodeClient:
        client = NodeClient(scenario, name)
        self.started.append(client)
        return client

    def run(self, scenario: dict, name: str = "client") -> NodeClient:
        client = self.start(scenario, name)
        client.finish()
        return client

    def close(self) -> None:
        for client in self.started:
            client.kill()


# -- scenario steps ------------------------------------------------------------------------------


def connect(url: str, room, ticket: str | None = None, **extra: object) -> dict:
    step = {"do": "connect", "url": url, "room": str(room), **extra}
    if ticket is not None:
        step["params"] = {"ticket": ticket}
    return step


def confirm(url: str, room, ticket: str, doc: str = "main") -> dict:
    """Wait until a fresh client on `url` gets everything `doc` holds (the server has it)."""
    step = {"do": "confirm", "url": url, "room": str(room), "params": {"ticket": ticket}}
    return {**step, "doc": doc}


def scenario(*steps: dict | Iterable[dict], timeout: float = 30) -> dict:
    flat: list[dict] = []
    for step in steps:
        flat.extend([step] if isinstance(step, dict) else step)
    return {"timeout": timeout, "steps": flat}


# -- tickets and HTTP --------------------------------------------------------------------------


def ticket_for(user, document) -> str:
    from editor.realtime.tickets import issue

    token, _ = issue(user.pk, document.pk)
    return token


def _ticket_salt() -> str:
    from editor.realtime import tickets

    return tickets._SALT


def expired_ticket(user, document) -> str:
    """A correctly signed ticket whose timestamp is older than TICKET_TTL."""
    age = settings.COLLAB["TICKET_TTL"] + 3600

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - age)

    return PastSigner(salt=_ticket_salt()).sign_object(
        {"u": user.pk, "d": str(document.pk)}, compress=False
    )


def forged_ticket(user, document) -> str:
    """A fresh ticket signed with a key the server does not have."""
    return signing.dumps(
        {"u": user.pk, "d": str(document.pk)},
        key="not-" + settings.SECRET_KEY,
        salt=_ticket_salt(),
        compress=False,
    )


class Browser:
    """A cookie-keeping HTTP client (stdlib only) for logging in and calling the API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)

    def request(
        self, method: str, path: str, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers or {}
        )
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, username: str, password: str) -> None:
        status, _ = self.request("GET", "/accounts/login/")
        assert status == 200, f"GET /accounts/login/ answered {status}"
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.cookie("csrftoken"),
            }
        ).encode()
        status, body = self.request(
            "POST",
            "/accounts/login/",
            data=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": self.base,
                "Referer": self.base + "/accounts/login/",
            },
        )
        assert status == 200, f"login answered {status}: {body[:300]!r}"
        assert self.cookie("sessionid"), "login did not set a session cookie (wrong password?)"

    def post_json(self, path: str, payload: object = None) -> tuple[int, object]:
        status, body = self.request(
            "POST",
            path,
            data=json.dumps(payload or {}).encode(),
            headers={
                "Content-Type": "application/json",
                "X-CSRFToken": self.cookie("csrftoken") or "",
                "Origin": self.base,
                "Referer": self.base + "/",
            },
        )
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def ticket(self, document) -> str:
        status, payload = self.post_json(f"/api/documents/{document.pk}/ticket/")
        assert status == 201, f"ticket endpoint answered {status}: {payload!r}"
        return payload["ticket"]


# -- the store ---------------------------------------------------------------------------------


def stored_text(document_id) -> str:
    """The document's text as the database holds it (editor.realtime.store.load)."""
    import inspect

    from asgiref.sync import async_to_sync
    from pycrdt import Doc, Text

    from editor.realtime import store

    if inspect.iscoroutinefunction(store.load):
        loaded = async_to_sync(store.load)(document_id)
    else:
        loaded = store.load(document_id)
    updates = loaded[0] if isinstance(loaded, tuple) else loaded
    doc = Doc()
    for update in updates:
        doc.apply_update(bytes(update))
    return str(doc.get("codemirror", type=Text))


def wait_stored(
    document_id, contains: Iterable[str] = (), length: int | None = None, timeout: float = 20.0
) -> str:
    """Polls the database until the stored text contains every string and, if given, is
    ``length`` long (bounded)."""
    wanted = list(contains)
    deadline = time.monotonic() + timeout
    while True:
        text = stored_text(document_id)
        missing = [part for part in wanted if part not in text]
        if not missing and (length is None or len(text) == length):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout:.0f} s the database still lacks {missing[:10]} "
                f"({len(missing)} missing; stored length {len(text)}, wanted {length}); "
                f"stored text: {text[:500]!r}"
            )
        time.sleep(0.2)


def wait_quiet_database(quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Waits until no server is writing: the update log, snapshots and versions stayed
    unchanged for ``quiet`` seconds (bounded by ``timeout``).

    For servers that outlive a test: the test database is emptied after each test, and on
    PostgreSQL that TRUNCATE can deadlock with a server's INSERT still in flight.
    """
    from django.db.models import Count, Max, Sum

    from editor.models import Document, DocumentUpdate, Version

    def state() -> tuple:
        return (
            tuple(DocumentUpdate.objects.aggregate(Count("id"), Max("id")).values()),
            tuple(Document.objects.aggregate(Sum("snapshot_seq"), Max("updated_at")).values()),
            # Automatic versions, taken when a document's last socket leaves.
            tuple(Version.objects.aggregate(Count("id"), Max("id")).values()),
        )

    deadline = time.monotonic() + timeout
    last, since = state(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError(f"the servers were still writing to the database after {timeout:.0f} s")
