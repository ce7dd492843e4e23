"""Every main console page renders in a real browser, and its screenshot is kept for the README.

A small, realistic fleet is built the way production builds it (simulated agents speaking the
sync protocol, and the services the console calls): hosts in tags, a signed app in a bundle
blocked on several hosts, an unsigned download, a binary monitor mode would have blocked,
rules with their delivery under way, and an approval request. An analyst then visits each page;
a page that does not answer 200 with its <h1>, or raises a script error, fails the test (all
pages are visited first, so one failure lists every broken page).

Screenshots (full page, 1280x900 viewport) go to $SCREENSHOT_DIR, by default var/screenshots
(`make screenshots` writes them to docs/screenshots, the ones the README shows).
"""

import datetime
import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from events.approvals import approval_request_submit
from events.models import Binary
from hosts.models import Host
from hosts.services import host_set_tags
from rules.models import Rule
from rules.services import RuleInput, rule_approve, rule_create
from tests.browser.pw import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "var" / "screenshots")

FIGMA_SHA = "3f9c1be2a7d04c6e8b15f2a90d7e3c4b6a8f1e2d3c4b5a6978869f0e1d2c3b4a"
FIGMA_HELPER_SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
NGROK_SHA = "9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877665544"
PYTHON_SHA = "5e4d3c2b1a0f9e8d7c6b5a49382716054f3e2d1c0b9a8f7e6d5c4b3a29181706"
FIGMA_LEAF = "0b1e5c9a8d7f6e5d4c3b2a1908f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d5c4"
DEVID_CA = "7afc9d01a62f03a2de9637936d4afe68090d2de18d03f29c88cfb0b1ba63587f"
APPLE_ROOT = "b0b1730ecbc7ff4505142c49f1295e6eda6bcaed7e2c68c5be91b5a11001f024"
FIGMA_TEAM = "T8RA8NE3B7"

HOSTS = [
    # hostname, primary user, tags
    ("dana-mbp.corp.example.com", "dana", ["eng"]),
    ("erin-mba.corp.example.com", "erin", ["eng", "release"]),
    ("farid-mbp.corp.example.com", "farid", ["design"]),
    ("grace-imac.corp.example.com", "grace", ["design", "finance"]),
    ("hiro-mbp.corp.example.com", "hiro", []),
]

FIGMA_CHAIN = [
    {
        "sha256": FIGMA_LEAF,
        "cn": f"Developer ID Application: Figma, Inc. ({FIGMA_TEAM})",
        "org": "Figma, Inc.",
        "ou": FIGMA_TEAM,
        "valid_from": 1_700_000_000,
        "valid_until": 1_857_000_000,
    },
    {
        "sha256": DEVID_CA,
        "cn": "Developer ID Certification Authority",
        "org": "Apple Inc.",
        "ou": "Apple Certification Authority",
        "valid_from": 1_328_000_000,
        "valid_until": 1_991_000_000,
    },
    {
        "sha256": APPLE_ROOT,
        "cn": "Apple Root CA",
        "org": "Apple Inc.",
        "ou": "Apple Certification Authority",
        "valid_from": 1_145_000_000,
        "valid_until": 2_054_000_000,
    },
]


def _figma(when: float, user: str, pid: int, sha=FIGMA_SHA, name="Figma", rel="MacOS/Figma"):
    return {
        "file_sha256": sha,
        "file_name": name,
        "file_path": "/Applications/Figma.app/Contents/" + rel.rsplit("/", 1)[0],
        "decision": "BLOCK_UNKNOWN",
        "execution_time": when,
        "executing_user": user,
        "logged_in_users": [user],
        "pid": pid,
        "ppid": 1,
        "parent_name": "launchd",
        "team_id": FIGMA_TEAM,
        "signing_id": f"{FIGMA_TEAM}:com.figma.Desktop",
        "cdhash": "4c2f9a8e7d6b5c4a3f2e1d0c9b8a7f6e5d4c3b2a",
        "signing_status": "SIGNING_STATUS_PRODUCTION",
        "signing_chain": FIGMA_CHAIN,
        "file_bundle_id": "com.figma.Desktop",
        "file_bundle_name": "Figma",
        "file_bundle_path": "/Applications/Figma.app",
        "file_bundle_executable_rel_path": "Contents/" + rel,
        "file_bundle_version": "125.4.9",
        "file_bundle_version_string": "125.4.9",
        "quarantine_data_url": "https://desktop.figma.com/mac-arm/Figma-125.4.9.zip",
        "quarantine_referer_url": "https://www.figma.com/downloads/",
        "quarantine_timestamp": int(when) - 600,
        "quarantine_agent_bundle_id": "com.google.Chrome",
    }


def _ngrok(when: float, user: str) -> dict:
    return {
        "file_sha256": NGROK_SHA,
        "file_name": "ngrok",
        "file_path": f"/Users/{user}/Downloads",
        "decision": "BLOCK_UNKNOWN",
        "execution_time": when,
        "executing_user": user,
        "pid": 8812,
        "ppid": 8790,
        "parent_name": "zsh",
        "signing_status": "SIGNING_STATUS_UNSIGNED",
    }


def _python(when: float, user: str) -> dict:
    return {
        "file_sha256": PYTHON_SHA,
        "file_name": "python3.12",
        "file_path": "/opt/homebrew/Cellar/python@3.12/3.12.7/bin",
        "decision": "ALLOW_UNKNOWN",
        "execution_time": when,
        "executing_user": user,
        "pid": 9120,
        "ppid": 9101,
        "parent_name": "make",
        "signing_status": "SIGNING_STATUS_ADHOC",
        "cdhash": "1f2e3d4c5b6a79881726354453627180a9b8c7d6",
    }


@pytest.fixture
def fleet(make_agent):
    """The data set; returns the objects whose pages are shown."""
    now = time.time()
    sam = User.objects.create_user("sam", password=None)
    sam.groups.add(Group.objects.get(name="analyst"))
    hour = 3600.0
    agents = []
    for hostname, user, tags in HOSTS:
        agent = make_agent(hostname=hostname, primary_user=user)
        agent.preflight()
        if tags:
            host_set_tags(host=Host.objects.get(machine_id=agent.machine_id), tag_names=tags)
        agent.sync()
        agents.append(agent)
    dana, erin, farid, grace, hiro = agents

    farid.upload_events(
        [
            _figma(now - 30 * hour, "farid", 5012),
            _figma(
                now - 29 * hour,
                "farid",
                5013,
                FIGMA_HELPER_SHA,
                "Figma Helper",
                "Frameworks/Figma Helper.app/Contents/MacOS/Figma Helper",
            ),
        ]
    )
    grace.upload_events([_figma(now - 5 * hour, "grace", 611)])
    dana.upload_events([_figma(now - 2 * hour, "dana", 744), _ngrok(now - 1 * hour, "dana")])
    erin.upload_events([_ngrok(now - 20 * hour, "erin")])
    hiro.upload_events([_python(now - 3 * hour, "hiro"), _python(now - 0.5 * hour, "hiro")])

    # Rules: a fleet-wide allowlist, a tag-scoped block, and an analyst's approval of Figma for
    # the design tag (with its justification), then some hosts sync and some do not yet.
    rule_create(
        data=RuleInput(
            rule_type="TEAMID",
            identifier="EQHXZ8M8AV",
            policy="ALLOWLIST",
            comment="Google LLC: Chrome and Drive for everyone",
        ),
        justification="Standard software catalogue",
        actor=sam,
    )
    rule_create(
        data=RuleInput(
            rule_type="BINARY",
            identifier=NGROK_SHA,
            policy="BLOCKLIST",
            custom_msg="Tunnelling tools are not allowed; ask #it-security for an exception.",
            comment="Unsigned tunnel, seen in Downloads",
            tags=("eng",),
        ),
        justification="Security review SEC-412",
        actor=sam,
    )
    figma_rule = rule_approve(
        binary=Binary.objects.get(pk=FIGMA_SHA),
        rule_type="TEAMID",
        tags=["design"],
        expires_at=timezone.now() + datetime.timedelta(days=90),
        justification="Design team's main tool; licence ticket IT-2291",
        actor=sam,
    )
    farid.sync()  # grace has not synced since: delivery is under way
    dana.sync()

    approval_request_submit(
        binary=Binary.objects.get(pk=NGROK_SHA),
        host=Host.objects.get(machine_id=erin.machine_id),
        requester="erin",
        reason="I need ngrok to show a local build of the release dashboard to a customer "
        "on a call this afternoon.",
    )
    approval_request_submit(
        binary=Binary.objects.get(pk=FIGMA_SHA),
        host=Host.objects.get(machine_id=dana.machine_id),
        requester="dana",
        reason="Reviewing the new onboarding mock-ups with the design team.",
    )
    return {
        "binary": FIGMA_SHA,
        "rule": figma_rule,
        "host": Host.objects.get(machine_id=farid.machine_id),
    }


def test_main_pages_render_and_are_screenshotted(fleet, signed_in_page, new_page):
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    rule: Rule = fleet["rule"]
    host: Host = fleet["host"]
    pages = [
        # name, path, text the <h1> contains
        ("dashboard", "/", "Dashboard"),
        ("binaries", "/binaries/", "Blocked binaries"),
        ("binary-detail", f"/binaries/{fleet['binary']}/", "Figma"),
        ("rules", "/rules/", "Rules"),
        ("rule-detail", f"/rules/{rule.pk}/", "Team ID rule"),
        ("hosts", "/hosts/", "Hosts"),
        ("host-detail", f"/hosts/{host.pk}/", host.hostname),
        ("requests", "/requests/", "Approval requests"),
        ("audit", "/audit/", "Audit log"),
    ]
    page = signed_in_page("analyst", "ana")
    broken = []
    for name, path, heading in pages:
        problem = _visit(page, name, path, heading)
        if problem:
            broken.append(f"{path} ({name}): {problem}")

    # The sign-in page, as a visitor sees it.
    visitor = new_page()
    problem = _visit(visitor, "sign-in", "/accounts/login/", "Sign in")
    if problem:
        broken.append(f"/accounts/login/ (sign-in): {problem}")

    assert not broken, "pages that did not render:\n" + "\n".join(broken)


def _visit(page, name: str, path: str, heading: str) -> str:
    """Open `path`, check it rendered, save its screenshot; the problem found, or ""."""
    errors_before = len(page.script_errors)
    response = page.goto(path)
    if response is None or response.status != 200:
        return f"answered {response.status if response else 'nothing'}"
    h1 = page.get_by_role("heading", level=1)
    try:
        expect(h1).to_have_count(1)
        expect(h1).to_contain_text(heading)
    except AssertionError as exc:
        return f"no <h1> with {heading!r}: {exc}"
    errors = page.script_errors[errors_before:]
    if errors:
        return f"script errors: {errors}"
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)
    return ""
