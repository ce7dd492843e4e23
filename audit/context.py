"""The request a change is made in, for the audit trail: who and from which address.

A middleware sets it for every console and API request; services read it when they record an
entry, so no service signature needs a request. Work outside a request (Celery, commands) has
none and is recorded as "system" unless the service is given an actor.
"""

from __future__ import annotations

from contextvars import ContextVar

_request: ContextVar = ContextVar("audit_request", default=None)


def current_request():
    return _request.get()


class AuditContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
