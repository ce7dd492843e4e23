"""API tokens: named, scoped, expiring credentials for scripts and integrations (a SIEM)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import scopes as scope_rules


class ApiToken(models.Model):
    """A key for `Authorization: Token <key>`. Only its SHA-256 is stored: the key is shown
    once when the token is created (accounts.services.api_token_create)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The start of the key ("sat_" and 8 characters): not secret, shown in lists and in the
    # audit trail so people can tell their tokens apart.
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Updated at most once a minute per token (accounts.services.api_token_touch).
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Revoked tokens stay for the record; their names can be used again.
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="api_token_active_name_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prefix} {self.name}"

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired() else "active"

    def allows(self, area: str | None, *, write: bool) -> bool:
        return scope_rules.allows(self.scopes, area, write=write)
