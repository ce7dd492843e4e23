"""Read-only admin pages: every write goes through the services (revisions, history), so the
admin shows data but never edits it."""

from django.contrib import admin

from .models import ConfigurationProfile, Enrollment, FanOut, Host, Tag, TagRule


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = [
        "machine_id",
        "hostname",
        "serial_number",
        "santa_version",
        "reported_client_mode",
        "last_postflight_at",
    ]
    search_fields = ["machine_id", "hostname", "serial_number", "primary_user"]


@admin.register(Tag)
class TagAdmin(ReadOnlyAdmin):
    list_display = ["name", "description"]


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdmin):
    list_display = ["name", "secret_prefix", "client_mode", "created_at", "revoked_at"]
    exclude = ["secret_hash"]


@admin.register(ConfigurationProfile)
class ConfigurationProfileAdmin(ReadOnlyAdmin):
    list_display = ["name", "is_default", "priority", "client_mode"]


@admin.register(TagRule)
class TagRuleAdmin(ReadOnlyAdmin):
    list_display = ["tag", "fact", "operator", "value", "updated_at"]


@admin.register(FanOut)
class FanOutAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "revision", "state", "attempts", "created_at", "finished_at"]
    list_filter = ["kind", "state"]
