"""End to end in a real browser: an auditor asks for a report in the background, watches its
progress on the reports page (static/js/console.js refreshes the status by itself) and
downloads it when it is done.

The job is run by the test where a worker would run it, after the page shows the report
queued, so the page is seen going from queued through running to done.
"""

import hashlib
import json

import pytest

from reports import services
from reports.jobs import report_execute
from reports.models import Report, ReportState
from tests.browser.pw import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SHA = "c4" * 32
T0 = 1767225600


def test_auditor_generates_a_report_in_the_background_and_downloads_it(
    make_agent, signed_in_page, monkeypatch, tmp_path
):
    agent = make_agent(hostname="dana-mbp.example.com")
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": SHA,
                "file_name": "keylogger",
                "decision": "BLOCK_BINARY",
                "execution_time": T0 + n,
                "executing_user": "dana",
                "pid": n,
            }
            for n in range(5)
        ]
    )
    sent = []
    monkeypatch.setattr(services, "report_send", sent.append)  # the worker is this test

    page = signed_in_page("auditor")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Reports")
    page.get_by_role("heading", name="Blocked executions").click()  # opens its form
    form = page.get_by_role("form", name="Blocked executions")
    form.get_by_label("Since (UTC)").fill("2026-01-01T00:00")
    form.get_by_label("Outcome").select_option("blocked")
    form.get_by_label("JSON").check()
    form.get_by_role("button", name="Generate in background").click()

    expect(page.get_by_role("status")).to_contain_text("is being generated")
    report = Report.objects.get()
    assert sent == [report.pk]
    assert (report.kind, report.format, report.created_by) == ("executions", "json", page.user)
    assert report.parameters == {"since": "2026-01-01T00:00:00.000000Z", "outcome": "blocked"}
    status = page.locator(f"#report-status-{report.pk}")
    expect(status).to_contain_text("Queued")
    progress = status.get_by_role("progressbar", name=f"Progress of report {report.pk}")
    expect(progress).to_be_visible()

    # The worker starts and has written two of five rows: the page follows.
    Report.objects.filter(pk=report.pk).update(
        state=ReportState.RUNNING, rows_written=2, rows_expected=5
    )
    expect(status).to_contain_text("2 of 5 rows (40%)")
    Report.objects.filter(pk=report.pk).update(state=ReportState.QUEUED)
    assert report_execute(report.pk) == ReportState.DONE
    expect(status).to_contain_text("Done")
    expect(status).to_contain_text("5 rows")
    report.refresh_from_db()
    expect(status).to_contain_text(report.sha256)

    with page.expect_download() as download_info:
        status.get_by_role("link", name=f"Download report {report.pk} (JSON)").click()
    download = download_info.value
    assert download.suggested_filename.startswith(f"santa-executions-{report.pk}-")
    assert download.suggested_filename.endswith(".json")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    content = path.read_bytes()
    assert hashlib.sha256(content).hexdigest() == report.sha256
    document = json.loads(content)
    assert document["report"] == "executions"
    assert [row["file_name"] for row in document["rows"]] == ["keylogger"] * 5
    assert page.script_errors == []
