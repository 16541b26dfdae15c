"""Debian packages a test needs, installed with apt-get when missing (as root). Not a test module.

Every install made by the tests goes through ``install``, which holds one lock for the whole
update-and-install: the container tests prepare their base in the background while other tests
run (tests/deploy/podman.py), and apt-get refuses outright, rather than waits, when another
apt-get holds the package lists.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

LOCK = Path("/var/lock/collab-tests-apt.lock")
# make's chromium and nginx targets run apt-get outside this lock; dpkg's own lock is waited for.
WAIT_FOR_DPKG = ["-o", "DPkg::Lock::Timeout=300"]


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install(packages: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``apt-get update`` then ``apt-get install -y`` of ``packages``, under the tests' apt lock;
    returns the first step that failed, or the install."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for argv in (
            ["apt-get", *WAIT_FOR_DPKG, "update", "-qq"],
            ["apt-get", *WAIT_FOR_DPKG, "install", "-y", "-qq", *packages],
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                break
    return done
