"""Reads of the accounts app."""

from __future__ import annotations

import hashlib
import hmac

from .models import ApiToken

# Longer than any key we issue; anything longer is refused without hashing it.
MAX_KEY_LENGTH = 200


def hash_key(key: str) -> str:
    """SHA-256 of an API key. Keys are 256-bit random strings, so a fast hash suffices and
    allows an indexed lookup (the reasoning of hosts.selectors.hash_secret)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def api_token_for_key(key: str) -> ApiToken | None:
    """The token a key belongs to, revoked or expired ones included (the caller says why it
    refuses them), with its user; None for an unknown key. Nothing is cached, so a
    revocation applies to the next request."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    digest = hash_key(key)
    token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
    if token is None or not hmac.compare_digest(token.key_hash, digest):
        return None
    return token


def api_tokens_visible_to(user):
    """Every token for a user who may see all (admin), else the user's own."""
    tokens = ApiToken.objects.select_related("user")
    if user.has_perm("accounts.view_apitoken"):
        return tokens
    return tokens.filter(user=user)


def signin_lockouts():
    """Current sign-in failure counters (django-axes' AccessAttempt rows within the cool-off),
    per user name and address, most recent first; `locked` says which have reached a limit."""
    from axes.models import AccessAttempt
    from django.conf import settings
    from django.db.models import Max, Sum
    from django.utils import timezone

    from .lockout import cool_off

    since = timezone.now() - cool_off()
    rows = list(
        AccessAttempt.objects.filter(attempt_time__gte=since)
        .values("username", "ip_address")
        .annotate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        .order_by("-last")
    )
    per_address: dict[str, int] = {}
    for row in rows:
        per_address[row["ip_address"]] = per_address.get(row["ip_address"], 0) + row["failures"]
    address_limit = settings.SIGNIN_LOCKOUT_ADDRESS_FAILURES
    for row in rows:
        row["locked"] = row["failures"] >= settings.SIGNIN_LOCKOUT_FAILURES or bool(
            address_limit and per_address[row["ip_address"]] >= address_limit
        )
        row["until"] = row["last"] + cool_off()
    return rows
