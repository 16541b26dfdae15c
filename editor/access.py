"""The one access policy: every "may this role do X" question in collab is answered here, from
a role. Pages, forms, the API, the admin and the WebSocket consumer all ask these functions; no
other module compares role names.

| role    | view | edit | manage (share, delete) |
|---------|------|------|------------------------|
| owner   | yes  | yes  | yes                    |
| editor  | yes  | yes  | no                     |
| viewer  | yes  | no   | no                     |
| nobody  | no   | no   | no                     |

Where a role comes from is here too (``role_from``): the owner of a document is always its
owner, anyone else has their membership's role, or none.

Callers turn "cannot view" into 404, never 403, so a stranger learns nothing about a document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.http import Http404

if TYPE_CHECKING:
    from editor.models import Document


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"


# Roles a member can be given from the share page; ownership is not handed out there.
SHAREABLE_ROLES = (Role.EDITOR, Role.VIEWER)

_VIEW = frozenset({Role.OWNER, Role.EDITOR, Role.VIEWER})
_EDIT = frozenset({Role.OWNER, Role.EDITOR})
_MANAGE = frozenset({Role.OWNER})


def may_view(role: str | None) -> bool:
    """Whether someone with this role (None: no access) may read the document."""
    return role in _VIEW


def may_edit(role: str | None) -> bool:
    """Whether someone with this role may change the document's text and versions."""
    return role in _EDIT


def may_manage(role: str | None) -> bool:
    """Whether someone with this role may share, rename away from others, or delete."""
    return role in _MANAGE


def role_from(user_id: object, owner_id: object, member_role: str | None) -> str | None:
    """The role rule itself, from what a query read: the owner (``owner_id``; None when there is
    no such document) is always owner; anyone else has their membership's role, or none."""
    if owner_id is None:
        return None
    if user_id == owner_id:
        return Role.OWNER
    return member_role


def can_view(user, document: Document) -> bool:
    return may_view(document.role_of(user))


def can_edit(user, document: Document) -> bool:
    return may_edit(document.role_of(user))


def can_manage(user, document: Document) -> bool:
    return may_manage(document.role_of(user))


def get_viewable_document(user, document_id) -> tuple[Document, str]:
    """Returns the document and the user's role, or raises Http404 for anyone without access."""
    from editor.models import Document

    document = Document.objects.filter(pk=document_id).select_related("owner").first()
    role = document.role_of(user) if document else None
    if document is None or role is None or not may_view(role):
        raise Http404("No such document.")
    return document, role
