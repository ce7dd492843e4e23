"""`Authorization: Token <key>` (or `Bearer <key>`) for the REST API, with accounts.ApiToken.

The token is left on the Django request (`request.api_token`) as well as on DRF's
(`request.auth`), so the audit trail, which sees only the Django request (audit.context),
names the token an entry was made through.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .selectors import api_token_for_key
from .services import api_token_touch
from .throttling import count_anonymous

KEYWORDS = (b"token", b"bearer")


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None  # not ours: a session, or nobody
        if len(parts) != 2:
            self._fail(request, "Invalid token header: send 'Authorization: Token <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            self._fail(request, "Invalid token.")
        token = api_token_for_key(key)
        if token is None:
            self._fail(request, "Invalid token.")
        now = timezone.now()
        if token.revoked_at is not None:
            self._fail(request, "Token revoked.")
        if token.is_expired(now):
            self._fail(request, "Token expired.")
        if not token.user.is_active:
            self._fail(request, "User inactive or deleted.")
        api_token_touch(token=token, address=request.META.get("REMOTE_ADDR"), now=now)
        request._request.api_token = token
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword

    @staticmethod
    def _fail(request, detail: str):
        # Failed credentials count as anonymous requests of their address.
        count_anonymous(request)
        raise exceptions.AuthenticationFailed(detail)
