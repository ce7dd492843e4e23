"""Read-only admin: reports are asked for in the console or the API (recorded in the audit
trail) and written by their job."""

from django.contrib import admin

from hosts.admin import ReadOnlyAdmin

from .models import Report


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "format", "state", "rows_written", "created_by", "created_at"]
    list_filter = ["kind", "state", "format"]
