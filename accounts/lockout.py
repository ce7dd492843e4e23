"""Sign-in lockout, on django-axes: its authentication backend refuses a locked-out sign-in
before any password is checked, its signal handler counts failures in its AccessAttempt table,
its middleware turns a locked request into `lockout_response`.

What we add to axes' database handler:

* **Two limits.** axes compares one failure limit with its lockout parameters; we give it
  (user name, address) with SIGNIN_LOCKOUT_FAILURES, and add a per-address limit,
  SIGNIN_LOCKOUT_ADDRESS_FAILURES, over the same rows (every user name tried from the address):
  a lockout by user name alone would let anyone lock an admin out, and a limit per (user name,
  address) alone would let one address try a few passwords on every account.
* **The audit trail** gets one `auth.sign_in_locked_out` entry when a lockout starts. Attempts
  refused during it are not recorded one by one (nor as failed sign-ins): a flood would
  otherwise write a row per request. Unlocking is `accounts.services.signin_unlock`.
* Settings read at each use (SIGNIN_LOCKOUT_*), so they follow override_settings in tests.
"""

from __future__ import annotations

import datetime
import math

from axes.attempts import get_cool_off_threshold
from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.db.models import Max, Sum
from django.shortcuts import render
from django.utils import timezone

from audit.services import audit_record

ANONYMOUS = "anonymous"


def failure_limit(request, credentials) -> int:
    """AXES_FAILURE_LIMIT: failed sign-ins per (user name, address)."""
    return settings.SIGNIN_LOCKOUT_FAILURES or 1


def cool_off(request=None) -> datetime.timedelta:
    """AXES_COOLOFF_TIME: how long after the last failure a lockout lasts."""
    return datetime.timedelta(minutes=settings.SIGNIN_LOCKOUT_MINUTES)


def _recent(request, **filters):
    return AccessAttempt.objects.filter(
        attempt_time__gte=get_cool_off_threshold(request), **filters
    )


def address_failures(request) -> int:
    """Failed sign-ins from the request's address within the cool-off, any user name."""
    total = _recent(request, ip_address=request.axes_ip_address).aggregate(
        total=Sum("failures_since_start")
    )["total"]
    return total or 0


class SignInLockoutBackend(AxesStandaloneBackend):
    """First of AUTHENTICATION_BACKENDS: refuses a locked-out sign-in (even with the right
    password). Without a request (a script, the test client's login()) there is no address to
    count by and nothing is checked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        try:
            return super().authenticate(request, username=username, password=password, **kwargs)
        except AxesBackendPermissionDenied:
            request.signin_refused = True  # audit.signals: not a failed password check
            raise


class SignInLockoutHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        """Failures of this (user name, address); the limit itself when the address as a whole
        has reached SIGNIN_LOCKOUT_ADDRESS_FAILURES, so that axes locks it out."""
        failures = super().get_failures(request, credentials)
        request.signin_lock = "user"
        per_address = settings.SIGNIN_LOCKOUT_ADDRESS_FAILURES
        limit = get_failure_limit(request, credentials)
        if failures < limit and per_address and address_failures(request) >= per_address:
            request.signin_lock = "address"
            return limit
        return failures

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is None:
            return
        refused = getattr(request, "signin_refused", False)
        super().user_login_failed(sender, credentials, request, **kwargs)
        if not refused and getattr(request, "axes_locked_out", False):
            _record_lockout(request, credentials)


def _record_lockout(request, credentials) -> None:
    name = str(get_client_username(request, credentials) or "")[:150]
    with transaction.atomic():
        audit_record(
            action="auth.sign_in_locked_out",
            object_type="user",
            object_id=name[:128],
            object_repr=name,
            after={
                "username": name,
                "address": request.axes_ip_address,
                "locked": getattr(request, "signin_lock", "user"),
                "failures": request.axes_failures_since_start,
                "minutes": settings.SIGNIN_LOCKOUT_MINUTES,
            },
            actor_name=ANONYMOUS,
            request=request,
        )


def _minutes_left(request, username: str, lock: str) -> int:
    filters = {"ip_address": request.axes_ip_address}
    if lock == "user":
        filters["username"] = username
    last = _recent(request, **filters).aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        return settings.SIGNIN_LOCKOUT_MINUTES
    left = (last + cool_off() - timezone.now()).total_seconds()
    return max(1, math.ceil(left / 60))


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the sign-in page again, 429, saying why and for how long."""
    username = str(get_client_username(request, credentials) or "")[:150]
    lock = getattr(request, "signin_lock", "user")
    minutes = _minutes_left(request, username, lock)
    if lock == "address":
        message = (
            f"Too many failed sign-ins from your address. Sign-in from it is locked for "
            f"{minutes} more minute{'s' if minutes != 1 else ''}."
        )
    else:
        message = (
            f"Too many failed sign-ins for this user name from your address. It is locked "
            f"for {minutes} more minute{'s' if minutes != 1 else ''}, even with the right "
            "password."
        )
    message += " An administrator can unlock it sooner."
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "lockout": message,
        "next": request.POST.get("next", ""),
    }
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
