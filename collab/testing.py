"""Pytest plugin (``-p collab.testing`` in pyproject.toml): a private Redis for the test run.

Settings read REDIS_URL when Django loads, and pytest-django loads Django inside
``pytest_load_initial_conftests``. A hook *wrapper* runs before every plain implementation of
that hook, whatever the registration order, so the URL is in the environment in time.
"""

from __future__ import annotations

import os
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
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _embedded
    if _embedded is not None:
        _embedded.stop()
        _embedded = None


def pytest_report_header(config: pytest.Config) -> str:
    source = "embedded Valkey" if _embedded is not None else "REDIS_URL"
    return f"collab: redis {os.environ.get('REDIS_URL')} ({source})"
