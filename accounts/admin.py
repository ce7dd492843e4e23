from axes.models import AccessAttempt
from django.contrib import admin

from .models import ApiToken
from .services import signin_unlock


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only, like the rest of the domain data: tokens are created and revoked through the
    services (console page /account/tokens/, `manage.py apitoken`), which audit them."""

    list_display = ["prefix", "name", "user", "created_at", "expires_at", "last_used_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    exclude = ["key_hash"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AccessAttempt)
class SignInFailureAdmin(admin.ModelAdmin):
    """django-axes' failure counters, read-only; the "unlock" action goes through
    accounts.services.signin_unlock, which records it in the audit trail."""

    list_display = ["username", "ip_address", "failures_since_start", "attempt_time", "user_agent"]
    search_fields = ["username", "ip_address"]
    fields = ["username", "ip_address", "user_agent", "failures_since_start", "attempt_time"]
    readonly_fields = fields
    actions = ["unlock"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_unlock_permission(self, request):
        return request.user.has_perm("axes.delete_accessattempt")

    @admin.action(permissions=["unlock"], description="Unlock (forget these failed sign-ins)")
    def unlock(self, request, queryset):
        pairs = set(queryset.values_list("username", "ip_address"))
        removed = sum(
            signin_unlock(username=username or "", address=address or "", actor=request.user)
            for username, address in pairs
        )
        self.message_user(request, f"Unlocked: {removed} failure counter(s) removed.")
