"""The one access policy. Pages, the API and the WebSocket consumer all ask these functions.

| role    | view | edit | manage (share, delete) |
|---------|------|------|------------------------|
| owner   | yes  | yes  | yes                    |
| editor  | yes  | yes  | no                     |
| viewer  | yes  | no   | no                     |
| nobody  | no   | no   | no                     |

Callers turn "cannot view" into 404, never 403, so a stranger learns nothing about a document.
"""

from django.http import Http404

from editor.models import Document, Role

_VIEW = {Role.OWNER, Role.EDITOR, Role.VIEWER}
_EDIT = {Role.OWNER, Role.EDITOR}
_MANAGE = {Role.OWNER}


def can_view(user, document: Document) -> bool:
    return document.role_of(user) in _VIEW


def can_edit(user, document: Document) -> bool:
    return document.role_of(user) in _EDIT


def can_manage(user, document: Document) -> bool:
    return document.role_of(user) in _MANAGE


def get_viewable_document(user, document_id) -> tuple[Document, str]:
    """Returns the document and the user's role, or raises Http404 for anyone without access."""
    document = Document.objects.filter(pk=document_id).select_related("owner").first()
    role = document.role_of(user) if document else None
    if role not in _VIEW:
        raise Http404("No such document.")
    return document, role
