"""Celery tasks of the reports app: a report's job, the reconciler and retention."""

from celery import shared_task

from .jobs import report_execute, reports_reconcile
from .services import reports_prune


@shared_task(name="reports.generate", acks_late=True)
def generate_report(report_id: int) -> str:
    """Run one report job (sent when the report was asked for); returns its state."""
    return report_execute(report_id)


@shared_task(name="reports.reconcile")
def reconcile_reports() -> dict:
    """Run report jobs whose message was lost or whose worker died."""
    return reports_reconcile()


@shared_task(name="reports.prune")
def prune_reports() -> int:
    """Delete reports older than REPORT_RETENTION_DAYS with their content."""
    return reports_prune()
