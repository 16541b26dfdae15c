"""Settings for collab, read from the environment (see the table in README.md).

Defaults run on a laptop: DEBUG on, SQLite under var/, and a Redis URL that the run and test
commands fill in with an embedded Valkey server when REDIS_URL is unset.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from collab.env import (
    env_addresses,
    env_bool,
    env_choice,
    env_float,
    env_gc_thresholds,
    env_int,
    env_list,
    env_redis_urls,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("COLLAB_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)

# A development key is acceptable only while DEBUG is on; production must bring its own.
_DEV_SECRET_KEY = "django-insecure-collab-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY and env_str("SECRET_KEY_FILE"):
    # The key kept in a file (docker/entrypoint.sh makes one in compose's volume): read here
    # too, so `docker compose exec app1 python manage.py ...` finds it without the entry point.
    _key_file = Path(env_str("SECRET_KEY_FILE"))
    if _key_file.is_file():
        SECRET_KEY = _key_file.read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off collab refuses to start without one: "
            'generate it with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for DEBUG off: use at least 32 random characters."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is empty. With DEBUG off, list the host names collab is served on, "
        "e.g. ALLOWED_HOSTS=docs.example.com"
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "editor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early, so that every response gets the policy, the lockout page included.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a login refused for too many failures into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "collab.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "collab.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'collab.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DATABASE_POOL", True
):
    # A psycopg connection pool. Without one, every burst of work on a process's ORM thread
    # (a batch of updates, a socket's ticket check) opened a new PostgreSQL connection: a
    # quarter of a busy server's CPU (docs/BENCHMARKS.md). Persistent connections
    # (CONN_MAX_AGE) are no substitute under ASGI, where requests run in threads of their own.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN", 1),
        "max_size": env_int("DATABASE_POOL_MAX", 10),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A file, not Django's in-memory default, so live tests' server processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    # WAL lets page reads go on while the sync core writes; the timeout rides out short locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis carries the channel layer and presence. Empty means "not configured": `manage.py serve`
# and the test suite then start an embedded Valkey server and pass its URL to the processes
# they start (collab/embedded.py). Several comma-separated URLs are shards: channels-redis puts
# each document's group on one of them by a hash of its name, and presence keeps a document's
# keys on that same shard. Every process must list the same servers in the same order
# (docs/architecture.md, "Beyond one Redis").
REDIS_URL = env_str("REDIS_URL")
# Or Redis Sentinel: the sentinels' host:port list, and the name of the master they watch (a
# comma-separated list of names makes one shard per master). The password, if any, is the
# Redis servers'; the sentinels themselves are asked without one.
REDIS_SENTINELS = env_addresses("REDIS_SENTINELS", default_port=26379)
_SENTINEL_MASTERS = env_list("REDIS_SENTINEL_MASTER", [])
REDIS_HOSTS: list[str | dict[str, Any]]
if REDIS_SENTINELS or _SENTINEL_MASTERS:
    if not (REDIS_SENTINELS and _SENTINEL_MASTERS):
        raise ImproperlyConfigured(
            "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: the sentinels' host:port "
            "list and the name of the master they watch."
        )
    if REDIS_URL:
        raise ImproperlyConfigured("Set REDIS_URL or REDIS_SENTINELS, not both.")
    _sentinel_password = env_str("REDIS_SENTINEL_PASSWORD")
    # The host entries channels-redis documents for Sentinel; presence reads the same ones.
    REDIS_HOSTS = [
        {
            "sentinels": REDIS_SENTINELS,
            "master_name": master,
            "db": env_int("REDIS_SENTINEL_DB", 0),
            # A sentinel that does not answer must not hold up the discovery of the master.
            "sentinel_kwargs": {"socket_connect_timeout": 2, "socket_timeout": 2},
            **({"password": _sentinel_password} if _sentinel_password else {}),
        }
        for master in _SENTINEL_MASTERS
    ]
else:
    REDIS_HOSTS = list(env_redis_urls("REDIS_URL")) or ["redis://127.0.0.1:6379/0"]
# Presence keys live in the channel layer's Redis servers (its hosts), under this prefix.
PRESENCE_PREFIX = env_str("PRESENCE_PREFIX", "collab:presence")


try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis-py before 7.1 reads its own version once, when it is imported
    REDIS_CONNECTION_OPTIONS: dict[str, Any] = {}
else:
    # redis-py 7.1+ reads its version from the installed package's metadata (importlib.metadata
    # parses the METADATA file) in every new connection's constructor, unless given the driver
    # information: about 1 ms of the event loop per connection, which a reconnect storm pays
    # for every presence read the pool has no idle connection for (docs/BENCHMARKS.md, change
    # 22). The same information, read once; presence's pools take it too.
    REDIS_CONNECTION_OPTIONS = {"driver_info": DriverInfo()}


def _speaking_resp2(host: str | dict[str, Any]) -> dict[str, Any]:
    """A channel-layer host entry whose connections speak RESP2. redis-py 8 speaks RESP3 by
    default, and its RESP3 pub/sub reader turns every message it receives into a debug string
    before it knows whether debug is logged (redis-py issue 4230, unreleased fix): ``str()`` of
    a 16 MB update held the event loop for about 100 ms, and every update paid in proportion.
    Channels-redis reads an ``address`` entry with extra options (its documented form); presence
    makes its pools from the same entries."""
    if isinstance(host, str):
        return {"address": host, "protocol": 2, **REDIS_CONNECTION_OPTIONS}
    return {**host, "protocol": 2, **REDIS_CONNECTION_OPTIONS}


# Always channels-redis, never the in-memory layer, so development, tests and production share
# one code path. The pub/sub layer keeps one subscription per process (docs/architecture.md).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [_speaking_resp2(host) for host in REDIS_HOSTS],
            "prefix": env_str("CHANNEL_PREFIX", "collab"),
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Failed logins (the login form, the admin's, POST /api/auth/token/) are counted by django-axes
# per username and, separately, per client address (REMOTE_ADDR: the proxy's X-Forwarded-For
# when PROXY_HEADERS is on). Once either reaches the limit, logins for that username or from
# that address are refused with 429 for the cool-off, correct password or not; each refused
# attempt starts the cool-off again. Counts live in the database (shared by every process,
# emptied with the test database; `manage.py axes_reset_username NAME` / `axes_reset_ip ADDR`
# lift a lock). Known trade-off: anyone can lock a known username out for a while; sessions
# and API tokens already issued keep working.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF", 15 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "editor.views.login_locked_out"
AXES_USERNAME_CALLABLE = "editor.logins.username_of"
AXES_DISABLE_ACCESS_LOG = True  # successful logins need no table of their own

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "document-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]

# Images pasted or dropped into documents (editor/images.py): a folder under MEDIA_ROOT, or an
# S3-compatible bucket (IMAGE_STORAGE=s3, through django-storages: pip install 'collab[s3]').
# Either way they are served only by collab itself, which checks that the person may view the
# document on every request (editor/image_views.py); there is no public media URL.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
IMAGE_STORAGE = env_choice("IMAGE_STORAGE", ("local", "s3"), "local")
_IMAGES: dict[str, Any] = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": MEDIA_ROOT / "images"},
}
if IMAGE_STORAGE == "s3":
    from importlib.util import find_spec

    if find_spec("storages") is None or find_spec("boto3") is None:
        raise ImproperlyConfigured(
            "IMAGE_STORAGE=s3 needs django-storages and boto3: pip install 'collab[s3]'"
        )
    if not env_str("AWS_STORAGE_BUCKET_NAME"):
        raise ImproperlyConfigured("IMAGE_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME.")
    # Credentials are not settings: boto3 reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or
    # a profile, or an instance role) itself. Objects keep the bucket's default ACL (private);
    # collab reads them back with its own credentials and streams them, so no URL of the
    # bucket ever reaches a browser.
    _IMAGES = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "location": env_str("IMAGE_S3_PREFIX", "images"),
            "default_acl": None,
            "file_overwrite": False,
        },
    }
# Largest image accepted, in bytes (413 beyond), and most pixels (400 beyond): an image's
# pixels are never decoded on the server, but every browser showing it will decode them.
MAX_IMAGE_BYTES = env_int("MAX_IMAGE_BYTES", 10 * 1024 * 1024)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 64_000_000)

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
    "images": _IMAGES,
}
# Serve straight from static/ while developing, so nothing needs collecting after an edit.
WHITENOISE_USE_FINDERS = DEBUG

# Behind nginx (docker/), TLS ends at the proxy; it tells us the scheme with this header.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Behind TLS: redirect plain HTTP to HTTPS, and tell browsers to use HTTPS only for this long.
# /healthz stays reachable over plain HTTP for the container's own health check, and
# /metrics for Prometheus, which scrapes each process directly.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
# includeSubDomains and preload bind every host of the parent domain, a decision for whoever
# owns it rather than for one application on it: collab sends neither, and says so here.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

# Content-Security-Policy on every response (django-csp): scripts, styles and everything else
# from our own origin only, no inline script or style, no plugins, no framing. One exception:
# the editor's page allows inline styles, for CodeMirror (editor/views.py, document_detail).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # data: for the small icons Swagger UI (/api/docs/) and the admin inline in CSS.
        "img-src": [SELF, "data:"],
        # 'self' covers ws:// and wss:// to the page's own host and port.
        "connect-src": [SELF],
        # The service worker (/sw.js, editor/offline_views.py); script-src would allow it too.
        "worker-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "editor.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "editor.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema (/api/schema/) and its docs (/api/docs/), with the UI served from the
# sidecar package so it works without internet access.
SPECTACULAR_SETTINGS = {
    "TITLE": "collab API",
    "DESCRIPTION": "Documents, members, live content and versions (docs/api.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "editor.models.Role",
        "ShareableRoleEnum": "editor.api.serializers.SHAREABLE_CHOICES",
    },
}

# Readable lines (text), or one JSON object a line (json) for a log collector: the format of
# every logger, Django's and daphne's (its access log too) included (collab/logs.py).
LOG_FORMAT = env_choice("LOG_FORMAT", ("text", "json"), "text")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "collab.logs.JSONFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    # One handler, on the root: daphne's basicConfig() would add a second one, and handlers on
    # our own loggers as well would print every line twice.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "collab": {"level": env_str("LOG_LEVEL", "INFO")},
        "editor": {"level": env_str("LOG_LEVEL", "INFO")},
        "daphne": {"level": "INFO"},
        # Named so that Django's own handler on it goes: in DEBUG it printed each of its lines
        # a second time, bare (and not as JSON); the root's handler prints them.
        "django": {"level": "INFO"},
        # django-axes logs two or three lines per failed login; collab logs one per refusal
        # (editor.auth), and axes only its errors.
        "axes": {"level": "ERROR"},
    },
}


# How long /healthz waits for each dependency before calling it down.
HEALTHCHECK_TIMEOUT = 2.0

# GET /metrics (editor/metrics_view.py) answers loopback and private-network clients, and
# anyone sending "Authorization: Bearer <this>" when it is set (a scraper outside them).
METRICS_TOKEN = env_str("METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN is too short: use at least 16 random characters.")

# An event-loop stall or a garbage collection at least this long (milliseconds; 0: never) is
# logged as a warning with its length ("event loop stalled", "garbage collection paused"): while
# it lasts every socket of the process waits. The loop is looked at every
# STALL_PROBE_INTERVAL_MS (editor/metrics.py): a stall is seen to within that.
STALL_WARNING_MS = env_int("STALL_WARNING_MS", 100)
STALL_PROBE_INTERVAL_MS = env_int("STALL_PROBE_INTERVAL_MS", 50)
if STALL_PROBE_INTERVAL_MS < 1:
    raise ImproperlyConfigured("STALL_PROBE_INTERVAL_MS must be at least 1.")


# Largest document text (UTF-8 bytes) the REST API writes; larger answers 413.
_MAX_CONTENT_BYTES = env_int("MAX_CONTENT_BYTES", 16 * 1024 * 1024)
# Largest frame a client may send; larger ones are refused with 4413 and a reason. It was 1 MiB,
# which made any paste over 1 MiB impossible to save while documents may hold 16 MiB: a single
# update the size of the largest document, plus its framing, must fit.
_MAX_INCOMING_FRAME = env_int("WS_MAX_INCOMING_FRAME", _MAX_CONTENT_BYTES + 64 * 1024)


class ServeOptions(TypedDict):
    """SERVE's keys and types, for mypy; not a setting (Django reads upper-case names only)."""

    PING_INTERVAL: int
    PING_TIMEOUT: int
    MAX_MESSAGE_SIZE: int
    PROXY_HEADERS: bool
    EAGER_WRITES: bool
    SHARED_PROTOCOL_OPTIONS: bool
    QUIET_HANDSHAKE: bool
    RAW_FRAMES: bool
    GC_FREEZE: bool
    LEAN_LOG_RECORDS: bool
    LEAN_SOCKETS: bool
    SPREAD_CHECKS: bool
    DIRECT_UPGRADES: bool
    DIRECT_HANDSHAKES: bool
    DIRECT_FRAMES: bool
    FAST_FRAMES: bool
    TURN_BUDGET: float
    EAGER_WORK: bool
    GC_THRESHOLDS: tuple[int, int, int] | None
    HEADER_TIMEOUT: float
    EVENT_LOOP: str


_TURN_BUDGET_MS = env_int("WS_TURN_BUDGET_MS", 10)
if _TURN_BUDGET_MS < 0:
    raise ImproperlyConfigured(
        f"WS_TURN_BUDGET_MS must be 0 (no cap) or more milliseconds, not {_TURN_BUDGET_MS}"
    )

# Options for daphne, passed by `manage.py serve` (the one place the server is started from).
SERVE: ServeOptions = {
    # Seconds a WebSocket may be idle before daphne pings it, and before an unanswered ping
    # closes it: dead sockets are found within PING_INTERVAL + PING_TIMEOUT.
    "PING_INTERVAL": env_int("WS_PING_INTERVAL", 20),
    "PING_TIMEOUT": env_int("WS_PING_TIMEOUT", 30),
    # daphne's cap on one incoming WebSocket message (and frame), applied before collab sees a
    # byte: an unfinished message is held in memory up to it. daphne's own default (1 MiB) is
    # below collab's frame limit; 64 MiB (what it was) let 10 sockets each holding an unfinished
    # 60 MiB frame cost 600 MB. An eighth above collab's limit (at least 64 KiB), so a change
    # somewhat over the limit (the usual case: a paste a little too big) still reaches collab
    # and is refused with 4413 and a reason the client can show; autobahn drops anything
    # larger as soon as its header announces it.
    "MAX_MESSAGE_SIZE": env_int(
        "WS_SERVER_MAX_MESSAGE_SIZE", _MAX_INCOMING_FRAME + max(64 * 1024, _MAX_INCOMING_FRAME // 8)
    ),
    "PROXY_HEADERS": env_bool("PROXY_HEADERS", True),
    # Socket writes go out at once instead of on the reactor's next turn (collab/transport.py).
    "EAGER_WRITES": env_bool("WS_EAGER_WRITES", True),
    # autobahn's per-socket options live on the protocol class (collab/transport.py).
    "SHARED_PROTOCOL_OPTIONS": env_bool("WS_SHARED_PROTOCOL_OPTIONS", True),
    # autobahn's per-connection debug formatting only when debug lines are logged.
    "QUIET_HANDSHAKE": env_bool("WS_QUIET_HANDSHAKE", True),
    # Document messages are framed once and written straight to daphne's sockets.
    "RAW_FRAMES": env_bool("WS_RAW_FRAMES", True),
    # Objects loaded at start-up are frozen out of the garbage collector (collab/asgi.py).
    "GC_FREEZE": env_bool("GC_FREEZE", True),
    # Log records skip the caller, thread and process look-ups no handler shows (collab/logs.py).
    "LEAN_LOG_RECORDS": env_bool("LOG_LEAN_RECORDS", True),
    # What a socket's handshake left behind is let go once it is open (collab/lean.py).
    "LEAN_SOCKETS": env_bool("WS_LEAN_SOCKETS", True),
    # daphne's timeout checks (and the pings they send) a slice at a time (collab/spread.py).
    "SPREAD_CHECKS": env_bool("WS_SPREAD_CHECKS", True),
    # A WebSocket upgrade request goes straight to autobahn, parsed once (collab/upgrade.py).
    "DIRECT_UPGRADES": env_bool("WS_DIRECT_UPGRADES", True),
    # Such a request's opening handshake is read in one pass when plain (collab/handshake.py).
    "DIRECT_HANDSHAKES": env_bool("WS_DIRECT_HANDSHAKES", True),
    # An open socket's frames go to its connection as the server hands them over, not a turn
    # of the event loop later through the consumer's queue (editor/realtime/consumer.py).
    "DIRECT_FRAMES": env_bool("WS_DIRECT_FRAMES", True),
    # A socket's small, whole binary frames skip autobahn's parser (collab/frames.py).
    "FAST_FRAMES": env_bool("WS_FAST_FRAMES", True),
    # Seconds of socket callbacks after which a turn of the event loop leaves the sockets still
    # ready to the next turn, so that timers and waiting tasks run between (collab/turns.py): a
    # close storm's turns of 33-72 ms became 14-35 ms. 0: no cap, every ready socket each turn.
    "TURN_BUDGET": _TURN_BUDGET_MS / 1000,
    # A frame's work (apply, pass on) runs in the turn of the event loop that read it, up to its
    # first wait, not after every other frame of that turn (editor/realtime/connection.py): a
    # tenth to a seventh off the throughput mode's latency p50 (docs/BENCHMARKS.md, changes 52
    # and 53). Off, a frame's work is a task of its own, as before.
    "EAGER_WORK": env_bool("WS_EAGER_WORK", True),
    # The collector's thresholds (gc.set_threshold), set at load (collab/asgi.py); "python":
    # Python's own 700,10,10.
    "GC_THRESHOLDS": env_gc_thresholds("GC_THRESHOLDS", (5_000, 0, 460)),
    # Seconds a client has to send its first request head before its connection is dropped
    # (collab/transport.py); 0: no deadline. A WebSocket upgrade comes after the head.
    "HEADER_TIMEOUT": env_float("HTTP_HEADER_TIMEOUT", 20.0),
    # The event loop under daphne's Twisted reactor (collab/eventloop.py): uvloop's, or
    # asyncio's own; uvloop falls back to asyncio's, with a warning, where it cannot run.
    "EVENT_LOOP": env_choice("EVENT_LOOP", ("uvloop", "asyncio"), "uvloop"),
}


class CollabOptions(TypedDict):
    """COLLAB's keys and types, for mypy: inferred from the dict, every number is a float."""

    MAX_CONTENT_BYTES: int
    MAX_INCOMING_FRAME: int
    MAX_SEND_BUFFER: int
    STORE_FLUSH_INTERVAL: float
    STORE_MAX_BATCH: int
    COMPACT_THRESHOLD: int
    ROOM_GRACE: float
    CATCHUP_INTERVAL: float
    LAYER_ONLY_WHEN_SHARED: bool
    TICKET_TTL: int
    PRESENCE_TTL: float
    PRESENCE_FLUSH_INTERVAL: float
    PRESENCE_SWEEP_INTERVAL: float
    PRESENCE_READ_REUSE: float
    RATE_MESSAGES: float
    RATE_MESSAGE_BURST: float
    RATE_BYTES: float
    RATE_BYTE_BURST: float
    MAX_AWARENESS_CLIENTS: int
    MAX_AWARENESS_BYTES: int
    MAX_CONNECTIONS: int
    MAX_CONNECTIONS_PER_USER: int
    AUTO_VERSION_QUIET: float
    AUTO_VERSION_EVERY: float
    AUTH_THREADS: int
    AUTH_TRIP_WAIT: float
    CHECKS_ON_LOOP: bool
    CHECKS_PREPARED: bool


# The sync core (docs/protocol.md, docs/architecture.md). Seconds unless named otherwise.
COLLAB: CollabOptions = {
    "MAX_CONTENT_BYTES": _MAX_CONTENT_BYTES,
    "MAX_INCOMING_FRAME": _MAX_INCOMING_FRAME,
    # Most bytes the server holds for one socket that the client has not read yet (a reader
    # that stopped reading, or reads slower than its document changes). Past it the socket is
    # closed with 4408 and its buffer freed. A frame is always admitted when nothing is queued,
    # so a document larger than this still reaches a client that reads; the default leaves room
    # for the largest update and a burst of typing behind it.
    "MAX_SEND_BUFFER": env_int("WS_MAX_SEND_BUFFER", 2 * _MAX_INCOMING_FRAME),
    # Updates are written in batches: one INSERT for everything received in this window, so
    # an update is durable within ~this + one commit, never one query per keystroke.
    "STORE_FLUSH_INTERVAL": env_float("STORE_FLUSH_INTERVAL", 0.05),
    "STORE_MAX_BATCH": env_int("STORE_MAX_BATCH", 1000),
    # Past this many log rows a document's log is folded into its snapshot.
    "COMPACT_THRESHOLD": env_int("COMPACT_THRESHOLD", 500),
    # A room stays loaded this long after its last local connection leaves.
    "ROOM_GRACE": env_float("ROOM_GRACE", 30.0),
    # Every this often each process re-reads recent log rows of its rooms, to recover group
    # messages the channel layer lost (Redis blips; channels_redis#406).
    "CATCHUP_INTERVAL": env_float("CATCHUP_INTERVAL", 5.0),
    # A room publishes its updates and awareness to the other processes only while another
    # process has the document open too (rooms tell each other when they open and close:
    # editor/realtime/room.py). Behind nginx's routing by document that is seldom: every
    # keystroke was a Redis PUBLISH that came back only to its sender (docs/BENCHMARKS.md,
    # change 48). Off: every room publishes everything, as before.
    "LAYER_ONLY_WHEN_SHARED": env_bool("LAYER_ONLY_WHEN_SHARED", True),
    # Lifetime of a WebSocket ticket from POST /api/documents/<id>/ticket/.
    "TICKET_TTL": env_int("WS_TICKET_TTL", 300),
    # Presence (editor/realtime/presence.py): a client's awareness state counts as present for
    # PRESENCE_TTL after its last message (clients renew every 15 s); renewals are written to
    # Redis in batches every PRESENCE_FLUSH_INTERVAL; each process sweeps expired entries every
    # PRESENCE_SWEEP_INTERVAL, so a dead process's users vanish within TTL + sweep.
    "PRESENCE_TTL": env_float("PRESENCE_TTL", 30.0),
    "PRESENCE_FLUSH_INTERVAL": env_float("PRESENCE_FLUSH_INTERVAL", 0.5),
    "PRESENCE_SWEEP_INTERVAL": env_float("PRESENCE_SWEEP_INTERVAL", 5.0),
    # A socket that joins is sent everyone's presence as its room last read it from Redis, with
    # this process's clients' changes since, if that read is younger than this and no other
    # process's awareness has come through the room since; otherwise Redis is read again. A join
    # storm then reads a document's presence about once a second, not once per trip of joiners
    # (docs/BENCHMARKS.md, change 59). 0: every joiner's own read.
    "PRESENCE_READ_REUSE": env_float("PRESENCE_READ_REUSE", 1.0),
    # Token buckets on what one socket sends (editor/realtime/limits.py): messages and bytes
    # per second, with bursts; a user's sockets in one process share twice that. Past either,
    # the socket is closed with 4429. Typing sends 10-30 messages a second (updates and
    # cursors); a paste or an offline batch is one large message, and a reconnect's handshake
    # may carry the whole document twice, hence bursts of four frames' worth of bytes.
    "RATE_MESSAGES": env_float("WS_RATE_MESSAGES", 200.0),
    "RATE_MESSAGE_BURST": env_float("WS_RATE_MESSAGE_BURST", 2000.0),
    "RATE_BYTES": env_float("WS_RATE_BYTES", 8 * 1024 * 1024),
    "RATE_BYTE_BURST": env_float("WS_RATE_BYTE_BURST", 4 * _MAX_INCOMING_FRAME),
    # Awareness: client ids one socket may speak for (a tab has one; a reconnect may bring a
    # second), and the largest state (JSON bytes) relayed to everyone.
    "MAX_AWARENESS_CLIENTS": env_int("WS_MAX_AWARENESS_CLIENTS", 8),
    "MAX_AWARENESS_BYTES": env_int("WS_MAX_AWARENESS_BYTES", 64 * 1024),
    # Sockets one process serves, in all and per user (0: no cap). Past either, a socket is
    # accepted, told why, and closed with 1013 "try again later". A process holds 10,000 idle
    # sockets in about 300 MB (docs/BENCHMARKS.md); `manage.py serve` raises the open-files
    # limit to match. Per user: tabs and scripts of one account; per process, not cluster-wide.
    "MAX_CONNECTIONS": env_int("WS_MAX_CONNECTIONS", 20_000),
    "MAX_CONNECTIONS_PER_USER": env_int("WS_MAX_CONNECTIONS_PER_USER", 200),
    # Automatic versions (editor/autoversions.py): taken once a document's text has not changed
    # for AUTO_VERSION_QUIET seconds, at least every AUTO_VERSION_EVERY seconds while it keeps
    # changing (0: no such ceiling), and ROOM_GRACE seconds after its last editor leaves unless
    # one comes back first. A quiet period of 0 turns automatic versions off.
    "AUTO_VERSION_QUIET": env_float("AUTO_VERSION_QUIET_SECONDS", 120.0),
    "AUTO_VERSION_EVERY": env_float("AUTO_VERSION_EVERY_SECONDS", 600.0),
    # Threads that check sockets as they connect (the session, the ticket, the role: one or two
    # queries each). On the process's one ORM thread they queued behind one another, a query
    # round trip each: that queue, not the CPU, capped connects (docs/BENCHMARKS.md, change 15).
    # Each holds a database connection while it works: keep it under DATABASE_POOL_MAX.
    "AUTH_THREADS": env_int("WS_AUTH_THREADS", 4),
    # While a trip of socket checks is out on a check thread, the checks asked meanwhile wait
    # for it to come back and go together on the next trip, unless it has been out this long;
    # then they go on another thread. Fewer, fuller trips: a tenth (ticket sockets) to a fifth
    # (session cookies) less server CPU per connect in a connect storm (docs/BENCHMARKS.md,
    # change 49). 0: every turn's checks go at once.
    "AUTH_TRIP_WAIT": env_float("WS_AUTH_TRIP_WAIT_MS", 20.0) / 1000,
    # On PostgreSQL, ticket sockets and logged-in session cookies are checked on the event loop,
    # their queries sent through an asynchronous connection of the loop's own, instead of a trip
    # to a check thread: a sixth of collab's own CPU per ticket socket, an eighth per cookie
    # socket (editor/realtime/auth.py, docs/BENCHMARKS.md, changes 66 and 80). Guests, any
    # other socket, or any failure take the check threads as before.
    "CHECKS_ON_LOOP": env_bool("WS_CHECKS_ON_LOOP", True),
    # The socket checks' few fixed queries, on the event loop and on the check threads, are sent
    # as prepared statements: PostgreSQL plans each once per connection, not on every trip
    # (docs/BENCHMARKS.md, change 67). Off for a pooler that cannot keep prepared statements
    # (PgBouncer before 1.21 in transaction mode); Django's own queries are left as Django sets
    # them either way (by default: bound by the client, never prepared).
    "CHECKS_PREPARED": env_bool("WS_CHECKS_PREPARED", True),
}
if COLLAB["AUTH_THREADS"] < 1:
    raise ImproperlyConfigured("WS_AUTH_THREADS must be at least 1.")
if not 0 <= COLLAB["AUTH_TRIP_WAIT"] < float("inf"):
    raise ImproperlyConfigured("WS_AUTH_TRIP_WAIT_MS must be a number of milliseconds, 0 or more.")
