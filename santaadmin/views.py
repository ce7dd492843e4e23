import datetime
import sys

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.utils import timezone
from django.views.decorators.http import require_GET
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import exceptions

from events.models import ApprovalRequest, ApprovalState, Binary, EventDay
from hosts.models import Host

from .charts import Series, last_days, stacked_bars
from .console import console_view
from .startup import describe_mode

CHART_DAYS = 30
TOP_BINARIES = 10
TOP_VERSIONS = 10
NEWEST_REQUESTS = 5
# The chart's colours, as presentation attributes (the same as app.css's --chart-* variables).
CHART_SERIES = (
    Series("blocked", "Blocked", "#b42318"),
    Series("would_block", "Would be blocked", "#d08700"),
)
MODES = (("LOCKDOWN", "Lockdown"), ("MONITOR", "Monitor"), ("STANDALONE", "Standalone"))


@require_GET
@console_view("hosts.view_host")
def dashboard(request: HttpRequest) -> HttpResponse:
    """The fleet at a glance. A handful of aggregate queries over the hosts table and the
    statistics tables (events.stats); never an aggregate over the events themselves."""
    user = request.user
    context: dict = {"mode": describe_mode()}

    # One pass over the hosts: sync health, and the effective mode (the operator's override,
    # else what the agent last reported).
    by_mode = {
        f"mode_{value}": Count(
            "id",
            filter=Q(client_mode_override=value)
            | Q(client_mode_override="", reported_client_mode=value),
        )
        for value, _ in MODES
    }
    counts = Host.objects.aggregate(
        total=Count("id"),
        synced=Count("id", filter=Q(last_postflight_at__isnull=False, stale_since__isnull=True)),
        stale=Count("id", filter=Q(stale_since__isnull=False)),
        never=Count("id", filter=Q(last_postflight_at__isnull=True)),
        drifted=Count("id", filter=Q(drift_detected_at__isnull=False)),
        **by_mode,
    )
    modes = [(label, counts.pop(f"mode_{value}")) for value, label in MODES]
    other = counts["total"] - sum(n for _, n in modes)
    if other:
        modes.append(("Not reported", other))
    context["modes"] = modes
    context["health"] = counts
    context["versions"] = list(
        Host.objects.values("santa_version")
        .annotate(n=Count("id"))
        .order_by("-n", "santa_version")[:TOP_VERSIONS]
    )

    if user.has_perm("events.view_binary"):
        # Event days are UTC dates (events.stats).
        days = last_days(timezone.now().astimezone(datetime.UTC).date(), CHART_DAYS)
        rows = EventDay.objects.filter(
            day__gte=days[0],
            day__lte=days[-1],
            outcome__in=[s.key for s in CHART_SERIES],
        ).values_list("day", "outcome", "count")
        context["chart"] = stacked_bars(
            days, CHART_SERIES, {(day, outcome): count for day, outcome, count in rows}
        )
        # By impact, as the blocked-binaries list sorts (index binary_impact).
        context["top_binaries"] = list(
            Binary.objects.filter(Q(blocked__gt=0) | Q(would_block__gt=0)).order_by(
                "-host_count", "-executions", "sha256"
            )[:TOP_BINARIES]
        )
    if user.has_perm("events.view_approvalrequest"):
        waiting = ApprovalRequest.objects.filter(state=ApprovalState.PENDING)
        context["waiting_count"] = waiting.count()
        context["waiting"] = (
            list(
                waiting.select_related("binary", "host").order_by("-created_at", "-id")[
                    :NEWEST_REQUESTS
                ]
            )
            if context["waiting_count"]
            else []
        )
    return render(request, "dashboard.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and mode, for load balancers and for people: embedded or production."""
    mode = describe_mode()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except DatabaseError:
        database = "unavailable"
    broker = _broker_state()
    body = {
        "status": "ok" if database == "ok" and broker in ("ok", "in-process") else "degraded",
        "mode": mode["mode"],
        "database": database,
        "tasks": mode["tasks"],
        "broker": broker,
    }
    # Only the database takes a node out of service: syncs do not need the broker.
    return JsonResponse(body, status=200 if database == "ok" else 503)


def _broker_state() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "in-process"
    from santaadmin.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:  # any transport error means the same to an operator
        return "unavailable"
    return "ok"


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/sync/", "/healthz"))


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": "not_found", "detail": "No such URL."}, status=404)
    return render(request, "404.html", status=404)


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(
            {"error": "permission_denied", "detail": "Your role does not allow this."}, status=403
        )
    return render(request, "403.html", status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A POST without a valid CSRF token (settings.CSRF_FAILURE_VIEW): the console's own 403
    page, or the API's JSON error. Django's default page carries an inline <style> the
    Content-Security-Policy blocks."""
    if _wants_json(request):
        return JsonResponse(
            {"error": "csrf_failed", "detail": f"CSRF check failed: {reason}"}, status=403
        )
    return render(request, "403_csrf.html", {"reason": reason}, status=403)


# Seconds a client is asked to wait when the database is unreachable (as on /sync/).
RETRY_AFTER_SECONDS = 30


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so it is still the current one.
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return database_unavailable(request)
    if _wants_json(request):
        return JsonResponse({"error": "server_error", "detail": "Internal error."}, status=500)
    return render(request, "500.html", status=500)


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After when the database cannot be reached (down, restarting, network):
    a temporary condition the client should retry, not an error of the application. The page
    is static: rendering the console's layout would need the database (the signed-in user)."""
    if _wants_json(request):
        response = JsonResponse(
            {
                "error": "database_unavailable",
                "detail": "The database is unavailable; retry later.",
            },
            status=503,
        )
    else:
        response = HttpResponse(
            loader.get_template("503.html").render(), status=503, content_type="text/html"
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class SwaggerDocsView(SpectacularSwaggerSplitView):
    """The API docs (Swagger UI); a visitor who is not signed in goes to the sign-in page
    and comes back after signing in (?next=). Its page has no inline style or script, for
    the Content-Security-Policy (templates/api/swagger_ui.html)."""

    template_name = "api/swagger_ui.html"

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.NotAuthenticated):
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)
