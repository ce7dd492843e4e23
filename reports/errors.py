"""Named errors of the reports app, turned into 400/409 by the API and into messages by the
console."""

from __future__ import annotations


class ReportsError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, detail: str, fields: dict[str, list[str]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or {}


class InvalidParameters(ReportsError):
    """Report parameters refused: `fields` maps each parameter at fault to its messages."""


class ReportNotReady(ReportsError):
    status = 409
    code = "report_not_ready"
