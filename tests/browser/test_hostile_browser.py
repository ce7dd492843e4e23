"""Agent-reported text is shown as text: HTML and script payloads in events and preflight facts
never run in an analyst's browser.

Everything an agent sends is attacker-controlled (any Mac with the enrollment secret can send
anything), and so is what a user types into Santa's request page. Here one agent reports markup
in every free-text field the console shows, and a request carries more; a real browser then
opens the pages that show them. A payload that ran would set `window.__xss` or
open a dialog; a payload escaped correctly is visible literally, characters and all.
"""

import re

import pytest

from events.approvals import approval_request_submit
from events.models import Binary
from hosts.models import Host
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
}


@pytest.fixture
def hostile_host(make_agent):
    agent = make_agent(hostname=HOSTNAME, primary_user=PRIMARY_USER)
    agent.sync()
    agent.upload_events([EVENT])
    return Host.objects.get(machine_id=agent.machine_id)


@pytest.fixture
def hostile_request(hostile_host):
    return approval_request_submit(
        binary=Binary.objects.get(pk=SHA), host=hostile_host, requester=USER, reason=REASON
    )


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


def test_payloads_are_shown_as_text_and_never_run(hostile_host, hostile_request, signed_in_page):
    page = signed_in_page("analyst")

    main = visit(page, "/binaries/")
    shows_literally(main, FILE_NAME, FILE_PATH, BUNDLE_NAME, CERT_CN)
    expect(main.get_by_role("link", name=FILE_NAME)).to_be_visible()

    main = visit(page, f"/binaries/{SHA}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text(FILE_NAME)
    shows_literally(main, FILE_PATH, BUNDLE_NAME, CERT_CN, USER, HOSTNAME, SCRIPT)

    main = visit(page, "/hosts/")
    shows_literally(main, HOSTNAME)

    main = visit(page, f"/hosts/{hostile_host.pk}/")
    shows_literally(main, HOSTNAME, PRIMARY_USER)

    main = visit(page, "/requests/")
    shows_literally(main, FILE_NAME, HOSTNAME, USER)

    main = visit(page, f"/requests/{hostile_request.pk}/")
    shows_literally(main, FILE_NAME, HOSTNAME, USER, SCRIPT, IMG)

    main = visit(page, "/")
    shows_literally(main, FILE_NAME)


def test_the_checks_catch_a_payload_that_runs(new_page):
    """The same checks on a page that does inject the payloads: they must see them run (so a
    pass above means escaped, not unnoticed)."""
    page = new_page()
    page.set_content(f"<main><h1>x</h1>{IMG}{SVG}</main>")
    # set_content, like goto, returns after the load event.
    assert page.evaluate("() => window.__xss") == 1
    assert any(re.search(r"alert: [13]$", d) for d in page.dialogs), page.dialogs
