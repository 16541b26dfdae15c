"""Signed, short-lived WebSocket tickets for clients that have no session cookie.

A ticket names one user and one document and is signed with SECRET_KEY (Django's signing, so no
table and no Redis round trip). It stays valid until it expires, so a client can reconnect with
the same ticket; it is useless for any other document or after TICKET_TTL seconds.
"""

import functools
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from django.conf import settings
from django.core import signing

_SALT = "collab.realtime.ticket"


@dataclass(frozen=True)
class Ticket:
    user_id: int
    document_id: str


class TicketError(Exception):
    """The ticket is forged, malformed or expired; the message says which for the log."""


def issue(user_id: int, document_id: uuid.UUID | str) -> tuple[str, int]:
    """Returns a ticket for this user and document, and its lifetime in seconds."""
    ttl = settings.COLLAB["TICKET_TTL"]
    token = signing.dumps({"u": user_id, "d": str(document_id)}, salt=_SALT, compress=False)
    return token, ttl


def read(token: str) -> Ticket:
    try:
        payload = signing.loads(token, salt=_SALT, max_age=settings.COLLAB["TICKET_TTL"])
    except signing.SignatureExpired as exc:
        raise TicketError("ticket expired") from exc
    except signing.BadSignature as exc:
        raise TicketError("ticket signature invalid") from exc
    try:
        return Ticket(user_id=int(payload["u"]), document_id=str(payload["d"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise TicketError("ticket payload malformed") from exc


# Query strings up to this long are remembered by ``in_query`` (a ticket's is about 150 bytes);
# longer ones are parsed each time, so the cache holds at most about 128 KB of them.
_REMEMBERED_QUERY = 512


def in_query(query_string: bytes) -> str | None:
    """The ticket a socket's query string carries (``?ticket=…``), or None. The middleware
    (collab/middleware.py) and the socket check (editor/realtime/auth.py) each ask while the
    socket connects, the check twice: the string is parsed once, and the answer kept for the
    next few hundred sockets' asking (docs/BENCHMARKS.md, change 72)."""
    if len(query_string) > _REMEMBERED_QUERY:
        return _parsed(query_string)
    return _remembered(query_string)


def _parsed(query_string: bytes) -> str | None:
    return parse_qs(query_string.decode("latin1")).get("ticket", [None])[0]


_remembered = functools.lru_cache(maxsize=256)(_parsed)
