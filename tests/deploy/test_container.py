"""docker/Dockerfile built and run for real, with Debian's podman (tests/deploy/podman.py).

No registry is reachable here, so the Dockerfile's `python:3.11-slim-bookworm` is stood in for by
a base made with debootstrap (Debian bookworm's own python3); everything else is the Dockerfile
as committed, built from the repository's root. The containers then run as docker/compose.yaml
runs them: its one-shot `migrate` command (migrations, static files into a volume), then the app
with the image's own command, entry point and health check, against this test run's Redis and
database server (PostgreSQL in CI, reached through slirp4netns; without DATABASE_URL, SQLite in
a volume). What a deployer relies on is asserted from outside the container.

The first run on a machine installs podman (apt-get) and makes the base (about a minute); the
base and the build's cached layers are kept for the next runs. Fails, never skips, when podman
cannot be had.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg
import pytest
import redis
import yaml
from psycopg import sql

from tests import live
from tests.deploy import podman as engine
from tests.deploy.cluster import Peer, converged, until

# Cold, the module's first test waits for apt-get, debootstrap and the build.
pytestmark = pytest.mark.timeout(1800)

COMPOSE = yaml.safe_load((engine.ROOT / "docker" / "compose.yaml").read_text())
UID = 10001
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def podman(request) -> Iterator[engine.Podman]:
    engine.TIMINGS.clear()
    engine.wait_for_background()
    engine.ensure_installed()
    runner = engine.Podman()
    runner.ensure_bases()
    runner.sweep()
    yield runner
    # How long each step took, in the run's output (the first run on a machine is the slow one).
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in engine.TIMINGS.items())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntests/deploy/test_container.py: {steps}")


@pytest.fixture(scope="module")
def image(podman) -> Iterator[str]:
    tag = f"localhost/collab:test-{podman.run_id}"
    podman.build(tag)
    yield tag
    # One tag stays, so that its layers (and their parents) are the next build's cache.
    podman("tag", tag, engine.CACHE_TAG, check=False)
    podman("rmi", tag, check=False)


@pytest.fixture(scope="module")
def image_config(podman, image) -> dict:
    return podman.json("image", "inspect", image)[0]


@pytest.fixture(scope="module")
def services(podman) -> Iterator[dict[str, str]]:
    """This run's Redis and, with PostgreSQL, a database of its own there, as the containers
    reach them (the machine's loopback is 10.0.2.2 on slirp4netns)."""
    redis_urls = os.environ.get("REDIS_URL", "")
    assert redis_urls, "REDIS_URL is unset: the collab.testing plugin should have set it"
    prefix = f"collab-container-{podman.run_id}"
    env = {
        "REDIS_URL": ",".join(engine.loopback_to_host(url) for url in redis_urls.split(",")),
        "CHANNEL_PREFIX": prefix,
        "PRESENCE_PREFIX": f"{prefix}:presence",
    }
    try:
        yield from with_database(env, podman.run_id)
    finally:
        for url in redis_urls.split(","):  # what the app left: its process census
            with redis.Redis.from_url(url) as client:
                keys = list(client.scan_iter(match=f"{prefix}*"))
                if keys:
                    client.delete(*keys)


def with_database(env: dict[str, str], run_id: str) -> Iterator[dict[str, str]]:
    database = os.environ.get("DATABASE_URL", "")
    if not database.startswith(("postgres://", "postgresql://", "pgsql://")):
        yield env  # SQLite, under COLLAB_VAR_DIR in the `var` volume
        return
    name = f"collab_container_{run_id.replace('-', '_')}"
    config = dj_database_url.parse(database)
    server = {
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**server) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urllib.parse.urlsplit(database)._replace(path=f"/{name}").geturl()
    env["DATABASE_URL"] = engine.loopback_to_host(url)
    yield env
    with psycopg.connect(**server) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class Deployment:
    """compose's `migrate` then one app container, on the image just built."""

    def __init__(self, podman: engine.Podman, image: str, services: dict[str, str]) -> None:
        self.podman = podman
        self.image = image
        self.run = podman.run_id
        self.name = f"collab-test-{self.run}-app"
        self.port = live.free_port()
        self.volumes = {
            "var": "/var/lib/collab",
            "secrets": "/var/lib/collab/secrets",
            "static": "/srv/collab/static",
        }
        app = COMPOSE["services"]["app1"]["environment"]
        self.env = {
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "SECRET_KEY_FILE": app["SECRET_KEY_FILE"],
            "LOG_LEVEL": "INFO",
            **services,
        }

    def volume(self, name: str) -> str:
        return f"collab-test-{self.run}-{name}"

    def options(self, env: dict[str, str], volumes: list[str]) -> list[str]:
        options = [
            "--network",
            "slirp4netns:allow_host_loopback=true",
            "--label",
            f"collab.test.run={self.run}",
            *engine.ulimits(),
        ]
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        for name in volumes:
            options += ["--volume", f"{self.volume(name)}:{self.volumes[name]}"]
        return options

    def start(self) -> None:
        for name in self.volumes:
            self.podman(
                "volume", "create", "--label", f"collab.test.run={self.run}", self.volume(name)
            )
        migrate = COMPOSE["services"]["migrate"]
        with engine.timed("migrate"):
            self.podman(
                "run",
                "--rm",
                *self.options(
                    {**self.env, "STATIC_ROOT": migrate["environment"]["STATIC_ROOT"]},
                    ["var", "secrets", "static"],
                ),
                self.image,
                *migrate["command"],
                timeout=300,
            )
        with engine.timed("start"):
            self.podman(
                "run",
                "--detach",
                "--name",
                self.name,
                "--publish",
                f"127.0.0.1:{self.port}:8000",
                "--stop-timeout",
                "30",  # compose's stop_grace_period
                *self.options(self.env, ["var", "secrets"]),
                self.image,
            )
            deadline = time.monotonic() + 90
            while True:
                status, _ = self.get("/healthz")
                if status == 200:
                    break
                if time.monotonic() > deadline or not self.running():
                    engine.fail(
                        f"the app container never answered /healthz ({status})", self.logs()
                    )
                time.sleep(0.3)

    def stop(self) -> None:
        self.podman("rm", "--force", "--time", "5", self.name, check=False)
        for name in self.volumes:
            self.podman("volume", "rm", "--force", self.volume(name), check=False)

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def inspect(self) -> dict:
        return self.podman.json("container", "inspect", self.name)[0]

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *argv: str, env: dict[str, str] | None = None) -> str:
        options = [
            item for key, value in (env or {}).items() for item in ("--env", f"{key}={value}")
        ]
        return self.podman("exec", *options, self.name, *argv, timeout=60).stdout

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            return live._get(self.http + path, timeout=5)
        except OSError:  # not listening yet: slirp4netns resets the connection
            return 0, b""

    def api(self, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
        request = urllib.request.Request(
            self.http + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Token {token}"} if token else {}),
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def host_pid(self) -> int:
        return self.inspect()["State"]["Pid"]

    def volume_path(self, name: str) -> Path:
        return Path(self.podman.json("volume", "inspect", self.volume(name))[0]["Mountpoint"])


@pytest.fixture(scope="module")
def deployment(podman, image, services) -> Iterator[Deployment]:
    running = Deployment(podman, image, services)
    try:
        running.start()
        yield running
    finally:
        running.stop()


# -- the image ---------------------------------------------------------------------------------


def test_the_image_runs_manage_py_serve_as_collab_with_a_health_check(image_config):
    config = image_config["Config"]
    assert config["User"] == "collab"
    assert config["Entrypoint"] == ["docker/entrypoint.sh"]
    assert config["Cmd"] == ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert config["WorkingDir"] == "/app"
    assert list(config["ExposedPorts"]) == ["8000/tcp"]
    assert "DEBUG=false" in config["Env"]
    second = 1_000_000_000
    assert image_config["Healthcheck"] == {
        "Test": ["CMD", "python", "docker/healthcheck.py"],
        "Interval": 10 * second,
        "Timeout": 5 * second,
        "StartPeriod": 30 * second,
        "Retries": 3,
    }


# -- the containers, as compose runs them --------------------------------------------------------


def test_healthz_answers_and_the_images_health_check_passes(deployment):
    status, body = deployment.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    # podman runs HEALTHCHECK on demand here (its timers need systemd).
    done = deployment.podman("healthcheck", "run", deployment.name, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert deployment.inspect()["State"]["Health"]["Status"] == "healthy"
    # The same script fails when nothing answers.
    failing = deployment.podman(
        "exec",
        "--env",
        "COLLAB_HEALTHCHECK_URL=http://127.0.0.1:9/healthz",
        deployment.name,
        "python",
        "docker/healthcheck.py",
        check=False,
    )
    assert failing.returncode == 1


def test_every_process_runs_as_the_unprivileged_user(deployment):
    # Rootful podman, no user namespace: uid 10001 inside is uid 10001 on the machine.
    status = Path(f"/proc/{deployment.host_pid()}/status").read_text()
    assert (
        re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
        == (str(UID),) * 4
    )
    uids = deployment.exec(
        "python",
        "-c",
        "import pathlib, re\n"
        "for p in pathlib.Path('/proc').glob('[0-9]*/status'):\n"
        "    print(re.search(r'^Uid:\\s+(\\d+)', p.read_text(), re.M)[1])",
    ).split()
    assert len(uids) >= 3  # manage.py serve, daphne, this script
    assert set(uids) == {str(UID)}
    assert deployment.exec("id", "-un").strip() == "collab"


def test_static_files_were_collected_at_build_and_are_served_hashed(deployment):
    manifest = json.loads(deployment.exec("cat", "/app/staticfiles/staticfiles.json"))
    paths = manifest["paths"]
    assert paths, "no static files in the image"
    listed = deployment.exec("find", "/app/staticfiles", "-type", "f").split()
    for hashed in paths.values():
        assert f"/app/staticfiles/{hashed}" in listed
    assert any(name.endswith(".gz") for name in listed)  # compressed copies for WhiteNoise

    status, page = deployment.get("/accounts/login/")
    assert status == 200
    linked = set(re.findall(r'/static/([^"\'?#]+)', page.decode()))
    assert linked and linked <= set(paths.values()), linked - set(paths.values())
    with urllib.request.urlopen(f"{deployment.http}/static/{sorted(linked)[0]}") as response:
        assert response.status == 200
        assert "immutable" in response.headers["Cache-Control"]


def test_composes_migrate_command_filled_the_static_volume(deployment):
    static = deployment.volume_path("static")
    manifest = static / "staticfiles.json"
    assert manifest.is_file()
    assert manifest.stat().st_uid == UID  # written by the image's user, into a fresh volume
    assert len(list(static.rglob("*.css"))) > 0


def test_the_entry_point_made_a_secret_key_that_the_server_runs_with(deployment):
    key_file = deployment.volume_path("secrets") / "secret_key"
    info = key_file.stat()
    assert (info.st_mode & 0o777, info.st_uid) == (0o600, UID)
    key = key_file.read_text().strip()
    assert len(key) >= 50
    environ = Path(f"/proc/{deployment.host_pid()}/environ").read_bytes().split(b"\0")
    assert f"SECRET_KEY={key}".encode() in environ


def test_people_edit_a_document_together_through_the_container(deployment):
    # `exec` skips the entry point, which is what sets SECRET_KEY from SECRET_KEY_FILE.
    deployment.exec(
        "docker/entrypoint.sh",
        "python",
        "manage.py",
        "createsuperuser",
        "--noinput",
        "--username",
        "olive",
        "--email",
        "olive@example.com",
        env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )
    credentials = {"username": "olive", "password": PASSWORD}
    token = deployment.api("POST", "/api/auth/token/", credentials)["token"]
    document = deployment.api("POST", "/api/documents/", {"title": "In a container"}, token)["id"]

    content = f"/api/documents/{document}/content/"

    def url() -> str:
        ticket = deployment.api("POST", f"/api/documents/{document}/ticket/", {}, token)["ticket"]
        return f"ws://127.0.0.1:{deployment.port}/ws/documents/{document}?ticket={ticket}"

    def stored() -> str:
        return deployment.api("GET", content, token=token)["text"]

    async def edit() -> tuple[str, str]:
        peers = [Peer("ada", url), Peer("bob", url)]
        for peer in peers:
            peer.start()
        try:
            await until(lambda: all(p.synced.is_set() for p in peers), 30, "both peers synced")
            for _ in range(5):
                await asyncio.gather(*(peer.type() for peer in peers))
            typed = await converged(peers)
            # Stored by the server (PostgreSQL in CI) within moments: what a new reader gets.
            await until(lambda: stored() == typed, 10, "the typed text stored")
            # A write through the API reaches the open sockets (the room, through Redis).
            deployment.api("PUT", content, {"text": typed + "\nAPI"}, token)
            await until(lambda: all(str(p) == typed + "\nAPI" for p in peers), 20, "API write")
            return typed, str(peers[0])
        finally:
            for peer in peers:
                await peer.stop()

    typed, text = asyncio.run(edit())
    assert typed.count("[ada:") == typed.count("[bob:") == 5
    assert stored() == text


# Last: the container is gone after it.
def test_it_stops_promptly_and_cleanly_on_sigterm(deployment):
    started = time.monotonic()
    with engine.timed("stop"):
        deployment.podman("stop", "--time", "30", deployment.name, timeout=60)
    assert time.monotonic() - started < 15
    state = deployment.inspect()["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), deployment.logs()
