"""Deferred event uploads (SYNC_DEFER_EVENTS, the production default): the upload is validated
and accepted in one INSERT, then stored many uploads at a time (events.services.events_drain)
exactly as an upload stored in the request would be."""

import time

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from events.models import Binary, BinaryHost, Event, EventUpload, FileAccessEvent
from events.services import MAX_DRAIN_ATTEMPTS, events_drain, events_drain_all
from events.tasks import drain_events
from hosts import liveness
from hosts.models import ConfigurationProfile, Host
from tests.test_stages import BUNDLE, FULL_EVENT

FAA = {
    "rule_version": "v1",
    "rule_name": "MyRule",
    "target": "/you/are/being/watched",
    "process_chain": [{"file_path": "/bin/zsh", "pid": 456}],
    "access_time": 1753333333,
    "decision": "FILE_ACCESS_DECISION_DENIED",
}


@pytest.fixture
def deferred(settings):
    settings.SYNC_DEFER_EVENTS = True


def _event(n: int, sha: str = "c" * 64, decision: str = "BLOCK_UNKNOWN") -> dict:
    return {
        "file_sha256": sha,
        "file_name": "tool",
        "file_path": "/usr/local/bin",
        "executing_user": "alice",
        "decision": decision,
        "execution_time": 1_760_000_000 + n,
        "pid": 100 + n,
    }


def _upload(agent, events, faa=()):
    return agent.call(
        "eventupload",
        "EventUploadRequest",
        "EventUploadResponse",
        {"machine_id": agent.machine_id, "events": events, "file_access_events": list(faa)},
    )


def test_an_upload_is_one_insert_and_stores_nothing_else(agent, deferred, settings):
    agent.sync()
    settings.SYNC_WRITE_BEHIND_SECONDS = 3600
    try:
        with CaptureQueriesContext(connection) as queries:
            _upload(agent, [_event(1), _event(2)])
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) == 2, statements  # the sync context, the INSERT
        assert statements[1].lstrip().startswith("INSERT INTO events_eventupload")
    finally:
        liveness.writer.flush()
    assert EventUpload.objects.count() == 1
    assert not Event.objects.exists()
    assert events_drain() == 1
    assert Event.objects.count() == 2
    assert not EventUpload.objects.exists()
    assert Host.objects.get().last_eventupload_at is not None


def test_drained_events_equal_events_stored_in_the_request(make_agent, settings):
    """The same upload, one machine deferred, one not: every stored value is the same."""
    direct, later = make_agent(), make_agent()
    direct.sync()
    later.sync()
    _upload(direct, [FULL_EVENT], [FAA])
    settings.SYNC_DEFER_EVENTS = True
    _upload(later, [FULL_EVENT], [FAA])
    events_drain()

    def stored(agent, model):
        row = model.objects.get(host__machine_id=agent.machine_id)
        values = model_to_dict(row)
        for name in ("id", "host", "dedupe_key", "received_at"):
            values.pop(name, None)
        return values

    assert stored(later, Event) == stored(direct, Event)
    assert stored(later, FileAccessEvent) == stored(direct, FileAccessEvent)
    binary = Binary.objects.get(pk=FULL_EVENT["file_sha256"])
    assert (binary.executions, binary.blocked, binary.host_count) == (2, 2, 2)


def test_replays_are_stored_and_counted_once(agent, deferred):
    agent.sync()
    batch = [_event(n) for n in range(5)]
    _upload(agent, batch)
    _upload(agent, batch)  # the agent retried before the first was drained
    events_drain()
    _upload(agent, batch)  # and once more after
    events_drain()
    assert Event.objects.count() == 5
    binary = Binary.objects.get()
    assert (binary.executions, binary.host_count, binary.user_count) == (5, 1, 1)
    assert BinaryHost.objects.get().executions == 5


def test_many_hosts_are_drained_with_the_statements_of_one(make_agent, deferred, settings):
    settings.SYNC_EVENT_DRAINERS = 1  # one share: one transaction whatever the hosts
    agents = [make_agent() for _ in range(6)]
    for agent in agents:
        agent.sync()

    def drain_statements(uploaders) -> int:
        for n, agent in enumerate(uploaders):
            _upload(agent, [_event(n, sha=f"{n + 1:064x}"), _event(n + 50)])
        with CaptureQueriesContext(connection) as queries:
            assert events_drain() == len(uploaders)
        return len(queries)

    assert drain_statements(agents[:1]) == drain_statements(agents)
    assert Event.objects.count() == 12  # the first host's second upload is a replay
    assert BinaryHost.objects.count() == 12  # each host: its own binary and the shared one
    assert Binary.objects.get(pk="c" * 64).host_count == 6


def test_a_refused_upload_is_not_accepted(agent, deferred):
    agent.sync()
    status, _ = agent.post(
        "eventupload",
        "EventUploadRequest",
        {"machine_id": agent.machine_id, "events": [{**_event(1), "file_sha256": "nope"}]},
    )
    assert status == 400
    assert not EventUpload.objects.exists()


def test_a_bundle_question_is_answered_in_the_request(agent, deferred):
    ConfigurationProfile.objects.filter(is_default=True).update(enable_bundles=True)
    agent.sync()
    response = _upload(agent, [FULL_EVENT])
    assert list(response.event_upload_bundle_binaries) == [BUNDLE]
    assert Event.objects.count() == 1
    assert not EventUpload.objects.exists()


def test_an_upload_that_cannot_be_stored_is_set_aside(make_agent, deferred):
    good, bad = make_agent(), make_agent()
    good.sync()
    bad.sync()
    _upload(bad, [_event(1)])
    _upload(good, [_event(2)])
    EventUpload.objects.filter(host__machine_id=bad.machine_id).update(payload=b"{not json")
    for _ in range(MAX_DRAIN_ATTEMPTS):
        events_drain()
    assert Event.objects.filter(host__machine_id=good.machine_id).count() == 1
    broken = EventUpload.objects.get()
    assert broken.attempts == MAX_DRAIN_ATTEMPTS and "JSONDecodeError" in broken.error
    assert events_drain() == 0  # no longer tried


def test_the_periodic_task_drains(agent, deferred):
    agent.sync()
    for n in range(3):
        _upload(agent, [_event(n)])
    assert drain_events() == 3
    assert Event.objects.count() == 3


def test_draining_in_pages(agent, deferred):
    agent.sync()
    for n in range(5):
        _upload(agent, [_event(n)])
    assert events_drain_all(limit=2) == 5
    assert Event.objects.count() == 5


def test_a_deleted_host_takes_its_waiting_uploads(agent, deferred):
    agent.sync()
    _upload(agent, [_event(1)])
    Host.objects.all().delete()
    assert not EventUpload.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_another_drainer_holding_the_lock_is_left_alone(make_agent, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite runs one writer at a time anyway")
    import psycopg
    from django.db import connections

    from events.services import DRAIN_LOCK

    settings.SYNC_DEFER_EVENTS = True
    agent = make_agent()
    agent.sync()
    _upload(agent, [_event(1)])
    params = connections["default"].get_connection_params()
    share = Host.objects.get(machine_id=agent.machine_id).pk % settings.SYNC_EVENT_DRAINERS
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [DRAIN_LOCK + share])
        assert events_drain() == 0
        assert events_drain_all() == 0
        other.execute("SELECT pg_advisory_unlock(%s)", [DRAIN_LOCK + share])
    assert events_drain() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_background_thread_drains_by_itself(make_agent, settings):
    agent = make_agent()
    agent.sync()
    settings.SYNC_DEFER_EVENTS = True
    settings.SYNC_WRITE_BEHIND_SECONDS = 0.05
    try:
        _upload(agent, [_event(1)])
        deadline = time.monotonic() + 30
        while not Event.objects.exists():
            assert time.monotonic() < deadline, "the background thread never drained"
            time.sleep(0.05)
    finally:
        liveness.writer.stop()


def test_a_database_failure_costs_no_attempt(agent, deferred, monkeypatch):
    from django.db import OperationalError

    import events.services as services

    agent.sync()
    _upload(agent, [_event(1)])

    def locked(items):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "events_ingest_many", locked)
    with pytest.raises(OperationalError):
        events_drain()
    monkeypatch.undo()
    assert EventUpload.objects.get().attempts == 0
    assert events_drain() == 1


def test_one_process_drains_every_share(make_agent, deferred, settings):
    settings.SYNC_EVENT_DRAINERS = 3
    agents = [make_agent() for _ in range(7)]
    for n, agent in enumerate(agents):
        agent.sync()
        _upload(agent, [_event(n), _event(n + 100, sha=f"{n + 1:064x}")])
    assert events_drain_all() == 7
    assert not EventUpload.objects.exists()
    assert Event.objects.count() == 14
    assert Binary.objects.get(pk="c" * 64).host_count == 7


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_shares_drain_side_by_side_and_count_shared_binaries_once(
    make_agent, settings, monkeypatch
):
    """Two drains of different shares, both inside their transactions at the same moment
    (each has written its own events and waits for the other), then both writing the
    binaries and daily counts they share: both finish, and every count is exact (a binary's
    new hosts and users counted once, whichever drain came second)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite drains one share at a time (one writer)")
    import threading

    from django.db import connections

    import events.services as services

    settings.SYNC_DEFER_EVENTS = True
    settings.SYNC_EVENT_DRAINERS = 2
    agents = [make_agent() for _ in range(6)]
    for agent in agents:
        agent.sync()
    shares = {Host.objects.get(machine_id=a.machine_id).pk % 2 for a in agents}
    assert shares == {0, 1}, "the hosts must fall into both shares"
    for n, agent in enumerate(agents):
        # Each host its own user: the binaries are the first rows the two drains share.
        shared = [
            {**_event(n * 10 + k, sha=f"{k + 1:064x}"), "executing_user": f"user{n}"}
            for k in range(5)
        ]
        _upload(agent, [*shared, _event(n, sha=f"{n + 100:064x}")])

    both_inside = threading.Barrier(2, timeout=30)
    pairs = services.stats_record_pairs

    def wait_then_pairs(counts):
        both_inside.wait()
        pairs(counts)

    monkeypatch.setattr(services, "stats_record_pairs", wait_then_pairs)
    results, errors = {}, []

    def drain(share):
        try:
            results[share] = services._drain_share(share, 2, 500)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drain, args=(share,)) for share in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sum(results.values()) == 6 and all(results.values())
    assert not EventUpload.objects.exists()
    assert Event.objects.count() == 36
    for k in range(5):
        binary = Binary.objects.get(pk=f"{k + 1:064x}")
        counts = (binary.executions, binary.blocked, binary.host_count, binary.user_count)
        assert counts == (6, 6, 6, 6)
    assert BinaryHost.objects.count() == 36


def test_drains_write_shared_rows_last_and_in_key_order(
    make_agent, deferred, monkeypatch, settings
):
    """What keeps side-by-side drains from deadlocking: every drain writes the rows another
    may share after its own, table after table in one order, each table's rows by key."""
    import events.services as services

    settings.SYNC_EVENT_DRAINERS = 1  # one transaction for all three hosts

    calls = []

    def spy(name, function, rows_of):
        def wrapper(*args, **kwargs):
            calls.append((name, rows_of(*args, **kwargs)))
            return function(*args, **kwargs)

        monkeypatch.setattr(services, name, wrapper)

    spy("_insert_events", services._insert_events, lambda rows: [r["dedupe_key"] for r in rows])
    spy("stats_record_pairs", services.stats_record_pairs, lambda counts: None)
    spy(
        "upsert",
        services.upsert,
        lambda model, objs, **kw: [model.__name__, *(o.pk for o in objs)],
    )
    spy(
        "stats_record_binaries",
        services.stats_record_binaries,
        lambda counts, catalogue: [b.sha256 for b in catalogue],
    )
    agents = [make_agent() for _ in range(3)]
    for n, agent in enumerate(agents):
        agent.sync()
        shas = [f"{(n * 7 + k) % 11 + 1:064x}" for k in range(4)]
        _upload(agent, [_event(n * 10 + k, sha=sha) for k, sha in enumerate(shas)] + [FULL_EVENT])
    assert events_drain() == 3

    names = [name for name, _ in calls]
    assert names == [
        "_insert_events",
        "stats_record_pairs",
        "upsert",  # certificates
        "upsert",  # bundles
        "stats_record_binaries",
    ]
    keys, _, certificates, bundles, binaries = (rows for _, rows in calls)
    assert keys == sorted(keys)
    assert certificates[0] == "Certificate" and certificates[1:] == sorted(certificates[1:])
    assert len(certificates) > 2
    assert bundles[0] == "Bundle" and len(bundles) > 1
    assert binaries == sorted(binaries) and len(binaries) > 5
