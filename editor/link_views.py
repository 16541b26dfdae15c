"""Pages for share links and access requests (editor/links.py has the rules).

- ``/s/<token>/`` opens a link: members join with its role, guests read (``anyone`` links),
  others are asked to log in first.
- The share page makes and revokes links (``link_create``, ``link_revoke``).
- Someone logged in without access sees "You need access" (``need_access``), the same page
  whether or not the document exists, and may ask the owner, who answers from the document list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from editor import links
from editor.access import SHAREABLE_CHOICES, Role, get_viewable_document, may_manage, may_view
from editor.models import AccessRequest, Document, Membership, ShareLink

if TYPE_CHECKING:
    from editor.views import AuthenticatedHttpRequest


class LinkForm(forms.Form):
    role = forms.ChoiceField(choices=SHAREABLE_CHOICES, initial=Role.VIEWER)
    anyone = forms.BooleanField(
        required=False, label="Anyone with the link, even without an account (view only)"
    )


@require_GET
def share_link(request: HttpRequest, token: str) -> HttpResponse:
    """Opens a share link: the person gets its access, then the document."""
    link = links.live_link(token)
    if link is None:
        return render(request, "editor/link_gone.html", status=404)
    user = request.user if request.user.is_authenticated else None
    role = links.open_link(link, user, request.session)
    if role is None:  # a link for people with an account
        return redirect_to_login(request.get_full_path())
    return redirect(link.document)


@login_required
@require_POST
def link_create(request: AuthenticatedHttpRequest, document_id: UUID) -> HttpResponse:
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can make share links.")
    form = LinkForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose what the link lets people do: view or edit.")
        return redirect("document-share", document_id=document.id)
    link = ShareLink.objects.create(
        document=document,
        role=form.cleaned_data["role"],
        anyone=form.cleaned_data["anyone"],
        created_by=request.user,
    )
    who = "Anyone with it" if link.anyone else "Anyone logged in who has it"
    can = "view" if links.link_role(link.role, link.anyone) == Role.VIEWER else "edit"
    messages.success(request, f"Link made. {who} can {can} this document.")
    return redirect("document-share", document_id=document.id)


@login_required
@require_POST
def link_revoke(request: AuthenticatedHttpRequest, document_id: UUID, link_id: int) -> HttpResponse:
    """Revokes a link: it stops working, the access it gave ends, and the sockets opened
    through it are closed (editor/signals.py)."""
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can revoke share links.")
    link = get_object_or_404(ShareLink, pk=link_id, document=document)
    joined = link.memberships.count()
    link.delete()
    messages.success(
        request,
        f"Link revoked; {joined} {'person' if joined == 1 else 'people'} who joined through it "
        "lost access.",
    )
    return redirect("document-share", document_id=document.id)


def need_access(request: HttpRequest, document_id: UUID, requested: bool = False) -> HttpResponse:
    """The page for someone logged in without access: it names nothing about the document
    (which may not even exist), and offers to ask the owner."""
    return render(
        request,
        "editor/need_access.html",
        {"document_id": document_id, "requested": requested},
        status=403,
    )


@login_required
@require_POST
def request_access(request: AuthenticatedHttpRequest, document_id: UUID) -> HttpResponse:
    """Asks the owner for access. The answer is the same whether or not the document exists."""
    document = Document.objects.filter(pk=document_id).first()
    if document is not None:
        if may_view(document.role_of(request.user)):
            return redirect(document)
        try:
            with transaction.atomic():
                AccessRequest.objects.get_or_create(document=document, user=request.user)
        except IntegrityError:  # asked twice at once
            pass
    return need_access(request, document_id, requested=True)


class AnswerForm(forms.Form):
    action = forms.ChoiceField(choices=[*SHAREABLE_CHOICES, ("dismiss", "Dismiss")])


@login_required
@require_POST
def access_request_answer(
    request: AuthenticatedHttpRequest, document_id: UUID, request_id: int
) -> HttpResponse:
    """The owner shares the document with whoever asked (as editor or viewer), or dismisses
    the request."""
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can answer access requests.")
    asked = get_object_or_404(AccessRequest, pk=request_id, document=document)
    form = AnswerForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose: share as editor, as viewer, or dismiss.")
        return redirect("document-list")
    action = form.cleaned_data["action"]
    with transaction.atomic():
        if action != "dismiss":
            Membership.objects.update_or_create(
                document=document, user=asked.user, defaults={"role": action, "link": None}
            )
        asked.delete()
    if action == "dismiss":
        messages.success(request, f"Dismissed {asked.user.username}’s request.")
    else:
        messages.success(request, f"Shared “{document.title}” with {asked.user.username}.")
    return redirect("document-list")
