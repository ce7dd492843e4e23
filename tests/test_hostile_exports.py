"""Agent-sent markup in downloads and API answers is never rendered as HTML by a browser.

The payloads of tests/browser/test_hostile_browser.py, sent through the real sync endpoints,
end up verbatim in CSV and JSON files (they are data there, and must stay exact). What keeps a
browser from running them is how they are served: as an attachment, with a non-HTML type and
`nosniff`; API answers (errors included) are JSON, never HTML.
"""

from __future__ import annotations

import json

import pytest

from hosts.models import Host
from reports.jobs import report_execute
from reports.services import report_create
from rules.services import RuleInput, rule_create
from tests.api import assert_error
from tests.browser.test_hostile_browser import (
    EVENT,
    FACTS,
    FILE_NAME,
    HOSTNAME,
    IMG,
    RULE_COMMENT,
    SCRIPT,
    SHA,
    USER,
)


@pytest.fixture
def hostile(make_agent, monkeypatch):
    agent = make_agent(hostname=HOSTNAME)
    agent.facts.update(FACTS)
    agent.sync()
    agent.upload_events([EVENT])
    rule_create(
        data=RuleInput(rule_type="BINARY", identifier=SHA, policy="BLOCKLIST", comment=RULE_COMMENT)
    )
    monkeypatch.setattr("reports.services.report_send", lambda pk: None)  # run it here
    report = report_create(kind="executions", file_format="json", parameters={}, actor=None)
    report_execute(report.pk)
    return {"host": Host.objects.get(machine_id=agent.machine_id), "report": report}


def body(response) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode()


def assert_download(response, content_type: str, *payloads: str) -> None:
    assert response.status_code == 200, body(response)
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"].startswith("attachment; filename=")
    assert response["X-Content-Type-Options"] == "nosniff"
    text = body(response)
    for payload in payloads:  # the data stays exact: no escaping in a file
        quoted = {payload.replace('"', '""'), json.dumps(payload, ensure_ascii=False)[1:-1]}
        assert any(form in text for form in quoted), payload


CSV = "text/csv; charset=utf-8"
JSON = "application/json"


@pytest.mark.parametrize(("fmt", "content_type"), [("csv", CSV), ("json", JSON)])
def test_console_downloads_are_attachments(hostile, auditor_console, fmt, content_type):
    direct = auditor_console.post("/reports/executions/download/", {"format": fmt})
    assert_download(direct, content_type, FILE_NAME, USER, HOSTNAME)
    rules = auditor_console.get("/rules/", {"export": fmt})
    assert_download(rules, content_type, RULE_COMMENT)


def test_stored_report_downloads_are_attachments(hostile, auditor_console, auditor_api):
    report = hostile["report"]
    for client, url in (
        (auditor_console, f"/reports/{report.pk}/download/"),
        (auditor_api, f"/api/v1/reports/{report.pk}/download/"),
    ):
        assert_download(client.get(url), JSON, USER, HOSTNAME)


@pytest.mark.parametrize(("fmt", "content_type"), [("csv", CSV), ("json", JSON)])
def test_api_exports_are_attachments(hostile, auditor_api, fmt, content_type):
    response = auditor_api.get("/api/v1/reports/executions/export/", {"format": fmt})
    assert_download(response, content_type, FILE_NAME, USER)
    rules = auditor_api.get("/api/v1/rules/export/", {"format": {"json": "santactl"}.get(fmt, fmt)})
    assert_download(rules, content_type, RULE_COMMENT)


def test_api_answers_with_payloads_are_json(hostile, auditor_api):
    machine_id = hostile["host"].machine_id
    for url in (
        "/api/v1/events/",
        f"/api/v1/hosts/{machine_id}/",
        "/api/v1/hosts/",
        f"/api/v1/binaries/{SHA}/",
        "/api/v1/certificates/",
        "/api/v1/rules/",
        f"/api/v1/reports/{hostile['report'].pk}/",
    ):
        response = auditor_api.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"] == JSON, url
        assert response["X-Content-Type-Options"] == "nosniff"
    host = auditor_api.get(f"/api/v1/hosts/{machine_id}/").json()
    assert host["hostname"] == HOSTNAME  # as sent, for a program to read
    assert SCRIPT in auditor_api.get("/api/v1/events/").content.decode()


@pytest.mark.parametrize(
    "url",
    [
        f"/api/v1/hosts/{IMG}/",
        f"/api/v1/events/?executing_user={SCRIPT}&page={IMG}",
        f"/api/v1/rules/?rule_type={SCRIPT}",
        f"/api/v1/rules/?format={IMG}",
        "/api/v1/rules/?format=api",  # no browsable (HTML) API
        f"/api/v1/nothing/{SCRIPT}/",
    ],
)
def test_api_errors_echoing_payloads_are_json(hostile, auditor_api, url):
    response = auditor_api.get(url)
    assert 400 <= response.status_code < 500, response.content
    assert_error(response, response.status_code)
    assert "html" not in response["Content-Type"]
