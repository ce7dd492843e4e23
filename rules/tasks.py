"""Periodic work of the rules app (fan-outs themselves run through hosts.tasks.fanout_run)."""

from celery import shared_task

from .services import rules_expire
from .tracking import delivery_refresh_pending, drift_audit


@shared_task(name="rules.refresh_delivery")
def refresh_delivery() -> int:
    """Keep the rules' delivery summaries current as hosts confirm."""
    return delivery_refresh_pending()


@shared_task(name="rules.check_drift")
def check_drift() -> dict:
    """Audit a slice of the fleet's delivered-rule bookkeeping against the rule history."""
    return drift_audit()


@shared_task(name="rules.expire")
def expire() -> int:
    """Delete rules whose expiry has passed; their hosts get REMOVE at the next sync."""
    return rules_expire()
