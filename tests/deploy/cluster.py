"""Helpers for the deployment tests: real nginx in front of real `manage.py serve` processes.

Not a test module. ``Backends`` are tests/live.py's servers plus a restart on the same port (a
rolling restart); ``Nginx`` runs the configuration `manage.py nginx_conf` prints, the way
docs/DEPLOY.md runs it (`nginx -p PREFIX -c FILE -g 'daemon off;'`); ``Peer`` is a y-websocket
client on pycrdt that types, and reconnects and re-syncs as the browser's provider does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from pycrdt import Doc, Text

from editor.realtime import protocol
from tests import live

# The TLS tests' certificate is self-signed.
UNVERIFIED = ssl.create_default_context()
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE

NGINX_HINT = "tests/deploy needs nginx (Debian: apt-get install nginx-light; `make nginx` does it)"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None,
    )
    if found is None:
        pytest.fail(NGINX_HINT, pytrace=False)
    return found


class Backends(live.LiveServers):
    """`manage.py serve` processes that can also be started again, each on its own port."""

    def restart(self, index: int) -> None:
        if self.alive(index):
            raise AssertionError(f"server {index} is still running")
        with open(self.logs[index], "ab") as out:
            self.processes[index] = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
                + ["--port", str(self.ports[index])],
                cwd=live.ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_healthy(index)

    def address(self, index: int) -> str:
        return f"127.0.0.1:{self.ports[index]}"

    def opened(self, document_id: object) -> list[int]:
        """How many sockets of this document each server has opened so far (its log)."""
        pattern = re.compile(rf"ws open .*document={document_id} ")
        return [len(pattern.findall(self.log(index))) for index in range(self.count)]


class Nginx:
    """nginx with `manage.py nginx_conf`'s configuration for ``backends``, on a free port.

    Its prefix is a directory of its own under /tmp, readable by nginx's unprivileged workers
    (pytest's tmp_path is not): static files to serve are collected into it.
    """

    def __init__(self, backends: Backends, static: bool = False, tls: bool = False) -> None:
        self.backends = backends
        self.tls = tls
        self.port = live.free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="collab-nginx-"))
        self.prefix.chmod(0o755)
        self.static_root = self.prefix / "static" if static else None
        self.config = self.prefix / "collab.conf"
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        arguments = ["--listen", f"127.0.0.1:{self.port}"]
        for index in range(self.backends.count):
            arguments += ["--backend", self.backends.address(index)]
        # In this process (a process start costs seconds on a loaded machine), with the
        # servers' MAX_CONTENT_BYTES: the settings the configuration depends on.
        collab = dict(settings.COLLAB)
        if "MAX_CONTENT_BYTES" in self.backends.env:
            collab["MAX_CONTENT_BYTES"] = int(self.backends.env["MAX_CONTENT_BYTES"])
        with override_settings(COLLAB=collab):
            if self.static_root is not None:
                self.static_root.mkdir(mode=0o755)
                with override_settings(STATIC_ROOT=self.static_root):
                    call_command("collectstatic", interactive=False, verbosity=0)
                arguments += ["--static-root", str(self.static_root)]
            if self.tls:
                arguments += self._certificate()
            output = io.StringIO()
            call_command("nginx_conf", *arguments, stdout=output)
        self.config.write_text(output.getvalue())
        with open(self.prefix / "nginx.out", "wb") as out:
            self.process = subprocess.Popen(
                [nginx_binary(), "-p", f"{self.prefix}/", "-c", str(self.config)]
                + ["-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.logs()}")
            try:
                request = urllib.request.Request(self.http() + "/healthz")
                with urllib.request.urlopen(request, timeout=2, context=UNVERIFIED) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not answer within 20 s:\n{self.logs()}")
            time.sleep(0.1)

    def _certificate(self) -> list[str]:
        """A self-signed certificate for 127.0.0.1 (clients here do not verify it)."""
        cert, key = self.prefix / "cert.pem", self.prefix / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return ["--tls-certificate", str(cert), "--tls-key", str(key)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ws(self, document_id: object, ticket: str, slash: str = "") -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ws/documents/{document_id}{slash}?ticket={ticket}"

    def access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def logs(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log", "access.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"--- nginx {name} ---\n" + path.read_text(errors="replace")[-6000:])
        return "\n".join(parts)


class Peer:
    """One editor: a pycrdt Doc with the "codemirror" text, kept in sync over y-websocket.

    ``run()`` connects through ``url()`` and, whenever the socket closes, connects again after
    a short jittered pause and re-syncs (sync step 1 both ways), as y-websocket's provider
    does; edits made meanwhile are in the Doc and reach the server with that sync. ``type()``
    appends markers ``[name:seq]`` so that every character typed can be looked for.
    """

    def __init__(self, name: str, url: Callable[[], str], reconnect: bool = True) -> None:
        self.name = name
        self.url = url
        self.reconnect = reconnect
        self.doc = Doc()
        self.text = self.doc.get("codemirror", type=Text)
        self.typed: list[str] = []
        self.ws: websockets.ClientConnection | None = None
        self.synced = asyncio.Event()
        self.connections = 0
        self.closed_at: float | None = None
        self.reconnect_times: list[float] = []
        self.awareness: dict[int, dict | None] = {}
        self.removed: set[int] = set()
        self.stopped = False
        self._clock = 0
        self._task: asyncio.Task | None = None

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.stopped:
            try:
                async with websockets.connect(
                    self.url(), max_size=None, open_timeout=5, close_timeout=1
                ) as ws:
                    self.ws = ws
                    self.connections += 1
                    await ws.send(protocol.sync_step1(self.doc))
                    await self.announce()
                    async for frame in ws:
                        await self._receive(frame)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
                pass
            finally:
                self.ws = None
                if self.synced.is_set():
                    self.closed_at = time.monotonic()
                self.synced.clear()
            if not self.reconnect:
                return
            await asyncio.sleep(random.uniform(0.05, 0.3))

    async def _receive(self, frame: bytes) -> None:
        message = protocol.parse_message(frame)
        if isinstance(message, protocol.SyncStep1):
            await self._send(protocol.sync_step2(self.doc, message.state_vector))
        elif isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            self.doc.apply_update(message.update)
            if isinstance(message, protocol.SyncStep2) and not self.synced.is_set():
                if self.closed_at is not None:
                    self.reconnect_times.append(time.monotonic() - self.closed_at)
                    self.closed_at = None
                self.synced.set()
        elif isinstance(message, protocol.Awareness):
            for entry in message.entries:
                self.awareness[entry.client_id] = entry.state
                if entry.state is None:
                    self.removed.add(entry.client_id)

    async def _send(self, frame: bytes) -> None:
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await ws.send(frame)

    async def announce(self) -> None:
        """(Re)sends this peer's awareness state, as a browser renews it."""
        self._clock += 1
        entry = protocol.AwarenessEntry(
            client_id=self.client_id, clock=self._clock, state={"cursor": None}
        )
        await self._send(protocol.awareness(protocol.encode_awareness([entry])))

    async def type(self) -> None:
        """Appends the next marker, connected or not (offline edits sync on reconnect)."""
        marker = f"[{self.name}:{len(self.typed)}]"
        before = self.doc.get_state()
        self.text += marker
        self.typed.append(marker)
        await self._send(protocol.sync_update(self.doc.get_update(before)))

    async def stop(self) -> None:
        self.stopped = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def kill(self) -> None:
        """Gone without a goodbye (a closed laptop): no reconnect, no close frame."""
        self.stopped = True
        self.reconnect = False
        if self.ws is not None:
            self.ws.transport.abort()
        if self._task is not None:
            self._task.cancel()

    def __str__(self) -> str:
        return str(self.text)


async def typing(peers: list[Peer], seconds: float, interval: float = 0.05) -> None:
    """Every peer types a marker every ``interval`` for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(peer.type() for peer in peers))
        await asyncio.sleep(interval)


async def until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    also: Callable[[], object] | None = None,
) -> float:
    """Waits until ``condition()`` holds; returns the seconds it took. ``also``: what to add
    to the failure's message (the state that did not get there)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            detail = f" ({also()})" if also is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s{detail}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def converged(peers: list[Peer], timeout: float = 20.0) -> str:
    """Waits until every peer is synced and holds the same text with every marker typed by
    any of them; returns that text."""
    markers = [marker for peer in peers for marker in peer.typed]

    def done() -> bool:
        texts = {str(peer) for peer in peers}
        if len(texts) != 1 or not all(peer.synced.is_set() for peer in peers):
            return False
        text = texts.pop()
        return all(marker in text for marker in markers)

    try:
        await until(done, timeout, "convergence")
    except AssertionError:
        report = []
        for peer in peers:
            missing = [m for m in markers if m not in str(peer)]
            report.append(
                f"{peer.name}: synced={peer.synced.is_set()} length={len(str(peer))} "
                f"missing={len(missing)} {missing[:5]}"
            )
        raise AssertionError("peers did not converge:\n" + "\n".join(report)) from None
    return str(peers[0])
