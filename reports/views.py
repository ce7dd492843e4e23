"""Console pages of the reports app: the reports page (a form per kind, the generated
reports), a direct streamed download, asking for a background report, a report's status
(refreshed by static/js/console.js) and the download of a done report."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from santaadmin.console import console_view, paginate

from .errors import InvalidParameters
from .filtersets import ReportFilterSet
from .forms import report_form
from .kinds import KINDS, Kind
from .models import Report, ReportState
from .params import from_query
from .responses import direct_response, stored_response
from .services import report_create, report_record_direct, report_record_download

PAGE_SIZE = 25


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise Http404("No such report.")
    return KINDS[name]


def _summary(parameters: dict) -> str:
    parts = []
    for name, value in parameters.items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


def _page(request, *, bound=None, status: int = 200):
    """The reports page; `bound` = (kind name, form) re-displays a refused submission."""
    filterset = ReportFilterSet(
        request.GET or None, queryset=Report.objects.select_related("created_by")
    )
    valid = filterset.is_valid() if filterset.is_bound else True
    page = None
    if valid:
        page = paginate(request, filterset.qs.order_by("-created_at", "-id"), PAGE_SIZE)
    reports = list(page.object_list) if page else []
    for report in reports:
        report.summary = _summary(report.parameters)
    forms = []
    if request.user.has_perm("reports.add_report"):
        for name, kind in KINDS.items():
            form = bound[1] if bound and bound[0] == name else report_form(kind)
            forms.append((kind, form, bool(bound and bound[0] == name)))
    context = {
        "retention_days": settings.REPORT_RETENTION_DAYS,
        "forms": forms,
        "filter": filterset,
        "filters_valid": valid,
        "page_obj": page,
        "reports": reports,
    }
    return render(request, "reports/report_list.html", context, status=status)


def _submitted(kind: Kind, data) -> tuple[str, dict]:
    return data.get("format") or "csv", from_query(kind.parameters, data, strict=False)


def _refused(request, kind: Kind, data, exc: InvalidParameters):
    form = report_form(kind, data)
    form.show_errors(exc.fields)
    return _page(request, bound=(kind.name, form), status=400)


@require_safe
@console_view("reports.view_report")
def report_list(request):
    return _page(request)


@require_http_methods(["GET", "POST"])
@console_view("reports.view_report", "reports.add_report")
def report_direct(request, kind: str):
    """The report streamed now (also a link: GET with the parameters in the query string)."""
    spec = _kind(kind)
    data = request.POST if request.method == "POST" else request.GET
    file_format, parameters = _submitted(spec, data)
    try:
        parameters = report_record_direct(
            kind=kind, file_format=file_format, parameters=parameters, actor=request.user
        )
    except InvalidParameters as exc:
        return _refused(request, spec, data, exc)
    return direct_response(kind, file_format, parameters)


@console_view("reports.view_report", "reports.add_report")
@require_POST  # inside: a GET without the role is 403, not 405
def report_generate(request, kind: str):
    spec = _kind(kind)
    file_format, parameters = _submitted(spec, request.POST)
    try:
        report = report_create(
            kind=kind, file_format=file_format, parameters=parameters, actor=request.user
        )
    except InvalidParameters as exc:
        return _refused(request, spec, request.POST, exc)
    messages.success(
        request,
        f"Report {report.pk} ({spec.title}) is being generated; it is listed below with its "
        "progress and can be downloaded when done.",
    )
    return redirect(f"{reverse('reports:report_list')}#report-{report.pk}")


@require_safe
@console_view("reports.view_report")
def report_status(request, pk: int):
    report = get_object_or_404(Report, pk=pk)
    return render(request, "reports/_status.html", {"report": report})


@require_safe
@console_view("reports.view_report")
def report_download(request, pk: int):
    report = get_object_or_404(Report, pk=pk)
    if report.state != ReportState.DONE:
        return render(request, "reports/report_not_ready.html", {"report": report}, status=409)
    report_record_download(report=report, actor=request.user)
    return stored_response(report)
