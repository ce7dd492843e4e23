"""Every console URL checks the role: found by walking the URLconf, so a page added later
without `console_view` fails here instead of being open."""

import pytest

from santaadmin.console import ANY_ROLE
from santaadmin.roles import ANALYST, AUDITOR
from tests.console_walk import NOT_CONSOLE, PUBLIC_CONSOLE, route, walk

PUBLIC = PUBLIC_CONSOLE  # console URLs deliberately not behind a role (reasons in console_walk)
ARGS = {"pk": 1, "sha256": "0" * 64, "kind": "rules"}


def _route(pattern: str) -> str:
    return route(pattern, ARGS)


CONSOLE = [
    (name, _route(pattern), callback)
    for pattern, name, callback in walk()
    if not pattern.startswith(NOT_CONSOLE) and name not in PUBLIC and "<" not in _route(pattern)
]
IDS = [name for name, _, _ in CONSOLE]


def test_the_walk_finds_the_console():
    names = set(IDS)
    assert {"dashboard", "events:binary_list", "rules:rule_list", "hosts:host_list"} <= names
    assert "audit:entry_list" in names
    assert {"reports:report_list", "reports:report_direct", "reports:report_generate"} <= names


@pytest.mark.parametrize(("name", "url", "view"), CONSOLE, ids=IDS)
def test_every_console_view_declares_its_permissions(name, url, view):
    assert getattr(view, "console_permissions", None), f"{name} is not wrapped in console_view"


@pytest.mark.parametrize(("name", "url", "view"), CONSOLE, ids=IDS)
def test_anonymous_is_sent_to_sign_in(client, db, name, url, view):
    response = client.post(url)
    assert response.status_code in (302, 405), name
    if response.status_code == 302:
        assert response["Location"].startswith("/accounts/login/")
    response = client.get(url)
    assert response.status_code in (302, 405), name  # 405: a POST-only action
    if response.status_code == 302:
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(("name", "url", "view"), CONSOLE, ids=IDS)
def test_user_without_a_role_is_refused(console, name, url, view):
    browser = console(None)
    assert browser.get(url).status_code == 403
    assert browser.post(url).status_code in (403, 405)


# Generating a report changes no domain data (it is recorded in the audit trail): auditors
# may (santaadmin.roles.READER_WRITES).
AUDITOR_MAY = {"reports.add_report"}
# Pages for anyone with a role (console_view(ANY_ROLE)): each acts only on the signed-in
# user's own things (their API tokens), so the auditor may use them. Listed here so that a new
# one is a deliberate choice.
ANY_ROLE_PAGES = {"accounts:token_list", "accounts:token_create", "accounts:token_revoke"}

WRITES = [
    (name, url, view)
    for name, url, view in CONSOLE
    if any(
        ".view_" not in p and p not in AUDITOR_MAY and p != ANY_ROLE
        for p in getattr(view, "console_permissions", ())
    )
]


def test_the_pages_for_any_role_are_the_known_ones():
    found = {
        name for name, _, view in CONSOLE if ANY_ROLE in getattr(view, "console_permissions", ())
    }
    assert found == ANY_ROLE_PAGES


def test_the_walk_finds_the_pages_that_change_things():
    names = {name for name, _, _ in WRITES}
    assert {"events:binary_decide", "rules:rule_edit", "hosts:host_tags"} <= names


@pytest.mark.parametrize(("name", "url", "view"), WRITES, ids=[w[0] for w in WRITES])
def test_auditor_cannot_use_any_view_that_changes_things(console, name, url, view):
    browser = console(AUDITOR)
    assert browser.post(url).status_code in (403, 405)
    assert browser.get(url).status_code in (403, 405)


def test_roles_hold_what_the_console_needs(console):
    analyst = console(ANALYST).user
    auditor = console(AUDITOR, "aud").user
    for perm in ("rules.add_rule", "events.change_approvalrequest", "hosts.change_host"):
        assert analyst.has_perm(perm) and not auditor.has_perm(perm)
    for perm in ("events.view_binary", "audit.view_auditentry", "rules.view_rule"):
        assert analyst.has_perm(perm) and auditor.has_perm(perm)
    for perm in ("reports.view_report", "reports.add_report"):
        assert analyst.has_perm(perm) and auditor.has_perm(perm)
    for perm in ("reports.change_report", "reports.delete_report"):
        assert not analyst.has_perm(perm) and not auditor.has_perm(perm)


@pytest.mark.parametrize(
    "url",
    [
        "/binaries/?q=a%00b",
        "/binaries/" + "0" * 63 + "%00/",
        "/hosts/1/?rules_after=BINARY%3Aa%00",
        "/request/?sha=" + "5" * 64 + "&machine=M%00&user=u",
        "/rules/?identifier_contains=%00",
        "/api/v1/rules/?identifier=%00",
    ],
)
def test_nul_in_a_url_is_400_not_a_database_error(analyst_console, url):
    response = analyst_console.get(url)
    assert response.status_code == 400
    assert b"NUL" in response.content
