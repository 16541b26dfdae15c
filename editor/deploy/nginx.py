"""The nginx configuration for N collab processes, from one template (nginx.conf.template).

`manage.py nginx_conf` prints it for bare-metal installs and the tests; docker/nginx/collab.conf
is its output for compose's two app services (tests/deploy checks that they do not drift).
Two settings shape it, so it is made with the production environment: MAX_CONTENT_BYTES (the
request-body limit) and WS_PING_INTERVAL / WS_PING_TIMEOUT (the WebSocket read timeout).
"""

import re
from dataclasses import dataclass
from importlib import resources

from django.conf import settings
from django.template import Context, Engine

TEMPLATE = "nginx.conf.template"

# HOST:PORT, with HOST a name, an IPv4 address or a bracketed IPv6 address; nginx's own syntax.
_BACKEND = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
_LISTEN = re.compile(r"^(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5}$")
# nginx's configuration syntax has no quoting we could rely on for arbitrary paths.
_PATH = re.compile(r"^[^\s;{}'\"#$\\]+$")

# nginx's own default proxy_read_timeout; the WebSocket one is never shorter.
_MIN_READ_TIMEOUT = 120


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...]
    listen: str
    static_root: str | None = None
    access_log: str = "access.log"
    error_log: str = "error.log"
    tls_certificate: str | None = None
    tls_key: str | None = None


def max_request_body(max_content_bytes: int) -> int:
    """The largest content PUT the API reads: the bound ContentView checks before parsing
    (editor/api/views.py), since JSON escaping at most sextuples a text ("\\u0001")."""
    return 6 * max_content_bytes + 1024


def read_timeout(ping_interval: int, ping_timeout: int) -> int:
    """Seconds nginx waits for a backend's next WebSocket frame: longer than daphne leaves an
    idle socket silent (it pings after ping_interval and drops it after ping_timeout more)."""
    return max(_MIN_READ_TIMEOUT, 2 * (ping_interval + ping_timeout))


def validate(options: Options) -> None:
    """Raises ValueError naming the first argument nginx could not take as it is."""
    if not options.backends:
        raise ValueError("at least one --backend HOST:PORT is needed")
    for backend in options.backends:
        if not _BACKEND.match(backend) or not 0 < int(backend.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"--backend {backend!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
    if len(set(options.backends)) != len(options.backends):
        raise ValueError("each --backend may be given once")
    if not _LISTEN.match(options.listen) or not 0 < int(options.listen.rsplit(":", 1)[-1]) < 65536:
        raise ValueError(f"--listen {options.listen!r}: expected PORT or HOST:PORT")
    for name, value in (
        ("--static-root", options.static_root),
        ("--access-log", options.access_log),
        ("--error-log", options.error_log),
        ("--tls-certificate", options.tls_certificate),
        ("--tls-key", options.tls_key),
    ):
        if value is not None and not _PATH.match(value):
            raise ValueError(f"{name} {value!r}: no spaces, quotes, ';', '{{', '}}', '#' or '$'")
    if (options.tls_certificate is None) != (options.tls_key is None):
        raise ValueError("--tls-certificate and --tls-key go together")


def arguments(options: Options) -> str:
    """The command line that makes this configuration (written into its header)."""
    parts = [f"--backend {backend}" for backend in options.backends]
    parts.append(f"--listen {options.listen}")
    if options.static_root:
        parts.append(f"--static-root {options.static_root}")
    if options.access_log != Options.access_log:
        parts.append(f"--access-log {options.access_log}")
    if options.error_log != Options.error_log:
        parts.append(f"--error-log {options.error_log}")
    if options.tls_certificate:
        parts.append(f"--tls-certificate {options.tls_certificate} --tls-key {options.tls_key}")
    return " ".join(parts)


def render(options: Options) -> str:
    """The complete nginx configuration for these options and the current settings."""
    validate(options)
    serve = settings.SERVE
    max_content_bytes = settings.COLLAB["MAX_CONTENT_BYTES"]
    source = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    template = Engine(autoescape=False).from_string(source)
    return template.render(
        Context(
            {
                "arguments": arguments(options),
                "backends": options.backends,
                "listen": options.listen,
                "static_root": (options.static_root or "").rstrip("/"),
                "access_log": options.access_log,
                "error_log": options.error_log,
                "tls_certificate": options.tls_certificate,
                "tls_key": options.tls_key,
                "max_content_bytes": max_content_bytes,
                "client_max_body_size": max_request_body(max_content_bytes),
                "ping_interval": serve["PING_INTERVAL"],
                "ping_timeout": serve["PING_TIMEOUT"],
                "read_timeout": read_timeout(serve["PING_INTERVAL"], serve["PING_TIMEOUT"]),
            },
            autoescape=False,
        )
    )
