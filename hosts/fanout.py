"""Queueing and running fan-out work (see hosts.models.FanOut).

`fanout_record` is called inside the transaction of a change; it writes the FanOut row and
sends the task only once that transaction commits. A failure to reach the broker is logged and
swallowed: the change is committed and correct, and the reconciler will run the work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import FanOut, FanOutKind, FanOutState

logger = logging.getLogger(__name__)

# What each kind of fan-out does, as (lazily imported) callables taking the FanOut and
# returning a JSON-able result. Both recompute from the database, so they are idempotent.
HANDLERS = {
    FanOutKind.RULES: "rules.tracking.fanout_rules",
    FanOutKind.TAG_RULES: "hosts.services.tag_rules_apply_fleet",
}


def fanout_record(*, kind: str, revision: int, rule_ids=()) -> FanOut:
    """Record work to do after the current transaction commits, and send it then."""
    assert transaction.get_connection().in_atomic_block, "fanout_record needs a transaction"
    fanout = FanOut.objects.create(kind=kind, revision=revision, rule_ids=sorted(set(rule_ids)))
    transaction.on_commit(lambda: fanout_send(fanout.pk))
    return fanout


def fanout_send(fanout_id: int) -> bool:
    """Hand the work to a worker (or run it here in embedded mode). Never raises: the row
    stays queued and the reconciler picks it up."""
    from .tasks import fanout_run

    try:
        fanout_run.apply_async(args=[fanout_id], retry=False)
    except Exception:  # broker down, or the in-process run failed: the reconciler retries
        logger.warning("fan-out %s not sent; the reconciler will run it", fanout_id, exc_info=True)
        return False
    return True


def fanout_execute(fanout_id: int) -> str:
    """Run one fan-out unless it is done; returns its final state."""
    fanout = FanOut.objects.filter(pk=fanout_id).first()
    if fanout is None:
        return "missing"
    if fanout.state == FanOutState.DONE:
        return fanout.state  # delivered twice: nothing to do
    FanOut.objects.filter(pk=fanout.pk).update(
        started_at=timezone.now(), attempts=fanout.attempts + 1
    )
    try:
        result = import_string(HANDLERS[fanout.kind])(fanout)
    except Exception as exc:
        FanOut.objects.filter(pk=fanout.pk).update(
            state=FanOutState.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    FanOut.objects.filter(pk=fanout.pk).update(
        state=FanOutState.DONE, result=result or {}, error="", finished_at=timezone.now()
    )
    return FanOutState.DONE


def fanout_overdue(now=None):
    """Fan-outs that should have run by now: queued or failed for longer than the grace."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FANOUT_GRACE_SECONDS)
    return FanOut.objects.filter(
        state__in=[FanOutState.QUEUED, FanOutState.FAILED], created_at__lte=cutoff
    ).order_by("id")


KEEP_DONE_DAYS = 30


def fanout_reconcile(limit: int = 100) -> dict:
    """Run overdue fan-outs here, oldest first (lost messages only delay the work), and
    forget finished ones after KEEP_DONE_DAYS days."""
    cutoff = timezone.now() - timedelta(days=KEEP_DONE_DAYS)
    FanOut.objects.filter(state=FanOutState.DONE, finished_at__lt=cutoff).delete()
    done, failed = [], []
    for fanout_id in fanout_overdue().values_list("id", flat=True)[:limit]:
        try:
            fanout_execute(fanout_id)
            done.append(fanout_id)
        except Exception:
            logger.exception("fan-out %s failed again", fanout_id)
            failed.append(fanout_id)
    return {"done": done, "failed": failed}
