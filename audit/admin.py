from django.contrib import admin

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only."""

    list_display = [
        "at",
        "actor_name",
        "actor_token",
        "action",
        "object_type",
        "object_repr",
        "source_ip",
    ]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_name", "actor_token", "object_repr", "object_id", "justification"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
