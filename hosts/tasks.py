"""Celery tasks of the hosts app: running fan-outs, reconciling lost ones, stale hosts
and the retention of their sync history."""

from celery import shared_task

from .fanout import fanout_execute, fanout_reconcile
from .services import hosts_mark_stale, hosts_prune_syncs


@shared_task(name="hosts.fanout_run")
def fanout_run(fanout_id: int) -> str:
    """Run one fan-out (sent on commit of the change that recorded it)."""
    return fanout_execute(fanout_id)


@shared_task(name="hosts.fanout_reconcile")
def fanout_reconcile_task() -> dict:
    """Run every fan-out whose message was lost (broker down, worker crash)."""
    return fanout_reconcile()


@shared_task(name="hosts.mark_stale")
def mark_stale_hosts() -> int:
    """Mark stale hosts (returns how many), then drop sync history past its retention."""
    stale = hosts_mark_stale()
    hosts_prune_syncs()
    return stale
