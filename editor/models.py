"""Documents, who may open them, and the durable state the sync core keeps for each.

A document's text lives in Yjs updates, not in a column: ``DocumentUpdate`` is the append-only
log and ``Document.snapshot`` the log merged up to ``snapshot_seq``. Only
``editor/realtime/store.py`` writes those (docs/architecture.md).
"""

import uuid

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q

from editor.access import SHAREABLE_ROLES, Role, role_from

__all__ = ["SHAREABLE_ROLES", "Document", "DocumentUpdate", "Membership", "Role", "Version"]


class DocumentQuerySet(models.QuerySet):
    def visible_to(self, user) -> "DocumentQuerySet":
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | Q(memberships__user=user)).distinct()


class DocumentManager(models.Manager.from_queryset(DocumentQuerySet)):
    def create_for(self, owner, title: str) -> "Document":
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

    objects = DocumentManager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("document-detail", args=[self.id])

    def role_of(self, user) -> str | None:
        """The user's role here, or None. The owner is always owner, membership row or not."""
        if not user.is_authenticated:
            return None
        member_role = None
        if user.pk != self.owner_id:
            member_role = self.memberships.filter(user=user).values_list("role", flat=True).first()
        return role_from(user.pk, self.owner_id, member_role)


class Membership(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "user"], name="one_membership_per_user"),
        ]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.document}"


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
    """A named snapshot of a document's text, taken on request and restorable as a new change."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=200)
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
