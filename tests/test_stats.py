"""The execution statistics ingestion keeps (events.stats): what the console lists and sorts by.

They are checked against the events themselves, on SQLite and on PostgreSQL (CI runs both), and
against the migration that computes them for events stored before they existed."""

import datetime
import importlib

import pytest
from django.apps import apps

from events.models import Binary, BinaryHost, BinaryUser, EventDay

SHA_A, SHA_B = "a" * 64, "b" * 64
T0 = 1_760_000_000  # 2025-10-09 08:53:20 UTC


def event(sha=SHA_A, *, t=T0, decision="BLOCK_BINARY", user="alice", pid=1, **extra):
    return {
        "file_sha256": sha,
        "file_name": f"tool-{sha[0]}",
        "file_path": "/usr/local/bin",
        "decision": decision,
        "execution_time": t,
        "executing_user": user,
        "pid": pid,
        **extra,
    }


@pytest.fixture
def fleet(make_agent):
    agents = [make_agent() for _ in range(3)]
    for agent in agents:
        agent.preflight()
    return agents


def stats(sha):
    b = Binary.objects.get(pk=sha)
    return {
        "executions": b.executions,
        "blocked": b.blocked,
        "would_block": b.would_block,
        "host_count": b.host_count,
        "user_count": b.user_count,
        "first": b.first_executed_at,
        "last": b.last_executed_at,
    }


def ts(seconds):
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def test_counts_per_binary_host_user_and_day(fleet):
    a, b, c = fleet
    a.upload_events(
        [
            event(t=T0 + 10, pid=1),
            event(t=T0 + 20, pid=2, user="bob"),
            event(SHA_B, t=T0 + 86_400, decision="ALLOW_UNKNOWN", pid=3),
        ]
    )
    b.upload_events([event(t=T0 - 50, pid=4, decision="BLOCK_CERTIFICATE")])
    c.upload_events([event(SHA_B, t=T0, decision="ALLOW_BINARY", pid=5, user="")])

    assert stats(SHA_A) == {
        "executions": 3,
        "blocked": 3,
        "would_block": 0,
        "host_count": 2,
        "user_count": 2,
        "first": ts(T0 - 50),
        "last": ts(T0 + 20),
    }
    assert stats(SHA_B) == {
        "executions": 2,
        "blocked": 0,
        "would_block": 1,
        "host_count": 2,
        "user_count": 1,
        "first": ts(T0),
        "last": ts(T0 + 86_400),
    }
    on_a = BinaryHost.objects.get(binary_id=SHA_A, host__machine_id=a.machine_id)
    assert (on_a.executions, on_a.blocked, on_a.last_user, on_a.last_at) == (
        2,
        2,
        "bob",
        ts(T0 + 20),
    )
    assert sorted(BinaryUser.objects.filter(binary_id=SHA_A).values_list("user", "executions")) == [
        ("alice", 2),
        ("bob", 1),
    ]
    days = {(d.day.isoformat(), d.outcome): d.count for d in EventDay.objects.all()}
    assert days == {
        ("2025-10-09", "blocked"): 3,
        ("2025-10-09", "allowed"): 1,
        ("2025-10-10", "would_block"): 1,
    }
    assert Binary.objects.get(pk=SHA_B).last_decision == "ALLOW_UNKNOWN"


def test_replayed_batches_are_counted_once(fleet):
    batch = [event(t=T0 + n, pid=n) for n in range(5)]
    fleet[0].upload_events(batch)
    fleet[0].upload_events(batch)  # the agent retries a batch it thinks failed
    fleet[0].upload_events([*batch[:2], event(t=T0 + 99, pid=99)])  # partly new
    assert stats(SHA_A)["executions"] == 6
    assert stats(SHA_A)["host_count"] == 1
    assert EventDay.objects.get(outcome="blocked").count == 6


def test_bundle_scans_are_not_executions(fleet):
    fleet[0].upload_events(
        [
            event(
                decision="BUNDLE_BINARY",
                t=None,
                file_bundle_hash="c" * 64,
                file_bundle_binary_count=1,
            )
        ]
    )
    assert stats(SHA_A)["executions"] == 0
    assert not BinaryHost.objects.exists()
    assert not EventDay.objects.exists()


def test_backfill_migration_matches_ingestion(fleet):
    a, b, _ = fleet
    a.upload_events([event(t=T0 + n, pid=n, user=f"u{n % 2}") for n in range(4)])
    b.upload_events([event(SHA_B, t=T0, decision="ALLOW_UNKNOWN"), event(t=T0 + 7, pid=9)])
    expected = {sha: stats(sha) for sha in (SHA_A, SHA_B)}
    hosts = sorted(BinaryHost.objects.values_list("binary_id", "host_id", "executions", "blocked"))
    users = sorted(BinaryUser.objects.values_list("binary_id", "user", "executions"))
    days = sorted(EventDay.objects.values_list("day", "outcome", "count"))

    BinaryHost.objects.all().delete()
    BinaryUser.objects.all().delete()
    EventDay.objects.all().delete()
    Binary.objects.update(
        executions=0, blocked=0, would_block=0, host_count=0, user_count=0,
        first_executed_at=None, last_executed_at=None,
    )  # fmt: skip
    migration = importlib.import_module("events.migrations.0004_backfill_binary_stats")
    migration.backfill(apps, None)

    assert {sha: stats(sha) for sha in (SHA_A, SHA_B)} == expected
    assert (
        sorted(BinaryHost.objects.values_list("binary_id", "host_id", "executions", "blocked"))
        == hosts
    )
    assert sorted(BinaryUser.objects.values_list("binary_id", "user", "executions")) == users
    assert sorted(EventDay.objects.values_list("day", "outcome", "count")) == days
