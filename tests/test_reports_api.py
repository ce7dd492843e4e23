"""Reports through the API: background jobs (states, progress, chunked content, failure),
downloads, the audit trail, retention, the reconciler, permissions and refused parameters."""

from __future__ import annotations

import datetime
import hashlib
import threading

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEntry
from events.models import Event
from hosts.models import Host
from reports import formats, jobs, services
from reports.kinds import executions as executions_kind
from reports.models import Report, ReportChunk, ReportState
from tests.api import assert_error
from tests.reports_support import (  # noqa: F401
    body_of,
    export,
    export_bytes,
    insert_events,
    jobs_inline,
)

pytestmark = pytest.mark.usefixtures("jobs_inline")

T0 = 1767225600
SHA = "5e" * 32
REPORTS = "/api/v1/reports/"


@pytest.fixture
def blocked(agent):
    """One host with 30 blocked executions."""
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": SHA,
                "file_name": f"tool-{n}",
                "decision": "BLOCK_BINARY",
                "execution_time": T0 + n,
                "executing_user": "dana",
                "pid": n,
            }
            for n in range(30)
        ]
    )
    return Host.objects.get(machine_id=agent.machine_id)


def ask(api, capture, kind="executions", file_format="csv", run=True, **parameters):
    """POST a report; with `run`, its job runs when the request's transaction commits."""
    body = {"kind": kind, "format": file_format, "parameters": parameters}
    if not run:
        return api.post(REPORTS, body, format="json")
    with capture(execute=True):
        return api.post(REPORTS, body, format="json")


# --- the background job ---------------------------------------------------------------------------


def test_background_report_is_the_same_content_as_the_direct_stream(
    blocked, auditor_api, django_capture_on_commit_callbacks
):
    response = ask(auditor_api, django_capture_on_commit_callbacks, since="2026-01-01")
    assert response.status_code == 202, response.content
    created = response.json()
    assert (created["kind"], created["format"], created["state"]) == ("executions", "csv", "queued")
    assert created["parameters"] == {"since": "2026-01-01T00:00:00.000000Z"}
    assert created["created_by"] == "audrey" and created["download_url"] is None

    report = auditor_api.get(f"{REPORTS}{created['id']}/").json()
    assert (report["state"], report["rows_written"], report["rows_expected"]) == ("done", 30, 30)
    assert report["progress"] == 100
    assert report["download_url"] == f"{REPORTS}{created['id']}/download/"

    download = auditor_api.get(report["download_url"])
    assert download.status_code == 200
    content = body_of(download)
    assert content == export_bytes(auditor_api, "executions", since="2026-01-01")
    assert len(content.splitlines()) == 31
    assert hashlib.sha256(content).hexdigest() == report["sha256"] == download["X-Content-SHA256"]
    assert int(download["Content-Length"]) == len(content) == report["size"]
    assert download["Content-Disposition"].startswith('attachment; filename="santa-executions-')


def test_content_is_stored_in_gzip_chunks_that_reassemble(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(jobs, "CHUNK_MAX_RAW", 3000)
    monkeypatch.setattr(formats, "PIECE", 500)
    response = ask(auditor_api, django_capture_on_commit_callbacks, file_format="json")
    report = Report.objects.get(pk=response.json()["id"])
    chunks = list(ReportChunk.objects.filter(report=report).order_by("seq"))
    assert len(chunks) > 3
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(bytes(c.data[:2]) == b"\x1f\x8b" for c in chunks)  # each a gzip member
    import gzip

    stored = b"".join(gzip.decompress(bytes(c.data)) for c in chunks)
    assert stored == body_of(auditor_api.get(f"{REPORTS}{report.pk}/download/"))
    assert hashlib.sha256(stored).hexdigest() == report.sha256
    document = __import__("json").loads(stored)
    assert len(document["rows"]) == 30 and document["report"] == "executions"


def test_progress_is_saved_every_few_rows_while_running(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(jobs, "PROGRESS_EVERY", 7)
    monkeypatch.setattr(formats, "PIECE", 1)  # one piece per row: progress checked each row
    seen = []
    original = executions_kind._detail

    def watched(queryset):
        for row in original(queryset):
            report = Report.objects.get()
            seen.append((report.state, report.rows_written, report.rows_expected))
            yield row

    monkeypatch.setattr(executions_kind, "_detail", watched)
    ask(auditor_api, django_capture_on_commit_callbacks)
    assert {state for state, _, _ in seen} == {"running"}
    assert {expected for _, _, expected in seen} == {30}
    written = [rows for _, rows, _ in seen]
    assert written == sorted(written) and set(written) == {0, 7, 14, 21, 28}
    assert Report.objects.get().state == ReportState.DONE


def test_a_failing_job_stores_its_error_and_keeps_no_content(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(jobs, "CHUNK_BYTES", 100)
    original = executions_kind._detail

    def broken(queryset):
        for n, row in enumerate(original(queryset)):
            if n == 20:
                raise RuntimeError("disk on fire")
            yield row

    monkeypatch.setattr(executions_kind, "_detail", broken)
    response = ask(auditor_api, django_capture_on_commit_callbacks)
    report = Report.objects.get(pk=response.json()["id"])
    assert report.state == ReportState.FAILED
    assert report.error == "RuntimeError: disk on fire"
    assert report.finished_at is not None
    assert not ReportChunk.objects.filter(report=report).exists()
    body = assert_error(auditor_api.get(f"{REPORTS}{report.pk}/download/"), 409)
    assert body["error"] == "report_not_ready" and "disk on fire" in body["detail"]
    # A failed job is not retried by the reconciler: the error stays for people to read.
    report.created_at = timezone.now() - datetime.timedelta(days=1)
    report.save()
    assert jobs.reports_reconcile() == {}


def test_download_is_refused_until_done(blocked, auditor_api, django_capture_on_commit_callbacks):
    response = ask(auditor_api, django_capture_on_commit_callbacks, run=False)
    assert response.status_code == 202
    report_id = response.json()["id"]
    body = assert_error(auditor_api.get(f"{REPORTS}{report_id}/download/"), 409)
    assert body["error"] == "report_not_ready" and "queued" in body["detail"]
    assert not AuditEntry.objects.filter(action="report.download").exists()
    assert jobs.report_execute(report_id) == ReportState.DONE
    assert auditor_api.get(f"{REPORTS}{report_id}/download/").status_code == 200


def test_a_job_runs_once(blocked, auditor_api, django_capture_on_commit_callbacks):
    response = ask(auditor_api, django_capture_on_commit_callbacks)
    report = Report.objects.get(pk=response.json()["id"])
    chunks = list(ReportChunk.objects.filter(report=report).values_list("pk", flat=True))
    # The message delivered again, or the reconciler: a done report is left as it is.
    assert jobs.report_execute(report.pk) == ReportState.DONE
    assert list(ReportChunk.objects.filter(report=report).values_list("pk", flat=True)) == chunks
    assert Report.objects.get(pk=report.pk).attempts == 1
    # A running job with a recent heartbeat is not taken by another worker...
    Report.objects.filter(pk=report.pk).update(
        state=ReportState.RUNNING, heartbeat_at=timezone.now()
    )
    assert jobs.report_execute(report.pk) == ReportState.RUNNING
    # ...one whose worker stopped beating long ago is run again, as a new attempt.
    Report.objects.filter(pk=report.pk).update(
        heartbeat_at=timezone.now() - jobs.STALE_AFTER - datetime.timedelta(seconds=1)
    )
    assert jobs.reports_reconcile() == {report.pk: ReportState.DONE}
    report.refresh_from_db()
    assert report.attempts == 2
    assert set(ReportChunk.objects.filter(report=report).values_list("attempt", flat=True)) == {2}
    assert report.sha256 == hashlib.sha256(export_bytes(auditor_api, "executions")).hexdigest()


def test_a_superseded_attempt_stops_and_leaves_the_new_one_alone(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(jobs, "PROGRESS_EVERY", 5)
    monkeypatch.setattr(formats, "PIECE", 1)
    original = executions_kind._detail

    def taken_over(queryset):
        for n, row in enumerate(original(queryset)):
            if n == 3:  # meanwhile, the reconciler restarted the job as attempt 2
                Report.objects.update(attempts=2)
            yield row

    monkeypatch.setattr(executions_kind, "_detail", taken_over)
    response = ask(auditor_api, django_capture_on_commit_callbacks)
    report = Report.objects.get(pk=response.json()["id"])
    assert (report.state, report.attempts) == (ReportState.RUNNING, 2)
    assert not ReportChunk.objects.filter(report=report).exists()


def test_reconciler_runs_reports_whose_message_was_lost(
    blocked, auditor_api, django_capture_on_commit_callbacks, settings
):
    settings.FANOUT_GRACE_SECONDS = 60
    young = ask(auditor_api, django_capture_on_commit_callbacks, run=False).json()["id"]
    old = ask(auditor_api, django_capture_on_commit_callbacks, run=False).json()["id"]
    Report.objects.filter(pk=old).update(created_at=timezone.now() - datetime.timedelta(minutes=5))
    from reports.tasks import reconcile_reports

    assert reconcile_reports.apply().get() == {old: ReportState.DONE}
    assert Report.objects.get(pk=young).state == ReportState.QUEUED


def test_sending_never_fails_the_request_when_the_broker_is_down(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    from reports import tasks
    from santaadmin.celery import app

    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setattr(tasks.generate_report, "apply_async", down)
    response = ask(auditor_api, django_capture_on_commit_callbacks)
    assert response.status_code == 202
    assert Report.objects.get().state == ReportState.QUEUED  # left to the reconciler


def test_with_a_broker_the_job_is_sent_to_a_worker(
    blocked, auditor_api, django_capture_on_commit_callbacks, monkeypatch
):
    from reports import tasks
    from santaadmin.celery import app

    sent = []
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setattr(tasks.generate_report, "apply_async", lambda **kw: sent.append(kw))
    report_id = ask(auditor_api, django_capture_on_commit_callbacks).json()["id"]
    assert sent == [{"args": [report_id], "retry": False}]
    assert tasks.generate_report.apply(args=[report_id]).get() == ReportState.DONE


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_in_process_mode_runs_the_job_in_a_thread_after_the_request(blocked, auditor_api):
    if connection.vendor == "sqlite":
        pytest.skip("a second connection to the in-memory SQLite test database is not safe")
    jobs.IN_PROCESS_THREAD = True
    try:
        started = []
        original = threading.Thread.start

        def start(thread):
            started.append(thread)
            original(thread)

        threading.Thread.start = start
        try:
            response = ask(auditor_api, None, run=False)
        finally:
            threading.Thread.start = original
        assert response.status_code == 202
        [thread] = started
        assert thread.name == f"report-{response.json()['id']}" and thread.daemon
        thread.join(timeout=60)
        assert Report.objects.get().state == ReportState.DONE
    finally:
        jobs.IN_PROCESS_THREAD = False


# --- audit trail ----------------------------------------------------------------------------------


def test_generate_and_download_are_audited(
    blocked, auditor_api, django_capture_on_commit_callbacks
):
    report_id = ask(auditor_api, django_capture_on_commit_callbacks, file_format="json").json()[
        "id"
    ]
    entry = AuditEntry.objects.get(action="report.generate")
    assert (entry.actor_name, entry.object_type, entry.object_id) == (
        "audrey",
        "report",
        str(report_id),
    )
    assert entry.after == {
        "kind": "executions",
        "format": "json",
        "parameters": {},
        "delivery": "background",
    }
    body_of(auditor_api.get(f"{REPORTS}{report_id}/download/"))
    download = AuditEntry.objects.get(action="report.download")
    report = Report.objects.get(pk=report_id)
    assert download.object_id == str(report_id)
    assert download.after["sha256"] == report.sha256 and download.after["rows"] == 30


def test_a_direct_export_is_audited_before_it_streams(blocked, auditor_api):
    response = auditor_api.get(
        "/api/v1/reports/hosts/export/", {"format": "json", "stale": "false"}
    )
    assert response.status_code == 200
    entry = AuditEntry.objects.get(action="report.generate")  # nothing consumed yet
    assert entry.object_id == "" and entry.actor_name == "audrey"
    assert entry.after == {
        "kind": "hosts",
        "format": "json",
        "parameters": {"stale": False},
        "delivery": "direct",
    }


def test_the_report_and_its_audit_entry_commit_together(
    blocked, auditor_api, monkeypatch, django_capture_on_commit_callbacks
):
    def refuse(**kwargs):
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(services, "audit_record", refuse)
    client = auditor_api
    client.raise_request_exception = False
    response = ask(client, django_capture_on_commit_callbacks)
    assert response.status_code == 500
    assert not Report.objects.exists()


# --- listing and retention ------------------------------------------------------------------------


def test_list_filters(blocked, auditor_api, analyst_api, django_capture_on_commit_callbacks):
    ask(auditor_api, django_capture_on_commit_callbacks, kind="hosts")
    ask(analyst_api, django_capture_on_commit_callbacks, kind="rules", run=False)
    everything = auditor_api.get(REPORTS).json()
    assert everything["count"] == 2
    assert [r["kind"] for r in everything["results"]] == ["rules", "hosts"]  # newest first
    assert [r["kind"] for r in auditor_api.get(REPORTS, {"state": "done"}).json()["results"]] == [
        "hosts"
    ]
    mine = auditor_api.get(REPORTS, {"created_by": "ana"}).json()["results"]
    assert [r["kind"] for r in mine] == ["rules"]
    assert auditor_api.get(REPORTS, {"kind": "audit"}).json()["count"] == 0
    assert_error(auditor_api.get(REPORTS, {"kind": "nope"}), 400, "kind")


def test_retention_deletes_old_reports_and_their_content(
    blocked, auditor_api, django_capture_on_commit_callbacks, settings
):
    settings.REPORT_RETENTION_DAYS = 7
    old, new = (ask(auditor_api, django_capture_on_commit_callbacks).json() for _ in range(2))
    report = Report.objects.get(pk=old["id"])
    assert report.expires_at - report.created_at == datetime.timedelta(days=7)
    Report.objects.filter(pk=old["id"]).update(expires_at=timezone.now())
    assert ReportChunk.objects.filter(report_id=old["id"]).exists()
    from reports.tasks import prune_reports

    assert prune_reports.apply().get() == 1
    assert list(Report.objects.values_list("pk", flat=True)) == [new["id"]]
    assert not ReportChunk.objects.filter(report_id=old["id"]).exists()
    assert ReportChunk.objects.filter(report_id=new["id"]).exists()
    assert_error(auditor_api.get(f"{REPORTS}{old['id']}/download/"), 404)


def test_retention_zero_keeps_reports(
    blocked, auditor_api, settings, django_capture_on_commit_callbacks
):
    settings.REPORT_RETENTION_DAYS = 0
    ask(auditor_api, django_capture_on_commit_callbacks)
    report = Report.objects.get()
    assert report.expires_at is None
    assert services.reports_prune(now=timezone.now() + datetime.timedelta(days=3650)) == 0


# --- permissions ----------------------------------------------------------------------------------

CALLS = [
    ("get", REPORTS, None),
    ("post", REPORTS, {"kind": "rules", "format": "csv"}),
    ("get", REPORTS + "{id}/", None),
    ("get", REPORTS + "{id}/download/", None),
    ("get", REPORTS + "rules/export/", None),
]


@pytest.fixture
def done_report(blocked, auditor_api, django_capture_on_commit_callbacks):
    return ask(auditor_api, django_capture_on_commit_callbacks).json()["id"]


@pytest.mark.parametrize(("method", "url", "body"), CALLS)
def test_auditor_and_analyst_may_generate_and_read(
    done_report, auditor_api, analyst_api, admin_api, method, url, body
):
    for api in (auditor_api, analyst_api, admin_api):
        response = getattr(api, method)(url.format(id=done_report), body, format="json")
        assert response.status_code in (200, 202), (api.user, response.content)


@pytest.mark.parametrize(("method", "url", "body"), CALLS)
def test_no_role_gets_403_and_anonymous_401(done_report, norole_api, method, url, body):
    reports, entries = Report.objects.count(), AuditEntry.objects.count()
    assert_error(getattr(norole_api, method)(url.format(id=done_report), body, format="json"), 403)
    assert_error(getattr(APIClient(), method)(url.format(id=done_report), body, format="json"), 401)
    assert Report.objects.count() == reports
    # Only the refusal itself is recorded.
    assert set(AuditEntry.objects.order_by("seq").values_list("action", flat=True)[entries:]) == {
        "auth.permission_denied"
    }


def test_reports_need_their_own_permission(done_report, auditor_api):
    """Reading a report needs view_report; generating one also add_report."""
    from django.contrib.auth.models import Permission

    user = auditor_api.user
    user.groups.clear()
    user.user_permissions.add(Permission.objects.get(codename="view_report"))
    assert auditor_api.get(REPORTS).status_code == 200
    assert_error(auditor_api.get(REPORTS + "rules/export/"), 403)
    assert_error(auditor_api.post(REPORTS, {"kind": "rules"}, format="json"), 403)


def test_auditor_still_changes_nothing_else(auditor_api, blocked):
    assert_error(
        auditor_api.post(
            "/api/v1/rules/",
            {"rule_type": "BINARY", "identifier": SHA, "policy": "BLOCKLIST"},
            format="json",
        ),
        403,
    )
    assert auditor_api.user.has_perm("reports.add_report")
    assert not auditor_api.user.has_perm("reports.change_report")
    assert not auditor_api.user.has_perm("reports.delete_report")


# --- refused parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "rules", "tag": "eng"}, "tag"),
        ({"kind": "nope"}, "kind"),
        ({"kind": 1}, "kind"),
        ({"kind": "rules", "format": "xml"}, "format"),
        ({"kind": "rules", "parameters": []}, "parameters"),
        ({"kind": "rules", "parameters": {"tags": "eng"}}, "parameters.tags"),
        (
            {"kind": "rules", "parameters": {"rule_type": ["BINARY", "NOPE"]}},
            "parameters.rule_type",
        ),
        ({"kind": "rules", "parameters": {"stale_days": 0}}, "parameters.stale_days"),
        ({"kind": "rules", "parameters": {"stale_days": "7.5"}}, "parameters.stale_days"),
        ({"kind": "rules", "parameters": {"scope": "galaxy"}}, "parameters.scope"),
        ({"kind": "executions", "parameters": {"since": "yesterday"}}, "parameters.since"),
        ({"kind": "executions", "parameters": {"since": "2026-02-30"}}, "parameters.since"),
        ({"kind": "executions", "parameters": {"until": 1767225600}}, "parameters.until"),
        (
            {"kind": "executions", "parameters": {"since": "2026-02-01", "until": "2026-01-01"}},
            "parameters.until",
        ),
        (
            {"kind": "executions", "parameters": {"since": "2026-01-01", "until": "2026-01-01"}},
            "parameters.until",
        ),
        ({"kind": "executions", "parameters": {"decision": "ALLOW_BINARY"}}, "parameters.decision"),
        ({"kind": "executions", "parameters": {"group_by": "planet"}}, "parameters.group_by"),
        ({"kind": "executions", "parameters": {"machine_id": "x" * 300}}, "parameters.machine_id"),
        (
            {"kind": "executions", "parameters": {"executing_user": "a\x00b"}},
            "parameters.executing_user",
        ),
        ({"kind": "hosts", "parameters": {"stale": "maybe"}}, "parameters.stale"),
        ({"kind": "hosts", "parameters": {"noncompliant": 1}}, "parameters.noncompliant"),
        ({"kind": "hosts", "parameters": {"client_mode": "PARANOID"}}, "parameters.client_mode"),
        ({"kind": "audit", "parameters": {"since": "2026-01-01", "q": 5}}, "parameters.q"),
    ],
)
def test_bad_parameters_are_400_with_fields_and_create_nothing(auditor_api, body, field):
    entries = AuditEntry.objects.count()
    assert_error(auditor_api.post(REPORTS, body, format="json"), 400, field)
    assert not Report.objects.exists()
    assert AuditEntry.objects.count() == entries


@pytest.mark.parametrize(
    ("kind", "query", "field"),
    [
        ("rules", {"tags": "eng"}, "tags"),
        ("rules", {"format": "xml"}, "format"),
        ("executions", {"since": "2026-13-01"}, "since"),
        ("executions", {"since": "2026-01-02", "until": "2026-01-01"}, "until"),
        ("executions", {"decision": ["BLOCK_BINARY", "ALLOW_CDHASH"]}, "decision"),
        ("hosts", {"drifted": "yes"}, "drifted"),
        ("hosts", {"page": "2"}, "page"),
        ("audit", {"until": "soon"}, "until"),
    ],
)
def test_bad_export_queries_are_400_and_record_nothing(auditor_api, kind, query, field):
    entries = AuditEntry.objects.count()
    response = auditor_api.get(f"{REPORTS}{kind}/export/", query)
    assert_error(response, 400, field)
    assert AuditEntry.objects.count() == entries


def test_unknown_report_kind_is_404(auditor_api):
    assert_error(auditor_api.get(f"{REPORTS}planets/export/"), 404)
    assert_error(auditor_api.get(f"{REPORTS}999/"), 404)
    assert_error(auditor_api.get(f"{REPORTS}999/download/"), 404)


def test_events_loaded_in_bulk_are_reported(blocked, auditor_api):
    """The bulk loader of the memory tests writes rows the report reads like agents' ones."""
    insert_events(host_id=blocked.pk, binary_id=SHA, first=1, count=5)
    assert Event.objects.count() == 35
    _, rows = export(auditor_api, "executions", "json", executing_user="user3")
    assert [(r["file_name"], r["execution_time"]) for r in rows] == [
        ("tool-3", "2026-01-01T00:00:03.000000Z")
    ]
