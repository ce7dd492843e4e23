"""Periodic work (Celery beat): stale hosts, event retention, the drift audit, the fan-out
reconciler and sending fan-outs when the broker is down; and the beat schedule itself."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from events.models import Binary, Certificate, Event, FileAccessEvent
from events.services import events_prune
from events.tasks import prune_events
from hosts import fanout as fanout_module
from hosts import tasks as host_tasks
from hosts.fanout import fanout_execute, fanout_reconcile, fanout_send
from hosts.models import ConfigurationProfile, FanOut, FanOutKind, FanOutState, Host, Tag
from hosts.services import host_set_tags, hosts_mark_stale, tag_rule_create
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_delete, rule_update
from rules.tasks import check_drift
from rules.tracking import drift_audit

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
SHA_D = "d" * 64
CERT = "e" * 64
T0 = 1767225600  # 2026-01-01
HOSTS = "/api/v1/hosts/"


def host_of(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


# --- stale hosts ----------------------------------------------------------------------------------


def test_preflight_sets_stale_after_from_the_default_interval(agent, settings):
    settings.HOST_STALE_MISSED_SYNCS = 3
    agent.sync()
    host = host_of(agent)
    assert host.stale_since is None
    # The default profile syncs every 600 s.
    assert host.stale_after - host.last_preflight_at == timedelta(seconds=3 * 600)


def test_stale_after_uses_the_hosts_own_interval(make_agent, make_enrollment, settings):
    settings.HOST_STALE_MISSED_SYNCS = 2
    profile = ConfigurationProfile.objects.create(name="fast", full_sync_interval=120)
    profile.tags.add(Tag.objects.create(name="kiosk"))
    _, secret = make_enrollment(tags=["kiosk"])
    kiosk = make_agent(secret=secret)
    plain = make_agent()
    kiosk.sync()
    plain.sync()
    host = host_of(kiosk)
    assert host.stale_after - host.last_preflight_at == timedelta(seconds=240)
    host = host_of(plain)
    assert host.stale_after - host.last_preflight_at == timedelta(seconds=1200)


def test_stale_after_follows_an_automatic_tag(make_agent, settings):
    settings.HOST_STALE_MISSED_SYNCS = 4
    profile = ConfigurationProfile.objects.create(name="labs", full_sync_interval=300)
    tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    profile.tags.add(Tag.objects.get(name="lab"))
    agent = make_agent(hostname="lab-1.example.com")
    agent.sync()
    host = host_of(agent)
    assert host.stale_after - host.last_preflight_at == timedelta(seconds=1200)


def test_mark_stale_and_the_next_preflight_clears_it(make_agent, analyst_api, settings):
    settings.HOST_STALE_MISSED_SYNCS = 3
    late = make_agent(machine_id="LATE")
    fresh = make_agent(machine_id="FRESH")
    late.sync()
    fresh.sync()
    Host.objects.filter(machine_id="FRESH").update(stale_after=timezone.now() + timedelta(hours=1))
    deadline = host_of(late).stale_after

    assert hosts_mark_stale(now=deadline - timedelta(seconds=1)) == 0
    assert hosts_mark_stale(now=deadline) == 0  # due strictly after the deadline
    assert hosts_mark_stale(now=deadline + timedelta(seconds=1)) == 1
    host = host_of(late)
    assert host.stale_since == deadline
    assert host_of(fresh).stale_since is None
    assert hosts_mark_stale(now=deadline + timedelta(hours=2)) == 1  # FRESH now; LATE was
    assert host_of(late).stale_since == deadline  # not moved by a second run

    body = analyst_api.get(f"{HOSTS}LATE/").json()
    assert body["stale"] is True and body["stale_since"]
    Host.objects.filter(machine_id="FRESH").update(stale_since=None, stale_after=None)

    def listed(**params):
        response = analyst_api.get(HOSTS, params)
        assert response.status_code == 200, response.content
        return {h["machine_id"] for h in response.json()["results"]}

    assert listed(stale="true") == {"LATE"}
    assert listed(stale="false") == {"FRESH"}
    assert listed() == {"LATE", "FRESH"}

    late.sync()
    host = host_of(late)
    assert host.stale_since is None
    assert host.stale_after > deadline
    assert listed(stale="true") == set()
    assert analyst_api.get(f"{HOSTS}LATE/").json()["stale"] is False


def test_a_host_without_a_deadline_is_never_stale(agent):
    agent.sync()
    Host.objects.update(stale_after=None)
    assert hosts_mark_stale(now=timezone.now() + timedelta(days=365)) == 0


def test_mark_stale_task(make_agent):
    agent = make_agent()
    agent.sync()
    Host.objects.update(stale_after=timezone.now() - timedelta(minutes=1))
    assert host_tasks.mark_stale_hosts.apply().get() == 1
    assert host_of(agent).stale_since is not None


# --- event retention ------------------------------------------------------------------------------


def execution_event(sha: str, execution_time: int) -> dict:
    return {
        "file_sha256": sha,
        "file_path": "/usr/local/bin",
        "file_name": "tool",
        "execution_time": execution_time,
        "decision": "BLOCK_BINARY",
        "pid": 42,
        "ppid": 1,
        "signing_chain": [{"sha256": CERT, "cn": "Dev", "valid_from": 1, "valid_until": 2}],
    }


def file_access_event(access_time: int) -> dict:
    return {
        "rule_version": "v1",
        "rule_name": "ProtectSecrets",
        "target": "/etc/secret",
        "process_chain": [{"file_path": "/bin/cat", "file_sha256": SHA_C, "pid": 7}],
        "access_time": access_time,
        "decision": "FILE_ACCESS_DECISION_DENIED",
    }


@pytest.fixture
def events(make_agent):
    """Six execution events and three file-access events, uploaded by an agent; returns a
    function that ages some of them."""
    agent = make_agent()
    agent.sync()  # the first sync is clean, and clean syncs drop pending events
    for n in range(6):
        agent.add_event(**execution_event(SHA_A if n % 2 else SHA_B, T0 + n))
    agent.sync()
    status, _ = agent.post(
        "eventupload",
        "EventUploadRequest",
        {
            "file_access_events": [file_access_event(T0 + n) for n in range(3)],
            "machine_id": agent.machine_id,
        },
    )
    assert status == 200
    assert Event.objects.count() == 6 and FileAccessEvent.objects.count() == 3
    assert Binary.objects.count() == 2 and Certificate.objects.count() == 1

    def age(model, count: int, days: float) -> list[int]:
        ids = list(model.objects.order_by("id").values_list("id", flat=True)[:count])
        model.objects.filter(id__in=ids).update(received_at=timezone.now() - timedelta(days=days))
        return ids

    return age


def test_prune_deletes_old_events_and_keeps_recent_ones(events, settings):
    settings.EVENT_RETENTION_DAYS = 180
    old = events(Event, 3, 181)
    Event.objects.filter(id=Event.objects.order_by("-id").first().id).update(
        received_at=timezone.now() - timedelta(days=179)
    )
    old_access = events(FileAccessEvent, 2, 400)

    result = events_prune()
    assert result == {"events": 3, "file_access_events": 2, "retention_days": 180}
    assert not Event.objects.filter(id__in=old).exists()
    assert Event.objects.count() == 3
    assert not FileAccessEvent.objects.filter(id__in=old_access).exists()
    assert FileAccessEvent.objects.count() == 1
    # The catalogue stays: rules and approvals refer to it.
    assert Binary.objects.count() == 2 and Certificate.objects.count() == 1

    assert events_prune() == {"events": 0, "file_access_events": 0, "retention_days": 180}


def test_prune_in_small_batches(events, settings):
    settings.EVENT_RETENTION_DAYS = 30
    events(Event, 5, 31)
    events(FileAccessEvent, 3, 31)
    result = events_prune(batch=2)
    assert (result["events"], result["file_access_events"]) == (5, 3)
    assert Event.objects.count() == 1 and FileAccessEvent.objects.count() == 0


def test_prune_uses_the_time_received(events, settings):
    settings.EVENT_RETENTION_DAYS = 1
    # Execution times are in 2026-01; only the time received counts.
    assert events_prune() == {"events": 0, "file_access_events": 0, "retention_days": 1}
    assert events_prune(now=timezone.now() + timedelta(days=2))["events"] == 6


def test_retention_zero_keeps_everything(events, settings):
    settings.EVENT_RETENTION_DAYS = 0
    events(Event, 6, 10_000)
    events(FileAccessEvent, 3, 10_000)
    assert events_prune() == {"events": 0, "file_access_events": 0, "retention_days": 0}
    assert Event.objects.count() == 6 and FileAccessEvent.objects.count() == 3


def test_prune_task(events, settings):
    settings.EVENT_RETENTION_DAYS = 7
    events(Event, 2, 8)
    assert prune_events.apply().get()["events"] == 2
    assert Event.objects.count() == 4


# --- drift audit ----------------------------------------------------------------------------------


def agent_counts(agent) -> dict:
    """The per-kind counts of what the simulated agent really holds (zeros left out)."""
    counts: dict = {}
    for (rule_type, _), rule in agent.rules.items():
        counts[rule_type.lower()] = counts.get(rule_type.lower(), 0) + 1
        if rule["policy"] == "ALLOWLIST_COMPILER":
            counts["compiler"] = counts.get("compiler", 0) + 1
    return counts


def host_row(machine_id: str) -> dict:
    return Host.objects.filter(machine_id=machine_id).values().get()


@pytest.fixture
def synced_fleet(make_agent, make_enrollment):
    """Three agents holding a mix of rules, their bookkeeping built by clean and incremental
    downloads."""
    _, eng_secret = make_enrollment(tags=["eng"])
    agents = [
        make_agent(machine_id="DRIFT-1", secret=eng_secret),
        make_agent(machine_id="DRIFT-2"),
        make_agent(machine_id="DRIFT-3", secret=eng_secret),
    ]
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST_COMPILER", tags=["eng"]))
    for agent in agents:
        agent.sync()
    doomed = rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST"))
    rule_create(data=RuleInput("BINARY", SHA_C, "BLOCKLIST", machine_ids=["DRIFT-2"]))
    rule_create(data=RuleInput("BINARY", SHA_C, "REMOVE", tags=["eng"]))
    for agent in agents:
        agent.sync()
    rule_delete(rule=doomed)
    rule_create(data=RuleInput("CDHASH", "ab" * 20, "BLOCKLIST", excluded_tags=["eng"]))
    host_set_tags(host=Host.objects.get(machine_id="DRIFT-3"), tag_names=[])
    for agent in agents:
        agent.sync()
    for agent in agents:
        host = host_of(agent)
        assert host.expected_counts == agent_counts(agent), agent.machine_id
        assert host.drift_reasons == []
    return agents


def test_drift_audit_corrects_wrong_bookkeeping(synced_fleet):
    broken, *correct = synced_fleet
    true_counts = host_of(broken).expected_counts
    Host.objects.filter(machine_id=broken.machine_id).update(
        expected_counts={"binary": 7, "teamid": 1}
    )
    before = {agent.machine_id: host_row(agent.machine_id) for agent in correct}

    result = drift_audit()
    assert result == {"audited": 3, "corrected": [broken.machine_id]}

    host = host_of(broken)
    assert host.expected_counts == true_counts == agent_counts(broken)
    assert len(host.drift_reasons) == 1
    assert "server bookkeeping corrected" in host.drift_reasons[0]
    assert host.drift_detected_at is not None and host.drift_checked_at is not None
    assert host.clean_sync_requested == "CLEAN"

    for agent in correct:
        after = host_row(agent.machine_id)
        assert after["drift_checked_at"] is not None
        assert {k: v for k, v in after.items() if k != "drift_checked_at"} == {
            k: v for k, v in before[agent.machine_id].items() if k != "drift_checked_at"
        }

    rules_before = dict(broken.rules)
    result = broken.sync()
    assert result.sync_type == "CLEAN"
    assert broken.rules == rules_before  # it held the right rules all along
    host = host_of(broken)
    assert host.clean_sync_requested == ""
    assert host.expected_counts == agent_counts(broken)
    assert broken.sync().sync_type == "NORMAL"

    # Nothing wrong any more: the next audit corrects nothing.
    assert drift_audit()["corrected"] == []


def test_drift_audit_of_a_host_that_lost_a_rule_silently(synced_fleet):
    """Bookkeeping that missed a delivered rule is found from the rule history alone."""
    agent = synced_fleet[1]
    counts = dict(host_of(agent).expected_counts)
    counts["cdhash"] -= 1
    Host.objects.filter(machine_id=agent.machine_id).update(
        expected_counts={k: v for k, v in counts.items() if v}
    )
    assert check_drift.apply().get()["corrected"] == [agent.machine_id]
    assert host_of(agent).expected_counts == agent_counts(agent)


def test_drift_audit_skips_hosts_with_an_unconfirmed_download(synced_fleet):
    agent = synced_fleet[0]
    rule_update(
        rule=Rule.objects.get(identifier=SHA_A),
        data=RuleInput("BINARY", SHA_A, "SILENT_BLOCKLIST"),
    )
    agent.sync(drop_postflight=True)
    Host.objects.filter(machine_id=agent.machine_id).update(expected_counts={"binary": 9})
    result = drift_audit()
    assert result == {"audited": 2, "corrected": []}
    host = host_of(agent)
    assert host.expected_counts == {"binary": 9} and host.drift_checked_at is None


def test_drift_audit_rotates_through_the_fleet(synced_fleet):
    seen = []
    for _ in range(3):
        result = drift_audit(limit=1)
        assert result["audited"] == 1
        checked = Host.objects.filter(drift_checked_at__isnull=False).order_by(
            "-drift_checked_at", "-id"
        )
        seen.append(checked.first().machine_id)
    assert sorted(seen) == ["DRIFT-1", "DRIFT-2", "DRIFT-3"]


def test_drift_audit_keeps_an_operators_clean_all_request(synced_fleet):
    agent = synced_fleet[0]
    Host.objects.filter(machine_id=agent.machine_id).update(
        expected_counts={"binary": 7}, clean_sync_requested="CLEAN_ALL"
    )
    assert drift_audit()["corrected"] == [agent.machine_id]
    assert host_of(agent).clean_sync_requested == "CLEAN_ALL"


# --- fan-out reconciler ---------------------------------------------------------------------------


def exploding_handler(fanout):
    raise RuntimeError("worker lost its database")


def queued_fanout(age_seconds: float) -> FanOut:
    """A tag-rule fan-out whose message was lost, created `age_seconds` ago."""
    before = set(FanOut.objects.values_list("pk", flat=True))
    tag_rule_create(
        tag_name=f"t{len(before)}", fact="hostname", operator="starts_with", value="lab-"
    )
    (fanout,) = FanOut.objects.exclude(pk__in=before)
    FanOut.objects.filter(pk=fanout.pk).update(
        created_at=timezone.now() - timedelta(seconds=age_seconds)
    )
    fanout.refresh_from_db()
    assert fanout.state == FanOutState.QUEUED and fanout.attempts == 0
    return fanout


def test_reconcile_runs_only_overdue_fanouts(make_agent, settings):
    settings.FANOUT_GRACE_SECONDS = 60
    agent = make_agent(hostname="lab-1.example.com")
    agent.sync()
    overdue = queued_fanout(120)
    recent = queued_fanout(10)
    done = queued_fanout(500)
    fanout_execute(done.pk)
    done.refresh_from_db()
    assert done.attempts == 1

    assert fanout_reconcile() == {"done": [overdue.pk], "failed": []}
    overdue.refresh_from_db()
    assert overdue.state == FanOutState.DONE and overdue.attempts == 1
    assert overdue.started_at is not None and overdue.finished_at is not None
    recent.refresh_from_db()
    assert recent.state == FanOutState.QUEUED and recent.attempts == 0
    assert recent.started_at is None
    finished = done.finished_at
    done.refresh_from_db()
    assert done.attempts == 1 and done.finished_at == finished

    # Once past the grace, the recent one runs too; nothing else does.
    FanOut.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    assert host_tasks.fanout_reconcile_task.apply().get() == {"done": [recent.pk], "failed": []}
    assert fanout_reconcile() == {"done": [], "failed": []}


def test_reconcile_runs_oldest_first_up_to_the_limit(db, settings):
    settings.FANOUT_GRACE_SECONDS = 60
    older = queued_fanout(300)
    newer = queued_fanout(100)
    queued_fanout(0)  # within the grace
    assert fanout_reconcile(limit=1) == {"done": [older.pk], "failed": []}
    assert fanout_reconcile(limit=1) == {"done": [newer.pk], "failed": []}
    assert fanout_reconcile(limit=1) == {"done": [], "failed": []}


def test_a_failing_fanout_is_marked_and_retried(make_agent, settings, monkeypatch):
    settings.FANOUT_GRACE_SECONDS = 60
    agent = make_agent(hostname="lab-1.example.com")
    agent.sync()
    fanout = queued_fanout(120)
    monkeypatch.setitem(
        fanout_module.HANDLERS, FanOutKind.TAG_RULES, "tests.test_periodic.exploding_handler"
    )
    assert fanout_reconcile() == {"done": [], "failed": [fanout.pk]}
    fanout.refresh_from_db()
    assert fanout.state == FanOutState.FAILED and fanout.attempts == 1
    assert fanout.error == "RuntimeError: worker lost its database"
    assert fanout.finished_at is None
    assert not Host.objects.filter(tag_spans__source="auto").exists()

    assert fanout_reconcile() == {"done": [], "failed": [fanout.pk]}  # still broken
    fanout.refresh_from_db()
    assert fanout.attempts == 2

    monkeypatch.undo()
    assert fanout_reconcile() == {"done": [fanout.pk], "failed": []}
    fanout.refresh_from_db()
    assert fanout.state == FanOutState.DONE and fanout.attempts == 3 and fanout.error == ""
    assert fanout.result == {"hosts_retagged": 1}
    assert Host.objects.filter(tag_spans__source="auto", tag_spans__rev_to=None).count() == 1


def test_execute_of_a_missing_fanout(db):
    assert fanout_execute(123456) == "missing"


# --- sending with the broker down -----------------------------------------------------------------


@pytest.fixture
def broker_down(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append((args, kwargs))
        raise ConnectionRefusedError("redis: connection refused")

    monkeypatch.setattr(host_tasks.fanout_run, "apply_async", refuse)
    return attempts


def test_send_with_the_broker_down_does_not_raise(db, broker_down):
    fanout = queued_fanout(0)
    assert fanout_send(fanout.pk) is False
    assert broker_down == [((), {"args": [fanout.pk], "retry": False})]
    fanout.refresh_from_db()
    assert fanout.state == FanOutState.QUEUED and fanout.attempts == 0


def test_a_rule_change_commits_with_the_broker_down(
    make_agent, broker_down, django_capture_on_commit_callbacks, settings
):
    agent = make_agent()
    agent.sync()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        rule = rule_create(data=RuleInput("BINARY", SHA_D, "BLOCKLIST"))
    assert len(callbacks) == 1 and len(broker_down) == 1
    assert not connection.needs_rollback
    rule = Rule.objects.get(pk=rule.pk)
    assert rule.fanout.state == FanOutState.QUEUED and rule.fanout.attempts == 0
    assert rule.target_hosts is None  # the fan-out did not run
    agent.sync()  # delivery never waits for the fan-out
    assert set(agent.rules) == {("BINARY", SHA_D)}

    settings.FANOUT_GRACE_SECONDS = 0
    assert fanout_reconcile() == {"done": [rule.fanout_id], "failed": []}
    rule.refresh_from_db()
    assert (rule.target_hosts, rule.confirmed_hosts) == (1, 1)


def test_the_api_answers_with_the_broker_down(
    analyst_api, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = analyst_api.post(
            "/api/v1/tag-rules/",
            {"tag": "lab", "fact": "hostname", "operator": "starts_with", "value": "lab-"},
            format="json",
        )
    assert response.status_code == 201, response.content
    assert len(broker_down) == 1
    fanout = FanOut.objects.get()
    assert fanout.state == FanOutState.QUEUED
    assert analyst_api.get(f"/api/v1/fanouts/{fanout.pk}/").json()["state"] == "queued"


def test_send_with_a_working_broker_runs_the_fanout(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    fanout = FanOut.objects.get()
    assert fanout.state == FanOutState.DONE and fanout.attempts == 1
    assert fanout_send(fanout.pk) is True  # delivered twice: nothing to do
    fanout.refresh_from_db()
    assert fanout.attempts == 1


# --- the beat schedule ----------------------------------------------------------------------------


def registered_tasks() -> set[str]:
    from santaadmin.celery import app

    app.loader.import_default_modules()  # runs the app's task autodiscovery
    return set(app.tasks.keys())


def test_beat_schedule_names_only_registered_tasks():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    assert schedule, "no periodic work scheduled"
    registered = registered_tasks()
    missing = {name: e["task"] for name, e in schedule.items() if e["task"] not in registered}
    assert missing == {}
    assert {e["task"] for e in schedule.values()} == {
        "hosts.fanout_reconcile",
        "hosts.mark_stale",
        "rules.refresh_delivery",
        "rules.check_drift",
        "rules.expire",
        "events.prune",
        "events.drain",
        "reports.reconcile",
        "reports.prune",
    }
    assert "hosts.fanout_run" in registered


def test_the_celery_app_reads_the_schedule():
    from santaadmin.celery import app

    assert app.conf.beat_schedule == django_settings.CELERY_BEAT_SCHEDULE
    for entry in app.conf.beat_schedule.values():
        assert entry["schedule"] > 0


def test_every_scheduled_task_runs(synced_fleet):
    from santaadmin.celery import app

    registered_tasks()
    for name, entry in django_settings.CELERY_BEAT_SCHEDULE.items():
        result = app.tasks[entry["task"]].apply()
        assert result.successful(), (name, result.traceback)


def test_a_fresh_worker_process_discovers_every_scheduled_task():
    """What a worker or beat process sees: only the Celery app and its autodiscovery, none of
    the modules this test run happened to import."""
    script = (
        "import json, django; django.setup()\n"
        "from santaadmin.celery import app\n"
        "app.loader.import_default_modules()\n"
        "print(json.dumps(sorted(app.tasks.keys())))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "santaadmin.settings"},
    )
    assert completed.returncode == 0, completed.stderr
    registered = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    scheduled = {e["task"] for e in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= registered, scheduled - registered
    assert "hosts.fanout_run" in registered


def test_reconcile_forgets_finished_fanouts_after_thirty_days(db):
    now = timezone.now()
    old = FanOut.objects.create(
        kind=FanOutKind.RULES,
        revision=1,
        state=FanOutState.DONE,
        finished_at=now - timedelta(days=31),
    )
    recent = FanOut.objects.create(
        kind=FanOutKind.RULES,
        revision=2,
        state=FanOutState.DONE,
        finished_at=now - timedelta(days=29),
    )
    rule = rule_create(data=RuleInput("BINARY", "e" * 64, "BLOCKLIST"))
    Rule.objects.filter(pk=rule.pk).update(fanout=old)
    fanout_reconcile()
    assert not FanOut.objects.filter(pk=old.pk).exists()
    assert FanOut.objects.filter(pk=recent.pk).exists()
    rule.refresh_from_db()
    assert rule.fanout_id is None  # the rule stays; only the finished job is forgotten
