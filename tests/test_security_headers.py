"""What protects an analyst's browser, checked with the test client: the Content-Security-Policy
on every page, no inline script, handler or style in the templates or in what the pages render,
the production HTTPS, framing, sniffing, referrer and cookie settings, and CSRF on every console
form and on the API's session-authenticated writes (tests/browser/test_csp_browser.py checks the
policy in Chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken
from events.models import ApprovalRequest
from hosts.models import Host, HostTag, Revision
from reports.models import Report
from rules.models import Rule
from santaadmin.roles import ADMIN
from tests.api import assert_error
from tests.console_walk import PUBLIC_CONSOLE, build_world, console_path, console_patterns
from tests.test_settings import PRODUCTION, manage

ROOT = Path(__file__).resolve().parents[1]

STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.fixture
def admin_user(db):
    user = User.objects.create_user("csp-admin", password="not-used-in-tests-8c1f")
    user.groups.add(Group.objects.get(name=ADMIN))
    return user


@pytest.fixture
def world(make_agent, admin_user):
    return build_world(make_agent, admin_user)


def console_urls(world) -> list[tuple[str, str]]:
    return [(name, console_path(pattern, name, world)) for pattern, name, _ in console_patterns()]


# --- the Content-Security-Policy -----------------------------------------------------------------

# Markup the policy would block: a <script> with a body or without src, an on* handler
# attribute, a javascript: URL, a style attribute or <style> element.
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>|<script\b[^>]*>\s*[^<\s]", re.I)
HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I | re.S)
JS_URL = re.compile(r"javascript:", re.I)
STYLE = re.compile(r"<[a-z][^>]*\sstyle\s*=|<style\b", re.I | re.S)
BLOCKED = {"inline script": INLINE_SCRIPT, "handler": HANDLER, "javascript: URL": JS_URL}
BLOCKED["inline style"] = STYLE


def blocked_markup(html: str) -> list[str]:
    return [
        f"{what}: {m.group(0)[:80]!r}" for what, rx in BLOCKED.items() for m in rx.finditer(html)
    ]


def test_every_console_page_carries_the_strict_policy(world, admin_user):
    """Every console URL, signed in and not, and the pages the console does not render itself
    (API, docs, admin, error pages): the policy, whole, with nothing unsafe; and no rendered
    HTML page holds markup the policy would block (templates, form widgets and the SVG chart
    included)."""
    signed_in = Client()
    signed_in.force_login(admin_user)
    problems = []
    urls = [*console_urls(world)]
    urls += [("api", "/api/v1/rules/"), ("docs", "/api/docs/"), ("schema", "/api/schema/")]
    urls += [("admin", "/admin/"), ("not found", "/no-such-page/"), ("login", "/accounts/login/")]
    for client, who in ((signed_in, "admin"), (Client(), "anonymous")):
        for name, url in urls:
            response = client.get(url)
            found = policy(response)
            if found != STRICT:
                problems.append(f"{who} {name} {url} ({response.status_code}): {found}")
            if any("unsafe" in source for sources in found.values() for source in sources):
                problems.append(f"{who} {name} {url}: unsafe source")
            if "html" in response.get("Content-Type", "") and not response.streaming:
                problems += [f"{who} {url}: {p}" for p in blocked_markup(response.content.decode())]
    assert problems == [], "\n".join(problems)


def test_the_sync_path_has_no_policy_middleware(agent):
    """/sync/ is answered before the CSP middleware runs: it costs the agents nothing."""
    agent.sync()
    response = Client().post(
        f"/sync/preflight/{agent.machine_id}", b"{}", content_type="application/json"
    )
    assert response.status_code == 401
    assert "Content-Security-Policy" not in response
    assert "Content-Security-Policy" in Client().get("/accounts/login/")


def template_files() -> list[Path]:
    return sorted((ROOT / "templates").rglob("*.html"))


def test_templates_hold_no_inline_script_handler_or_style():
    assert len(template_files()) > 30
    problems = [
        f"{path.relative_to(ROOT)}: {p}"
        for path in template_files()
        for p in blocked_markup(path.read_text())
    ]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "html",
    [
        "<script>alert(1)</script>",
        "<script type='module'></script>",
        '<script src="/static/x.js">alert(1)</script>',
        '<a href="#" onclick="go()">x</a>',
        "<img\n  src=x onerror=alert(1)>",
        '<a href="JavaScript:alert(1)">x</a>',
        '<p style="color: red">x</p>',
        "<style>p {}</style>",
    ],
)
def test_the_template_check_finds_blocked_markup(html):
    assert blocked_markup(html)
    assert not blocked_markup('<script src="/static/js/console.js" defer></script>')


def test_a_report_uri_is_added_when_configured(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from csp.utils import build_policy; print(build_policy())",
        SANTAADMIN_VAR_DIR=str(tmp_path),
        CSP_REPORT_URI="https://csp.example.com/report",
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert "report-uri https://csp.example.com/report" in line
    assert "script-src 'self';" in line + ";"


# --- production HTTPS, framing and cookie settings -----------------------------------------------

SECURITY_SETTINGS = [
    "MIDDLEWARE",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "X_FRAME_OPTIONS",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_SAMESITE",
    "CONTENT_SECURITY_POLICY",
]


@pytest.fixture(scope="module")
def production_values(tmp_path_factory):
    """The security settings exactly as santaadmin/settings.py computes them in production
    (a subprocess with the production environment of tests/test_settings.py)."""
    script = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {SECURITY_SETTINGS!r}}}))"
    )
    var = tmp_path_factory.mktemp("var")
    result = manage("shell", "-c", script, SANTAADMIN_VAR_DIR=str(var), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture
def production(settings, production_values):
    for name, value in production_values.items():
        setattr(settings, name, tuple(value) if name == "SECURE_PROXY_SSL_HEADER" else value)
    return settings


# As the TLS proxy forwards a request (README, "TLS proxy"): its Host and X-Forwarded-Proto.
HTTPS = {"headers": {"x-forwarded-proto": "https", "host": "testserver"}}


def test_https_responses_carry_hsts(production, db):
    response = Client().get("/accounts/login/", **HTTPS)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_plain_http_is_redirected_to_https_but_sync_is_not(production, agent):
    response = Client().get("/accounts/login/?next=/rules/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/accounts/login/?next=/rules/"
    assert "Strict-Transport-Security" not in response  # only ever sent over HTTPS
    assert agent.sync()  # the agents' URLs answer over plain HTTP too (protocol.md §2.3)


def test_framing_sniffing_and_referrer_headers(production, db):
    response = Client().get("/accounts/login/", **HTTPS)
    assert response["X-Frame-Options"] == "DENY"
    assert policy(response)["frame-ancestors"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert policy(response) == STRICT


def test_session_and_csrf_cookies_are_secure(production, db):
    User.objects.create_user("cookie", password="cookie-password-7a1c")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/accounts/login/", **HTTPS)
    csrf = page.cookies["csrftoken"]
    assert csrf["secure"] is True
    assert csrf["samesite"] == "Lax"
    signed_in = browser.post(
        "/accounts/login/",
        {"username": "cookie", "password": "cookie-password-7a1c"},
        **HTTPS,
        HTTP_X_CSRFTOKEN=csrf.value,
        HTTP_REFERER="https://testserver/accounts/login/",  # checked on HTTPS
    )
    assert signed_in.status_code == 302
    session = signed_in.cookies["sessionid"]
    assert session["secure"] is True
    assert session["httponly"] is True
    assert session["samesite"] == "Lax"


# --- CSRF ----------------------------------------------------------------------------------------


def snapshot() -> tuple:
    """Everything a console POST could change."""
    return (
        sorted(Rule.objects.values_list("pk", "policy", "revision")),
        Revision.objects.get(pk=1).value,
        sorted(HostTag.objects.values_list("pk", "rev_to")),
        sorted(Host.objects.values_list("pk", "client_mode_override", "clean_sync_requested")),
        sorted(ApprovalRequest.objects.values_list("pk", "state")),
        sorted(ApiToken.objects.values_list("pk", "revoked_at")),
        Report.objects.count(),
        User.objects.count(),
    )


FORM = {
    "justification": "Forged.",
    "tags": "forged",
    "mode": "LOCKDOWN",
    "clean_sync": "CLEAN",
    "rule_type": "BINARY",
    "policy": "ALLOWLIST",
    "identifier": "ab" * 32,
    "name": "forged",
    "scopes": "read",
    "response": "Forged.",
    "reason": "Forged.",
    "format": "csv",
    "username": "csp-admin",
    "password": "x",
}


def test_every_console_post_without_a_csrf_token_is_refused(world, admin_user):
    """A forged cross-site POST (no token) to every console URL is refused with the console's
    403 page and changes nothing; signing out comes last, as it would end the session."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    urls = sorted(console_urls(world), key=lambda item: item[0] == "logout")
    assert len(urls) > 20 and {name for name, _ in urls} >= PUBLIC_CONSOLE
    before = snapshot()
    refused = []
    for name, url in urls:
        response = browser.post(url, FORM)
        expected = b"csrf_failed" if name == "healthz" else b"Form expired"
        if response.status_code != 403 or expected not in response.content:
            refused.append(f"{name} {url}: {response.status_code}")
    assert refused == [], "\n".join(refused)
    assert snapshot() == before
    assert browser.get("/").status_code == 200  # still signed in: logout was refused too


def test_the_same_post_with_the_token_is_accepted(world, admin_user):
    """The refusal above is the token's doing: with it, the same delete goes through."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    browser.get(f"/rules/{world['rule']}/delete/")
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        f"/rules/{world['rule']}/delete/", {**FORM, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert not Rule.objects.filter(pk=world["rule"]).exists()


RULE = {"rule_type": "BINARY", "identifier": "ab" * 32, "policy": "ALLOWLIST"}


def test_api_writes_with_a_session_need_the_csrf_token(admin_user):
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(admin_user)
    body = assert_error(api.post("/api/v1/rules/", RULE, format="json"), 403)
    assert "CSRF" in body["detail"]
    assert not Rule.objects.exists()
    token = api.get("/api/v1/rules/").cookies.get("csrftoken") or api.cookies.get("csrftoken")
    if token is None:  # the API sets no cookie; a console page does
        api.get("/accounts/login/")
        token = api.cookies["csrftoken"]
    response = api.post("/api/v1/rules/", RULE, format="json", HTTP_X_CSRFTOKEN=token.value)
    assert response.status_code == 201, response.content


def test_api_writes_with_a_token_need_no_csrf_token(analyst_api):
    analyst_api.handler.enforce_csrf_checks = True
    response = analyst_api.post("/api/v1/rules/", RULE, format="json")
    assert response.status_code == 201, response.content


def test_a_forged_post_to_a_json_url_gets_a_json_error(db):
    response = Client(enforce_csrf_checks=True).post("/healthz")
    assert_error(response, 403)
    assert response.json()["error"] == "csrf_failed"
