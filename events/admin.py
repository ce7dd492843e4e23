from django.contrib import admin

from hosts.admin import ReadOnlyAdmin

from .models import Binary, Certificate, Event


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["execution_time", "decision", "file_name", "host", "executing_user"]
    list_filter = ["decision"]
    list_select_related = ["host"]


@admin.register(Binary)
class BinaryAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "file_name", "team_id", "signing_id", "last_seen_at"]
    search_fields = ["sha256", "file_name", "signing_id", "team_id"]


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "cn", "org", "valid_until"]
    search_fields = ["sha256", "cn", "org"]
