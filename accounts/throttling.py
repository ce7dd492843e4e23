"""API rate limits (DRF throttles), rates from the settings API_THROTTLE_RATE (per token, or
per user for browser sessions) and API_THROTTLE_ANON_RATE (per address, for requests nobody
authenticated, failed credentials included).

The counters live in Django's default cache: Redis in production (shared by every web
process, settings.CACHES), local memory in embedded mode. If the cache cannot be reached the
request is let through and a warning logged: a rate limit must not take the API down.

Anonymous requests are counted while authenticating, not by DRF's throttle step: DRF checks
throttles after permissions, and every API view needs a signed-in user, so an anonymous
request would be answered 401 before any throttle ran.
"""

from __future__ import annotations

import logging

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.throttling import SimpleRateThrottle

from .models import ApiToken

logger = logging.getLogger(__name__)


class _SettingsRateThrottle(SimpleRateThrottle):
    """A throttle whose rate is read from a Django setting when it is built (per request), so
    it follows the environment and override_settings; an empty rate disables it."""

    rate_setting = ""

    def get_rate(self):
        return getattr(settings, self.rate_setting) or None

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            logger.warning("API throttle %s not applied, cache unreachable: %s", self.scope, exc)
            return True


class ApiRateThrottle(_SettingsRateThrottle):
    """Per API token; per user for session (browser) requests."""

    scope = "api"
    rate_setting = "API_THROTTLE_RATE"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return None  # counted by AnonymousRateThrottle while authenticating
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousRateThrottle(_SettingsRateThrottle):
    """Per client address (REST_FRAMEWORK NUM_PROXIES says which X-Forwarded-For entry)."""

    scope = "anon"
    rate_setting = "API_THROTTLE_ANON_RATE"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def count_anonymous(request) -> None:
    """Count an unauthenticated request against its address; 429 (Throttled) when over."""
    throttle = AnonymousRateThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(throttle.wait())


class AnonymousRateLimit(BaseAuthentication):
    """Last of DEFAULT_AUTHENTICATION_CLASSES, so it runs only when no other class
    authenticated the request: it authenticates nobody, it counts the request."""

    def authenticate(self, request):
        count_anonymous(request)
        return None
