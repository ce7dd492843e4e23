"""The rules API: create, validate, conflict, change, delete, bulk, filter and paginate.

Every change that should reach agents is checked end to end with simulated agents syncing.
"""

import pytest
from django.conf import settings

from hosts.models import Revision, Tag
from rules.models import Rule, RuleVersion
from tests.agent import held
from tests.api import assert_error

URL = "/api/v1/rules/"
BULK = "/api/v1/rules/bulk/"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
TEAM = "EQHXZ8M8AV"


def detail(rule_id) -> str:
    return f"{URL}{rule_id}/"


def fleet_revision() -> int:
    return Revision.objects.get(pk=1).value


def rule_payload(**fields) -> dict:
    payload = {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST"}
    payload.update(fields)
    return payload


def create(api, **fields) -> dict:
    response = api.post(URL, rule_payload(**fields), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def assert_nothing_stored(revision_before: int) -> None:
    assert Rule.objects.count() == 0
    assert RuleVersion.objects.count() == 0
    assert fleet_revision() == revision_before


@pytest.fixture
def tagged_agent(make_agent, make_enrollment):
    """An agent enrolled with the given tags, synced once (so its host exists)."""

    def make(*tags):
        _, secret = make_enrollment(tags=tags)
        agent = make_agent(secret=secret)
        agent.sync()
        return agent

    return make


# --- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_type", "identifier", "stored"),
    [
        ("BINARY", "ABCDEF" + "0" * 58, "abcdef" + "0" * 58),
        ("CERTIFICATE", "F" * 64, "f" * 64),
        ("TEAMID", "eqhxz8m8av", TEAM),
        ("SIGNINGID", "eqhxz8m8av:com.example.App", "EQHXZ8M8AV:com.example.App"),
        ("SIGNINGID", "Platform:com.apple.curl", "platform:com.apple.curl"),
        ("SIGNINGID", "platform:com.apple.ls", "platform:com.apple.ls"),
        ("CDHASH", "AB" * 20, "ab" * 20),
    ],
)
def test_create_each_rule_type_normalises_identifier(
    analyst_api, agent, rule_type, identifier, stored
):
    body = create(
        analyst_api,
        rule_type=rule_type,
        identifier=identifier,
        policy="BLOCKLIST",
        custom_msg="Blocked by IT",
        custom_url="https://help.example.com/santa",
        comment="ticket 42",
    )
    assert body["rule_type"] == rule_type
    assert body["identifier"] == stored
    assert body["policy"] == "BLOCKLIST"
    assert body["custom_msg"] == "Blocked by IT"
    assert body["custom_url"] == "https://help.example.com/santa"
    assert body["comment"] == "ticket 42"
    assert body["tags"] == [] and body["excluded_tags"] == [] and body["machine_ids"] == []
    assert body["created_by"] == "ana" and body["updated_by"] == "ana"
    assert body["revision"] == fleet_revision()
    rule = Rule.objects.get(pk=body["id"])
    assert (rule.rule_type, rule.identifier) == (rule_type, stored)

    agent.sync()
    assert agent.rules == {
        (rule_type, stored): held("BLOCKLIST", "Blocked by IT", "https://help.example.com/santa")
    }


def test_create_every_policy_and_deliver(analyst_api, agent):
    policies = [
        "ALLOWLIST",
        "ALLOWLIST_COMPILER",
        "BLOCKLIST",
        "SILENT_BLOCKLIST",
        "SILENT_GUI_BLOCKLIST",
        "SILENT_TTY_BLOCKLIST",
        "REMOVE",
    ]
    identifiers = {}
    for n, policy in enumerate(policies):
        identifiers[policy] = f"{n + 1:064x}"
        body = create(analyst_api, identifier=identifiers[policy], policy=policy)
        assert body["policy"] == policy
    cel = "target.signing_time >= timestamp('2025-01-01T00:00:00Z')"
    body = create(analyst_api, identifier=SHA_C, policy="CEL", cel_expr=cel)
    assert body["policy"] == "CEL" and body["cel_expr"] == cel
    assert Rule.objects.count() == len(policies) + 1

    agent.sync()
    expected = {
        ("BINARY", identifiers[policy]): held(policy) for policy in policies if policy != "REMOVE"
    }
    expected[("BINARY", SHA_C)] = held("CEL", cel_expr=cel)
    assert agent.rules == expected


def test_create_scoped_rule_reports_scope(analyst_api, tagged_agent):
    agent = tagged_agent()
    body = create(
        analyst_api,
        tags=["Eng", " qa "],
        excluded_tags=["contractors"],
        machine_ids=[agent.machine_id],
    )
    assert body["tags"] == ["eng", "qa"]
    assert body["excluded_tags"] == ["contractors"]
    assert body["machine_ids"] == [agent.machine_id]
    assert analyst_api.get(detail(body["id"])).json() == body


# --- validation -----------------------------------------------------------------------------------

LONG = "x" * 3000


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        # identifiers, per type
        ({"identifier": "a" * 63}, "identifier"),
        ({"identifier": "g" * 64}, "identifier"),
        ({"identifier": "a" * 65}, "identifier"),
        ({"rule_type": "CERTIFICATE", "identifier": "abc"}, "identifier"),
        ({"rule_type": "TEAMID", "identifier": "EQHXZ8M8A"}, "identifier"),
        ({"rule_type": "TEAMID", "identifier": "EQHXZ8M8A!"}, "identifier"),
        ({"rule_type": "SIGNINGID", "identifier": "com.example.app"}, "identifier"),
        ({"rule_type": "SIGNINGID", "identifier": f"{TEAM}:"}, "identifier"),
        ({"rule_type": "SIGNINGID", "identifier": "NOTATEAM:com.example.app"}, "identifier"),
        ({"rule_type": "CDHASH", "identifier": "a" * 64}, "identifier"),
        ({"rule_type": "CDHASH", "identifier": "z" * 40}, "identifier"),
        ({"identifier": ""}, "identifier"),
        # enum names are the protocol's, case-sensitive
        ({"rule_type": "binary"}, "rule_type"),
        ({"rule_type": "Binary"}, "rule_type"),
        ({"rule_type": "SHA256"}, "rule_type"),
        ({"policy": "blocklist"}, "policy"),
        ({"policy": "Allowlist"}, "policy"),
        ({"policy": "BLACKLIST"}, "policy"),
        # CEL
        ({"policy": "CEL"}, "cel_expr"),
        ({"policy": "CEL", "cel_expr": "   "}, "cel_expr"),
        ({"policy": "BLOCKLIST", "cel_expr": "true"}, "cel_expr"),
        # scope
        ({"machine_ids": ["NO-SUCH-MACHINE"]}, "machine_ids"),
        ({"tags": ["Bad Tag!"]}, "tags"),
        ({"tags": ["-leading-dash"]}, "tags"),
        ({"excluded_tags": ["no spaces"]}, "excluded_tags"),
        ({"tags": ["eng"], "excluded_tags": ["eng"]}, "excluded_tags"),
        # custom_url
        ({"custom_url": "ftp://example.com/file"}, "custom_url"),
        ({"custom_url": "javascript:alert(1)"}, "custom_url"),
        ({"custom_url": "help.example.com"}, "custom_url"),
        # control characters
        ({"custom_msg": "ring \x07 the bell"}, "custom_msg"),
        # over-long fields
        ({"rule_type": "SIGNINGID", "identifier": f"{TEAM}:" + "a" * 250}, "identifier"),
        ({"custom_msg": "m" * 2049}, "custom_msg"),
        ({"custom_url": "https://example.com/" + "u" * 2048}, "custom_url"),
        ({"policy": "CEL", "cel_expr": "c" * 8193}, "cel_expr"),
        ({"comment": "c" * 8193}, "comment"),
        ({"tags": ["t" * 65]}, "tags"),
        ({"tags": [f"tag{n}" for n in range(101)]}, "tags"),
        ({"machine_ids": ["m" * 129]}, "machine_ids"),
        # wrong JSON types
        ({"identifier": [SHA_A]}, "identifier"),
        ({"identifier": True}, "identifier"),
        ({"identifier": None}, "identifier"),
        ({"rule_type": 1}, "rule_type"),
        ({"policy": ["BLOCKLIST"]}, "policy"),
        ({"tags": "eng"}, "tags"),
        ({"tags": [None]}, "tags"),
        ({"tags": [["eng"]]}, "tags"),
        ({"excluded_tags": {"eng": True}}, "excluded_tags"),
        ({"machine_ids": "ABC"}, "machine_ids"),
        ({"custom_msg": {"text": "hi"}}, "custom_msg"),
        ({"comment": ["a", "b"]}, "comment"),
    ],
)
def test_invalid_rule_is_400_with_field_error_and_nothing_stored(analyst_api, fields, error_field):
    before = fleet_revision()
    response = analyst_api.post(URL, rule_payload(**fields), format="json")
    assert_error(response, 400, error_field)
    assert_nothing_stored(before)


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"rule_type": "TEAMID", "identifier": 1234567890}, "identifier"),
        ({"custom_msg": 42}, "custom_msg"),
        ({"comment": 7}, "comment"),
        ({"policy": "CEL", "cel_expr": 5.5}, "cel_expr"),
    ],
)
def test_number_for_a_string_field_is_400(analyst_api, fields, error_field):
    """A JSON number is not a string: wrong JSON types are refused, not coerced."""
    before = fleet_revision()
    assert_error(analyst_api.post(URL, rule_payload(**fields), format="json"), 400, error_field)
    assert_nothing_stored(before)


@pytest.mark.parametrize("missing", ["rule_type", "identifier", "policy"])
def test_missing_required_field_is_400(analyst_api, missing):
    payload = rule_payload()
    del payload[missing]
    before = fleet_revision()
    assert_error(analyst_api.post(URL, payload, format="json"), 400, missing)
    assert_nothing_stored(before)


@pytest.mark.parametrize("body", [[rule_payload()], "BLOCKLIST", 42, None])
def test_body_that_is_not_an_object_is_400(analyst_api, body):
    before = fleet_revision()
    response = analyst_api.post(URL, body, format="json")
    assert_error(response, 400)
    assert_nothing_stored(before)


def test_malformed_json_is_400(analyst_api):
    response = analyst_api.post(URL, b'{"rule_type": "BINARY",', content_type="application/json")
    assert_error(response, 400)
    assert Rule.objects.count() == 0


def test_rejected_requests_create_no_tags(analyst_api, tagged_agent):
    """A refused rule leaves nothing behind, tags included."""
    create(analyst_api, tags=["eng"])
    rejected = [
        (URL, rule_payload(tags=["newtag1"], excluded_tags=["newtag1"]), 400),
        (URL, rule_payload(tags=["eng", "newtag2"]), 409),
        (
            BULK,
            {
                "rules": [
                    rule_payload(identifier=SHA_B, tags=["newtag3"]),
                    rule_payload(identifier="not-a-hash"),
                ]
            },
            400,
        ),
    ]
    for url, payload, status in rejected:
        assert analyst_api.post(url, payload, format="json").status_code == status
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["eng"]
    assert Rule.objects.count() == 1


# --- conflicts ------------------------------------------------------------------------------------


def test_two_everyone_rules_for_one_key_conflict(analyst_api):
    first = create(analyst_api, policy="BLOCKLIST")
    before = fleet_revision()
    response = analyst_api.post(URL, rule_payload(policy="ALLOWLIST"), format="json")
    body = assert_error(response, 409)
    assert body["error"] == "rule_conflict"
    assert str(first["id"]) in body["detail"]
    assert list(Rule.objects.values_list("pk", flat=True)) == [first["id"]]
    assert fleet_revision() == before


def test_conflict_is_detected_on_the_normalised_identifier(analyst_api):
    create(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST")
    response = analyst_api.post(
        URL, rule_payload(rule_type="TEAMID", identifier=TEAM.lower()), format="json"
    )
    assert_error(response, 409)
    assert Rule.objects.count() == 1


def test_overlapping_tags_conflict_disjoint_tags_do_not(analyst_api):
    create(analyst_api, tags=["eng", "qa"])
    response = analyst_api.post(URL, rule_payload(tags=["qa", "ops"]), format="json")
    assert_error(response, 409, "tags")
    assert Rule.objects.count() == 1
    create(analyst_api, tags=["ops"], policy="ALLOWLIST")
    # A different key, or a different scope level, is no conflict.
    create(analyst_api, identifier=SHA_B, tags=["eng"])
    create(analyst_api, policy="SILENT_BLOCKLIST")  # everyone
    assert Rule.objects.count() == 4


def test_overlapping_hosts_conflict(analyst_api, tagged_agent):
    one, two, three = tagged_agent(), tagged_agent(), tagged_agent()
    create(analyst_api, machine_ids=[one.machine_id, two.machine_id])
    response = analyst_api.post(
        URL, rule_payload(machine_ids=[two.machine_id], policy="ALLOWLIST"), format="json"
    )
    assert_error(response, 409, "machine_ids")
    assert Rule.objects.count() == 1
    create(analyst_api, machine_ids=[three.machine_id], policy="ALLOWLIST")
    assert Rule.objects.count() == 2


# --- retrieve -------------------------------------------------------------------------------------


def test_retrieve_and_unknown_rule(analyst_api):
    body = create(analyst_api)
    assert analyst_api.get(detail(body["id"])).json() == body
    assert_error(analyst_api.get(detail(body["id"] + 1000)), 404)


# --- PATCH ----------------------------------------------------------------------------------------


def test_patch_scope_moves_delivery_between_tags(analyst_api, tagged_agent):
    eng, qa = tagged_agent("eng"), tagged_agent("qa")
    rule = create(analyst_api, tags=["eng"], custom_msg="eng only")
    eng.sync()
    qa.sync()
    key = ("BINARY", SHA_A)
    assert eng.rules == {key: held("BLOCKLIST", "eng only")}
    assert qa.rules == {}

    response = analyst_api.patch(detail(rule["id"]), {"tags": ["qa"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["tags"] == ["qa"]
    assert response.json()["revision"] > rule["revision"]

    eng_sync, qa_sync = eng.sync(), qa.sync()
    # An incremental sync can only lose a rule through a REMOVE.
    assert eng_sync.sync_type == "NORMAL" and eng_sync.rules_received == 1
    assert eng.rules == {}
    assert qa_sync.sync_type == "NORMAL"
    assert qa.rules == {key: held("BLOCKLIST", "eng only")}


def test_patch_everyone_rule_to_host_rule(analyst_api, tagged_agent):
    one, two = tagged_agent(), tagged_agent()
    rule = create(analyst_api)
    one.sync()
    two.sync()
    assert ("BINARY", SHA_A) in one.rules and ("BINARY", SHA_A) in two.rules

    response = analyst_api.patch(
        detail(rule["id"]), {"machine_ids": [two.machine_id]}, format="json"
    )
    assert response.status_code == 200, response.content
    one.sync()
    two.sync()
    assert one.rules == {}
    assert two.rules == {("BINARY", SHA_A): held("BLOCKLIST")}


def test_patch_payload_is_delivered(analyst_api, admin_api, agent):
    rule = create(analyst_api, custom_msg="old", comment="keep", excluded_tags=["kiosk"])
    agent.sync()
    response = admin_api.patch(
        detail(rule["id"]),
        {"custom_msg": "new", "policy": "SILENT_BLOCKLIST", "custom_url": "http://x.example"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["policy"] == "SILENT_BLOCKLIST" and body["custom_msg"] == "new"
    assert body["created_by"] == "ana" and body["updated_by"] == "adam"
    # Fields the PATCH did not name keep their values.
    assert body["comment"] == "keep" and body["excluded_tags"] == ["kiosk"]
    assert body["identifier"] == SHA_A and body["rule_type"] == "BINARY"
    result = agent.sync()
    assert result.rules_received == 1
    assert agent.rules == {("BINARY", SHA_A): held("SILENT_BLOCKLIST", "new", "http://x.example")}


def test_patch_identifier_replaces_key_on_hosts(analyst_api, agent):
    rule = create(analyst_api, rule_type="TEAMID", identifier=TEAM)
    agent.sync()
    response = analyst_api.patch(detail(rule["id"]), {"identifier": "abcde12345"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["identifier"] == "ABCDE12345"
    agent.sync()
    assert agent.rules == {("TEAMID", "ABCDE12345"): held("BLOCKLIST")}


def test_patch_comment_alone_does_not_bump_revision(analyst_api, agent):
    rule = create(analyst_api, comment="first")
    agent.sync()
    before = fleet_revision()
    response = analyst_api.patch(detail(rule["id"]), {"comment": "second"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["comment"] == "second"
    assert body["revision"] == rule["revision"]
    assert fleet_revision() == before
    assert Rule.objects.get(pk=rule["id"]).comment == "second"
    assert agent.sync().rules_received == 0


def test_patch_without_effective_change_does_not_bump_revision(analyst_api):
    rule = create(analyst_api, rule_type="TEAMID", identifier=TEAM, tags=["eng"])
    before = fleet_revision()
    response = analyst_api.patch(
        detail(rule["id"]), {"identifier": TEAM.lower(), "tags": ["ENG"]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["revision"] == rule["revision"]
    assert fleet_revision() == before


def test_patch_into_conflict_is_409_and_changes_nothing(analyst_api):
    create(analyst_api)  # everyone
    tagged = create(analyst_api, tags=["eng"], policy="ALLOWLIST")
    before = fleet_revision()
    response = analyst_api.patch(detail(tagged["id"]), {"tags": []}, format="json")
    assert_error(response, 409)
    assert analyst_api.get(detail(tagged["id"])).json() == tagged
    assert fleet_revision() == before


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"policy": "allowlist"}, "policy"),
        ({"identifier": "nothex"}, "identifier"),
        ({"policy": "CEL"}, "cel_expr"),
        ({"cel_expr": "true"}, "cel_expr"),
        ({"tags": "eng"}, "tags"),
        ({"tags": None}, "tags"),
        ({"tags": ["Not Valid"]}, "tags"),
        ({"machine_ids": ["NO-SUCH-MACHINE"]}, "machine_ids"),
        ({"custom_url": "file:///etc/passwd"}, "custom_url"),
        ({"comment": "c" * 8193}, "comment"),
    ],
)
def test_invalid_patch_is_400_and_changes_nothing(analyst_api, fields, error_field):
    rule = create(analyst_api)
    before = fleet_revision()
    assert_error(analyst_api.patch(detail(rule["id"]), fields, format="json"), 400, error_field)
    assert analyst_api.get(detail(rule["id"])).json() == rule
    assert RuleVersion.objects.count() == 1
    assert fleet_revision() == before


@pytest.mark.parametrize("body", [[{"comment": "x"}], "comment"])
def test_patch_with_non_object_body_is_400(analyst_api, body):
    rule = create(analyst_api)
    assert_error(analyst_api.patch(detail(rule["id"]), body, format="json"), 400)
    assert analyst_api.get(detail(rule["id"])).json() == rule


def test_patch_unknown_rule_is_404(analyst_api):
    assert_error(analyst_api.patch(detail(999), {"comment": "x"}, format="json"), 404)


def test_put_is_not_allowed(analyst_api):
    rule = create(analyst_api)
    body = assert_error(analyst_api.put(detail(rule["id"]), rule_payload(), format="json"), 405)
    assert body["error"] == "method_not_allowed"


# --- DELETE ---------------------------------------------------------------------------------------


def test_delete_removes_the_rule_from_hosts(analyst_api, agent):
    rule = create(analyst_api)
    other = create(analyst_api, identifier=SHA_B, policy="ALLOWLIST")
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A), ("BINARY", SHA_B)}
    before = fleet_revision()

    response = analyst_api.delete(detail(rule["id"]))
    assert response.status_code == 204
    assert fleet_revision() == before + 1
    assert not Rule.objects.filter(pk=rule["id"]).exists()
    assert_error(analyst_api.get(detail(rule["id"])), 404)
    assert_error(analyst_api.delete(detail(rule["id"])), 404)

    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 1
    assert agent.rules == {("BINARY", SHA_B): held("ALLOWLIST")}
    assert Rule.objects.filter(pk=other["id"]).exists()


def test_delete_of_override_reveals_the_broader_rule(analyst_api, tagged_agent):
    eng = tagged_agent("eng")
    create(analyst_api, policy="BLOCKLIST")
    override = create(analyst_api, tags=["eng"], policy="ALLOWLIST")
    eng.sync()
    assert eng.rules == {("BINARY", SHA_A): held("ALLOWLIST")}
    assert analyst_api.delete(detail(override["id"])).status_code == 204
    eng.sync()
    assert eng.rules == {("BINARY", SHA_A): held("BLOCKLIST")}


# --- bulk -----------------------------------------------------------------------------------------


def test_bulk_create_all_in_one_revision(analyst_api, tagged_agent):
    eng = tagged_agent("eng")
    before = fleet_revision()
    items = [
        rule_payload(identifier=SHA_A, policy="BLOCKLIST"),
        rule_payload(identifier=SHA_B, policy="ALLOWLIST", tags=["eng"]),
        rule_payload(rule_type="TEAMID", identifier="eqhxz8m8av", policy="ALLOWLIST"),
        rule_payload(identifier=SHA_C, policy="CEL", cel_expr="true"),
    ]
    response = analyst_api.post(BULK, {"rules": items}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["count"] == 4
    assert [r["identifier"] for r in body["results"]] == [SHA_A, SHA_B, TEAM, SHA_C]
    assert fleet_revision() == before + 1
    assert {r["revision"] for r in body["results"]} == {before + 1}
    assert set(Rule.objects.values_list("revision", flat=True)) == {before + 1}
    assert Rule.objects.count() == 4
    assert all(r["created_by"] == "ana" for r in body["results"])

    eng.sync()
    assert eng.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST"),
        ("BINARY", SHA_B): held("ALLOWLIST"),
        ("TEAMID", TEAM): held("ALLOWLIST"),
        ("BINARY", SHA_C): held("CEL", cel_expr="true"),
    }


def test_bulk_with_serializer_error_reports_index_and_stores_nothing(analyst_api):
    before = fleet_revision()
    items = [
        rule_payload(identifier=SHA_A),
        rule_payload(identifier=SHA_B, policy="blocklist"),
        rule_payload(identifier=SHA_C),
    ]
    response = analyst_api.post(BULK, {"rules": items}, format="json")
    body = assert_error(response, 400, "policy")
    assert body["index"] == 1  # the same shape as a domain error in a bulk request
    assert_nothing_stored(before)


def test_bulk_with_invalid_identifier_reports_index_and_stores_nothing(analyst_api):
    before = fleet_revision()
    items = [
        rule_payload(identifier=SHA_A),
        rule_payload(identifier=SHA_B),
        rule_payload(rule_type="TEAMID", identifier="too-long-team-id"),
    ]
    body = assert_error(analyst_api.post(BULK, {"rules": items}, format="json"), 400, "identifier")
    assert body["index"] == 2
    assert_nothing_stored(before)


def test_bulk_with_unknown_machine_reports_index(analyst_api):
    before = fleet_revision()
    items = [rule_payload(machine_ids=["NO-SUCH-MACHINE"]), rule_payload(identifier=SHA_B)]
    body = assert_error(analyst_api.post(BULK, {"rules": items}, format="json"), 400, "machine_ids")
    assert body["index"] == 0
    assert_nothing_stored(before)


def test_bulk_duplicate_scope_in_batch_is_409(analyst_api):
    before = fleet_revision()
    items = [
        rule_payload(identifier=SHA_B),
        rule_payload(identifier=SHA_A, tags=["eng", "qa"]),
        rule_payload(identifier=SHA_A, tags=["qa"], policy="ALLOWLIST"),
    ]
    body = assert_error(analyst_api.post(BULK, {"rules": items}, format="json"), 409)
    assert body["error"] == "rule_conflict"
    assert body["index"] == 2
    assert_nothing_stored(before)


def test_bulk_duplicate_everyone_rule_after_normalisation_is_409(analyst_api):
    items = [
        rule_payload(rule_type="TEAMID", identifier=TEAM),
        rule_payload(rule_type="TEAMID", identifier=TEAM.lower(), policy="ALLOWLIST"),
    ]
    body = assert_error(analyst_api.post(BULK, {"rules": items}, format="json"), 409)
    assert body["index"] == 1
    assert Rule.objects.count() == 0


def test_bulk_conflict_with_existing_rule_is_409_and_stores_nothing(analyst_api):
    existing = create(analyst_api, identifier=SHA_C)
    before = fleet_revision()
    items = [rule_payload(identifier=SHA_A), rule_payload(identifier=SHA_C)]
    body = assert_error(analyst_api.post(BULK, {"rules": items}, format="json"), 409)
    assert body["index"] == 1
    assert list(Rule.objects.values_list("pk", flat=True)) == [existing["id"]]
    assert fleet_revision() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rules": []},
        {"rules": "not a list"},
        {"rules": [1, 2]},
        {"rules": [None]},
        {"rules": {"0": rule_payload()}},
        [rule_payload()],
    ],
)
def test_bulk_envelope_errors_are_400(analyst_api, body):
    before = fleet_revision()
    assert_error(analyst_api.post(BULK, body, format="json"), 400)
    assert_nothing_stored(before)


# --- filters --------------------------------------------------------------------------------------


@pytest.fixture
def filter_rules(analyst_api, admin_api, tagged_agent):
    host = tagged_agent()
    rules = {
        "bin_block_all": create(analyst_api, identifier=SHA_A, policy="BLOCKLIST"),
        "bin_allow_eng": create(analyst_api, identifier=SHA_B, policy="ALLOWLIST", tags=["eng"]),
        "bin_block_qa_ops": create(
            analyst_api, identifier=SHA_B, policy="BLOCKLIST", tags=["qa", "ops"]
        ),
        "team_allow_host": create(
            admin_api,
            rule_type="TEAMID",
            identifier=TEAM,
            policy="ALLOWLIST",
            machine_ids=[host.machine_id],
        ),
        "cert_silent_all": create(
            admin_api, rule_type="CERTIFICATE", identifier=SHA_C, policy="SILENT_BLOCKLIST"
        ),
    }
    return host, {name: rule["id"] for name, rule in rules.items()}


def listed(api, **params) -> set:
    response = api.get(URL, {"page_size": 1000, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(body["results"])
    ids = [r["id"] for r in body["results"]]
    assert len(ids) == len(set(ids)), "a rule is listed twice"
    return set(ids)


def test_list_without_filters(analyst_api, filter_rules):
    _, ids = filter_rules
    assert listed(analyst_api) == set(ids.values())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"rule_type": "BINARY"}, {"bin_block_all", "bin_allow_eng", "bin_block_qa_ops"}),
        ({"rule_type": ["TEAMID", "CERTIFICATE"]}, {"team_allow_host", "cert_silent_all"}),
        ({"policy": "ALLOWLIST"}, {"bin_allow_eng", "team_allow_host"}),
        (
            {"policy": ["BLOCKLIST", "SILENT_BLOCKLIST"]},
            {
                "bin_block_all",
                "bin_block_qa_ops",
                "cert_silent_all",
            },
        ),
        ({"identifier": SHA_B}, {"bin_allow_eng", "bin_block_qa_ops"}),
        ({"identifier": TEAM}, {"team_allow_host"}),
        ({"identifier": "f" * 64}, set()),
        ({"tag": "eng"}, {"bin_allow_eng"}),
        ({"tag": "qa"}, {"bin_block_qa_ops"}),
        ({"tag": "nope"}, set()),
        ({"created_by": "ana"}, {"bin_block_all", "bin_allow_eng", "bin_block_qa_ops"}),
        ({"created_by": "adam"}, {"team_allow_host", "cert_silent_all"}),
        ({"scope": "everyone"}, {"bin_block_all", "cert_silent_all"}),
        ({"scope": "tags"}, {"bin_allow_eng", "bin_block_qa_ops"}),
        ({"scope": "hosts"}, {"team_allow_host"}),
        ({"rule_type": "BINARY", "policy": "BLOCKLIST", "scope": "tags"}, {"bin_block_qa_ops"}),
    ],
)
def test_rule_filters(analyst_api, filter_rules, params, expected):
    _, ids = filter_rules
    assert listed(analyst_api, **params) == {ids[name] for name in expected}


def test_rule_filter_machine_id(analyst_api, filter_rules):
    host, ids = filter_rules
    assert listed(analyst_api, machine_id=host.machine_id) == {ids["team_allow_host"]}
    assert listed(analyst_api, machine_id="NO-SUCH-MACHINE") == set()


@pytest.mark.parametrize(
    "params",
    [
        {"rule_type": "binary"},
        {"policy": "blocklist"},
        {"scope": "nobody"},
    ],
)
def test_invalid_filter_values_are_400(analyst_api, filter_rules, params):
    response = analyst_api.get(URL, params)
    assert_error(response, 400, next(iter(params)))


# --- pagination -----------------------------------------------------------------------------------


def _bulk_rules(api, count: int) -> None:
    items = [rule_payload(identifier=f"{n + 1:064x}") for n in range(count)]
    response = api.post(BULK, {"rules": items}, format="json")
    assert response.status_code == 201, response.content


def test_pagination_shape_and_page_size(analyst_api):
    _bulk_rules(analyst_api, 12)
    first = analyst_api.get(URL, {"page_size": 5}).json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 12
    assert len(first["results"]) == 5
    assert first["previous"] is None
    assert "page=2" in first["next"] and "page_size=5" in first["next"]

    seen = [r["id"] for r in first["results"]]
    page = first
    while page["next"]:
        page = analyst_api.get(page["next"]).json()
        seen += [r["id"] for r in page["results"]]
    assert page["previous"] is not None
    assert len(page["results"]) == 2
    assert sorted(seen) == sorted(Rule.objects.values_list("pk", flat=True))
    assert len(seen) == len(set(seen))


def test_default_page_size_is_100(analyst_api):
    _bulk_rules(analyst_api, 101)
    body = analyst_api.get(URL).json()
    assert body["count"] == 101
    assert len(body["results"]) == 100
    assert body["next"] is not None


def test_page_size_is_capped_at_api_max_page_size(analyst_api):
    cap = settings.API_MAX_PAGE_SIZE
    assert cap == 1000
    _bulk_rules(analyst_api, cap + 1)
    body = analyst_api.get(URL, {"page_size": cap * 5}).json()
    assert body["count"] == cap + 1
    assert len(body["results"]) == cap
    assert body["next"] is not None
    rest = analyst_api.get(body["next"]).json()
    assert len(rest["results"]) == 1


def test_page_beyond_the_end_is_404_json(analyst_api):
    _bulk_rules(analyst_api, 3)
    assert_error(analyst_api.get(URL, {"page": 7}), 404)
