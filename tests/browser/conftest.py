"""Real-browser fixtures: Debian's Chromium driven by Playwright against `live_server`.

The browser is Debian's (`apt-get install -y chromium`), never one Playwright downloads. Without
it the browser tests are skipped with a visible reason, except with CI=true, where a missing
browser (or a missing Playwright) fails the run: CI must never skip them silently.

Every test module here marks its tests transactional (the live server answers from another
thread and only sees committed rows) with serialized rollback, so the role groups created by
migrations survive.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections

from tests.browser.pw import expect

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
IN_CI = os.environ.get("CI") == "true"
VIEWPORT = {"width": 1280, "height": 900}
# An upper bound for one browser action or `expect`, so a broken page fails instead of hanging;
# Playwright's locators and assertions wait for what they need (no sleeps anywhere). It leaves
# room for the rule page's delivery panel, which refreshes itself every 3 seconds.
ACTION_TIMEOUT_MS = 20_000
PASSWORD = "browser-test-password-5d2e"

_usernames = itertools.count(1)


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: browser tests must run in CI", pytrace=False)
    pytest.skip(f"{reason} (apt-get install -y chromium; CI runs these tests)")


@pytest.fixture
def browser(live_server):
    """A headless Chromium, for one test.

    Started per test, after the test's database is set up and stopped before it is flushed, on
    purpose: while Playwright's sync API runs, its asyncio loop in this thread makes Django
    take the thread for async code: its async-safety check refuses ORM calls, and `connections`
    hands out other connection objects than the test database's own, without the serialized
    rows (role groups, the revision counter) that serialized rollback restores. So for the
    test's body only the check is switched off (the tests are plain synchronous code) and the
    connections opened meanwhile are closed before Playwright stops. The live server is started
    first, outside Playwright, for the same reason."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (make install)")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        expect.set_options(timeout=ACTION_TIMEOUT_MS)
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--headless"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
            connections.close_all()


@pytest.fixture
def new_page(browser, live_server):
    """new_page() -> a page in a fresh browser context (own cookies) aimed at the live server.

    Each page records uncaught script errors in `page.script_errors` and JavaScript dialogs
    (alert, confirm, prompt) in `page.dialogs`, dismissing them."""
    contexts = []

    def make():
        context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.script_errors = []
        page.dialogs = []
        page.on("pageerror", lambda error: page.script_errors.append(str(error)))

        def on_dialog(dialog):
            page.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def signed_in_page(new_page):
    """signed_in_page(role) -> a page signed in through the real sign-in form as a new user
    holding `role` ("admin", "analyst", "auditor"); the user is `page.user`."""

    def make(role: str, username: str | None = None):
        username = username or f"{role}-{next(_usernames)}"
        user = User.objects.create_user(username, password=PASSWORD)
        user.groups.add(Group.objects.get(name=role))
        page = new_page()
        response = page.goto("/accounts/login/")
        assert response is not None and response.status == 200
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        # Signed in: the page header names the user and offers the main navigation.
        expect(page.get_by_role("banner")).to_contain_text(username)
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        page.user = user
        return page

    return make
