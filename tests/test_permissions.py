"""Who may do what: every API endpoint and method for each role, and the read-only admin site."""

import pytest
from rest_framework.test import APIClient

from events.models import Event
from hosts.models import Enrollment, Host, Tag
from rules.models import Rule
from tests.api import assert_error

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def world(agent, analyst_api):
    """One host (synced), one rule, one event."""
    agent.sync()
    agent.add_event(file_sha256=SHA_B, decision="BLOCK_BINARY", execution_time=1767225600)
    agent.sync()
    response = analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST"},
        format="json",
    )
    assert response.status_code == 201
    return {
        "machine_id": agent.machine_id,
        "rule_id": response.json()["id"],
        "event_id": Event.objects.get().pk,
    }


# (method, url template, body or None); templates use the ids of `world`.
READS = [
    ("get", "/api/v1/rules/", None),
    ("get", "/api/v1/rules/{rule_id}/", None),
    ("get", "/api/v1/hosts/", None),
    ("get", "/api/v1/hosts/{machine_id}/", None),
    ("get", "/api/v1/hosts/{machine_id}/rules/", None),
    ("get", "/api/v1/events/", None),
    ("get", "/api/v1/events/{event_id}/", None),
]
RULE_WRITES = [
    (
        "post",
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": SHA_B, "policy": "ALLOWLIST"},
    ),
    (
        "post",
        "/api/v1/rules/bulk/",
        {"rules": [{"rule_type": "TEAMID", "identifier": "EQHXZ8M8AV", "policy": "ALLOWLIST"}]},
    ),
    ("patch", "/api/v1/rules/{rule_id}/", {"policy": "SILENT_BLOCKLIST"}),
    ("delete", "/api/v1/rules/{rule_id}/", None),
]
HOST_WRITES = [
    ("patch", "/api/v1/hosts/{machine_id}/", {"tags": ["eng"]}),
    ("patch", "/api/v1/hosts/{machine_id}/", {"client_mode_override": "LOCKDOWN"}),
    ("patch", "/api/v1/hosts/{machine_id}/", {"clean_sync_requested": "CLEAN"}),
]
WRITES = RULE_WRITES + HOST_WRITES
ALL = READS + WRITES


def call(api, world, method, template, body):
    url = template.format(**world)
    if body is None:
        return getattr(api, method)(url)
    return getattr(api, method)(url, body, format="json")


def snapshot() -> tuple:
    """Everything an API write could change."""
    rules = sorted(Rule.objects.values_list("pk", "rule_type", "identifier", "policy", "revision"))
    hosts = sorted(
        Host.objects.values_list("machine_id", "client_mode_override", "clean_sync_requested")
    )
    host_tags = sorted(Host.objects.values_list("machine_id", "tag_spans__tag__name"))
    return rules, hosts, host_tags, Tag.objects.count()


def label(case) -> str:
    method, url, body = case
    return f"{method.upper()} {url} {sorted(body) if isinstance(body, dict) else ''}".strip()


@pytest.mark.parametrize("case", ALL, ids=label)
def test_anonymous_gets_401(world, case):
    before = snapshot()
    response = call(APIClient(), world, *case)
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Token"
    assert snapshot() == before


@pytest.mark.parametrize("method", ["head", "options"])
@pytest.mark.parametrize(
    "url", ["/api/v1/rules/", "/api/v1/hosts/{machine_id}/", "/api/v1/events/"]
)
def test_head_and_options_need_the_view_permission(world, auditor_api, norole_api, method, url):
    assert call(APIClient(), world, method, url, None).status_code == 401
    assert call(norole_api, world, method, url, None).status_code == 403
    assert call(auditor_api, world, method, url, None).status_code == 200


@pytest.mark.parametrize("case", ALL, ids=label)
def test_invalid_token_gets_401(world, case):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    before = snapshot()
    assert_error(call(api, world, *case), 401)
    assert snapshot() == before


@pytest.mark.parametrize("case", ALL, ids=label)
def test_user_without_role_gets_403(world, norole_api, case):
    before = snapshot()
    assert_error(call(norole_api, world, *case), 403)
    assert snapshot() == before


@pytest.mark.parametrize("case", READS, ids=label)
@pytest.mark.parametrize("role", ["auditor_api", "analyst_api", "admin_api"])
def test_every_role_reads(world, request, role, case):
    api = request.getfixturevalue(role)
    response = call(api, world, *case)
    assert response.status_code == 200, response.content
    assert response.json()


@pytest.mark.parametrize("case", WRITES, ids=label)
def test_auditor_cannot_write(world, auditor_api, case):
    before = snapshot()
    assert_error(call(auditor_api, world, *case), 403)
    assert snapshot() == before


@pytest.mark.parametrize("case", WRITES, ids=label)
@pytest.mark.parametrize("role", ["analyst_api", "admin_api"])
def test_analyst_and_admin_writes_succeed(world, request, role, case):
    api = request.getfixturevalue(role)
    before = snapshot()
    response = call(api, world, *case)
    expected = {"post": 201, "patch": 200, "delete": 204}[case[0]]
    assert response.status_code == expected, response.content
    assert snapshot() != before


def test_analyst_writes_take_effect(world, analyst_api):
    rule_url = f"/api/v1/rules/{world['rule_id']}/"
    host_url = f"/api/v1/hosts/{world['machine_id']}/"
    analyst_api.patch(rule_url, {"policy": "SILENT_BLOCKLIST"}, format="json")
    assert Rule.objects.get(pk=world["rule_id"]).policy == "SILENT_BLOCKLIST"
    analyst_api.patch(
        host_url,
        {"tags": ["eng"], "client_mode_override": "LOCKDOWN", "clean_sync_requested": "CLEAN"},
        format="json",
    )
    host = Host.objects.get(machine_id=world["machine_id"])
    assert (host.client_mode_override, host.clean_sync_requested) == ("LOCKDOWN", "CLEAN")
    assert analyst_api.get(host_url).json()["tags"] == ["eng"]
    assert analyst_api.delete(rule_url).status_code == 204
    assert not Rule.objects.filter(pk=world["rule_id"]).exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/v1/events/"),
        ("delete", "/api/v1/events/{event_id}/"),
        ("patch", "/api/v1/events/{event_id}/"),
        ("post", "/api/v1/hosts/"),
        ("delete", "/api/v1/hosts/{machine_id}/"),
        ("put", "/api/v1/hosts/{machine_id}/"),
        ("put", "/api/v1/rules/{rule_id}/"),
    ],
)
def test_unsupported_methods_are_405_even_for_admin(world, admin_api, method, url):
    before = (snapshot(), Event.objects.count())
    response = call(admin_api, world, method, url, {"tags": []})
    assert_error(response, 405)
    assert response.json()["error"] == "method_not_allowed"
    assert (snapshot(), Event.objects.count()) == before


def test_session_login_without_role_is_403(world, client, django_user_model):
    django_user_model.objects.create_user("sam", password="long-enough-passw0rd")
    client.login(username="sam", password="long-enough-passw0rd")
    assert client.get("/api/v1/rules/").status_code == 403


# --- the admin site -------------------------------------------------------------------------------

ADMIN_MODELS = [
    ("rules", "rule"),
    ("rules", "ruleversion"),
    ("hosts", "host"),
    ("hosts", "tag"),
    ("hosts", "enrollment"),
    ("hosts", "configurationprofile"),
    ("events", "event"),
    ("events", "binary"),
    ("events", "certificate"),
    ("accounts", "apitoken"),
]


@pytest.mark.parametrize(("app", "model"), ADMIN_MODELS)
def test_admin_add_pages_are_forbidden_for_superuser(admin_client, app, model):
    assert admin_client.get(f"/admin/{app}/{model}/").status_code == 200
    assert admin_client.get(f"/admin/{app}/{model}/add/").status_code == 403
    assert admin_client.post(f"/admin/{app}/{model}/add/", {}).status_code == 403


def test_admin_rule_pages_are_read_only(admin_client, world):
    rule_id = world["rule_id"]
    change = admin_client.get(f"/admin/rules/rule/{rule_id}/change/")
    assert change.status_code == 200
    assert change.context["has_change_permission"] is False
    assert change.context["has_delete_permission"] is False
    assert b'name="_save"' not in change.content

    response = admin_client.post(
        f"/admin/rules/rule/{rule_id}/change/",
        {"rule_type": "BINARY", "identifier": SHA_B, "policy": "ALLOWLIST"},
    )
    assert response.status_code == 403
    assert Rule.objects.get(pk=rule_id).identifier == SHA_A

    assert admin_client.get(f"/admin/rules/rule/{rule_id}/delete/").status_code == 403
    assert (
        admin_client.post(f"/admin/rules/rule/{rule_id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Rule.objects.filter(pk=rule_id).exists()

    listing = admin_client.post(
        "/admin/rules/rule/",
        {"action": "delete_selected", "_selected_action": [rule_id], "post": "yes"},
    )
    assert listing.status_code in (200, 302, 403)
    assert Rule.objects.filter(pk=rule_id).exists()


def test_admin_host_and_enrollment_pages_are_read_only(admin_client, world, enrollment):
    host = Host.objects.get(machine_id=world["machine_id"])
    for url, obj_exists in (
        (f"/admin/hosts/host/{host.pk}/", lambda: Host.objects.filter(pk=host.pk).exists()),
        (
            f"/admin/hosts/enrollment/{enrollment[0].pk}/",
            lambda: Enrollment.objects.filter(pk=enrollment[0].pk).exists(),
        ),
    ):
        page = admin_client.get(f"{url}change/")
        assert page.status_code == 200
        assert page.context["has_change_permission"] is False
        assert admin_client.post(f"{url}change/", {"hostname": "x"}).status_code == 403
        assert admin_client.get(f"{url}delete/").status_code == 403
        assert obj_exists()
    assert (
        b"secret_hash"
        not in admin_client.get(f"/admin/hosts/enrollment/{enrollment[0].pk}/change/").content
    )
