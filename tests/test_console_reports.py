"""The console's reports page: a form per report, direct downloads, background reports with
their refreshing status, downloads of done reports, refused parameters and permissions."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from audit.models import AuditEntry
from reports.jobs import report_execute
from reports.models import Report, ReportState
from tests.reports_support import body_of, csv_rows, jobs_inline  # noqa: F401

pytestmark = pytest.mark.usefixtures("jobs_inline")

T0 = 1767225600
SHA = "6f" * 32


@pytest.fixture
def blocked(agent):
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": SHA,
                "file_name": "@SUM(1+1)",
                "decision": "BLOCK_BINARY",
                "execution_time": T0 + n,
                "executing_user": "dana",
                "pid": n,
            }
            for n in range(5)
        ]
    )
    return agent


def test_page_has_a_form_per_report_and_the_nav_link(auditor_console):
    page = auditor_console.get("/reports/")
    assert page.status_code == 200
    html = page.content.decode()
    for kind in ("rules", "executions", "hosts", "audit"):
        assert f'action="/reports/{kind}/generate/"' in html
        assert f'formaction="/reports/{kind}/download/"' in html
    assert html.count(">Download now</button>") == 4
    assert html.count(">Generate in background</button>") == 4
    assert 'id="id_executions_since"' in html and 'type="datetime-local"' in html
    assert 'id="id_executions_group_by"' in html and 'id="id_hosts_noncompliant"' in html
    assert 'href="/reports/"' in auditor_console.get("/").content.decode()  # the nav link
    assert "style=" not in html and "<script>" not in html


def test_download_now_streams_the_report_and_records_it(blocked, auditor_console):
    response = auditor_console.post(
        "/reports/executions/download/",
        {"format": "csv", "since": "2026-01-01T00:00", "until": "", "decision": ["BLOCK_BINARY"]},
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="santa-executions-')
    entry = AuditEntry.objects.get(action="report.generate")
    assert entry.after["delivery"] == "direct"
    assert entry.after["parameters"] == {
        "since": "2026-01-01T00:00:00.000000Z",
        "decision": ["BLOCK_BINARY"],
    }
    rows = csv_rows(body_of(response))
    assert len(rows) == 5 and rows[0]["file_name"] == "'@SUM(1+1)"
    assert not Report.objects.exists()  # nothing stored for a direct download


def test_download_link_with_a_query_string(blocked, auditor_console):
    response = auditor_console.get(
        "/reports/executions/download/", {"format": "json", "group_by": "user"}
    )
    assert response.status_code == 200
    assert b'"executing_user":"dana"' in body_of(response)


def test_generate_in_background_then_download(
    blocked, auditor_console, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = auditor_console.post(
            "/reports/hosts/generate/", {"format": "json", "noncompliant": ""}
        )
    report = Report.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/reports/#report-{report.pk}"
    assert (report.kind, report.format, report.parameters) == ("hosts", "json", {})
    assert report.created_by == auditor_console.user and report.state == ReportState.DONE

    page = auditor_console.get("/reports/")
    html = page.content.decode()
    assert "is being generated" in html  # the message
    assert f'id="report-{report.pk}"' in html
    assert f'href="/reports/{report.pk}/download/"' in html
    assert report.sha256 in html

    download = auditor_console.get(f"/reports/{report.pk}/download/")
    assert download.status_code == 200
    assert body_of(download).startswith(b'{"report":"hosts"')
    assert AuditEntry.objects.filter(action="report.download", object_id=str(report.pk)).exists()


def test_status_fragment_refreshes_until_done(
    blocked, auditor_console, django_capture_on_commit_callbacks
):
    auditor_console.post("/reports/executions/generate/", {"format": "csv"})  # not run
    report = Report.objects.get()
    fragment = auditor_console.get(f"/reports/{report.pk}/status/")
    html = fragment.content.decode().strip()
    assert html.startswith(f'<div class="report-status" id="report-status-{report.pk}"')
    assert f'data-refresh-url="/reports/{report.pk}/status/"' in html
    assert 'data-done="false"' in html and "<progress" in html and "Queued" in html
    assert "download" not in html.lower()

    Report.objects.filter(pk=report.pk).update(
        state=ReportState.RUNNING, rows_written=2, rows_expected=5
    )
    html = auditor_console.get(f"/reports/{report.pk}/status/").content.decode()
    assert 'value="40"' in html and "2 of 5 rows (40%)" in html

    Report.objects.filter(pk=report.pk).update(state=ReportState.QUEUED)
    assert report_execute(report.pk) == ReportState.DONE
    html = auditor_console.get(f"/reports/{report.pk}/status/").content.decode()
    assert 'data-done="true"' in html and "<progress" not in html
    assert f'href="/reports/{report.pk}/download/"' in html and "5 rows" in html


def test_download_of_a_report_not_done_is_409(blocked, auditor_console):
    auditor_console.post("/reports/rules/generate/", {"format": "csv"})
    report = Report.objects.get()
    response = auditor_console.get(f"/reports/{report.pk}/download/")
    assert response.status_code == 409
    assert b"not ready" in response.content
    Report.objects.filter(pk=report.pk).update(state=ReportState.FAILED, error="Boom: no disk")
    response = auditor_console.get(f"/reports/{report.pk}/download/")
    assert response.status_code == 409 and b"Boom: no disk" in response.content
    assert not AuditEntry.objects.filter(action="report.download").exists()
    assert auditor_console.get("/reports/999/download/").status_code == 404


@pytest.mark.parametrize(
    ("url", "data", "field", "message"),
    [
        (
            "/reports/executions/generate/",
            {"format": "csv", "since": "2026-02-01T00:00", "until": "2026-01-01T00:00"},
            "until",
            "Must be later than since.",
        ),
        ("/reports/executions/download/", {"since": "last tuesday"}, "since", "Not a time"),
        ("/reports/rules/generate/", {"stale_days": "0"}, "stale_days", "greater than or equal"),
        ("/reports/hosts/download/", {"format": "xml"}, "format", "Choose one of"),
        ("/reports/executions/generate/", {"decision": "ALLOW_BINARY"}, "decision", "valid"),
    ],
)
def test_refused_parameters_show_on_the_form_and_change_nothing(
    auditor_console, url, data, field, message
):
    entries = AuditEntry.objects.count()
    response = auditor_console.post(url, data)
    assert response.status_code == 400
    html = response.content.decode()
    kind = url.split("/")[2]
    assert re.search(rf'<details class="panel report-kind" id="kind-{kind}" open>', html)
    assert message in html
    assert not Report.objects.exists()
    assert AuditEntry.objects.count() == entries


def test_unknown_report_is_404(auditor_console):
    assert auditor_console.post("/reports/planets/generate/").status_code == 404
    assert auditor_console.get("/reports/planets/download/").status_code == 404


def test_list_filter_and_who_asked(
    blocked, auditor_console, analyst_console, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        auditor_console.post("/reports/audit/generate/", {"format": "csv", "action": "rule.create"})
        analyst_console.post("/reports/rules/generate/", {"format": "json"})
    html = analyst_console.get("/reports/", {"kind": "audit"}).content.decode()
    assert "Audit log" in html and "action: rule.create" in html
    assert html.count('class="report-status"') == 1
    html = analyst_console.get("/reports/").content.decode()
    assert html.count('class="report-status"') == 2
    assert auditor_console.user.username in html and analyst_console.user.username in html
    assert analyst_console.get("/reports/", {"state": "nope"}).status_code == 200


def test_readers_without_add_report_see_reports_but_cannot_generate(console, blocked):
    browser = console(None, "reader")
    browser.user.user_permissions.add(Permission.objects.get(codename="view_report"))
    page = browser.get("/reports/")
    assert page.status_code == 200 and b">Generate in background</button>" not in page.content
    assert browser.post("/reports/rules/generate/", {"format": "csv"}).status_code == 403
    assert browser.get("/reports/rules/download/").status_code == 403
    assert not Report.objects.exists()


def test_no_role_is_refused_everything(console, blocked):
    browser = console(None)
    for url in ("/reports/", "/reports/rules/download/", "/reports/1/status/"):
        assert browser.get(url).status_code == 403
    assert browser.post("/reports/rules/generate/", {"format": "csv"}).status_code == 403
    assert b'href="/reports/"' not in browser.get("/").content


def test_anonymous_is_sent_to_sign_in(client, db):
    response = client.get("/reports/executions/download/", {"format": "csv"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not AuditEntry.objects.filter(action="report.generate").exists()
