"""Pytest plugin (``-p collab.testing`` in pyproject.toml): a private Redis for the test run.

Settings read REDIS_URL when Django loads, and pytest-django loads Django inside
``pytest_load_initial_conftests``. A hook *wrapper* runs before every plain implementation of
that hook, whatever the registration order, so the URL is in the environment in time.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collab.embedded import EmbeddedRedis

_embedded: EmbeddedRedis | None = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    global _embedded
    if not os.environ.get("REDIS_URL"):
        from collab.embedded import EmbeddedRedis

        _embedded = EmbeddedRedis()
        os.environ["REDIS_URL"] = _embedded.start()
    elif worker := os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["REDIS_URL"] = _workers_own(os.environ["REDIS_URL"], worker)
    return (yield)


def _workers_own(urls: str, worker: str) -> str:
    """The Redis URLs of one pytest-xdist worker (``gw0``, ``gw1``, ...): worker N uses the
    database N numbers after the one given, emptied first, so that what one worker's tests and
    live servers leave in Redis (the census's index, sockets' keys) is not another's. The first
    worker keeps the database given (CI empties it). Pub/sub is not per database; the channel
    layer's groups are per document, and every test makes its own documents."""
    from redis.connection import parse_url

    index = int(worker.removeprefix("gw"))
    if index == 0:
        return urls
    import redis

    own = []
    for url in urls.split(","):
        url = url.strip()
        db = int(parse_url(url).get("db", 0)) + index
        mine = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{db}"))
        if int(parse_url(mine).get("db", 0)) != db:  # a ``?db=`` in the query wins
            raise pytest.UsageError(
                f"REDIS_URL {url!r}: name the database in the path (/N), so that pytest-xdist"
                f" worker {worker} can use database {db}"
            )
        with redis.Redis.from_url(mine) as client:
            client.flushdb()
        own.append(mine)
    return ",".join(own)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    global _embedded
    # The process's collection timer (editor/metrics.py), if a test installed it, goes before
    # pytest's last collections: it would log each long one as a stall, and in a pytest-xdist
    # worker whose output is closed by then, as a "Logging error" with a traceback.
    import gc
    import sys

    metrics = sys.modules.get("editor.metrics")
    if metrics is not None and metrics._gc_timer in gc.callbacks:
        gc.callbacks.remove(metrics._gc_timer)
    if _embedded is not None:
        _embedded.stop()
        _embedded = None


def pytest_report_header(config: pytest.Config) -> str:
    source = "embedded Valkey" if _embedded is not None else "REDIS_URL"
    return f"collab: redis {os.environ.get('REDIS_URL')} ({source})"
