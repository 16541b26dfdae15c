"""Tiny helpers that read settings from the environment and fail loudly on nonsense.

Modelled on healthchecks' ``envbool``: a typo such as ``DEBUG=flase`` must stop the process
instead of silently meaning something.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of true/false/1/0/yes/no/on/off, not {raw!r}")


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {'/'.join(choices)}, not {raw!r}")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_redis_urls(name: str) -> list[str]:
    """A comma-separated list of Redis URLs (one shard each), checked by redis-py's own parser
    so that a typo stops the process here instead of at the first message."""
    from redis.connection import parse_url

    urls = env_list(name, [])
    for url in urls:
        try:
            parse_url(url)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {url!r} is not a Redis URL ({exc})") from None
    if len(set(urls)) != len(urls):
        raise ImproperlyConfigured(f"{name} lists the same server twice: {','.join(urls)}")
    return urls


def env_addresses(name: str, default_port: int) -> list[tuple[str, int]]:
    """A comma-separated list of ``host:port`` (``[v6 address]:port``; the port may be left out)."""
    addresses = []
    for item in env_list(name, []):
        host, port = item, str(default_port)
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    host = ""  # reported below
                port = rest[1:]
        elif item.count(":") == 1:
            host, port = item.split(":")
        elif ":" in item:
            host = ""  # a bare IPv6 address is ambiguous: it must be in brackets
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(
                f"{name} must be a comma-separated list of host:port, not {item!r}"
            )
        addresses.append((host, int(port)))
    return addresses


def env_gc_thresholds(name: str, default: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Three integers for ``gc.set_threshold`` ("20000,20,10"), the first positive (0 would
    turn the collector off), the others 0 or more (0: that generation is collected whenever the
    younger one has been since it last was, so every other collection); "python": leave
    Python's own (700, 10, 10)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() == "python":
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts) or int(parts[0]) == 0:
        raise ImproperlyConfigured(
            f"{name} must be three integers like 20000,20,10, the first above 0 (or python),"
            f" not {raw!r}"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])
