"""Rules in bulk through the API: bulk delete, export (santactl JSON, CSV) with the list's
filters, import (JSON, CSV, multipart; scope, dry run, all or none) and the round trip."""

import csv
import io
import json

import pytest

from audit.models import AuditEntry
from hosts.models import Revision
from rules.models import Rule, RuleVersion
from tests.agent import held
from tests.api import assert_error

RULES = "/api/v1/rules/"
BULK_DELETE = "/api/v1/rules/bulk-delete/"
EXPORT = "/api/v1/rules/export/"
IMPORT = "/api/v1/rules/import/"
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64
TEAM = "EQHXZ8M8AV"


def create(api, **fields) -> dict:
    body = {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", **fields}
    response = api.post(RULES, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def rules_state() -> tuple:
    return (
        sorted(Rule.objects.values_list("pk", "rule_type", "identifier", "policy", "comment")),
        RuleVersion.objects.count(),
        Revision.objects.get(pk=1).value,
    )


def content(response) -> str:
    return b"".join(response.streaming_content).decode()


def santactl(*rules) -> dict:
    return {"rules": list(rules)}


def post_raw(api, body: str | bytes, content_type: str, **params):
    query = "&".join(
        f"{key}={value}"
        for key, values in params.items()
        for value in (values if isinstance(values, list) else [values])
    )
    url = f"{IMPORT}?{query}" if query else IMPORT
    data = body.encode() if isinstance(body, str) else body
    return api.generic("POST", url, data, content_type=content_type)


# --- bulk delete ----------------------------------------------------------------------------------


def test_bulk_delete_all_and_hosts_get_remove(analyst_api, agent, analyst):
    agent.sync()
    first = create(analyst_api)
    second = create(analyst_api, identifier=SHA_B)
    keep = create(analyst_api, identifier=SHA_C)
    agent.sync()
    assert len(agent.rules) == 3
    response = analyst_api.post(
        BULK_DELETE,
        {"ids": [first["id"], second["id"], first["id"]], "justification": "Cleanup."},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"count": 2, "ids": sorted([first["id"], second["id"]])}
    assert list(Rule.objects.values_list("pk", flat=True)) == [keep["id"]]
    agent.sync()
    assert agent.rules == {("BINARY", SHA_C): held("BLOCKLIST")}
    entries = AuditEntry.objects.filter(action="rule.delete")
    assert entries.count() == 2
    assert {e.justification for e in entries} == {"Cleanup."}
    assert {e.actor_id for e in entries} == {analyst.pk}


def test_bulk_delete_with_an_unknown_id_deletes_nothing_and_names_it(analyst_api):
    rule = create(analyst_api)
    before = rules_state()
    body = assert_error(
        analyst_api.post(BULK_DELETE, {"ids": [rule["id"], 98765]}, format="json"), 400, "ids"
    )
    assert "98765" in body["detail"] and str(rule["id"]) not in body["detail"]
    assert rules_state() == before
    assert not AuditEntry.objects.filter(action="rule.delete").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "ids"),
        ({"ids": []}, "ids"),
        ({"ids": "1"}, "ids"),
        ({"ids": ["1"]}, "ids"),
        ({"ids": [1.0]}, "ids"),
        ({"ids": [0]}, "ids"),
        ({"ids": [True]}, "ids"),
        ({"ids": [1], "id": [2]}, "id"),
        ({"ids": [1], "justification": 5}, "justification"),
    ],
)
def test_bulk_delete_refuses_bad_input(analyst_api, body, field):
    create(analyst_api)
    before = rules_state()
    assert_error(analyst_api.post(BULK_DELETE, body, format="json"), 400, field)
    assert rules_state() == before


# --- export ---------------------------------------------------------------------------------------


@pytest.fixture
def some_rules(analyst_api, make_agent, make_enrollment):
    _, secret = make_enrollment(tags=["eng"])
    make_agent(secret=secret).sync()
    create(analyst_api, custom_msg="Blocked by IT", comment="why")
    create(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST", tags=["eng"])
    create(
        analyst_api,
        rule_type="SIGNINGID",
        identifier=f"{TEAM}:com.example.app",
        policy="CEL",
        cel_expr="target.signing_time >= timestamp('2025-01-01T00:00:00Z')",
    )
    create(analyst_api, identifier=SHA_B, comment='=HYPERLINK("http://x")')


def test_export_santactl_json_by_default(auditor_api, some_rules):
    response = auditor_api.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="santa-rules-')
    document = json.loads(content(response))
    assert [rule["identifier"] for rule in document["rules"]] == [
        SHA_A,
        TEAM,
        f"{TEAM}:com.example.app",
        SHA_B,
    ]
    assert document["rules"][0] == {
        "identifier": SHA_A,
        "policy": "BLOCKLIST",
        "rule_type": "BINARY",
        "custom_msg": "Blocked by IT",
        "custom_url": "",
        "event_detail_button_label": "",
        "comment": "why",
        "cel_expr": "",
    }


def test_export_csv_with_filters(auditor_api, some_rules):
    response = auditor_api.get(
        EXPORT, {"format": "csv", "scope": "everyone", "policy": "BLOCKLIST"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(content(response))))
    assert [row["identifier"] for row in rows] == [SHA_A, SHA_B]
    # A formula is neutralised for spreadsheets (and read back unchanged by an import).
    assert rows[1]["comment"].startswith("'=")
    tagged = auditor_api.get(EXPORT, {"format": "csv", "tag": "eng"})
    assert [row["identifier"] for row in csv.DictReader(io.StringIO(content(tagged)))] == [TEAM]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "json"}, "format"),
        ({"rule_type": "HASH"}, "rule_type"),
        ({"stale_days": "0"}, "stale_days"),
    ],
)
def test_export_refusals_are_400_json(auditor_api, some_rules, params, field):
    assert_error(auditor_api.get(EXPORT, params), 400, field)


def test_export_streams_in_a_constant_number_of_queries(
    auditor_api, analyst_api, django_assert_max_num_queries
):
    analyst_api.post(
        "/api/v1/rules/bulk/",
        {
            "rules": [
                {"rule_type": "BINARY", "identifier": f"{n:064x}", "policy": "BLOCKLIST"}
                for n in range(1, 201)
            ]
        },
        format="json",
    )
    with django_assert_max_num_queries(5):
        response = auditor_api.get(EXPORT, {"format": "csv"})
        lines = content(response).splitlines()
    assert len(lines) == 201


# --- import ---------------------------------------------------------------------------------------


def test_import_santactl_json_with_scope_and_justification(
    analyst_api, make_agent, make_enrollment
):
    _, secret = make_enrollment(tags=["eng"])
    eng = make_agent(secret=secret)
    other = make_agent()
    eng.sync()
    other.sync()
    document = santactl(
        {"identifier": SHA_A, "policy": "BLACKLIST", "rule_type": "binary", "comment": "old"},
        {"identifier": TEAM, "policy": "ALLOWLIST", "rule_type": "TEAMID", "custom_msg": "ok"},
    )
    response = post_raw(
        analyst_api,
        json.dumps(document),
        "application/json",
        tags="ENG",
        justification="Moving from santactl.",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["dry_run"] is False and body["count"] == 2
    assert [(r["identifier"], r["policy"], r["comment"], r["tags"]) for r in body["results"]] == [
        (SHA_A, "BLOCKLIST", "old", ["eng"]),
        (TEAM, "ALLOWLIST", "Moving from santactl.", ["eng"]),
    ]
    assert all(r["id"] for r in body["results"])
    eng.sync()
    other.sync()
    assert eng.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST"),
        ("TEAMID", TEAM): held("ALLOWLIST", "ok"),
    }
    assert other.rules == {}
    entries = AuditEntry.objects.filter(action="rule.bulk_create")
    assert entries.count() == 2
    assert {e.justification for e in entries} == {"Moving from santactl."}


def test_import_csv_body_for_hosts(analyst_api, agent):
    agent.sync()
    text = f"rule_type,identifier,policy,comment\nBINARY,{SHA_A},BLOCKLIST,one\n"
    response = post_raw(analyst_api, text, "text/csv", machine_ids=agent.machine_id)
    assert response.status_code == 201, response.content
    assert response.json()["results"][0]["machine_ids"] == [agent.machine_id]
    agent.sync()
    assert agent.rules == {("BINARY", SHA_A): held("BLOCKLIST")}


def test_import_multipart_upload_with_form_fields(analyst_api):
    upload = io.BytesIO(f"rule_type,identifier,policy\nTEAMID,{TEAM},ALLOWLIST\n".encode())
    upload.name = "rules.csv"
    response = analyst_api.post(
        IMPORT, {"file": upload, "justification": "Upload.", "dry_run": "false"}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert Rule.objects.get().comment == "Upload."


def test_import_multipart_format_field_overrides_the_name(analyst_api):
    upload = io.BytesIO(
        json.dumps(
            santactl({"identifier": TEAM, "policy": "ALLOWLIST", "rule_type": "TEAMID"})
        ).encode()
    )
    upload.name = "rules.txt"
    response = analyst_api.post(IMPORT, {"file": upload, "format": "santactl"}, format="multipart")
    assert response.status_code == 201, response.content


def test_dry_run_creates_nothing_and_says_what_would_be_created(analyst_api):
    before = rules_state()
    entries = AuditEntry.objects.count()
    document = santactl({"identifier": "eqhxz8m8av", "policy": "allowlist", "rule_type": "teamid"})
    response = post_raw(analyst_api, json.dumps(document), "application/json", dry_run="true")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["dry_run"] is True and body["count"] == 1
    assert body["results"][0]["id"] is None
    assert body["results"][0]["identifier"] == TEAM  # normalised as the real import would
    assert rules_state() == before
    assert AuditEntry.objects.count() == entries


def test_dry_run_finds_conflicts_with_existing_rules(analyst_api):
    create(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="BLOCKLIST")
    before = rules_state()
    document = santactl({"identifier": TEAM, "policy": "ALLOWLIST", "rule_type": "TEAMID"})
    response = post_raw(analyst_api, json.dumps(document), "application/json", dry_run="1")
    body = assert_error(response, 409, "identifier")
    assert body["detail"].startswith("Item 1, field identifier:") and body["index"] == 0
    assert rules_state() == before


@pytest.mark.parametrize(
    ("body", "content_type", "field", "where"),
    [
        (
            '{"rules": [{"identifier": "x", "policy": "ALLOWLIST"}]}',
            "application/json",
            "rule_type",
            "Item 1",
        ),
        (
            json.dumps(
                santactl(
                    {"identifier": SHA_A, "policy": "ALLOWLIST", "rule_type": "BINARY"},
                    {"identifier": "nothex", "policy": "ALLOWLIST", "rule_type": "BINARY"},
                )
            ),
            "application/json",
            "identifier",
            "Item 2",
        ),
        (
            json.dumps(
                santactl(
                    {"identifier": SHA_A, "policy": "ALLOWLIST_LOCAL_BINARY", "rule_type": "BINARY"}
                )
            ),
            "application/json",
            "policy",
            "Item 1",
        ),
        (
            f"rule_type,identifier,policy\nBINARY,{SHA_A},ALLOWLIST\nTEAMID,{TEAM},NOPE\n",
            "text/csv",
            "policy",
            "Row 3",
        ),
        (
            f"rule_type,identifier,policy,custom_url\nBINARY,{SHA_A},ALLOWLIST,ftp://x\n",
            "text/csv",
            "custom_url",
            "Row 2",
        ),
        ('{"rules": [], "extra": 1}', "application/json", "file", "Unknown top-level"),
        ("{not json", "application/json", "file", "Not valid JSON"),
        ("rule_type,identifier\nBINARY,x\n", "text/csv", "file", "missing column"),
        (b"\xff\xfe", "text/csv", "file", "not UTF-8"),
        ("", "application/json", "file", "empty"),
    ],
)
def test_import_refusals_name_the_item_and_field_and_store_nothing(
    analyst_api, body, content_type, field, where
):
    before = rules_state()
    response = post_raw(analyst_api, body, content_type)
    result = assert_error(response, 400, field)
    assert where in result["detail"], result
    assert rules_state() == before
    assert not AuditEntry.objects.filter(action__startswith="rule.").exists()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tags": "Not A Tag"}, "tags"),
        ({"machine_ids": "NO-SUCH-MAC"}, "machine_ids"),
        ({"dry_run": "perhaps"}, "dry_run"),
        ({"justification": ["a", "b"]}, "justification"),
        ({"format": "csv"}, "format"),
        ({"scope": "tags"}, "scope"),
    ],
)
def test_import_option_refusals(analyst_api, params, field):
    before = rules_state()
    document = json.dumps(
        santactl({"identifier": TEAM, "policy": "ALLOWLIST", "rule_type": "TEAMID"})
    )
    assert_error(post_raw(analyst_api, document, "application/json", **params), 400, field)
    assert rules_state() == before


def test_import_option_both_in_query_and_form_is_refused(analyst_api):
    upload = io.BytesIO(f"rule_type,identifier,policy\nTEAMID,{TEAM},ALLOWLIST\n".encode())
    upload.name = "rules.csv"
    response = analyst_api.post(
        f"{IMPORT}?justification=a", {"file": upload, "justification": "b"}, format="multipart"
    )
    assert_error(response, 400, "justification")
    assert not Rule.objects.exists()


def test_import_of_another_content_type_is_415(analyst_api):
    response = post_raw(analyst_api, "<rules/>", "application/xml")
    assert_error(response, 415)
    assert not Rule.objects.exists()


def test_import_too_large_is_refused(analyst_api, settings):
    from rules import imports

    body = "rule_type,identifier,policy\n" + "x" * (imports.MAX_IMPORT_BYTES)
    response = post_raw(analyst_api, body, "text/csv")
    assert_error(response, 400, "file")
    assert not Rule.objects.exists()


def test_import_notes_what_was_left_out(analyst_api):
    document = santactl(
        {
            "identifier": TEAM,
            "policy": "ALLOWLIST",
            "rule_type": "TEAMID",
            "event_detail_button_label": "More",
        }
    )
    body = post_raw(analyst_api, json.dumps(document), "application/json").json()
    assert "event_detail_button_label" in body["notes"][0]


# --- round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["santactl", "csv"])
def test_export_then_import_on_an_empty_server_reproduces_the_rules(
    analyst_api, some_rules, file_format
):
    fields = (
        "rule_type",
        "identifier",
        "policy",
        "custom_msg",
        "custom_url",
        "cel_expr",
        "comment",
    )
    original = sorted(
        Rule.objects.filter(tags__isnull=True, hosts__isnull=True).values_list(*fields)
    )
    exported = content(analyst_api.get(EXPORT, {"format": file_format, "scope": "everyone"}))
    Rule.objects.all().delete()  # an empty server (rule history aside)
    content_type = "application/json" if file_format == "santactl" else "text/csv"
    response = post_raw(analyst_api, exported, content_type)
    assert response.status_code == 201, response.content
    assert sorted(Rule.objects.values_list(*fields)) == original
