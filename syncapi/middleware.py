"""Serve /sync/ before the rest of the middleware stack.

Agents need exact 200s, never a redirect (APPEND_SLASH, HTTPS or login redirects) and no CSRF
(protocol.md §2.3, §7); they carry no session or cookie. Answering their URLs here keeps
sessions, CSRF, auth, messages and redirects off the hot path entirely.
"""

from django.core.exceptions import DisallowedHost
from django.urls import Resolver404, URLResolver
from django.urls.resolvers import RegexPattern

from santaadmin.db import drop_connection_closed_by_server

from .base import json_error

PREFIX = "/sync/"


class SyncMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.resolver = URLResolver(RegexPattern(r"^/sync/"), "syncapi.urls")

    def __call__(self, request):
        if not request.path_info.startswith(PREFIX):
            return self.get_response(request)
        # No `SELECT 1` before the first statement (CONN_HEALTH_CHECKS): that round trip would
        # be a fifth of a steady-state request's database work. Instead a connection the
        # database closed meanwhile (restart, failover) is noticed by polling its socket and
        # replaced; one lost without notice fails this request with 503 and Retry-After
        # (syncapi.base), and Django closes it after the request, so the retry gets a new one.
        drop_connection_closed_by_server()
        try:
            request.get_host()  # ALLOWED_HOSTS, as for every other URL
        except DisallowedHost:
            return json_error(400, "invalid_host", "The Host header is not allowed.")
        try:
            match = self.resolver.resolve(request.path_info)
        except Resolver404:
            return json_error(
                404,
                "not_found",
                "Unknown sync URL; expected /sync/<preflight|eventupload|ruledownload|"
                "postflight>/<machine_id>.",
            )
        return match.func(request, *match.args, **match.kwargs)
