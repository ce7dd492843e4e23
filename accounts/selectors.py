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
