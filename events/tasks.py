"""Periodic work of the events app."""

from celery import shared_task

from .services import events_drain_all, events_prune


@shared_task(name="events.prune")
def prune_events() -> dict:
    """Delete events received longer ago than EVENT_RETENTION_DAYS (0 keeps them forever)."""
    return events_prune()


@shared_task(name="events.drain")
def drain_events() -> int:
    """Store event uploads accepted but not stored yet (normally the web processes do)."""
    return events_drain_all()
