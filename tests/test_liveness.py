"""Steady-state preflights and postflights write last-seen times and sync history behind the
request (hosts.liveness); everything else they change is written in the request."""

import datetime
import time

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosts import liveness
from hosts.models import Host, HostSync
from hosts.services import hosts_mark_stale
from rules.services import RuleInput, rule_create


@pytest.fixture
def behind(settings):
    """Write-behind on, with an interval long enough that only flush() writes."""
    settings.SYNC_WRITE_BEHIND_SECONDS = 3600
    liveness.writer.flush()
    yield liveness.writer
    liveness.writer.flush()


def _row(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


@pytest.fixture
def synced(agent):
    agent.sync()
    agent.sync()
    return agent


def _postflight(agent, **values):
    agent.call(
        "postflight",
        "PostflightRequest",
        "PostflightResponse",
        {"machine_id": agent.machine_id, "sync_type": "NORMAL", **values},
    )


def test_steady_preflight_is_one_statement_and_its_time_written_later(synced, behind):
    before = _row(synced).last_preflight_at
    with CaptureQueriesContext(connection) as queries:
        synced.preflight()
    assert len(queries) == 1  # the sync context; nothing written in the request
    assert _row(synced).last_preflight_at == before
    assert behind.flush() == 1
    host = _row(synced)
    assert host.last_preflight_at > before
    assert host.stale_after > host.last_preflight_at


def test_a_preflight_that_changes_facts_writes_at_once(synced, behind):
    synced.facts["hostname"] = "renamed.example.com"
    synced.preflight()
    host = _row(synced)
    assert host.hostname == "renamed.example.com"
    assert host.last_preflight_at is not None


def test_a_clean_sync_decision_is_written_at_once(synced, behind):
    synced.request_clean_sync("CLEAN")
    answer = synced.preflight()
    assert answer.sync_type == 2  # CLEAN
    assert _row(synced).pending_sync_type == "CLEAN"


def test_a_stale_host_is_unmarked_at_once(synced, behind):
    Host.objects.filter(machine_id=synced.machine_id).update(
        stale_after=timezone.now() - datetime.timedelta(hours=1)
    )
    assert hosts_mark_stale() == 1
    synced.preflight()
    assert _row(synced).stale_since is None


def test_the_flush_unmarks_a_host_marked_stale_meanwhile(synced, behind):
    """The periodic task may run between the preflight and the flush."""
    Host.objects.filter(machine_id=synced.machine_id).update(
        stale_after=timezone.now() - datetime.timedelta(hours=1)
    )
    synced.preflight()
    hosts_mark_stale()
    assert _row(synced).stale_since is not None
    behind.flush()
    host = _row(synced)
    assert host.stale_since is None and host.stale_after > timezone.now()


def test_steady_postflight_writes_history_later(synced, behind):
    history = HostSync.objects.filter(host__machine_id=synced.machine_id)
    count = history.count()
    before = _row(synced).last_postflight_at
    with CaptureQueriesContext(connection) as queries:
        synced.sync()
    assert history.count() == count
    assert _row(synced).last_postflight_at == before
    # preflight, rule download and postflight: one statement each
    assert len(queries) == 3
    behind.flush()
    assert history.count() == count + 1
    newest = history.order_by("-finished_at").first()
    assert (newest.sync_type, newest.rules_received) == ("NORMAL", 0)
    assert _row(synced).last_postflight_at == newest.finished_at


def test_a_postflight_that_confirms_rules_writes_at_once(synced, behind):
    rule_create(data=RuleInput("BINARY", "a" * 64, "BLOCKLIST"))
    result = synced.sync()
    assert result.rules_received == 1
    host = _row(synced)
    assert host.pending_rev is None
    assert host.expected_counts == {"binary": 1}
    assert HostSync.objects.filter(host=host, rules_received=1).exists()


def test_an_older_time_never_overwrites_a_newer_one(synced, behind):
    host = _row(synced)
    now = timezone.now()
    future = now + datetime.timedelta(minutes=5)
    Host.objects.filter(pk=host.pk).update(last_preflight_at=future, stale_after=future)
    behind.preflight(host.pk, now, now)
    behind.flush()
    host.refresh_from_db()
    assert host.last_preflight_at == future and host.stale_after == future


def test_times_are_kept_for_the_next_flush_when_the_database_fails(synced, behind, monkeypatch):
    host = _row(synced)
    at = timezone.now() + datetime.timedelta(minutes=1)
    behind.preflight(host.pk, at, at)

    def fail(*args):
        raise OperationalError("the database went away")

    monkeypatch.setattr(liveness, "_write", fail)
    with pytest.raises(OperationalError):
        behind.flush()
    monkeypatch.undo()
    assert behind.flush() == 1
    host.refresh_from_db()
    assert host.last_preflight_at == at


def test_history_of_a_host_deleted_meanwhile_is_dropped(synced, behind):
    synced.sync()
    Host.objects.filter(machine_id=synced.machine_id).delete()
    behind.flush()  # no error
    assert not HostSync.objects.filter(host__machine_id=synced.machine_id).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_background_thread_writes_by_itself(make_agent, settings):
    agent = make_agent()
    agent.sync()
    agent.sync()
    settings.SYNC_WRITE_BEHIND_SECONDS = 0.05
    before = _row(agent).last_preflight_at
    agent.preflight()
    deadline = time.monotonic() + 30
    while _row(agent).last_preflight_at == before:
        assert time.monotonic() < deadline, "the writer thread never wrote"
        time.sleep(0.05)
    liveness.writer.stop()
