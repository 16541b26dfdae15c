import time
import uuid
from typing import Any

import redis
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from editor.models import Document, DocumentUpdate, Membership, Version
from editor.realtime import census
from editor.realtime.presence import everyone_here


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ("user",)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "member_count", "created_at", "updated_at")
    list_filter = ("created_at", "updated_at", "memberships__role")
    search_fields = ("title", "owner__username", "owner__email")
    readonly_fields = ("id", "created_at", "updated_at", "snapshot_seq")
    autocomplete_fields = ("owner",)
    inlines = (MembershipInline,)
    date_hierarchy = "created_at"
    change_list_template = "admin/editor/document/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "editing-now/",
                self.admin_site.admin_view(self.editing_now_view),
                name="editor_document_editing_now",
            )
        ]
        return custom + super().get_urls()

    def editing_now_view(self, request: HttpRequest) -> TemplateResponse:
        """Who is editing now: every document with live presence, and every serving process's
        sockets and rooms, in total too (their census), all from Redis."""
        error = None
        try:
            found = everyone_here()
        except redis.RedisError as exc:
            found, error = {}, f"Presence is unavailable: {exc}"
        processes, census_error = self.processes()
        titles = dict(Document.objects.filter(pk__in=list(found)).values_list("id", "title"))
        rows: list[dict[str, Any]] = []
        for document_id, entries in found.items():
            users: dict[Any, str] = {}
            for entry in entries:
                user = entry.state.get("user") or {}
                users.setdefault(user.get("id"), user.get("name", "?"))
            rows.append(
                {
                    "id": document_id,
                    "title": titles.get(uuid.UUID(document_id), "(deleted)"),
                    "users": sorted(users.values()),
                    "clients": len(entries),
                }
            )
        rows.sort(key=lambda row: -row["clients"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is editing now",
            "rows": rows,
            "error": error,
            "processes": processes,
            "census_error": census_error,
            "total_sockets": sum(process["sockets"] for process in processes),
            "total_rooms": sum(process["rooms"] for process in processes),
            "census_ttl": int(census.TTL),
            "census_interval": int(census.INTERVAL),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/editor/document/editing_now.html", context)

    @staticmethod
    def processes() -> tuple[list[dict[str, Any]], str | None]:
        """Each live process's last census (editor/realtime/census.py), with its age."""
        try:
            found = census.read_all()
        except redis.RedisError as exc:
            return [], f"Server processes are unavailable: {exc}"
        now = time.time()
        rows = [
            {
                "name": process.name,
                "pid": process.pid,
                "sockets": process.sockets,
                "rooms": process.rooms,
                "age": max(0, round(now - process.at)),
            }
            for process in found
        ]
        return rows, None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        return super().get_queryset(request).annotate(_member_count=Count("memberships"))

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj: Document) -> int:
        return obj._member_count  # type: ignore[attr-defined]  # annotated by get_queryset


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("document", "user", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("document__title", "user__username")
    autocomplete_fields = ("document", "user")


@admin.register(DocumentUpdate)
class DocumentUpdateAdmin(admin.ModelAdmin):
    """Read-only: the update log is written by the sync core alone."""

    list_display = ("id", "document", "author", "size", "created_at")
    search_fields = ("document__title",)
    list_select_related = ("document", "author")

    @admin.display(description="bytes")
    def size(self, obj: DocumentUpdate) -> int:
        return len(obj.data)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin):
    """Read-only: versions are taken and restored through the API."""

    list_display = ("name", "document", "author", "created_at")
    search_fields = ("name", "document__title")
    list_select_related = ("document", "author")
    exclude = ("state",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
