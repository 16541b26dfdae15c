"""Signed, short-lived WebSocket tickets for clients that have no session cookie.

A ticket names one user and one document and is signed with SECRET_KEY (Django's signing, so no
table and no Redis round trip). It stays valid until it expires, so a client can reconnect with
the same ticket; it is useless for any other document or after TICKET_TTL seconds.
"""

import uuid
from dataclasses import dataclass

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
