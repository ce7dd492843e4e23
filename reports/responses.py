"""Streamed downloads, shared by the console and the API: a report produced while it is sent
(direct) and the stored content of a background report."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db import connection, transaction
from django.http import StreamingHttpResponse
from django.utils import timezone

from .formats import CONTENT_TYPES, ReportStream
from .jobs import stored_content
from .kinds import KINDS
from .models import Report


def _in_one_snapshot(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """On PostgreSQL, produce the content inside one read transaction: the chunked cursor is
    then a plain one that sends rows as they are found (outside a transaction Django declares
    it WITH HOLD, which makes the server compute the whole result before the first row) and
    every query of the report sees the same data. Not on SQLite, where a transaction would
    take the database's write lock for the whole download (SQLite streams rows anyway).

    If the client goes away, Django closes this generator and the transaction ends."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            yield from pieces
    else:
        yield from pieces


def _attachment(response: StreamingHttpResponse, name: str) -> StreamingHttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


def filename(kind: str, file_format: str, when, report_id: int | None = None) -> str:
    number = f"-{report_id}" if report_id is not None else ""
    return f"santa-{kind}{number}-{when:%Y%m%d-%H%M%S}.{file_format}"


def direct_response(kind: str, file_format: str, parameters: dict) -> StreamingHttpResponse:
    """The report streamed as it is read; `parameters` already checked (report_record_direct)."""
    spec = KINDS[kind]
    now = timezone.now()
    stream = ReportStream(
        spec, file_format, spec.parse(parameters), parameters=parameters, generated_at=now
    )
    response = StreamingHttpResponse(
        _in_one_snapshot(stream), content_type=CONTENT_TYPES[file_format]
    )
    return _attachment(response, filename(kind, file_format, now))


def stored_response(report: Report) -> StreamingHttpResponse:
    """A done report's stored content, with its length and SHA-256."""
    response = StreamingHttpResponse(
        stored_content(report), content_type=CONTENT_TYPES[report.format]
    )
    response["Content-Length"] = str(report.size)
    response["X-Content-SHA256"] = report.sha256
    return _attachment(response, filename(report.kind, report.format, report.created_at, report.pk))
