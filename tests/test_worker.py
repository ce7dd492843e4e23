"""Fan-outs through a real Celery worker and a real Redis (hosts.fanout, docs/architecture.md).

A rule or tag-rule change writes a FanOut row and sends `hosts.fanout_run` on commit; the
worker re-tags the fleet or refreshes the rules' delivery summaries, and its beat reconciler
runs whatever is still queued after FANOUT_GRACE_SECONDS. Rule delivery itself never waits
for any of it. These tests check that with the worker up, with the worker stopped and
restarted, and with Redis stopped during the change.

They need PostgreSQL (the worker is another process, so it cannot share the SQLite in-memory
test database) and a `redis-server` binary: a private Redis is started on a free port for this
module, so the system Redis is never touched. Without PostgreSQL they skip, or fail when
SANTAADMIN_REQUIRE_SERVICES=1 (as in tests/test_services.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.live import free_port, wait_for

REQUIRED = os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent
RULES = "/api/v1/rules/"
TAG_RULES = "/api/v1/tag-rules/"
FANOUTS = "/api/v1/fanouts/"
HOSTS = "/api/v1/hosts/"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
ENG = ("staff", "eng")
WORKER_READY = re.compile(r"@\S+ ready\.")

pytestmark = [
    pytest.mark.integration,
    # The worker must see committed data; serialized_rollback restores the rows the
    # migrations create (the revision counter, the default profile) after each flush.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def _require(condition: bool, what: str) -> None:
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"{what} is required (SANTAADMIN_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} not available: a real Celery worker needs it (CI=true .ci/run has it)")


def _tail(path: Path, chars: int = 20000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text[-chars:]


def _stop_group(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it does not exit."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen | None = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except Exception:
            return False

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("redis-server"),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: self.proc.poll() is not None or self.ping(), f"redis on {self.port}", 15)
        assert self.proc.poll() is None, f"redis-server exited:\n{_tail(self.log)}"

    def stop(self) -> None:
        _stop_group(self.proc)
        assert not self.ping(), "the private Redis still answers after being stopped"

    def fanout_messages(self) -> list[int]:
        """Fan-out ids of the `hosts.fanout_run` messages waiting in the default queue."""
        ids = []
        with self.client() as client:
            queued = client.lrange("celery", 0, -1)
        for raw in queued:
            message = json.loads(raw)
            if message["headers"].get("task") != "hosts.fanout_run":
                continue
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.append(args[0])
        return sorted(ids)


class Worker:
    """`celery -A santaadmin worker -B` against the private Redis and the test database."""

    def __init__(self, directory: Path, broker_url: str, database_url: str):
        self.directory, self.broker_url, self.database_url = directory, broker_url, database_url
        self.log = directory / "worker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.marked = 0

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            DJANGO_SETTINGS_MODULE="santaadmin.settings",
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            CELERY_TASK_ALWAYS_EAGER="0",
            FANOUT_GRACE_SECONDS="1",
            FANOUT_RECONCILE_INTERVAL="1",
            SECRET_KEY=os.environ.get("SECRET_KEY") or "worker-tests-only",
            ALLOWED_HOSTS=os.environ.get("ALLOWED_HOSTS") or "127.0.0.1,localhost",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        return env

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        assert not self.alive(), "the worker is already running"
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            log.write(f"\n===== worker start #{self.starts + 1} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "santaadmin",
                    "worker",
                    "-B",
                    "-s",
                    str(self.directory / "beat-schedule"),
                    "--pool=solo",
                    "--loglevel=info",
                    "--without-mingle",
                    "--without-gossip",
                    "-n",
                    f"santaadmin-test-{uuid.uuid4().hex[:8]}@%h",
                ],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

        def ready():
            if self.proc.poll() is not None:
                return "exited"
            with self.log.open("rb") as log:
                log.seek(offset)
                return WORKER_READY.search(log.read().decode(errors="replace")) is not None

        state = wait_for(ready, "the Celery worker to be ready", timeout)
        assert state is True, f"the Celery worker exited at start:\n{_tail(self.log)}"

    def stop(self) -> None:
        _stop_group(self.proc)
        assert not self.alive()

    def mark(self) -> None:
        self.marked = self.log.stat().st_size if self.log.exists() else 0

    def log_since_mark(self) -> str:
        with self.log.open("rb") as log:
            log.seek(self.marked)
            return log.read().decode(errors="replace")

    def ensure_running(self) -> None:
        if not self.alive():
            self.start()


class _AttachLogs:
    """Adds the worker's and Redis's logs to the report of a failed test of this module."""

    def __init__(self, *logs: tuple[str, Path]):
        self.logs = logs

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.failed and item.module.__name__ == __name__:
            for name, path in self.logs:
                report.sections.append((f"Captured {name} ({path})", _tail(path)))
        return report


def _test_database_url() -> str:
    """DATABASE_URL with the test database's name (pytest-django renamed it at setup)."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = django_settings.DATABASES["default"]["NAME"]
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def services_required():
    # The worker is another process: it cannot see the SQLite in-memory test database.
    _require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL=postgresql://...)")
    _require(shutil.which("redis-server") is not None, "A redis-server binary")


@pytest.fixture(scope="module")
def redis_server(services_required, tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    _stop_group(server.proc)


@pytest.fixture(scope="module")
def worker_process(redis_server, django_db_setup, tmp_path_factory, request):
    worker = Worker(tmp_path_factory.mktemp("worker"), redis_server.url, _test_database_url())
    plugin = _AttachLogs(("worker log", worker.log), ("redis log", redis_server.log))
    request.config.pluginmanager.register(plugin, f"santaadmin-worker-logs-{id(plugin)}")
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()
        request.config.pluginmanager.unregister(plugin)


def _forget_broker_pools(app, close: bool) -> None:
    """Make the app build new broker pools from its current broker_url at the next send.

    The app keeps its connection and producer pools, and kombu keeps them per broker URL in
    process-wide registries; with `close`, the current URL's pools are closed and removed
    from those registries too (a closed pool left there would be handed out again)."""
    from kombu import pools

    if close:
        key = app.connection_for_write().__eqhash__()
        for group in (pools.producers, pools.connections):
            pool = dict.pop(group, key, None)
            if pool is not None:
                with contextlib.suppress(Exception):  # the broker may be gone already
                    pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def worker(worker_process, redis_server, settings, monkeypatch):
    """The running worker; this process's Celery app sends to the private Redis meanwhile."""
    from santaadmin.celery import app

    if not redis_server.ping():
        redis_server.start()
    worker_process.ensure_running()
    worker_process.mark()
    saved = {
        "broker_url": app.conf.broker_url,
        "task_always_eager": app.conf.task_always_eager,
    }
    settings.CELERY_BROKER_URL = redis_server.url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    # Celery prefers these variables to its configuration (celery.app.utils.Settings).
    monkeypatch.setenv("CELERY_BROKER_URL", redis_server.url)
    monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)
    _forget_broker_pools(app, close=False)
    app.conf.update(broker_url=redis_server.url, task_always_eager=False)
    assert f":{redis_server.port}/" in app.connection_for_write().as_uri()
    try:
        yield worker_process
    finally:
        _forget_broker_pools(app, close=True)
        app.conf.update(**saved)


# --- API helpers ----------------------------------------------------------------------------


def create_rule(api, **fields) -> dict:
    payload = {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", **fields}
    response = api.post(RULES, payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def create_tag_rule(api, tag="eng", value="eng") -> int:
    """Create `tag` for hosts whose primary user is in group `value`; returns its fan-out id."""
    body = {"tag": tag, "fact": "primary_user_groups", "operator": "contains", "value": value}
    response = api.post(TAG_RULES, body, format="json")
    assert response.status_code == 201, response.content
    fanouts = api.get(FANOUTS, {"kind": "tag_rules"}).json()["results"]
    assert fanouts, "a tag-rule change records a fan-out"
    return fanouts[0]["id"]  # newest first


def fanout(api, fanout_id: int) -> dict:
    response = api.get(f"{FANOUTS}{fanout_id}/")
    assert response.status_code == 200, response.content
    return response.json()


def wait_done(api, fanout_id: int, timeout: float = 45.0) -> dict:
    def done():
        body = fanout(api, fanout_id)
        assert body["state"] != "failed", body
        return body if body["state"] == "done" else None

    return wait_for(done, f"fan-out {fanout_id} to be done", timeout)


def rule_detail(api, rule_id: int) -> dict:
    response = api.get(f"{RULES}{rule_id}/")
    assert response.status_code == 200, response.content
    return response.json()


def host_detail(api, machine_id: str) -> dict:
    response = api.get(f"{HOSTS}{machine_id}/")
    assert response.status_code == 200, response.content
    return response.json()


def holds(agent, sha: str) -> bool:
    return agent.rules.get(("BINARY", sha), {}).get("policy") == "BLOCKLIST"


# --- the scenarios --------------------------------------------------------------------------


def test_worker_retags_fleet_and_summarises_a_tag_scoped_rule(worker, analyst_api, make_agent):
    """Worker up: a tag rule re-tags hosts that do not sync, a rule for that tag reaches only
    its members, and the summaries the worker stores count them."""
    in_tag = make_agent(primary_user_groups=ENG)
    outside = make_agent(primary_user_groups=("staff",))
    for agent in (in_tag, outside):
        agent.sync()  # registers the hosts and their facts; no tag rule exists yet
    assert host_detail(analyst_api, in_tag.machine_id)["automatic_tags"] == []

    tag_fanout = create_tag_rule(analyst_api)
    body = wait_done(analyst_api, tag_fanout)
    assert body["kind"] == "tag_rules" and body["attempts"] >= 1
    assert body["result"] == {"hosts_retagged": 1}
    # Nobody synced since: only the worker can have put the host in the tag.
    assert host_detail(analyst_api, in_tag.machine_id)["automatic_tags"] == ["eng"]
    assert host_detail(analyst_api, outside.machine_id)["automatic_tags"] == []

    rule = create_rule(analyst_api, identifier=SHA_A, tags=["eng"])
    assert rule["fanout"]["state"] in ("queued", "done"), rule["fanout"]
    assert rule["delivery"]["target_hosts"] == 1
    assert rule["delivery"]["pending_sample"] == [in_tag.machine_id]
    wait_done(analyst_api, rule["fanout"]["id"])
    summary = rule_detail(analyst_api, rule["id"])["delivery_summary"]
    assert summary["target_hosts"] == 1 and summary["confirmed_hosts"] == 0, summary
    assert summary["checked_at"] is not None

    # Both fan-outs went through their on-commit messages (not only the reconciler).
    received = re.findall(r"Task hosts\.fanout_run\[[^\]]+\] received", worker.log_since_mark())
    assert len(received) == 2, worker.log_since_mark()

    for agent in (in_tag, outside):
        agent.sync()
    assert holds(in_tag, SHA_A)
    assert ("BINARY", SHA_A) not in outside.rules
    delivery = rule_detail(analyst_api, rule["id"])["delivery"]
    assert delivery["target_hosts"] == 1
    assert delivery["confirmed_hosts"] == 1
    assert delivery["pending_hosts"] == 0
    assert delivery["pending_sample"] == []
    assert host_detail(analyst_api, in_tag.machine_id)["delivery"]["in_sync"] is True


def test_changes_wait_for_a_stopped_worker_but_delivery_does_not(
    worker, redis_server, analyst_api, make_agent
):
    """Worker stopped: the fan-outs stay queued (their messages wait in Redis) while agents
    still get the rule; once the worker is back the fan-outs run."""
    eng_syncing = make_agent(primary_user_groups=ENG)
    eng_silent = make_agent(primary_user_groups=ENG)
    other = make_agent(primary_user_groups=("staff",))
    for agent in (eng_syncing, eng_silent, other):
        agent.sync()

    worker.stop()
    rule = create_rule(analyst_api, identifier=SHA_B)  # for everyone
    assert rule["fanout"]["state"] == "queued"
    tag_fanout = create_tag_rule(analyst_api)
    assert tag_fanout != rule["fanout"]["id"]
    # fanout_send published to the private Redis (not run in-process): both messages wait.
    assert redis_server.fanout_messages() == sorted([rule["fanout"]["id"], tag_fanout])

    for agent in (eng_syncing, other):
        agent.sync()
        assert holds(agent, SHA_B), agent.rules  # delivery does not wait for the worker
    assert fanout(analyst_api, rule["fanout"]["id"])["state"] == "queued"
    assert fanout(analyst_api, tag_fanout)["state"] == "queued"
    summary = rule_detail(analyst_api, rule["id"])["delivery_summary"]
    assert summary == {"target_hosts": None, "confirmed_hosts": None, "checked_at": None}
    # The syncing host re-evaluated its own tags at preflight; the silent one waits for the
    # worker's fleet-wide run.
    assert host_detail(analyst_api, eng_syncing.machine_id)["automatic_tags"] == ["eng"]
    assert host_detail(analyst_api, eng_silent.machine_id)["automatic_tags"] == []

    worker.start()
    wait_done(analyst_api, rule["fanout"]["id"])
    wait_done(analyst_api, tag_fanout)
    wait_for(lambda: redis_server.fanout_messages() == [], "the queued messages to be consumed")
    assert host_detail(analyst_api, eng_silent.machine_id)["automatic_tags"] == ["eng"]
    assert host_detail(analyst_api, eng_syncing.machine_id)["automatic_tags"] == ["eng"]
    assert host_detail(analyst_api, other.machine_id)["automatic_tags"] == []
    summary = rule_detail(analyst_api, rule["id"])["delivery_summary"]
    assert summary["target_hosts"] == 3, summary
    assert summary["confirmed_hosts"] == 2, summary  # eng_silent has not synced since
    delivery = rule_detail(analyst_api, rule["id"])["delivery"]
    assert delivery["pending_sample"] == [eng_silent.machine_id]

    eng_silent.sync()
    assert holds(eng_silent, SHA_B)


def test_broker_outage_during_a_change(worker, redis_server, analyst_api, make_agent, monkeypatch):
    """Redis stopped: the API still answers at once and agents get the rule; when Redis is
    back the same worker reconnects and its reconciler runs the fan-out whose message was
    never sent."""
    from hosts.tasks import fanout_run

    sends = []
    real_apply_async = fanout_run.apply_async

    def spy(*args, **kwargs):
        sends.append(kwargs)
        return real_apply_async(*args, **kwargs)

    monkeypatch.setattr(fanout_run, "apply_async", spy)
    syncing = make_agent()
    silent = make_agent()
    for agent in (syncing, silent):
        agent.sync()
    # A change while the broker is up: this process now holds a pooled broker connection,
    # as a web process does when Redis goes away.
    before = create_rule(analyst_api, identifier=SHA_A, machine_ids=[silent.machine_id])
    wait_done(analyst_api, before["fanout"]["id"])
    worker_pid = worker.proc.pid

    redis_server.stop()
    rule = create_rule(analyst_api, identifier=SHA_C)  # for everyone
    # The request does not wait on the broker: one publish attempt (bounded by
    # CELERY_BROKER_CONNECTION_TIMEOUT), never Celery's publish retries. How long it took is
    # the benchmarks' business, not a test's.
    assert sends and all(kwargs.get("retry") is False for kwargs in sends), sends
    fanout_id = rule["fanout"]["id"]
    assert rule["fanout"]["state"] == "queued"

    syncing.sync()
    assert holds(syncing, SHA_C), syncing.rules
    assert fanout(analyst_api, fanout_id)["state"] == "queued"
    assert worker.alive(), "the worker exited when Redis went away"

    redis_server.start()
    assert redis_server.fanout_messages() == []  # the message was never sent: nothing to run
    body = wait_done(analyst_api, fanout_id, timeout=60)
    assert body["attempts"] >= 1 and body["result"] == {"rules_refreshed": 1}, body
    assert worker.alive() and worker.proc.pid == worker_pid, "the worker was not the same process"
    summary = rule_detail(analyst_api, rule["id"])["delivery_summary"]
    assert summary["target_hosts"] == 2 and summary["confirmed_hosts"] == 1, summary

    # This process reaches the restarted broker again: the next change goes by message.
    worker.mark()
    after = create_rule(analyst_api, identifier=SHA_B, machine_ids=[syncing.machine_id])
    wait_done(analyst_api, after["fanout"]["id"])
    assert re.search(r"Task hosts\.fanout_run\[[^\]]+\] received", worker.log_since_mark())


def test_a_report_written_by_the_worker_is_served_by_another_process(
    worker, auditor_api, make_agent
):
    """The worker writes a background report's content into PostgreSQL; this process, another
    node, serves it: nothing is shared but the database."""
    agent = make_agent()
    agent.sync()
    agent.upload_events(
        [
            {"file_sha256": SHA_A, "decision": "BLOCK_BINARY", "execution_time": at, "pid": n}
            for n, at in enumerate(range(1767225600, 1767225610))
        ]
    )
    response = auditor_api.post(
        "/api/v1/reports/", {"kind": "executions", "format": "csv"}, format="json"
    )
    assert response.status_code == 202, response.content
    report_id = response.json()["id"]

    def done():
        body = auditor_api.get(f"/api/v1/reports/{report_id}/").json()
        assert body["state"] != "failed", body
        return body if body["state"] == "done" else None

    report = wait_for(done, f"report {report_id} to be done", timeout=45)
    assert report["rows_written"] == 10
    assert re.search(r"Task reports\.generate\[[^\]]+\] received", worker.log_since_mark())
    download = auditor_api.get(report["download_url"])
    content = b"".join(download.streaming_content)
    direct = auditor_api.get("/api/v1/reports/executions/export/", {"format": "csv"})
    assert content == b"".join(direct.streaming_content)
    assert len(content.splitlines()) == 11


def _blocked_request(agent, sha: str, user: str) -> int:
    """`user` ran `sha` on `agent`'s Mac, was blocked and asked for it; returns the request."""
    from events.approvals import approval_request_submit
    from events.models import Binary
    from hosts.models import Host

    agent.upload_events(
        [
            {
                "file_sha256": sha,
                "file_name": "Builder",
                "decision": "BLOCK_UNKNOWN",
                "execution_time": 1767225600,
                "executing_user": user,
            }
        ]
    )
    return approval_request_submit(
        binary=Binary.objects.get(pk=sha),
        host=Host.objects.get(machine_id=agent.machine_id),
        requester=user,
        reason="I need it.",
    ).pk


def test_approvals_and_rule_changes_with_broker_and_worker_stopped(
    worker, redis_server, analyst_api, analyst_console, make_agent
):
    """Redis and the worker both stopped: approving and denying requests (API and console),
    creating and deleting rules answer at once with the change committed and audited, syncs
    deliver it; once both are back the queued fan-outs run by themselves."""
    from audit.models import AuditEntry
    from events.models import ApprovalRequest
    from hosts.models import FanOut
    from rules.models import Rule

    alice, bob, silent = make_agent(), make_agent(), make_agent()
    for agent in (alice, bob, silent):
        agent.sync()
    by_api = _blocked_request(alice, SHA_A, "alice")
    by_console = _blocked_request(bob, SHA_B, "bob")
    denied = _blocked_request(alice, SHA_C, "alice")
    doomed = create_rule(analyst_api, identifier="d" * 64)
    wait_done(analyst_api, doomed["fanout"]["id"])

    worker.stop()
    redis_server.stop()

    approved = analyst_api.post(
        f"/api/v1/approval-requests/{by_api}/approve/",
        {"rule_type": "BINARY", "justification": "Build tool.", "response": "Approved."},
        format="json",
    )
    assert approved.status_code == 200, approved.content
    console = analyst_console.post(
        f"/requests/{by_console}/",
        {
            "action": "decide",
            "rule_type": "BINARY",
            "scope": "hosts",
            "machine_ids": bob.machine_id,
            "justification": "Bob's build tool",
            "decision": "allow",
        },
    )
    assert console.status_code == 302, console.content[:500]
    refused = analyst_api.post(
        f"/api/v1/approval-requests/{denied}/deny/", {"response": "No."}, format="json"
    )
    assert refused.status_code == 200, refused.content
    created = create_rule(analyst_api, identifier="e" * 64)
    deleted = analyst_api.delete(f"{RULES}{doomed['id']}/")
    assert deleted.status_code == 204, deleted.content

    states = dict(ApprovalRequest.objects.values_list("pk", "state"))
    assert (states[by_api], states[by_console], states[denied]) == (
        "approved",
        "approved",
        "denied",
    )
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"approval_request.approve", "approval_request.deny", "rule.create"} <= actions
    assert "rule.delete" in actions
    assert not Rule.objects.filter(pk=doomed["id"]).exists()
    queued = set(FanOut.objects.filter(state="queued").values_list("pk", flat=True))
    assert created["fanout"]["id"] in queued and len(queued) >= 4, queued

    # Syncs deliver every change without the broker or the worker.
    alice.sync()
    bob.sync()
    assert holds_policy(alice, SHA_A, "ALLOWLIST") and holds_policy(bob, SHA_B, "ALLOWLIST")
    assert holds(alice, "e" * 64) and ("BINARY", "d" * 64) not in alice.rules
    assert ("BINARY", SHA_B) not in alice.rules  # bob's approval was for bob's Mac

    redis_server.start()
    worker.start()
    for fanout_id in queued:
        wait_done(analyst_api, fanout_id, timeout=60)
    summary = rule_detail(analyst_api, created["id"])["delivery_summary"]
    assert summary["target_hosts"] == 3 and summary["confirmed_hosts"] == 2, summary
    silent.sync()
    assert holds(silent, "e" * 64) and ("BINARY", "d" * 64) not in silent.rules


def holds_policy(agent, sha: str, policy: str) -> bool:
    return agent.rules.get(("BINARY", sha), {}).get("policy") == policy
