"""Pages. Each view checks access through editor/access.py, calls one model method, renders."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models.expressions import Combinable
from django.db.models.functions import Lower
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from editor import export, link_views, links, logins, signals
from editor.access import SHAREABLE_CHOICES, get_viewable_document, may_edit, may_manage
from editor.forms import DocumentForm, MemberRoleForm, NewDocumentForm, ShareForm, SignupForm
from editor.models import AccessRequest, Document, Membership
from editor.realtime.presence import identity, redis_hosts, sync_client

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from editor.access import AnyUser


class AuthenticatedHttpRequest(HttpRequest):
    """What a view behind ``login_required`` receives (for mypy: its user is never anonymous)."""

    user: User


logger = logging.getLogger("editor.views")


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, *args: Any
) -> HttpResponse:
    """django-axes' answer to a login refused for too many failures (``AXES_LOCKOUT_CALLABLE``):
    429 with a page saying how long to wait, or JSON under /api/."""
    message = logins.refuse(request, request.POST.get("username"))
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(logins.cooloff_seconds())
    return response


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("document-list")
    return render(request, "home.html")


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change page. The new password ends the user's other sessions, and
    their open sockets close with them; this session, which Django keeps logged in, keeps its
    sockets (editor/signals.py). The whole request is wrapped: checking the old password may
    already write a new hash (Django upgrading it)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        with signals.own_password_change(request):
            return super().dispatch(request, *args, **kwargs)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("document-list")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}. Create your first document below.")
        return redirect("document-list")
    status = 400 if form.is_bound else 200
    return render(request, "registration/signup.html", {"form": form}, status=status)


# The list page's sort orders: the ``?sort=`` value → (label, ORM ordering).
SORTS: dict[str, tuple[str, tuple[str | Combinable, ...]]] = {
    "recent": ("Recently changed", ("-updated_at", "title")),
    "title": ("Title", (Lower("title"), "-updated_at")),
}


def _document_rows(
    user: AnyUser, query: str = "", sort: str = "recent"
) -> list[tuple[Document, str | None, bool]]:
    """The list page's rows: each document the user may view whose title contains ``query``
    (any case), in ``sort`` order, with their role and whether they manage it."""
    documents = Document.objects.visible_to(user).select_related("owner")
    if query:
        documents = documents.filter(title__icontains=query)
    documents = documents.order_by(*SORTS.get(sort, SORTS["recent"])[1])
    return [(doc, doc.role, may_manage(doc.role)) for doc in documents]


def _list_page(
    request: AuthenticatedHttpRequest, form: NewDocumentForm, status: int = 200
) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    sort = request.GET.get("sort", "recent")
    if sort not in SORTS:
        sort = "recent"
    rows = _document_rows(request.user, query, sort)
    # "Nothing yet" and "nothing matches" are different pages: the first says how to start.
    has_any = bool(rows) or (bool(query) and Document.objects.visible_to(request.user).exists())
    context = {
        "rows": rows,
        "form": form,
        "query": query,
        "sort": sort,
        "sorts": [(key, label) for key, (label, _) in SORTS.items()],
        "has_any": has_any,
        # People who asked for access to a document this user manages (link_views).
        "access_requests": AccessRequest.objects.filter(document__owner=request.user)
        .select_related("user", "document")
        .order_by("created_at"),
    }
    return render(request, "editor/document_list.html", context, status=status)


@login_required
@require_GET
def document_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _list_page(request, NewDocumentForm())


@login_required
@require_POST
def document_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Makes a document and opens it; without a title it is "Untitled", renamed in the editor."""
    form = NewDocumentForm(request.POST)
    if not form.is_valid():
        return _list_page(request, form, status=400)
    document = Document.objects.create_for(request.user, form.cleaned_data["title"])
    return redirect(document)


# The one page whose styles may be inline: CodeMirror (style-mod) writes its themes into a
# <style> element, and the preview keeps Markdown's table alignment (style attributes, after
# DOMPurify). Scripts stay 'self' only. To drop this, the bundle would pass a CSP nonce from
# the page to EditorView.cspNonce (frontend/).
@csp_update({"style-src": [UNSAFE_INLINE]})  # type: ignore[arg-type]  # typed for (request) only
def _editor_page(request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
    return render(request, "editor/document_detail.html", context)


@require_GET
def document_detail(request: HttpRequest, document_id: UUID) -> HttpResponse:
    """The editor. Members get it with their role; someone logged in without access gets "You
    need access"; a guest holding an "anyone" link (editor/links.py) reads it; anyone else is
    asked to log in."""
    guest: links.Guest | None = None
    if request.user.is_authenticated:
        try:
            document, role = get_viewable_document(request.user, document_id)
        except Http404:
            return link_views.need_access(request, document_id)
    else:
        found = links.viewable_as_guest(request.session, document_id)
        if found is None or request.session.session_key is None:
            return redirect_to_login(request.get_full_path())
        document, role = found
        guest = links.Guest.of(request.session.session_key)
    return _editor_page(  # type: ignore[call-arg,return-value]  # csp_update's stub: (request)
        request,
        {
            "document": document,
            "role": role,
            "can_edit": may_edit(role),
            "can_manage": may_manage(role),
            "guest": guest is not None,
            # The name and colour the server gives this user in presence, so the page shows
            # the same ones before the socket connects.
            "identity": identity(guest or request.user),  # type: ignore[arg-type]
            "max_message_bytes": settings.COLLAB["MAX_INCOMING_FRAME"],
            "max_image_bytes": settings.MAX_IMAGE_BYTES,
        },
    )


@require_GET
def document_export(request: HttpRequest, document_id: UUID) -> HttpResponse:
    """Downloads the text (?format=md, the default) or a standalone HTML page of it
    (?format=html), for anyone who may view the document, a guest with an "anyone" link too."""
    if request.user.is_authenticated:
        document, _ = get_viewable_document(request.user, document_id)
    else:
        found = links.viewable_as_guest(request.session, document_id)
        if found is None:
            return redirect_to_login(request.get_full_path())
        document, _ = found
    format = request.GET.get("format", "md")
    if format not in export.FORMATS:
        return HttpResponse(
            "Unknown format: use ?format=md or ?format=html.",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    return export.response(export.export(document, format))


@login_required
@require_POST
def document_rename(request: AuthenticatedHttpRequest, document_id: UUID) -> HttpResponse:
    document, role = get_viewable_document(request.user, document_id)
    if not may_edit(role):
        raise PermissionDenied("Viewers cannot rename a document.")
    form = DocumentForm(request.POST, instance=document)
    if form.is_valid():
        form.save()
        messages.success(request, "Renamed.")
    else:
        messages.error(request, " ".join(str(error) for error in form.errors["title"]))
        return redirect(document)
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        return redirect(next_url)
    return redirect(document)


@login_required
@require_http_methods(["GET", "POST"])
def document_delete(request: AuthenticatedHttpRequest, document_id: UUID) -> HttpResponse:
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can delete a document.")
    if request.method == "POST":
        title = document.title
        document.delete()
        messages.success(request, f"Deleted “{title}”.")
        return redirect("document-list")
    return render(request, "editor/document_delete.html", {"document": document})


@login_required
@require_http_methods(["GET", "POST"])
def document_share(request: AuthenticatedHttpRequest, document_id: UUID) -> HttpResponse:
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can share this document.")
    form = ShareForm(request.POST or None, document=document)
    if request.method == "POST" and form.is_valid():
        user, role = form.cleaned_data["username"], form.cleaned_data["role"]
        Membership.objects.create(document=document, user=user, role=role)
        messages.success(request, f"Shared with {user.username} as {role}.")
        return redirect("document-share", document_id=document.id)
    members = document.memberships.select_related("user", "link").order_by("created_at")
    return render(
        request,
        "editor/document_share.html",
        {
            "document": document,
            "form": form,
            "members": members,
            "role_choices": SHAREABLE_CHOICES,
            "links": document.links.all(),
            "link_form": link_views.LinkForm(),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def member_update(
    request: AuthenticatedHttpRequest, document_id: UUID, membership_id: int
) -> HttpResponse:
    document, role = get_viewable_document(request.user, document_id)
    if not may_manage(role):
        raise PermissionDenied("Only the owner can change who has access.")
    membership = get_object_or_404(Membership, pk=membership_id, document=document)
    if membership.user_id == document.owner_id:
        messages.error(request, "The owner’s access cannot be changed.")
        return redirect("document-share", document_id=document.id)
    if request.POST.get("action") == "remove":
        membership.delete()
        messages.success(request, f"Removed {membership.user.username}.")
        return redirect("document-share", document_id=document.id)
    form = MemberRoleForm(request.POST)
    if form.is_valid():
        with transaction.atomic():
            # Given by the owner now: revoking the link it came through no longer removes it.
            membership.role, membership.link = form.cleaned_data["role"], None
            membership.save(update_fields=["role", "link"])
        messages.success(request, f"{membership.user.username} is now {membership.role}.")
    else:
        messages.error(request, "Choose a role: editor or viewer.")
    return redirect("document-share", document_id=document.id)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Says whether the database and Redis answer; 503 names whatever did not. Why it failed
    (exception class and text, which may name hosts and users) is logged, and shown to staff
    only."""
    checks = {"database": "ok", "redis": "ok"}
    errors: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means "down"; the message says which
        logger.warning("healthz: database check failed: %s", exc)
        checks["database"] = "error"
        errors["database"] = f"{exc.__class__.__name__}: {exc}"
    redis_failures = []
    for index, host in enumerate(redis_hosts()):  # every shard: each carries some documents
        try:
            with sync_client(host, settings.HEALTHCHECK_TIMEOUT) as client:
                client.ping()
        except Exception as exc:
            logger.warning("healthz: redis check of shard %d failed: %s", index, exc)
            redis_failures.append(f"shard {index}: {exc.__class__.__name__}: {exc}")
    if redis_failures:
        checks["redis"] = "error"
        errors["redis"] = "; ".join(redis_failures)
    failed = [name for name, state in checks.items() if state != "ok"]
    body: dict[str, Any] = {"status": "ok" if not failed else "error", "checks": checks}
    if failed:
        body["failed"] = failed
        # request.user without a database: a session that cannot be read is nobody.
        if errors and _is_staff(request):
            body["errors"] = errors
    return JsonResponse(body, status=503 if failed else 200)


def _is_staff(request: HttpRequest) -> bool:
    try:
        return bool(request.user.is_staff)
    except Exception:  # the database (sessions, users) may be what is down
        return False
