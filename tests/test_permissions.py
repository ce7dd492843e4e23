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


# --- every endpoint of the API router, for every role ---------------------------------------------
#
# The endpoints are found by walking the router (as tests/test_console_permissions.py walks the
# console's URLconf): an endpoint added without an entry in EXPECTED fails
# test_every_router_endpoint_has_an_expectation.

# READER_WRITE: every role may, auditors included (generating a report changes no domain data
# and is recorded in the audit trail: santaadmin.roles.READER_WRITES).
READ, READER_WRITE, ANALYST_WRITE, ADMIN_WRITE = "read", "reader", "analyst", "admin"


def router_endpoints() -> list[tuple[str, str, list[str]]]:
    """(method, URL name, URL kwargs) for every method each router URL serves."""
    from santaadmin.urls import router

    found = []
    for pattern in router.urls:
        kwargs = list(pattern.pattern.regex.groupindex)
        actions = getattr(pattern.callback, "actions", None)
        if not actions or "format" in kwargs:
            continue  # the API root, and the ".json" suffix twins of each URL
        allowed = pattern.callback.cls.http_method_names
        for method in actions:
            if method in allowed:
                found.append((method.upper(), pattern.name, kwargs))
    return found


SHA_REQUESTED = "c" * 64
CERT_SHA = "d" * 64
TEAM_ID = "EQHXZ8M8AV"
IMPORT_BODY = {"rules": [{"identifier": TEAM_ID, "policy": "ALLOWLIST", "rule_type": "TEAMID"}]}

# "METHOD url-name": (who may, body, status of success). Bodies are sent as JSON.
EXPECTED = {
    "GET rule-list": (READ, None, 200),
    "POST rule-list": (
        ANALYST_WRITE,
        {"rule_type": "BINARY", "identifier": SHA_B, "policy": "ALLOWLIST"},
        201,
    ),
    "GET rule-detail": (READ, None, 200),
    "PATCH rule-detail": (ANALYST_WRITE, {"policy": "SILENT_BLOCKLIST"}, 200),
    "DELETE rule-detail": (ANALYST_WRITE, None, 204),
    "POST rule-bulk": (
        ANALYST_WRITE,
        {"rules": [{"rule_type": "TEAMID", "identifier": TEAM_ID, "policy": "ALLOWLIST"}]},
        201,
    ),
    "POST rule-bulk-delete": (ANALYST_WRITE, {"ids": ["{rule_id}"]}, 200),
    "GET rule-export": (READ, None, 200),
    "POST rule-import": (ANALYST_WRITE, IMPORT_BODY, 201),
    "GET host-list": (READ, None, 200),
    "GET host-detail": (READ, None, 200),
    "PATCH host-detail": (ANALYST_WRITE, {"tags": ["eng"]}, 200),
    "GET host-rules": (READ, None, 200),
    "GET event-list": (READ, None, 200),
    "GET event-detail": (READ, None, 200),
    "GET tagrule-list": (READ, None, 200),
    "POST tagrule-list": (
        ANALYST_WRITE,
        {"tag": "auto", "fact": "hostname", "operator": "contains", "value": "mac"},
        201,
    ),
    "GET tagrule-detail": (READ, None, 200),
    "PATCH tagrule-detail": (ANALYST_WRITE, {"description": "changed"}, 200),
    "DELETE tagrule-detail": (ANALYST_WRITE, None, 204),
    "GET fanout-list": (READ, None, 200),
    "GET fanout-detail": (READ, None, 200),
    "GET configurationprofile-list": (READ, None, 200),
    "POST configurationprofile-list": (ADMIN_WRITE, {"name": "walk-2", "batch_size": 10}, 201),
    "GET configurationprofile-detail": (READ, None, 200),
    "PATCH configurationprofile-detail": (ADMIN_WRITE, {"batch_size": 20}, 200),
    "DELETE configurationprofile-detail": (ADMIN_WRITE, None, 204),
    "GET tag-list": (READ, None, 200),
    "POST tag-list": (ANALYST_WRITE, {"name": "new-tag", "description": "new"}, 201),
    "GET tag-detail": (READ, None, 200),
    "PATCH tag-detail": (ANALYST_WRITE, {"description": "changed"}, 200),
    "DELETE tag-detail": (ADMIN_WRITE, None, 204),
    "GET enrollment-list": (READ, None, 200),
    "POST enrollment-list": (ADMIN_WRITE, {"name": "walk-new", "tags": ["eng"]}, 201),
    "GET enrollment-detail": (READ, None, 200),
    "PATCH enrollment-detail": (ADMIN_WRITE, {"client_mode": "LOCKDOWN"}, 200),
    "POST enrollment-revoke": (ADMIN_WRITE, {}, 200),
    "GET binary-list": (READ, None, 200),
    "GET binary-detail": (READ, None, 200),
    "GET certificate-list": (READ, None, 200),
    "GET certificate-detail": (READ, None, 200),
    "GET approvalrequest-list": (READ, None, 200),
    "GET approvalrequest-detail": (READ, None, 200),
    "POST approvalrequest-approve": (
        ANALYST_WRITE,
        {"rule_type": "BINARY", "machine_ids": ["{machine_id}"], "justification": "Needed."},
        200,
    ),
    "POST approvalrequest-deny": (ANALYST_WRITE, {"response": "Not for this Mac."}, 200),
    "GET report-list": (READ, None, 200),
    "POST report-list": (READER_WRITE, {"kind": "rules", "format": "csv", "parameters": {}}, 202),
    "GET report-detail": (READ, None, 200),
    "GET report-download": (READ, None, 200),
    "GET report-export": (READ, None, 200),
    "GET auditentry-list": (READ, None, 200),
    "GET auditentry-detail": (READ, None, 200),
}
ENDPOINTS = router_endpoints()
ENDPOINT_IDS = [f"{method} {name}" for method, name, _ in ENDPOINTS]


def test_every_router_endpoint_has_an_expectation():
    assert sorted(ENDPOINT_IDS) == sorted(EXPECTED), (
        f"missing: {sorted(set(ENDPOINT_IDS) - set(EXPECTED))}, "
        f"gone: {sorted(set(EXPECTED) - set(ENDPOINT_IDS))}"
    )


def test_the_walk_finds_the_new_endpoints():
    assert {"POST rule-import", "POST approvalrequest-approve", "GET auditentry-list"} <= set(
        ENDPOINT_IDS
    )


@pytest.fixture
def full_world(world, agent, analyst_api):
    """`world` plus one of everything the API addresses: a blocked binary with its
    certificate and a waiting approval request, an unused tag, a tag rule, a profile, a
    second enrollment and audit entries."""
    from audit.models import AuditEntry
    from events.approvals import approval_request_submit
    from events.models import Binary, Certificate
    from hosts.models import FanOut
    from hosts.services import enrollment_create, profile_create, tag_create, tag_rule_create
    from reports.jobs import report_execute
    from reports.models import ReportState
    from reports.services import report_create

    agent.upload_events(
        [
            {
                "file_sha256": SHA_REQUESTED,
                "file_name": "Tool",
                "decision": "BLOCK_UNKNOWN",
                "execution_time": 1767225700,
                "executing_user": "alice",
                "signing_chain": [{"sha256": CERT_SHA, "cn": "Developer ID Application: X"}],
            }
        ]
    )
    host = Host.objects.get(machine_id=world["machine_id"])
    approval = approval_request_submit(
        binary=Binary.objects.get(pk=SHA_REQUESTED), host=host, requester="alice", reason="Work."
    )
    assert Certificate.objects.filter(pk=CERT_SHA).exists()
    tag = tag_create(name="unused")
    tag_rule = tag_rule_create(tag_name="auto", fact="hostname", operator="equals", value="x")
    profile = profile_create(name="walk", values={"batch_size": 5}, tag_names=["eng"])
    other, _ = enrollment_create(name="walk-enrollment")
    report = report_create(kind="hosts", file_format="json", parameters={}, actor=None)
    assert report_execute(report.pk) == ReportState.DONE

    return {
        **world,
        "ids": {
            "rule": world["rule_id"],
            "event": world["event_id"],
            "tagrule": tag_rule.pk,
            "fanout": FanOut.objects.order_by("-id").values_list("pk", flat=True).first(),
            "configurationprofile": profile.pk,
            "tag": tag.pk,
            "enrollment": other.pk,
            "approvalrequest": approval.pk,
            "auditentry": AuditEntry.objects.order_by("-id").values_list("pk", flat=True)[0],
            "binary": SHA_REQUESTED,
            "certificate": CERT_SHA,
            "host": world["machine_id"],
            "report": report.pk,
            "kind": "rules",
        },
    }


def full_snapshot() -> tuple:
    """Everything any API write could change (the audit trail aside: a refusal is recorded)."""
    from events.models import ApprovalRequest
    from hosts.models import ConfigurationProfile, HostTag, Revision, TagRule
    from reports.models import Report

    return (
        snapshot(),
        Revision.objects.get(pk=1).value,
        sorted(Tag.objects.values_list("pk", "name", "description")),
        sorted(HostTag.objects.values_list("pk", "rev_to")),
        sorted(TagRule.objects.values_list("pk", "description", "value")),
        sorted(ConfigurationProfile.objects.values_list("pk", "name", "batch_size")),
        sorted(Enrollment.objects.values_list("pk", "client_mode", "revoked_at")),
        sorted(ApprovalRequest.objects.values_list("pk", "state", "rule_id")),
        sorted(Report.objects.values_list("pk", "kind")),
    )


def walk_call(api, full_world, method: str, name: str, kwargs: list[str]):
    from django.urls import reverse

    basename = name.split("-")[0]
    url = reverse(
        name,
        kwargs={key: full_world["ids"][key if key == "kind" else basename] for key in kwargs},
    )
    _, body, _ = EXPECTED[f"{method} {name}"]
    if body is not None:
        body = _fill(body, full_world)
        return getattr(api, method.lower())(url, body, format="json")
    return getattr(api, method.lower())(url)


def _fill(value, full_world):
    if isinstance(value, dict):
        return {key: _fill(item, full_world) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, full_world) for item in value]
    if value == "{rule_id}":
        return full_world["rule_id"]
    if value == "{machine_id}":
        return full_world["machine_id"]
    return value


def _allowed(role: str, who: str) -> bool:
    if role in ("anonymous", "norole"):
        return False
    if who in (READ, READER_WRITE):
        return True
    if who == ANALYST_WRITE:
        return role in ("analyst", "admin")
    return role == "admin"


ROLES = ["anonymous", "norole", "auditor", "analyst", "admin"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "name", "kwargs"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_role_on_every_endpoint(request, full_world, role, method, name, kwargs):
    """Anonymous 401, no role 403; auditors read (and export) everything and change nothing;
    analysts write rules, tag rules, hosts, tags and decide requests, but not profiles,
    enrollments or tag deletion; admins do everything."""
    api = APIClient() if role == "anonymous" else request.getfixturevalue(f"{role}_api")
    who, _, success = EXPECTED[f"{method} {name}"]
    before = full_snapshot()
    response = walk_call(api, full_world, method, name, kwargs)
    if _allowed(role, who):
        assert response.status_code == success, response.content
        if who == READ:
            assert full_snapshot() == before
        else:
            assert full_snapshot() != before
    else:
        assert_error(response, 401 if role == "anonymous" else 403)
        assert full_snapshot() == before


LISTS = [
    (m, name, kwargs) for m, name, kwargs in ENDPOINTS if name.endswith("-list") and m == "GET"
]


@pytest.mark.parametrize(("method", "name", "kwargs"), LISTS, ids=[n for _, n, _ in LISTS])
def test_every_list_has_a_filterset_and_refuses_bad_paging(
    full_world, auditor_api, method, name, kwargs
):
    """One FilterSet per listed model; a bad page size or page is a 4xx JSON error."""
    from django.urls import resolve, reverse

    from santaadmin.pagination import NewestFirstCursorPagination

    url = reverse(name)
    view = resolve(url).func.cls
    assert view.filterset_class is not None, f"{name} has no FilterSet"
    assert_error(auditor_api.get(url, {"page_size": "lots"}), 400, "page_size")
    if view.pagination_class is NewestFirstCursorPagination:
        assert_error(auditor_api.get(url, {"cursor": "bogus"}), 400, "cursor")
    else:
        assert_error(auditor_api.get(url, {"page": "99999"}), 404)
        assert_error(auditor_api.get(url, {"page": "x"}), 404)
