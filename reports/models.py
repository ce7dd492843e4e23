"""Reports for auditors: a generated report and its content, stored in the database.

A report generated in the background is a `Report` row (what was asked, by whom, and how far
the job has got) and its content as `ReportChunk` rows: gzip-compressed pieces of about a MiB,
in order. Keeping the content in PostgreSQL means any web node can serve a report any worker
wrote, without a shared disk; retention deletes both (reports.services.reports_prune). See
docs/architecture.md, "Reports".
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ReportKind(models.TextChoices):
    RULES = "rules", "Rules inventory"
    EXECUTIONS = "executions", "Blocked executions"
    HOSTS = "hosts", "Host compliance"
    AUDIT = "audit", "Audit log"


class ReportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSON = "json", "JSON"


class ReportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Report(models.Model):
    """A report generated in the background, and the state of its job."""

    kind = models.CharField(max_length=16, choices=ReportKind.choices)
    format = models.CharField(max_length=8, choices=ReportFormat.choices)
    parameters = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=8, choices=ReportState.choices, default=ReportState.QUEUED)
    rows_written = models.PositiveBigIntegerField(default=0)
    rows_expected = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Counted when the job starts; empty when not known."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Moved on with the progress: a job whose heartbeat stopped (worker killed) is restarted by
    # the reconciler (reports.jobs.reports_reconcile).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    size = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of the content (uncompressed)."
    )
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the content.")
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="report_state_created"),
            models.Index(fields=["expires_at"], name="report_expires_at"),
        ]

    def __str__(self) -> str:
        return f"report {self.pk}: {self.kind} ({self.format}), {self.state}"

    @property
    def finished(self) -> bool:
        return self.state in (ReportState.DONE, ReportState.FAILED)

    @property
    def progress_percent(self) -> int | None:
        """How far the job is, 0-100; None while it is not known (nothing counted)."""
        if self.state == ReportState.DONE:
            return 100
        if not self.rows_expected:
            return None
        return min(99, int(100 * self.rows_written / self.rows_expected))


class ReportChunk(models.Model):
    """One piece of a report's content: a complete gzip member of about a MiB. The content is
    the concatenation of the decompressed chunks of the report's last attempt, in `seq`
    order."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="chunks")
    attempt = models.PositiveIntegerField(help_text="The job attempt that wrote it.")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        # Written and read only by the report job and the download: no permissions of its own.
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["report", "attempt", "seq"], name="reportchunk_unique_seq"
            )
        ]

    def __str__(self) -> str:
        return f"report {self.report_id} chunk {self.seq}"
