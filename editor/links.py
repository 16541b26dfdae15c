"""Share links: a URL the owner hands out (/s/<token>/) that gives whoever opens it a role in one
document, until the owner revokes it.

Someone logged in who opens a link becomes a member with the link's role, remembered as coming
through that link (``Membership.link``), so the page, the API and the socket all apply the one
role rule as for any member; revoking the link deletes those memberships, and the membership
signals close their open sockets at once. A member the owner added keeps their own role.

A link that ``anyone`` may open also lets people who are not logged in read the document: the
link's token is kept in their session, and they are a guest (``Guest``): a viewer with no account,
whose page and socket ask the session for the link each time, so a revoke closes them too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction

from editor.access import best_role, link_role, may_view
from editor.models import Document, Membership, ShareLink

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.base import SessionBase

# session key → {document id: link token} of the "anyone" links this browser opened
SESSION_KEY = "share_links"


@dataclass(frozen=True, slots=True)
class Guest:
    """Someone reading through an "anyone" link without an account. Their id is negative (no
    account has one) and derived from the session, so one browser keeps one name colour and
    one rate budget, and two guests never share them."""

    pk: int
    username: str
    full_name: str = "Guest"

    @classmethod
    def of(cls, session_key: str) -> Guest:
        digest = hashlib.blake2b(session_key.encode(), digest_size=6).digest()
        return cls(pk=-1 - int.from_bytes(digest, "big"), username=f"guest-{digest.hex()[:6]}")

    is_authenticated = False

    def get_username(self) -> str:
        return self.username

    def get_full_name(self) -> str:
        return self.full_name

    def __str__(self) -> str:
        return self.username


def live_link(token: str) -> ShareLink | None:
    """The link with this token, or None once revoked (or never made)."""
    return ShareLink.objects.filter(token=token).select_related("document").first()


def open_link(link: ShareLink, user: User | None, session: SessionBase) -> str | None:
    """Gives whoever opened the link its access: a member for someone logged in (``user``), the
    session's guest access for anyone else when the link allows it. Returns the role they now
    have in the document (None: this link is not for people who are not logged in)."""
    role = link_role(link.role, link.anyone)
    document = link.document
    if user is None:
        if not link.anyone:
            return None
        session[SESSION_KEY] = {**session.get(SESSION_KEY, {}), str(document.pk): link.token}
        return role
    if user.pk == document.owner_id:
        return document.role_of(user)
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update().filter(document=document, user=user).first()
        )
        if membership is None:
            try:
                with transaction.atomic():
                    Membership.objects.create(document=document, user=user, role=role, link=link)
            except IntegrityError:  # opened twice at once: the other request made it
                pass
            return role
        if membership.link_id is not None and best_role(membership.role, role) != membership.role:
            # Access through an older link grows with a better one; one the owner gave stays.
            membership.role, membership.link = role, link
            membership.save(update_fields=["role", "link"])
        return membership.role


def guest_role(session: SessionBase | Any, document_id: str) -> tuple[str | None, str | None]:
    """The role the session's "anyone" link gives in the document, and that link's token;
    (None, None) when it has none, or the link was revoked."""
    tokens = session.get(SESSION_KEY, {}) if session is not None else {}
    token = tokens.get(str(document_id))
    if not token:
        return None, None
    link = ShareLink.objects.filter(token=token, document_id=document_id, anyone=True).first()
    if link is None:
        return None, None
    role = link_role(link.role, link.anyone)
    return (role, token) if may_view(role) else (None, None)


def guest_role_by_token(document_id: str, token: str) -> str | None:
    """``guest_role`` for a socket that remembers its link's token: None once revoked."""
    link = ShareLink.objects.filter(token=token, document_id=document_id, anyone=True).first()
    return link_role(link.role, link.anyone) if link is not None else None


def viewable_as_guest(session: SessionBase, document_id: Any) -> tuple[Document, str] | None:
    """The document and the guest's role, when the session holds a live link to it."""
    role, _ = guest_role(session, str(document_id))
    if role is None:
        return None
    document = Document.objects.filter(pk=document_id).first()
    return (document, role) if document is not None else None
