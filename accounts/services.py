"""Every write of the accounts app: creating, revoking and using API tokens."""

from __future__ import annotations

import datetime
import secrets

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record

from .errors import InvalidToken, TokenNameExists
from .models import ApiToken
from .scopes import normalize_scopes
from .selectors import hash_key

KEY_PREFIX = "sat_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
NAME_MAX = 100
# last_used_at/ip are written at most this often per token, not on every request.
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def _snapshot(token: ApiToken) -> dict:
    return {
        "user": token.user.get_username(),
        "name": token.name,
        "prefix": token.prefix,
        "scopes": token.scopes,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }


def _repr(token: ApiToken) -> str:
    return f"{token.prefix} {token.name} ({token.user.get_username()})"


def api_token_create(
    *, user, name: str, scopes, expires_at: datetime.datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token; returns it with its key, which is shown once and never stored."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise InvalidToken("A token needs a name.", field="name")
    if len(name) > NAME_MAX:
        raise InvalidToken(f"Token names are at most {NAME_MAX} characters.", field="name")
    scopes = normalize_scopes(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidToken("The expiry must be in the future.", field="expires_at")
    exists = TokenNameExists(
        f"{user.get_username()} already has an active token named {name!r}.", field="name"
    )
    try:
        with transaction.atomic():
            if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
                raise exists
            key = _new_key()
            while ApiToken.objects.filter(prefix=key[:PREFIX_LENGTH]).exists():
                key = _new_key()  # 48 bits of prefix: practically never
            token = ApiToken.objects.create(
                user=user,
                name=name,
                prefix=key[:PREFIX_LENGTH],
                key_hash=hash_key(key),
                scopes=scopes,
                expires_at=expires_at,
            )
            audit_record(
                action="api_token.create",
                object_type="api_token",
                object_id=token.pk,
                object_repr=_repr(token),
                after=_snapshot(token),
            )
    except IntegrityError:
        # A concurrent create with the same name won the race (api_token_active_name_unique).
        raise exists from None
    return token, key


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke at once: the next request with its key is refused (nothing is cached).
    Revoking a revoked token changes nothing and records nothing."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("user").get(pk=token.pk)
        if token.revoked_at is not None:
            return token
        before = _snapshot(token)
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            action="api_token.revoke",
            object_type="api_token",
            object_id=token.pk,
            object_repr=_repr(token),
            before=before,
            after=_snapshot(token),
        )
    return token


def api_token_touch(*, token: ApiToken, address: str | None, now=None) -> None:
    """Record that the token was used, at most once per LAST_USED_RESOLUTION: usage
    bookkeeping, not a change anyone made, so no audit entry. Requests within the
    resolution of the stored time write nothing."""
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional, so concurrent requests of one token write once.
    stale = now - LAST_USED_RESOLUTION
    ApiToken.objects.filter(pk=token.pk).exclude(last_used_at__gt=stale).update(
        last_used_at=now, last_used_ip=address or None
    )
    token.last_used_at, token.last_used_ip = now, address or None


def signin_unlock(
    *, username: str = "", address: str = "", actor=None, actor_name: str | None = None
) -> int:
    """Forget the failed sign-ins of a user name (from every address), of an address (every
    user name), or of both together, ending their lockout; recorded in the audit trail with the
    number of failure counters removed. Returns that number."""
    import ipaddress

    from axes.models import AccessAttempt

    from .errors import InvalidUnlock

    if not username and not address:
        raise InvalidUnlock("Name a user name, an address or both.")
    if address:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidUnlock(f"{address!r} is not an IP address.", "address") from None
    attempts = AccessAttempt.objects.all()
    if username:
        attempts = attempts.filter(username=username)
    if address:
        attempts = attempts.filter(ip_address=address)
    with transaction.atomic():
        removed, _ = attempts.delete()
        target = " from ".join(part for part in (username, address) if part)
        audit_record(
            action="auth.sign_in_unlocked",
            object_type="user" if username else "address",
            object_id=(username or address)[:128],
            object_repr=target,
            after={"username": username, "address": address, "counters_removed": removed},
            actor=actor,
            actor_name=actor_name,
        )
    return removed
