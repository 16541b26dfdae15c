"""Debian's podman on this machine, for tests/deploy/test_container.py. Not a test module.

There is no registry here (python:3.11-slim-bookworm cannot be pulled) and no Docker daemon, so
docker/Dockerfile is built with rootful podman on a base made by debootstrap: Debian bookworm
(minbase) with its python3 and python3-venv, `python` being python3 (python-is-python3). A
private registries.conf aliases the Dockerfile's short name `python` to that local image, so the
Dockerfile is built exactly as committed, `--pull=never`.

What this sandbox needs, found by trying (docs/DEPLOY.md, "Building and running the image with
podman"):

- runc, not crun (podman's default on Debian): crun refuses this machine's cgroups, v1
  controllers with hugetlb on the v2 hierarchy ("cgroups in hybrid mode not supported, drop all
  controllers from cgroupv2"), even with --cgroups=disabled.
- --ulimit nofile and nproc at most the hard limits: podman's defaults are above them and this
  process lacks CAP_SYS_RESOURCE ("setrlimit `RLIMIT_NOFILE`: Operation not permitted").
- --format docker: the OCI format has no place for HEALTHCHECK, which buildah then drops.
- no systemd: podman's timers that run HEALTHCHECK on its own cannot be made (it logs "unable to
  get systemd connection to add healthchecks"); `podman healthcheck run` runs it on demand.
- the machine's CA bundle, mounted read-only into the build's RUN steps (pip's PIP_CERT points at
  it), because HTTPS leaves through a proxy with its own certificate authority.

The storage (overlay, or COLLAB_CONTAINER_STORAGE_DRIVER) is private to these tests and lives
outside the work tree (COLLAB_CONTAINER_CACHE, default /var/cache/collab-tests/containers), so the
debootstrap base and the build's cached layers serve every checkout on this machine, CI's fresh
clones included.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests import apt

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"

CACHE = Path(os.environ.get("COLLAB_CONTAINER_CACHE", "/var/cache/collab-tests/containers"))
DRIVER = os.environ.get("COLLAB_CONTAINER_STORAGE_DRIVER", "overlay")
MIRROR = os.environ.get("COLLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
RUNROOT = Path("/run/collab-tests-podman") / DRIVER

# The base: what python:3.11-slim-bookworm offers the Dockerfile (python, venv, CA certificates,
# useradd), from Debian's own packages. A change here makes a new base (RECIPE is its label).
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
RECIPE = hashlib.sha256(f"1 {SUITE} minbase {' '.join(PACKAGES)}".encode()).hexdigest()[:16]
BASE_REPOSITORY = "localhost/debootstrap"
# The last image built: podman removes an untagged image's untagged parents with it.
CACHE_TAG = "localhost/collab:cache"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

# apt package -> a program it installs.
NEEDED = {
    "podman": "podman",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "slirp4netns": "slirp4netns",
}
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
HINT = (
    "tests/deploy/test_container.py builds docker/Dockerfile with rootful podman: it needs root "
    "and Debian's podman, runc, debootstrap and slirp4netns (apt-get install podman runc "
    "debootstrap slirp4netns; the test installs them when it runs as root with apt-get)"
)

# Seconds each step took in this run, for the summary line and docs/DEPLOY.md.
TIMINGS: dict[str, float] = {}


def fail(message: str, output: str = "") -> None:
    tail = "\n".join(output.strip().splitlines()[-40:])
    pytest.fail(f"{message}\n{tail}" if tail else message, pytrace=False)


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    TIMINGS[step] = TIMINGS.get(step, 0.0) + time.monotonic() - started


def missing_packages() -> list[str]:
    return [pkg for pkg, program in NEEDED.items() if not shutil.which(program, path=SBIN_PATH)]


def ensure_installed() -> None:
    """Installs what is missing with apt-get (root on Debian), or fails saying what to do."""
    if os.geteuid() != 0:
        fail(f"not root (uid {os.geteuid()}): {HINT}")
    missing = missing_packages()
    if not missing:
        return
    if not apt.can_install():
        fail(f"{', '.join(missing)} missing and no apt-get: {HINT}")
    with timed("install"):
        done = apt.install(missing)
    if done.returncode != 0:
        fail(f"{' '.join(done.args)} failed ({done.returncode}): {HINT}", done.stdout + done.stderr)
    if still := missing_packages():
        fail(f"{', '.join(still)} still missing after apt-get install: {HINT}")


# -- made ahead, while other tests run -------------------------------------------------------------

# The preparation started by ``prepare_in_background`` (tests/conftest.py), if any.
_background: subprocess.Popen[str] | None = None


def prepare_in_background() -> None:
    """Starts installing podman and making the base in another process (``python -m
    tests.deploy.podman``), so that a fresh machine's apt-get and debootstrap (about a minute
    and a quarter in CI) overlap the tests that run before the container tests. Nothing when
    not root: the container tests fail then, saying why."""
    global _background
    if _background is None and os.geteuid() == 0:
        _background = subprocess.Popen(
            [sys.executable, "-m", "tests.deploy.podman"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def wait_for_background() -> None:
    """Waits for the preparation, if one was started, and counts its steps in TIMINGS (as
    "... in the background"). A preparation that failed is not an error here: the fixture
    goes on to do the same steps itself, and fails with their output."""
    global _background
    if _background is None:
        return
    output, _ = _background.communicate(timeout=1800)
    _background = None
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            for step, seconds in json.loads(line).items():
                TIMINGS[f"{step} in the background"] = seconds
            break


def main() -> None:
    """What ``prepare_in_background`` runs: install, then make the bases; prints TIMINGS."""
    ensure_installed()
    Podman().ensure_bases()
    print(json.dumps(TIMINGS), flush=True)


def ulimits() -> list[str]:
    """Open files and processes at the hard limits (capped), never above: see the docstring."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    # podman build's own default; runc refused this machine's hard limit (96363) as it is.
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def base_images() -> list[str]:
    """The Dockerfile's FROM images, its ARGs resolved (python:3.11-slim-bookworm twice)."""
    parser = DockerfileParser(path=str(DOCKERFILE), cache_content=True)
    parser.content = DOCKERFILE.read_text()
    return [image for image in parser.parent_images if image]


class Podman:
    """`podman` on the private storage, with the flags this machine needs."""

    def __init__(self) -> None:
        self.storage = CACHE / f"storage-{DRIVER}"
        self.registries = CACHE / "registries.conf"
        self.run_id = f"{os.getpid()}-{int(time.time())}"

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.storage),
            "--runroot",
            str(RUNROOT),
            "--storage-driver",
            DRIVER,
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *args,
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(self.registries)}

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            fail(f"podman {' '.join(args)} failed ({done.returncode})", done.stdout + done.stderr)
        return done

    def json(self, *args: str) -> object:
        return json.loads(self(*args).stdout)

    # -- the base ------------------------------------------------------------------------------

    def ensure_bases(self) -> list[str]:
        """Makes (once per machine) the debootstrap base for each FROM of the Dockerfile and the
        registries.conf alias that points the Dockerfile's short name at it."""
        CACHE.mkdir(parents=True, exist_ok=True)
        RUNROOT.mkdir(parents=True, exist_ok=True)
        aliases = {}
        made = []
        with (CACHE / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for image in sorted(set(base_images())):
                name, _, tag = image.partition(":")
                if "/" in name or not tag.endswith(f"-slim-{SUITE}"):
                    fail(f"FROM {image}: debootstrap stands in for python:X-slim-{SUITE} only")
                local = f"{BASE_REPOSITORY}/{name}:{tag}"
                aliases[name] = f"{BASE_REPOSITORY}/{name}"
                if self.label(local, "collab.base.recipe") != RECIPE:
                    self.debootstrap(local, python=tag.split("-")[0])
                made.append(local)
            self.registries.write_text(
                "# Written by tests/deploy/podman.py: the Dockerfile's base images are local.\n"
                'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n[aliases]\n'
                + "".join(f'"{short}" = "{full}"\n' for short, full in aliases.items())
            )
            # Build cache older than a day goes (the base is tagged, so it stays).
            self("image", "prune", "--force", "--filter", "until=24h", timeout=300)
        return made

    def label(self, image: str, key: str) -> str | None:
        found = self("image", "inspect", image, check=False)
        if found.returncode != 0:
            return None
        return (json.loads(found.stdout)[0].get("Labels") or {}).get(key)

    def debootstrap(self, image: str, python: str) -> None:
        rootfs = CACHE / f"rootfs-{self.run_id}"
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            with timed("debootstrap"):
                argv = [
                    shutil.which("debootstrap", path=SBIN_PATH) or "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(rootfs),
                    MIRROR,
                ]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    fail(f"debootstrap failed ({done.returncode})", done.stdout + done.stderr)
            version = subprocess.run(
                ["chroot", str(rootfs), "python", "--version"], capture_output=True, text=True
            ).stdout.split()
            if not version or not version[-1].startswith(f"{python}."):
                fail(f"{SUITE}'s python is {version}, the Dockerfile asks for Python {python}")
            # As in the slim images: no package caches or lists.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            with timed("import"):
                tar = subprocess.Popen(
                    ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
                )
                assert tar.stdout is not None
                self(
                    "import",
                    "--change",
                    "ENV LANG=C.UTF-8",
                    # pip (Debian's 23.0) trusts certifi, not the system bundle, unless told.
                    "--change",
                    f"ENV PIP_CERT={HOST_CA}",
                    "--change",
                    f"LABEL collab.base.recipe={RECIPE}",
                    "--change",
                    'CMD ["python3"]',
                    "-",
                    image,
                    stdin=tar.stdout.fileno(),
                    timeout=600,
                )
                tar.stdout.close()
                if tar.wait() != 0:
                    fail(f"tar of {rootfs} failed")
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)

    # -- the image -----------------------------------------------------------------------------

    def build(self, tag: str) -> str:
        """Builds docker/Dockerfile from the repository's root, as a deployer would; returns
        the build's output."""
        args = ["build", "--format", "docker", "--pull=never", "--network", "host"]
        if HOST_CA.is_file():
            args += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
        args += ["--file", str(DOCKERFILE), "--tag", tag, str(ROOT)]
        with timed("build"):
            done = self(*args, timeout=1200, check=False)
        if done.returncode != 0:
            fail(f"podman build failed ({done.returncode})", done.stdout + done.stderr)
        return done.stdout + done.stderr

    # -- left over by runs that were killed ----------------------------------------------------

    def sweep(self) -> None:
        """Removes containers, volumes and image tags of earlier runs whose process is gone."""

        def gone(run: str | None) -> bool:
            try:
                os.kill(int((run or "0").split("-")[0]), 0)
            except (ProcessLookupError, ValueError):
                return True
            except PermissionError:
                return False
            return False

        containers = self.json(
            "ps", "--all", "--filter", "label=collab.test.run", "--format", "json"
        )
        for container in containers or []:  # type: ignore[union-attr]
            if gone((container.get("Labels") or {}).get("collab.test.run")):
                self("rm", "--force", "--time", "1", container["Id"], check=False)
        volumes = self.json("volume", "ls", "--filter", "label=collab.test.run", "--format", "json")
        for volume in volumes or []:  # type: ignore[union-attr]
            if gone((volume.get("Labels") or {}).get("collab.test.run")):
                self("volume", "rm", "--force", volume["Name"], check=False)
        for line in self("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
            if line.startswith("localhost/collab:test-") and gone(line.split("test-", 1)[1]):
                self("rmi", line, check=False)


def loopback_to_host(url: str, host: str = "10.0.2.2") -> str:
    """The URL as a container on slirp4netns (allow_host_loopback) reaches this machine's
    loopback: 127.0.0.1 and localhost become 10.0.2.2."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return url
    netloc = parts.netloc.rsplit("@", 1)
    address = (
        netloc[-1].replace("[::1]", host).replace("127.0.0.1", host).replace("localhost", host)
    )
    netloc[-1] = address
    return urllib.parse.urlunsplit(parts._replace(netloc="@".join(netloc)))


if __name__ == "__main__":
    main()
