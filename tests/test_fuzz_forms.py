"""Property-based fuzzing of every write the API and the console take.

For each API write endpoint (from the router: rules incl. bulk create, bulk delete and import,
hosts, tags, tag rules, profiles, enrollments, approval requests, reports) and each console POST
form (rules, import, binary decisions, requests, hosts, reports, tokens), signed in as an admin
(every permission), hypothesis sends the form's own fields with values that are right or wrong:
other JSON types, huge, odd Unicode, nested where a scalar belongs, integers past 64 bits, bad
SHA-256s, Team IDs and signing IDs, enum values and dates nobody defined, fields missing and
fields nobody asked for.

The answer is a success, or a 4xx (the API: its JSON error body; the console: the form again
with its errors) that changed no row; never a 5xx. Each example is rolled back.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from accounts.forms import ApiTokenForm
from accounts.services import api_token_create
from events.approvals import approval_request_submit
from events.forms import BinaryDecisionForm, RequestDecisionForm, RequestDenyForm
from events.models import Binary
from hosts.api.serializers import (
    EnrollmentInputSerializer,
    HostUpdateSerializer,
    ProfileInputSerializer,
    TagInputSerializer,
    TagRuleInputSerializer,
)
from hosts.forms import HostCleanSyncForm, HostModeForm, HostTagsForm
from hosts.models import Enrollment, Host, Tag
from hosts.services import host_set_tags, profile_create, tag_rule_create
from rules.api.serializers import RuleBulkDeleteSerializer, RuleInputSerializer
from rules.forms import RuleDeleteForm, RuleForm, RuleImportForm
from rules.services import RuleInput, rule_create
from tests.fuzzing import EDGE_INTEGERS, json_error, json_values, odd_text, rolled_back
from tests.sync_requests import T0

SHA = "5e" * 32
SHA_RULE = "7a" * 32
MACHINE = "F022E4A7-6C1B-4C0D-9E55-0123456789AB"

# Everything a write can change; API tokens record their last use, so they are counted.
CHECKED_APPS = ("hosts", "events", "rules", "audit", "reports")


def database_state() -> dict:
    state = {
        model.__name__: list(model.objects.order_by("pk").values())
        for label in CHECKED_APPS
        for model in apps.get_app_config(label).get_models()
    }
    from django.contrib.auth.models import User

    from accounts.models import ApiToken

    state["ApiToken"] = ApiToken.objects.count()
    state["User"] = list(User.objects.order_by("pk").values("pk", "username", "is_active"))
    return state


@pytest.fixture
def world(make_agent, settings):
    """One of everything the writes refer to: a host with an event, a tag, a tag rule, a
    rule, a profile, an enrollment, a waiting approval request, an API token."""
    agent = make_agent(machine_id=MACHINE)
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": SHA,
                "file_name": "Tool",
                "decision": "BLOCK_UNKNOWN",
                "execution_time": T0,
                "executing_user": "alice",
                "team_id": "EQHXZ8M8AV",
                "signing_id": "EQHXZ8M8AV:com.example.tool",
                "cdhash": "ab" * 20,
            }
        ]
    )
    host = Host.objects.get(machine_id=MACHINE)
    host_set_tags(host=host, tag_names=["eng"])
    rule = rule_create(data=RuleInput("BINARY", SHA_RULE, "BLOCKLIST", comment="fixture"))
    tag_rule = tag_rule_create(tag_name="eng", fact="hostname", operator="contains", value="mac")
    profile = profile_create(name="fuzz-profile", values={}, tag_names=["eng"])
    approval = approval_request_submit(
        binary=Binary.objects.get(pk=SHA), host=host, requester="alice", reason="please"
    )
    return {
        "host": host,
        "tag": Tag.objects.get(name="eng"),
        "rule": rule,
        "tag_rule": tag_rule,
        "profile": profile,
        "enrollment": Enrollment.objects.first(),
        "approval": approval,
    }


# --- values -------------------------------------------------------------------------------------

BAD_DATES = [
    "2025-13-45T00:00:00Z",
    "0000-00-00",
    "9999-12-31T23:59:59+14:00",
    "10000-01-01T00:00:00Z",
    "1-1-1",
    "yesterday",
    "2025-01-01T25:61",
    "-1",
    "1e308",
]
BAD_IDENTIFIERS = [
    "a" * 63,
    "g" * 64,
    "A" * 65,
    "EQHXZ8M8A",
    "eqhxz8m8av",
    "EQHXZ8M8AV:",
    ":com.example",
    "platform:",
    "ab" * 19,
    "TEAMID:com.example\n",
]
hostile = st.one_of(
    json_values,
    odd_text,
    st.sampled_from(BAD_DATES + BAD_IDENTIFIERS),
    st.sampled_from(EDGE_INTEGERS),
    st.just("x" * 70_000),
    st.lists(json_values, min_size=101, max_size=102),
)

# What a correct request would send, per field name; the fuzzer mixes these with hostile values.
GOOD_API = {
    "rule_type": "BINARY",
    "identifier": "0" * 64,
    "policy": "ALLOWLIST",
    "custom_msg": "hello",
    "custom_url": "https://example.com/why",
    "cel_expr": "",
    "comment": "why",
    "expires_at": "2031-01-01T00:00:00Z",
    "tags": ["eng"],
    "excluded_tags": [],
    "machine_ids": [MACHINE],
    "ids": [],
    "justification": "fuzzing",
    "client_mode_override": "LOCKDOWN",
    "clean_sync_requested": "CLEAN",
    "tag": "eng",
    "fact": "hostname",
    "operator": "contains",
    "value": "mac",
    "description": "a description",
    "name": "fuzz-name",
    "priority": 5,
    "client_mode": "MONITOR",
    "client_cert_issuer": "",
    "batch_size": 50,
    "full_sync_interval": 600,
    "response": "a response",
    "kind": "rules",
    "format": "csv",
    "parameters": {},
}


def api_body(fields: list[str]) -> st.SearchStrategy:
    """A JSON body with the endpoint's fields, each right, wrong or missing, maybe extras; or
    not an object at all."""

    @st.composite
    def body(draw):
        if draw(st.integers(0, 9)) == 0:
            return draw(json_values)
        out = {}
        for name in fields:
            choice = draw(st.sampled_from(["good", "good", "bad", "missing"]))
            if choice == "good" and name in GOOD_API:
                out[name] = GOOD_API[name]
            elif choice != "missing":
                out[name] = draw(hostile)
        if draw(st.integers(0, 4)) == 0:
            out[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        return out

    return body()


def _serializer_fields(serializer_class) -> list[str]:
    return list(serializer_class().fields)


# (name, method, url(world), body strategy) for every API write with a JSON body.
API_WRITES = [
    ("rule-create", "post", lambda w: "/api/v1/rules/", RuleInputSerializer),
    ("rule-update", "patch", lambda w: f"/api/v1/rules/{w['rule'].pk}/", RuleInputSerializer),
    ("rule-bulk", "post", lambda w: "/api/v1/rules/bulk/", "bulk"),
    ("rule-bulk-delete", "post", lambda w: "/api/v1/rules/bulk-delete/", RuleBulkDeleteSerializer),
    ("host-update", "patch", lambda w: f"/api/v1/hosts/{MACHINE}/", HostUpdateSerializer),
    ("tag-create", "post", lambda w: "/api/v1/tags/", TagInputSerializer),
    ("tag-update", "patch", lambda w: f"/api/v1/tags/{w['tag'].pk}/", TagInputSerializer),
    ("tag-rule-create", "post", lambda w: "/api/v1/tag-rules/", TagRuleInputSerializer),
    (
        "tag-rule-update",
        "patch",
        lambda w: f"/api/v1/tag-rules/{w['tag_rule'].pk}/",
        TagRuleInputSerializer,
    ),
    ("profile-create", "post", lambda w: "/api/v1/profiles/", ProfileInputSerializer),
    (
        "profile-update",
        "patch",
        lambda w: f"/api/v1/profiles/{w['profile'].pk}/",
        ProfileInputSerializer,
    ),
    ("enrollment-create", "post", lambda w: "/api/v1/enrollments/", EnrollmentInputSerializer),
    (
        "enrollment-update",
        "patch",
        lambda w: f"/api/v1/enrollments/{w['enrollment'].pk}/",
        EnrollmentInputSerializer,
    ),
    (
        "approval-approve",
        "post",
        lambda w: f"/api/v1/approval-requests/{w['approval'].pk}/approve/",
        "approve",
    ),
    (
        "approval-deny",
        "post",
        lambda w: f"/api/v1/approval-requests/{w['approval'].pk}/deny/",
        "deny",
    ),
    ("report-create", "post", lambda w: "/api/v1/reports/", "report"),
]


def _api_strategy(spec, world) -> st.SearchStrategy:
    if spec == "bulk":
        item = api_body(_serializer_fields(RuleInputSerializer))
        return st.one_of(
            st.builds(lambda rules: {"rules": rules}, st.lists(item, min_size=1, max_size=3)),
            api_body(["rules"]),
        )
    if spec == "approve":
        from events.api.serializers import ApprovalApproveSerializer

        return api_body(_serializer_fields(ApprovalApproveSerializer))
    if spec == "deny":
        return api_body(["response"])
    if spec == "report":
        from reports.api.serializers import ReportCreateSerializer

        return st.one_of(
            api_body(_serializer_fields(ReportCreateSerializer)),
            st.builds(
                lambda kind, params: {"kind": kind, "parameters": params},
                st.sampled_from(["rules", "executions", "hosts", "audit"]),
                st.dictionaries(
                    st.sampled_from(
                        ["since", "until", "tag", "group_by", "decision", "policy", "stale_days"]
                    ),
                    hostile,
                    max_size=3,
                ),
            ),
        )
    fields = _serializer_fields(spec)
    if spec is RuleBulkDeleteSerializer:
        return st.one_of(
            api_body(fields),
            st.builds(
                lambda ids: {"ids": ids, "justification": "x"},
                st.lists(st.sampled_from([world["rule"].pk, *EDGE_INTEGERS]), max_size=3),
            ),
        )
    return api_body(fields)


FUZZ = settings(
    max_examples=max(8, settings.default.max_examples // 4),  # 31 endpoints: ~10 each in ci
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def api_check(response, before) -> None:
    note(f"-> {response.status_code} {response.content[:400]!r}")
    tally(f"status {response.status_code}")
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        body = json_error(response)
        if "fields" in body:
            assert isinstance(body["fields"], dict) and body["fields"], body
        assert database_state() == before, "a refused write changed the database"


@pytest.mark.parametrize("name,method,url,spec", API_WRITES, ids=[w[0] for w in API_WRITES])
@FUZZ
@given(data=st.data())
def test_api_write(admin_api, world, name, method, url, spec, data):
    payload = data.draw(_api_strategy(spec, world), label="body")
    with rolled_back():
        before = database_state()
        # Encoded here, not by the client: json.dumps escapes a lone surrogate ("\\ud800"),
        # which the server must then cope with.
        response = admin_api.generic(
            method.upper(), url(world), json.dumps(payload), content_type="application/json"
        )
        api_check(response, before)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda rules: json.dumps({"rules": rules}).encode("utf-8", "surrogatepass"),
            st.lists(api_body(["rule_type", "identifier", "policy", "custom_msg"]), max_size=3),
        ),
        st.builds(
            lambda rows: ("rule_type,identifier,policy\n" + "\n".join(rows)).encode(
                "utf-8", "surrogatepass"
            ),
            st.lists(
                st.lists(odd_text.filter(lambda s: "\ud800" not in s), max_size=4).map(",".join),
                max_size=3,
            ),
        ),
    ),
    content_type=st.sampled_from(["application/json", "text/csv"]),
    query=st.dictionaries(
        st.sampled_from(["tags", "machine_ids", "justification", "dry_run", "format", "x"]),
        st.text(max_size=10),
        max_size=3,
    ),
)
def test_api_import(admin_api, world, body, content_type, query):
    url = "/api/v1/rules/import/"
    with rolled_back():
        before = database_state()
        response = admin_api.generic(
            "POST",
            url,
            body,
            content_type=content_type,
            QUERY_STRING=urlencode(query),
        )
        api_check(response, before)


# --- console forms ------------------------------------------------------------------------------

GOOD_FORM = {
    "rule_type": "BINARY",
    "identifier": "0" * 64,
    "policy": "ALLOWLIST",
    "scope": "everyone",
    "tags": "eng",
    "excluded_tags": "",
    "machine_ids": MACHINE,
    "justification": "fuzzing",
    "decision": "allow",
    "expires_at": "2031-01-01T10:00",
    "custom_msg": "",
    "custom_url": "",
    "cel_expr": "",
    "client_mode": "LOCKDOWN",
    "kind": "CLEAN",
    "name": "fuzz-token",
    "scopes": "read",
    "expires_days": "30",
    "response": "no",
    "file_format": "auto",
    "reason": "please",
}
form_text = st.one_of(
    odd_text.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.sampled_from(BAD_DATES + BAD_IDENTIFIERS + [str(i) for i in EDGE_INTEGERS]),
    st.just("x" * 70_000),
    st.just("1e400"),
)


def form_data(names: list[str], extra: dict | None = None) -> st.SearchStrategy:
    @st.composite
    def data(draw):
        out = dict(extra or {})
        for name in names:
            bare = name.split("-", 1)[-1]
            choice = draw(st.sampled_from(["good", "good", "bad", "many", "missing"]))
            if choice == "good" and bare in GOOD_FORM:
                out[name] = GOOD_FORM[bare]
            elif choice == "bad":
                out[name] = draw(form_text)
            elif choice == "many":
                out[name] = draw(st.lists(form_text, min_size=2, max_size=3))
        if draw(st.integers(0, 4)) == 0:
            out[draw(st.text(alphabet="abcdefgh_-", min_size=1, max_size=8))] = draw(form_text)
        return out

    return data()


def fields_of(form_class, prefix: str | None = None) -> list[str]:
    return [f"{prefix}-{name}" if prefix else name for name in form_class.base_fields]


def _upload(draw) -> SimpleUploadedFile:
    content = draw(
        st.one_of(
            st.binary(max_size=100),
            st.builds(
                lambda items: json.dumps({"rules": items}).encode(),
                st.lists(
                    api_body(["rule_type", "identifier", "policy", "comment"]).filter(
                        lambda v: not _has_surrogate(v)
                    ),
                    max_size=3,
                ),
            ),
        )
    )
    name = draw(st.sampled_from(["rules.json", "rules.csv", "rules", "r\u202e.json"]))
    return SimpleUploadedFile(name, content)


def _has_surrogate(value) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False))


CONSOLE_FORMS = [
    ("rule-create", lambda w: "/rules/new/", fields_of(RuleForm), None),
    ("rule-edit", lambda w: f"/rules/{w['rule'].pk}/edit/", fields_of(RuleForm), None),
    ("rule-delete", lambda w: f"/rules/{w['rule'].pk}/delete/", fields_of(RuleDeleteForm), None),
    ("rule-import", lambda w: "/rules/import/", fields_of(RuleImportForm), "upload"),
    ("binary-decide", lambda w: f"/binaries/{SHA}/decide/", fields_of(BinaryDecisionForm), None),
    (
        "request-approve",
        lambda w: f"/requests/{w['approval'].pk}/",
        fields_of(RequestDecisionForm),
        {"action": "approve"},
    ),
    (
        "request-deny",
        lambda w: f"/requests/{w['approval'].pk}/",
        fields_of(RequestDenyForm, "deny"),
        {"action": "deny"},
    ),
    ("host-tags", lambda w: f"/hosts/{w['host'].pk}/tags/", fields_of(HostTagsForm, "tags"), None),
    ("host-mode", lambda w: f"/hosts/{w['host'].pk}/mode/", fields_of(HostModeForm, "mode"), None),
    (
        "host-clean-sync",
        lambda w: f"/hosts/{w['host'].pk}/clean-sync/",
        fields_of(HostCleanSyncForm, "clean"),
        None,
    ),
    ("token-create", lambda w: "/account/tokens/new/", fields_of(ApiTokenForm), None),
    (
        "report-generate",
        lambda w: "/reports/executions/generate/",
        ["format", "since", "until", "group_by", "outcome", "decision", "machine_id"],
        None,
    ),
    (
        "report-direct",
        lambda w: "/reports/rules/download/",
        ["format", "rule_type", "policy", "scope", "tag", "stale_days", "identifier"],
        None,
    ),
    (
        "request-public",
        lambda w: f"/request/?sha256={SHA}&machine_id={MACHINE}&user=alice",
        ["reason", "name"],
        None,
    ),
]


def _forms_in(values, depth: int = 0):
    """Bound forms among a page's context values (also inside lists of tuples)."""
    for value in values:
        if hasattr(value, "errors") and hasattr(value, "is_bound"):
            yield value
        elif isinstance(value, list | tuple) and depth < 2:
            yield from _forms_in(value, depth + 1)


@pytest.fixture
def admin_console(console):
    return console("admin", "fuzz-admin")


@pytest.mark.parametrize("name,url,fields,extra", CONSOLE_FORMS, ids=[f[0] for f in CONSOLE_FORMS])
@FUZZ
@given(data=st.data())
def test_console_form(admin_console, world, name, url, fields, extra, data):
    browser = admin_console
    payload = data.draw(form_data(fields, extra if isinstance(extra, dict) else None), label="form")
    if extra == "upload" and data.draw(st.booleans()):
        payload["file"] = _upload(data.draw)
    with rolled_back():
        before = database_state()
        response = browser.post(url(world), payload)
        note(f"-> {response.status_code}")
        tally(f"status {response.status_code}")
        assert response.status_code < 500
        if response.status_code >= 400:
            assert database_state() == before, "a refused form changed the database"
        if response.status_code == 400 and response.context is not None:
            context = response.context
            names = context.keys() if hasattr(context, "keys") else context.flatten()
            forms = list(_forms_in([context[name] for name in names]))
            assert any(form.errors for form in forms), "a 400 without a form error"


def test_token_revoke_of_a_foreign_or_missing_token(console, world):
    """Token revocation takes no form fields but an id: someone else's, or none, is a 4xx."""
    from django.contrib.auth.models import User

    other = User.objects.create_user("other-user")
    token, _ = api_token_create(user=other, name="theirs", scopes=["read"])
    browser = console("analyst", "fuzz-analyst")
    for pk in (token.pk, 999_999):
        before = database_state()
        response = browser.post(f"/account/tokens/{pk}/revoke/")
        assert 400 <= response.status_code < 500
        assert database_state() == before
