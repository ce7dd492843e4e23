"""Every URL of the URLconf is refused to anonymous users and to roles without the right, or is
public on purpose with a reason written here.

The console's pages are walked by tests/test_console_permissions.py and the API router's
endpoints by tests/test_permissions.py; this module walks the rest (the admin site, the API
root and its format suffixes, the schema and the docs, the agents' sync URLs) and checks that
each pattern of the URLconf belongs to one of those walks, so a URL added later that none of
them covers fails here instead of shipping unchecked.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from santaadmin.roles import ADMIN, ANALYST, AUDITOR
from tests.api import assert_error
from tests.console_walk import walk
from tests.test_console_permissions import CONSOLE
from tests.test_permissions import ENDPOINTS

# Public on purpose, with the reason. Everything else must be in a walk.
PUBLIC = {
    "login": "the console's sign-in page",
    "logout": "signing out needs no role (POST only, CSRF-protected)",
    "events:request_public": "Santa's block dialog opens it for any user of a Mac; it shows only "
    "the binary the link names, on the Mac it names (tests/test_console_requests.py)",
    "healthz": "liveness for load balancers: mode and service state, no data",
    "admin:login": "the admin site's sign-in page",
}

ROUTER_NAMES = {name for _, name, _ in ENDPOINTS}
CONSOLE_NAMES = {name for name, _, _ in CONSOLE}
DOCS = {"schema": "/api/schema/", "api-docs": "/api/docs/"}


def _admin_url(pattern: str) -> str:
    """A concrete admin URL for a pattern: ids filled, an app list's first app, anything for
    the catch-all."""
    url = re.sub(r"<(path|int|str):\w+>", "1", pattern)
    url = re.sub(r"\(\?P<app_label>([\w]+)[^)]*\)", r"\1", url)
    url = re.sub(r"\(\?P<url>\.\*\)", "no-such-page/", url)
    return "/" + url.replace("^", "").replace("$", "")


PATTERNS = list(walk())
ADMIN_URLS = sorted(
    {_admin_url(p) for p, name, _ in PATTERNS if p.startswith("admin/") and name not in PUBLIC}
)
SYNC_URLS = [p.replace("<str:machine_id>", "MACHINE-1") for p, _, _ in PATTERNS if "sync/" in p]
SYNC_URLS = ["/" + url for url in SYNC_URLS if url.startswith("sync/")]
# The router's API root and the ".json" twins of its URLs ("rules.json", "rules/1.json").
API_EXTRA = {"api-root"}


def covered_by(pattern: str, name: str | None) -> str | None:
    if name in PUBLIC:
        return "public"
    if name in CONSOLE_NAMES:
        return "console walk"
    if pattern.startswith("api/v1/") and (name in ROUTER_NAMES or name in API_EXTRA):
        return "router walk"
    if name in DOCS:
        return "docs walk"
    if pattern.startswith("admin/"):
        return "admin walk"
    if pattern.startswith("sync/") and name and name.startswith("syncapi:"):
        return "sync walk"
    return None


def test_every_url_pattern_is_walked_or_public_with_a_reason():
    uncovered = [f"{p} ({name})" for p, name, _ in PATTERNS if covered_by(p, name) is None]
    assert uncovered == [], "URLs no permission walk covers:\n" + "\n".join(uncovered)
    assert len(ADMIN_URLS) > 30 and len(SYNC_URLS) == 4


def test_the_coverage_check_finds_a_new_url():
    assert covered_by("api/v2/rules/", "v2-rules") is None
    assert covered_by("export/everything/", "export_everything") is None  # no console_view
    assert covered_by("api/v1/rules/", "rule-list") == "router walk"


def _user(role: str | None, staff: bool = False) -> User:
    user = User.objects.create(username=f"walk-{role}-{staff}", is_staff=staff)  # no password
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


# --- the admin site: staff only ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["anonymous", None, AUDITOR, ANALYST, ADMIN])
def test_admin_urls_refuse_anonymous_and_every_role_without_staff(client, db, role):
    """Roles are for the console and the API; the admin site needs `is_staff`. Anonymous users
    and role holders (the admin role included, without staff status) are sent to its sign-in
    (signing out, to its index, which sends them there)."""
    if role != "anonymous":
        client.force_login(_user(role))
    refused = []
    for url in ADMIN_URLS:
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            target = "/admin/" if url == "/admin/logout/" else "/admin/login/?next="
            if response.status_code != 302 or not response["Location"].startswith(target):
                refused.append(f"{method.upper()} {url}: {response.status_code}")
    assert refused == [], "\n".join(refused)


@pytest.mark.parametrize(
    "url", ["/admin/rules/rule/", "/admin/auth/user/", "/admin/auth/user/add/"]
)
def test_staff_without_permissions_is_refused(client, db, url):
    client.force_login(_user(None, staff=True))
    assert client.get(url).status_code == 403


# --- the API root, format suffixes, schema and docs ----------------------------------------------


@pytest.mark.parametrize(
    "url", ["/api/v1/", "/api/v1/rules.json", "/api/v1/hosts.json", "/api/v1/rules/1.json"]
)
def test_api_root_and_format_suffixes_need_a_role(db, norole_api, url):
    assert_error(APIClient().get(url), 401)
    assert_error(norole_api.get(url), 403)


def test_schema_and_docs_need_a_role(client, db, norole_api, auditor_api):
    anonymous = APIClient().get(DOCS["schema"], {"format": "json"})
    assert anonymous.status_code == 401  # JSON, as application/vnd.oai.openapi+json
    assert anonymous.json()["error"] == "not_authenticated"
    assert norole_api.get(DOCS["schema"], {"format": "json"}).status_code == 403
    assert auditor_api.get(DOCS["schema"], {"format": "json"}).status_code == 200
    response = client.get(DOCS["api-docs"])
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(_user(None))
    assert client.get(DOCS["api-docs"]).status_code == 403
    client.force_login(_user(AUDITOR))
    assert client.get(DOCS["api-docs"]).status_code == 200


# --- the agents' URLs: an enrollment secret, never a session --------------------------------------


@pytest.mark.parametrize("url", SYNC_URLS)
def test_sync_urls_need_an_enrollment_secret(client, db, url):
    response = client.post(url, b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    client.force_login(_user(ADMIN))  # a console session is no agent credential
    assert client.post(url, b"{}", content_type="application/json").status_code == 401
