from django.contrib import admin

from editor.models import Document, DocumentUpdate, Membership


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

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(_member_count=Count("memberships"))

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj):
        return obj._member_count


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
    def size(self, obj):
        return len(obj.data)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
