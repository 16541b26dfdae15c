"""The one access policy: every "may this role do X" question in collab is answered here, from
a role. Models, pages, forms, the API and the WebSocket consumer all ask these functions; no
other module compares role names.

| role    | view (text, images) | edit (text, title, versions, images) | manage (members, delete) |
|---------|---------------------|--------------------------------------|--------------------------|
| owner   | yes                 | yes                                  | yes                      |
| editor  | yes                 | yes                                  | no                       |
| viewer  | yes                 | no                                   | no                       |
| nobody  | no                  | no                                   | no                       |

Where a role comes from is here too: the owner of a document is always its owner, anyone else
has their membership's role, or none. ``role_from`` applies that rule to values a query read,
``with_roles`` writes the same rule in SQL for a list of documents (tests/test_access.py checks
that the two agree).

Callers turn "cannot view" into an answer that is the same whether or not the document exists,
so a stranger learns nothing about it: 404 in the API, and the document page's "You need access"
(403, with a way to ask the owner; editor/link_views.py) for someone logged in.

Share links (editor/links.py) grant a role too: ``link_role`` says which, ``best_role`` which of
two roles allows more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models
from django.db.models import Case, OuterRef, QuerySet, Subquery, Value, When
from django.http import Http404

if TYPE_CHECKING:
    from uuid import UUID

    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    from editor.models import Document

    AnyUser = AbstractBaseUser | AnonymousUser

_Documents = TypeVar("_Documents", bound=QuerySet[Any])


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    EDITOR = "editor", "Editor"
    VIEWER = "viewer", "Viewer"


# Roles a member can be given (share page, API); ownership is not handed out there.
SHAREABLE_ROLES = (Role.EDITOR, Role.VIEWER)
SHAREABLE_CHOICES = [(role.value, role.label) for role in SHAREABLE_ROLES]

_VIEW = frozenset({Role.OWNER, Role.EDITOR, Role.VIEWER})
_EDIT = frozenset({Role.OWNER, Role.EDITOR})
_MANAGE = frozenset({Role.OWNER})


def may_view(role: str | None) -> bool:
    """Whether someone with this role (None: no access) may read the document, and see the
    images in it."""
    return role in _VIEW


def may_edit(role: str | None) -> bool:
    """Whether someone with this role may change the document: its text (typing, the content
    API), its title, its versions (save, restore), and add images to it."""
    return role in _EDIT


def may_manage(role: str | None) -> bool:
    """Whether someone with this role may decide who has access (share, change a member's role,
    remove a member) and delete the document."""
    return role in _MANAGE


_RANK: dict[str | None, int] = {None: 0, Role.VIEWER: 1, Role.EDITOR: 2, Role.OWNER: 3}


def best_role(*roles: str | None) -> str | None:
    """The role that allows the most of those given (None: no access)."""
    return max(roles, key=lambda role: _RANK.get(role, 0), default=None)


def link_role(role: str, anyone: bool) -> str:
    """What a share link grants: its role, but only view when anyone at all may open it (a
    link that anyone could pass around may never write)."""
    return Role.VIEWER if anyone else role


def may_share_link_as(role: str) -> bool:
    """Whether a share link may grant this role (never ownership)."""
    return role in SHAREABLE_ROLES


def role_from(user_id: object, owner_id: object, member_role: str | None) -> str | None:
    """The role rule itself, from what a query read: the owner (``owner_id``; None when there is
    no such document) is always owner; anyone else has their membership's role, or none."""
    if owner_id is None:
        return None
    if user_id == owner_id:
        return Role.OWNER
    return member_role


def with_roles(documents: _Documents, user: AnyUser) -> _Documents:
    """Annotates each document with ``role``, the user's role in it (None: no access), by
    ``role_from``'s rule written in SQL: one query for a whole list instead of one per row."""
    from editor.models import Membership

    if not user.is_authenticated:
        return documents.annotate(role=Value(None, output_field=models.CharField()))
    membership = Membership.objects.filter(document=OuterRef("pk"), user_id=user.pk)
    return documents.annotate(
        role=Case(
            When(owner_id=user.pk, then=Value(Role.OWNER.value)),
            default=Subquery(membership.values("role")[:1]),
            output_field=models.CharField(),
        )
    )


def viewable(documents: _Documents, user: AnyUser) -> _Documents:
    """The documents the user may view, each annotated with ``role`` (``with_roles``)."""
    return with_roles(documents, user).filter(role__in=[role for role in Role if may_view(role)])


def can_view(user: AnyUser, document: Document) -> bool:
    return may_view(document.role_of(user))


def can_edit(user: AnyUser, document: Document) -> bool:
    return may_edit(document.role_of(user))


def can_manage(user: AnyUser, document: Document) -> bool:
    return may_manage(document.role_of(user))


def get_viewable_document(user: AnyUser, document_id: UUID | str) -> tuple[Document, str]:
    """Returns the document and the user's role, or raises Http404 for anyone without access."""
    from editor.models import Document

    document = Document.objects.filter(pk=document_id).select_related("owner").first()
    role = document.role_of(user) if document else None
    if document is None or role is None or not may_view(role):
        raise Http404("No such document.")
    return document, role
