"""The client's address for rate limits and sign-in lockouts: the connection's address, or the
`X-Forwarded-For` entry added by the last of NUM_PROXIES trusted proxies.

The same rule as the REST API's throttles (DRF's NUM_PROXIES, set from the same
TRUSTED_PROXY_COUNT variable): with 0 proxies no header is trusted, since a client can send
any. An entry that is not an IP address (a client's own text, when fewer proxies added entries
than configured) falls back to the connection's address, so nothing unparsable reaches a
counter or the sign-in records' inet column.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest, proxies: int | None = None) -> str:
    """`proxies`: NUM_PROXIES as already read (the sync path keeps its settings in memory)."""
    remote = request.META.get("REMOTE_ADDR", "")
    if proxies is None:
        proxies = settings.NUM_PROXIES
    if not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not forwarded:
        return remote
    entries = forwarded.split(",")
    return _valid_address(entries[-min(proxies, len(entries))].strip()) or remote


@functools.lru_cache(maxsize=4096)
def _valid_address(candidate: str) -> str:
    """The address in its canonical form, or "" when the text is not one (parsing an address
    costs microseconds; the same few addresses come back again and again)."""
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return ""
    if getattr(address, "scope_id", None):
        return ""
    return str(address)
