"""Writes of the reports app: asking for a report, recording a direct download and the
download of a stored report, and retention. Each records its audit entry in its transaction.
The job itself (reports.jobs) writes the report's progress and content."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record

from .errors import InvalidParameters
from .jobs import report_send
from .kinds import KINDS, validate_parameters
from .models import Report, ReportChunk, ReportFormat

PRUNE_BATCH = 100  # reports deleted per transaction


def _checked(kind: str, file_format: str, parameters) -> dict:
    if kind not in KINDS:
        raise InvalidParameters("Unknown report.", {"kind": [f"Choose one of {', '.join(KINDS)}."]})
    if file_format not in ReportFormat.values:
        raise InvalidParameters(
            "Unknown format.", {"format": [f"Choose one of {', '.join(ReportFormat.values)}."]}
        )
    return validate_parameters(kind, parameters)


def _describe(kind: str, file_format: str) -> str:
    return f"{KINDS[kind].title} ({file_format.upper()})"


def report_create(
    *, kind: str, file_format: str, parameters: dict, actor: AbstractBaseUser | None
) -> Report:
    """Ask for a report generated in the background; its job is sent when this commits.
    InvalidParameters (nothing written) for a kind, format or parameter that is not valid."""
    parameters = _checked(kind, file_format, parameters)
    actor = actor if actor is not None and actor.is_authenticated else None
    retention = settings.REPORT_RETENTION_DAYS
    with transaction.atomic():
        report = Report.objects.create(
            kind=kind, format=file_format, parameters=parameters, created_by=actor
        )
        if retention > 0:
            report.expires_at = report.created_at + datetime.timedelta(days=retention)
            report.save(update_fields=["expires_at"])
        audit_record(
            action="report.generate",
            object_type="report",
            object_id=report.pk,
            object_repr=_describe(kind, file_format),
            after={
                "kind": kind,
                "format": file_format,
                "parameters": parameters,
                "delivery": "background",
            },
            actor=actor,
        )
        transaction.on_commit(lambda: report_send(report.pk))
    return report


def report_record_direct(
    *, kind: str, file_format: str, parameters: dict, actor: AbstractBaseUser | None
) -> dict:
    """Record a direct (streamed) download before it starts; returns the checked parameters.
    InvalidParameters (nothing recorded) when they are not valid."""
    parameters = _checked(kind, file_format, parameters)
    with transaction.atomic():
        audit_record(
            action="report.generate",
            object_type="report",
            object_repr=f"{_describe(kind, file_format)}, downloaded directly",
            after={
                "kind": kind,
                "format": file_format,
                "parameters": parameters,
                "delivery": "direct",
            },
            actor=actor,
        )
    return parameters


def report_record_download(*, report: Report, actor: AbstractBaseUser | None) -> None:
    """Record that a stored report is being downloaded."""
    with transaction.atomic():
        audit_record(
            action="report.download",
            object_type="report",
            object_id=report.pk,
            object_repr=_describe(report.kind, report.format),
            after={
                "kind": report.kind,
                "format": report.format,
                "rows": report.rows_written,
                "size": report.size,
                "sha256": report.sha256,
            },
            actor=actor,
        )


def reports_prune(*, now: datetime.datetime | None = None) -> int:
    """Delete reports past their expiry (REPORT_RETENTION_DAYS after they were asked for) and
    their content, a batch per transaction; returns how many."""
    now = now or timezone.now()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Report.objects.filter(expires_at__lte=now)
                .order_by("id")[:PRUNE_BATCH]
                .values_list("id", flat=True)
            )
            if not ids:
                return deleted
            ReportChunk.objects.filter(report_id__in=ids).delete()
            Report.objects.filter(id__in=ids).delete()
        deleted += len(ids)
