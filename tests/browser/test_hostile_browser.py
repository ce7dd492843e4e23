"""Agent-reported text is shown as text: HTML and script payloads in events and preflight facts
never run in an analyst's browser.

Everything an agent sends is attacker-controlled (any Mac with the enrollment secret can send
anything), and so is what a user types into Santa's request page. Here one agent reports markup
through the real sync endpoints in every free-text field the console shows (event, binary,
bundle, certificate, quarantine and host facts), a user sends more through the real request
page, and a report and a rule carry more; a real browser then opens every page that shows them.
A payload that ran would set `window.__xss` or open a dialog; a payload escaped correctly is
visible literally, characters and all. (The Content-Security-Policy would block an inline
payload too; these tests check the escaping itself, behind it. tests/test_hostile_exports.py
checks that downloads and API answers carrying the payloads are never rendered as HTML.)
"""

import re
from urllib.parse import urlencode

import pytest

from events.models import ApprovalRequest
from hosts.models import Host
from reports.jobs import report_execute
from reports.services import report_create
from rules.services import RuleInput, rule_create
from tests.browser.pw import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

IMG = '<img src=x onerror="window.__xss=1;alert(1)">'
SCRIPT = "<script>window.__xss=1;alert(2)</script>"
SVG = '"><svg onload=window.__xss=1;alert(3)>'
ATTR = "' onmouseover='window.__xss=1' x='"

SHA = "e1" * 32
FILE_NAME = f"{IMG}tool"
FILE_PATH = f"/Users/mallory/{SVG}"
BUNDLE_NAME = f"{SCRIPT}Bundle"
CERT_CN = f"Developer ID Application: {SVG}{IMG}"
USER = f"{IMG}{ATTR}"
HOSTNAME = f"{SCRIPT}{SVG}.example.com"
PRIMARY_USER = f"{SVG}mallory"
REASON = f"Please {SCRIPT}\n{IMG}"  # typed by a user into Santa's request page
JS_URL = "javascript:window.__xss=1//"
QUARANTINE_URL = f"{JS_URL}<b>{IMG}</b>"
FACTS = {
    "serial_number": f"C02{IMG}",
    "model_identifier": f"MacBookPro{SCRIPT}",
    "os_version": f"15.1{SVG}",
    "os_build": ATTR,
    "primary_user_groups": [f"staff{IMG}"],
}
SANTA_VERSION = f"2026.8{SVG}"
RULE_COMMENT = f"Blocked {SVG}"
RULE_MESSAGE = f"Not here {IMG}"

EVENT = {
    "file_sha256": SHA,
    "file_name": FILE_NAME,
    "file_path": FILE_PATH,
    "decision": "BLOCK_BINARY",
    "execution_time": 1_760_000_000.0,
    "executing_user": USER,
    "logged_in_users": [USER],
    "parent_name": SCRIPT,
    "team_id": "ABCDE12345",
    "signing_id": "ABCDE12345:com.example.evil",
    "file_bundle_id": "com.example.evil",
    "file_bundle_name": BUNDLE_NAME,
    "file_bundle_path": f"/Applications/{SVG}.app",
    "file_bundle_version_string": SCRIPT,
    "signing_chain": [{"sha256": "f2" * 32, "cn": CERT_CN, "org": IMG, "ou": SVG}],
    "quarantine_data_url": QUARANTINE_URL,
    "quarantine_referer_url": JS_URL,
    "quarantine_agent_bundle_id": SCRIPT,
}


@pytest.fixture
def hostile_host(make_agent):
    """A host that reported markup in its facts and in an event, through the sync endpoints."""
    agent = make_agent(hostname=HOSTNAME, primary_user=PRIMARY_USER, santa_version=SANTA_VERSION)
    agent.facts.update(FACTS)
    agent.sync()
    agent.upload_events([EVENT])
    host = Host.objects.get(machine_id=agent.machine_id)
    assert (host.serial_number, host.santa_version) == (FACTS["serial_number"], SANTA_VERSION)
    return host


@pytest.fixture
def hostile_extras(hostile_host, monkeypatch):
    """A rule and a report whose texts carry markup too (an analyst's, a report's filter)."""
    rule = rule_create(
        data=RuleInput(
            rule_type="BINARY",
            identifier=SHA,
            policy="BLOCKLIST",
            comment=RULE_COMMENT,
            custom_msg=RULE_MESSAGE,
        ),
        justification=REASON,
    )
    monkeypatch.setattr("reports.services.report_send", lambda pk: None)  # run it here
    report = report_create(
        kind="executions", file_format="csv", parameters={"executing_user": USER}, actor=None
    )
    report_execute(report.pk)
    return {"rule": rule, "report": report}


def submit_request(new_page, host) -> ApprovalRequest:
    """The Mac's user asks through the request page Santa's dialog opens, typing markup."""
    page = new_page()
    query = urlencode({"sha": SHA, "machine": host.machine_id, "user": USER})
    visit(page, f"/request/?{query}")
    page.get_by_label("Why do you need this program?").fill(REASON)
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#request-state")).to_have_text("Waiting for an analyst")
    main = visit(page, page.url)  # where the form led: the request and its status
    shows_literally(main, FILE_NAME, BUNDLE_NAME, CERT_CN, USER)
    expect(main.locator("#status")).to_contain_text(SCRIPT)
    return ApprovalRequest.objects.get(requester=USER)


def visit(page, path: str):
    """Open `path` (it must render), then check no payload ran."""
    response = page.goto(path)
    assert response is not None and response.status == 200, (
        f"{path}: {response and response.status}"
    )
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    # `goto` returns after the load event, which waits for every image (failed ones included):
    # an injected onerror/onload handler or script would have run by now.
    assert page.evaluate("() => typeof window.__xss") == "undefined", f"a payload ran on {path}"
    assert page.dialogs == [], f"a payload opened a dialog on {path}: {page.dialogs}"
    assert page.script_errors == [], f"script errors on {path}: {page.script_errors}"
    return page.get_by_role("main")


def shows_literally(main, *texts: str) -> None:
    for text in texts:
        expect(main).to_contain_text(text)


def test_payloads_are_shown_as_text_and_never_run(
    hostile_host, hostile_extras, new_page, signed_in_page
):
    approval = submit_request(new_page, hostile_host)
    page = signed_in_page("analyst")

    main = visit(page, "/binaries/")
    shows_literally(main, FILE_NAME, FILE_PATH, BUNDLE_NAME, CERT_CN)
    expect(main.get_by_role("link", name=FILE_NAME)).to_be_visible()

    main = visit(page, f"/binaries/{SHA}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text(FILE_NAME)
    shows_literally(main, FILE_PATH, BUNDLE_NAME, CERT_CN, USER, HOSTNAME, SCRIPT, IMG, SVG)
    shows_literally(main, QUARANTINE_URL, JS_URL)
    # A URL the agent reported is text, never a link a click would run.
    assert main.locator('a[href^="javascript:" i]').count() == 0

    main = visit(page, "/hosts/")
    shows_literally(main, HOSTNAME, SANTA_VERSION)

    main = visit(page, f"/hosts/{hostile_host.pk}/")
    shows_literally(main, HOSTNAME, PRIMARY_USER, SANTA_VERSION, *FACTS["primary_user_groups"])
    shows_literally(main, *(FACTS[k] for k in ("serial_number", "model_identifier", "os_build")))
    shows_literally(main, FACTS["os_version"])

    main = visit(page, "/requests/")
    shows_literally(main, FILE_NAME, HOSTNAME, USER)

    main = visit(page, f"/requests/{approval.pk}/")
    shows_literally(main, FILE_NAME, HOSTNAME, USER, SCRIPT, IMG)

    main = visit(page, "/")
    shows_literally(main, FILE_NAME, HOSTNAME, SANTA_VERSION)

    rule = hostile_extras["rule"]
    main = visit(page, "/rules/")
    shows_literally(main, RULE_COMMENT)
    main = visit(page, f"/rules/{rule.pk}/")
    shows_literally(main, RULE_COMMENT, RULE_MESSAGE, SCRIPT)

    main = visit(page, "/reports/")
    shows_literally(main, USER)

    main = visit(page, "/audit/")
    shows_literally(main, SCRIPT)

    assert page.evaluate("() => typeof window.__xss") == "undefined"


def test_the_checks_catch_a_payload_that_runs(new_page):
    """The same checks on a page that does inject the payloads: they must see them run (so a
    pass above means escaped, not unnoticed)."""
    page = new_page()
    page.set_content(f"<main><h1>x</h1>{IMG}{SVG}</main>")
    # set_content, like goto, returns after the load event.
    assert page.evaluate("() => window.__xss") == 1
    assert any(re.search(r"alert: [13]$", d) for d in page.dialogs), page.dialogs
