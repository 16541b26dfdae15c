"""Documents, who may open them, and the durable state the sync core keeps for each.

A document's text lives in Yjs updates, not in a column: ``DocumentUpdate`` is the append-only
log and ``Document.snapshot`` the log merged up to ``snapshot_seq``. Only
``editor/realtime/store.py`` writes those (docs/architecture.md).
"""

from __future__ import annotations

import secrets
import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models, transaction

from editor import images
from editor.access import Role, role_from, viewable

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.core.files import File

    from editor.access import AnyUser

__all__ = [
    "AccessRequest",
    "Document",
    "DocumentImage",
    "DocumentUpdate",
    "Membership",
    "Role",
    "ShareLink",
    "Version",
]


class DocumentQuerySet(models.QuerySet["Document"]):
    def visible_to(self, user: AnyUser) -> DocumentQuerySet:
        """The documents this user may view, each with their ``role`` (editor/access.py)."""
        if not user.is_authenticated:
            return self.none()
        return viewable(self, user)


class DocumentManager(models.Manager["Document"]):
    def create_for(self, owner: User, title: str) -> Document:
        """Creates a document and its owner membership together, so neither exists alone."""
        with transaction.atomic():
            document = self.create(owner=owner, title=title)
            Membership.objects.create(document=document, user=owner, role=Role.OWNER)
        return document


class Document(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_documents"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Yjs state merged from the update log up to and including update id ``snapshot_seq``.
    snapshot = models.BinaryField(default=b"", editable=False)
    snapshot_seq = models.BigIntegerField(default=0, editable=False)

    objects = DocumentManager.from_queryset(DocumentQuerySet)()

    # The requesting user's role, where a query annotated it (``access.with_roles``, behind
    # ``visible_to``) or a view set it; not a column.
    role: str | None

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("document-detail", args=[self.id])

    def role_of(self, user: AnyUser) -> str | None:
        """The user's role here, or None, by ``access.role_from``: the owner is always owner,
        membership row or not. Asks the database only about someone other than the owner."""
        if not user.is_authenticated:
            return None
        member_role = None
        if user.pk != self.owner_id:
            member_role = (
                self.memberships.filter(user_id=user.pk).values_list("role", flat=True).first()
            )
        return role_from(user.pk, self.owner_id, member_role)


def _link_token() -> str:
    return secrets.token_urlsafe(24)


class ShareLink(models.Model):
    """A link the owner hands out: whoever opens it (logged in; or anyone at all, read-only,
    when ``anyone``) gets ``role`` in the document until the link is revoked (deleted)."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="links")
    token = models.CharField(max_length=64, unique=True, default=_link_token, editable=False)
    role = models.CharField(max_length=10, choices=Role.choices)
    # Anyone at all, logged in or not, may open it, and then only to read (access.link_role).
    anyone = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role} link to {self.document}"

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("share-link", args=[self.token])


class Membership(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    # The link this access came through: revoking the link removes it. None once the owner
    # gave it explicitly (shared, or changed the role).
    link = models.ForeignKey(
        ShareLink, null=True, blank=True, on_delete=models.CASCADE, related_name="memberships"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "user"], name="one_membership_per_user"),
        ]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.document}"


class AccessRequest(models.Model):
    """Someone without access asked the owner for it (from the "You need access" page); the
    owner sees it in the document list, and shares or dismisses it."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="access_requests")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_requests"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "user"], name="one_request_per_user"),
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.user} asks for {self.document}"


class DocumentUpdate(models.Model):
    """One Yjs update as received, kept until compaction folds it into the snapshot."""

    id = models.BigAutoField(primary_key=True)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="updates")
    data = models.BinaryField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["document", "id"])]

    def __str__(self) -> str:
        return f"update {self.id} of {self.document_id}"


class Version(models.Model):
    """A snapshot of a document's text, restorable as a new change: named by someone, saved
    before a restore, or taken automatically while people edit (editor/autoversions.py)."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=200)
    # Taken by the server while people edited, not asked for: these alone are thinned out
    # over time (``autoversions.thin``); every other version is kept.
    automatic = models.BooleanField(default=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The full Yjs state (restore reads it) and a copy of its text (cheap to list and preview).
    state = models.BinaryField(editable=False)
    text = models.TextField(editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["document", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.document})"


class DocumentImageManager(models.Manager["DocumentImage"]):
    def store(self, document: Document, uploader: User | None, file: File[bytes]) -> DocumentImage:
        """Checks that ``file`` is an image collab accepts (``images.inspect``: raises
        ``ImageRefused`` with a message otherwise) and keeps it under a random name."""
        found = images.inspect(file, file.size or 0)
        image = self.model(
            document=document,
            uploader=uploader,
            content_type=found.content_type,
            size=found.size,
            width=found.width,
            height=found.height,
        )
        name = images.stored_name(document.pk, image.pk, found.extension)
        # The storage first, then the row: a failed save leaves at worst an unreferenced file,
        # never a row whose file is missing.
        image.file.save(name, file, save=False)
        image.save(force_insert=True)
        return image


class DocumentImage(models.Model):
    """An image pasted or dropped into a document, served only to people who may view it
    (editor/images.py says what is accepted and where it is kept)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="images")
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Named by the server: the document's id, a random name and the verified extension.
    file = models.FileField(storage=images.image_storage, max_length=200, editable=False)
    content_type = models.CharField(max_length=40, editable=False)
    size = models.PositiveIntegerField(editable=False)
    width = models.PositiveIntegerField(editable=False)
    height = models.PositiveIntegerField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DocumentImageManager()

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["document", "created_at"])]

    def __str__(self) -> str:
        return f"image {self.pk} of {self.document_id}"

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("document-image", args=[self.document_id, self.pk])

    @property
    def filename(self) -> str:
        """The name it is served under: the server's, never the uploader's."""
        return self.file.name.rsplit("/", 1)[-1]
