"""The Content-Security-Policy in a real browser: every console page, the API docs (Swagger UI)
and the admin site work under it without a single violation, and markup injected into a page
(an inline script, an event handler, a style attribute) is blocked and reported.

Violations are collected twice: by a `securitypolicyviolation` listener installed before any
page script runs (Playwright's init scripts are not subject to the page's policy), and from
Chromium's console messages ("Refused to execute inline script ... Content Security Policy").
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.browser.conftest import PASSWORD
from tests.browser.pw import expect
from tests.console_walk import PUBLIC_CONSOLE, build_world, console_path, console_patterns

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} ` +
                    `at ${e.sourceFile}:${e.lineNumber} (${e.disposition})`);
});
"""


def watch(page):
    """Record CSP violations of every document `page` opens in page.csp_console and
    window.__csp."""
    page.context.add_init_script(LISTEN)
    page.csp_console = []
    page.on(
        "console",
        lambda msg: (
            page.csp_console.append(msg.text) if "Content Security Policy" in msg.text else None
        ),
    )
    return page


def violations(page) -> list[str]:
    return page.evaluate("() => window.__csp || []") + page.csp_console


def open_clean(page, path: str) -> list[str]:
    """Open `path`; the violations it caused (none expected), with the path."""
    response = page.goto(path)
    assert response is not None and response.status == 200, (
        f"{path}: {response and response.status}"
    )
    assert response.headers.get("content-security-policy"), f"{path} has no CSP header"
    page.wait_for_load_state("networkidle")
    found = [f"{path}: {v}" for v in violations(page)]
    page.csp_console.clear()
    return found


def test_every_console_page_runs_under_the_policy(make_agent, signed_in_page, new_page):
    page = watch(signed_in_page("admin"))
    world = build_world(make_agent, page.user)
    found = []
    visited = []
    for pattern, name, _ in console_patterns():
        path = console_path(pattern, name, world)
        if name in PUBLIC_CONSOLE:
            continue  # sign-in and the request page: below, without a session
        head = page.request.get(path, max_redirects=0)
        if head.status == 405 or "html" not in head.headers.get("content-type", ""):
            continue  # POST-only actions, downloads and fragments are covered below
        found += open_clean(page, path)
        visited.append(name)
    # The fragments the console's script loads into pages, and the pages' own scripts, ran
    # on the rule and report pages (delivery and report status refresh themselves).
    assert {"dashboard", "rules:rule_detail", "reports:report_list", "hosts:host_detail"} <= set(
        visited
    )
    assert {"events:binary_detail", "events:request_detail", "accounts:token_list"} <= set(visited)

    # Swagger UI: its bundle, its init script (served from ?script, not inline) and the schema.
    found += open_clean(page, "/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("santaadmin API")
    expect(page.locator(".opblock").first).to_be_visible()
    found += [f"/api/docs/ (after render): {v}" for v in violations(page)]

    # Anonymous pages: sign-in and Santa's request page.
    anonymous = watch(new_page())
    found += open_clean(anonymous, "/accounts/login/")
    found += open_clean(
        anonymous, f"/request/?sha={world['sha256']}&machine={world['machine_id']}&user=walker"
    )
    assert found == [], "\n".join(found)


def test_the_admin_site_runs_under_the_policy(make_agent, new_page):
    staff = User.objects.create_superuser("csp-admin", password=PASSWORD)
    world = build_world(make_agent, staff)
    page = watch(new_page())
    found = open_clean(page, "/admin/login/")
    page.get_by_label("Username").fill("csp-admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    for path in (
        "/admin/",
        "/admin/rules/rule/",
        f"/admin/rules/rule/{world['rule']}/change/",
        "/admin/hosts/host/?q=walk",
        f"/admin/hosts/host/{world['host']}/change/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
        f"/admin/auth/user/{staff.pk}/change/",
        "/admin/auth/group/",
        "/admin/password_change/",
    ):
        found += open_clean(page, path)
    # The admin's own scripts ran: the theme toggle and the changelist's action checkboxes.
    page.goto("/admin/auth/user/")
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    found += violations(page)
    assert found == [], "\n".join(found)


def test_injected_markup_is_blocked_and_reported(signed_in_page):
    """What an injection would do on a console page: the policy blocks it and the listener
    above sees it, so the walks above would catch any inline script or style a template or
    chart grew."""
    page = watch(signed_in_page("auditor"))
    assert open_clean(page, "/") == []
    page.evaluate(
        """() => {
        const script = document.createElement("script");
        script.textContent = "window.__ran = 'script'";
        document.body.append(script);
        const holder = document.createElement("div");
        holder.innerHTML = '<img src="/static/css/app.css" onerror="window.__ran = \\'handler\\'">'
          + '<p style="color: red">styled</p>';
        document.body.append(holder);
      }"""
    )
    page.wait_for_load_state("networkidle")
    expect(page.locator("p", has_text="styled")).to_be_visible()
    assert page.evaluate("() => window.__ran") is None
    found = " | ".join(violations(page))
    for directive in ("script-src-elem", "script-src-attr", "style-src-attr"):
        assert directive in found, found
