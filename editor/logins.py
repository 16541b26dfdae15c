"""Logins refused for too many failures: what the person is told and the one log line.

django-axes counts the failures and refuses (settings, ``AXES_*``); the login page
(``editor.views.login_locked_out``) and ``POST /api/auth/token/`` both answer with this.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger("editor.logins")


# django-axes keeps usernames in a 255-character column: a longer one (no account has one;
# usernames stop at 150) failed to save on PostgreSQL, a 500 instead of "wrong password".
_USERNAME_CHARS = 255


def username_of(request: Any, credentials: dict[str, Any] | None) -> str | None:
    """The username a login attempt is counted under (``AXES_USERNAME_CALLABLE``): what the
    credentials or the posted form name, cut to what django-axes can store."""
    if credentials:
        username = credentials.get("username")
    else:
        username = getattr(request, "data", request.POST).get("username")
    return None if username is None else str(username)[:_USERNAME_CHARS]


def cooloff_seconds() -> int:
    """How long a lock lasts after the last refused attempt."""
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def refuse(request: HttpRequest, username: str | None) -> str:
    """Logs the refusal and returns the message to show."""
    logger.warning(
        "login refused: too many failed attempts username=%r address=%s path=%s",
        username,
        request.META.get("REMOTE_ADDR"),
        request.path,
    )
    minutes = max(1, math.ceil(cooloff_seconds() / 60))
    return (
        "Too many failed logins for this account or from your address, so logging in is "
        f"paused. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
