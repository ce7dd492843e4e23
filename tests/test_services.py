"""Checks against the real PostgreSQL and Redis. `.ci/run` runs them with CI=true (and sets
SANTAADMIN_REQUIRE_SERVICES=1, so a missing service fails the run); an embedded `make test`
has neither and skips them, saying why."""

import os

import pytest
from django.conf import settings as django_settings
from django.db import connection

REQUIRED = os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1"


def _require(condition: bool, what: str):
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"{what} is required (SANTAADMIN_REQUIRE_SERVICES=1) but not configured")
    pytest.skip(f"{what} not configured: embedded run (CI=true .ci/run uses the real one)")


@pytest.mark.integration
def test_suite_runs_on_postgresql(db):
    _require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        assert cursor.fetchone()[0]


@pytest.mark.integration
def test_broker_is_reachable_and_reported(client, db):
    _require(bool(django_settings.CELERY_BROKER_URL), "Redis (CELERY_BROKER_URL)")
    assert not django_settings.CELERY_TASK_ALWAYS_EAGER
    body = client.get("/healthz").json()
    assert body["broker"] == "ok", body
    assert body["tasks"] == "celery-worker"


@pytest.mark.integration
# Serialized rollback: the flush after this test then leaves the migrations' rows (revision,
# default profile, roles) to be restored, as the other transactional tests expect.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_revision_lock_serialises_concurrent_rule_changes():
    """Two writers each take the next revision inside their transaction: the numbers are
    distinct and consecutive, as commit order requires (real row locks on PostgreSQL)."""
    _require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    import threading

    from django.db import connections, transaction

    from hosts.services import revision_bump

    taken, barrier = [], threading.Barrier(4)

    def writer():
        barrier.wait()
        with transaction.atomic():
            taken.append(revision_bump())
        connections.close_all()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == [taken_min := min(taken), taken_min + 1, taken_min + 2, taken_min + 3]
