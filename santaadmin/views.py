from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .startup import describe_mode


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The fleet at a glance (being built)."""
    return render(request, "home.html", {"mode": describe_mode()})


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


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": "server_error", "detail": "Internal error."}, status=500)
    return render(request, "500.html", status=500)
