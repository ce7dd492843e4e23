"""API_MAX_BULK_RULES: how many rules one request may create or delete (bulk create, bulk
delete, import through the API and the console). Over it: 400 naming the setting, nothing
written; at it: accepted."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEntry
from rules.models import Rule
from rules.services import RuleInput, rule_create
from tests.api import assert_error

LIMIT = 3


def sha(n: int) -> str:
    return f"{n:064x}"


def item(n: int) -> dict:
    return {"rule_type": "BINARY", "identifier": sha(n), "policy": "BLOCKLIST"}


def state() -> tuple:
    return (
        sorted(Rule.objects.values_list("pk", "identifier")),
        AuditEntry.objects.count(),
    )


@pytest.fixture(autouse=True)
def low_limit(settings):
    settings.API_MAX_BULK_RULES = LIMIT


def named(body: dict, field: str) -> None:
    text = " ".join(body["fields"][field]) if field in body.get("fields", {}) else body["detail"]
    assert "API_MAX_BULK_RULES" in text and str(LIMIT) in text, body


def test_bulk_create_over_the_limit(analyst_api):
    before = state()
    response = analyst_api.post(
        "/api/v1/rules/bulk/", {"rules": [item(n) for n in range(LIMIT + 1)]}, format="json"
    )
    named(assert_error(response, 400, "rules"), "rules")
    assert state() == before


def test_bulk_create_at_the_limit(analyst_api):
    response = analyst_api.post(
        "/api/v1/rules/bulk/", {"rules": [item(n) for n in range(LIMIT)]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert Rule.objects.count() == LIMIT


def test_bulk_delete_over_the_limit(analyst_api):
    ids = [rule_create(data=RuleInput("BINARY", sha(n), "BLOCKLIST")).pk for n in range(LIMIT + 1)]
    before = state()
    response = analyst_api.post(
        "/api/v1/rules/bulk-delete/", {"ids": ids, "justification": "cleanup"}, format="json"
    )
    named(assert_error(response, 400, "ids"), "ids")
    assert state() == before
    response = analyst_api.post(
        "/api/v1/rules/bulk-delete/", {"ids": ids[:LIMIT], "justification": "x"}, format="json"
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("file_format", ["json", "csv"])
def test_api_import_over_the_limit(analyst_api, file_format):
    if file_format == "json":
        body, content_type = json.dumps({"rules": [item(n) for n in range(LIMIT + 1)]}), "json"
    else:
        rows = "".join(f"BINARY,{sha(n)},BLOCKLIST\n" for n in range(LIMIT + 1))
        body, content_type = "rule_type,identifier,policy\n" + rows, "csv"
    before = state()
    response = analyst_api.generic(
        "POST",
        "/api/v1/rules/import/",
        body.encode(),
        content_type="application/json" if content_type == "json" else "text/csv",
    )
    named(assert_error(response, 400), "file")
    assert state() == before


def test_console_import_over_the_limit(analyst_console):
    content = json.dumps({"rules": [item(n) for n in range(LIMIT + 1)]}).encode()
    before = state()
    response = analyst_console.post(
        "/rules/import/",
        {
            "file": SimpleUploadedFile("rules.json", content, content_type="application/json"),
            "file_format": "auto",
            "scope": "everyone",
            "justification": "migration",
        },
    )
    assert response.status_code == 400
    assert "API_MAX_BULK_RULES (3)" in " ".join(response.context["form"].errors["file"])
    assert state() == before


@pytest.mark.parametrize("rule_id", [2**63, 2**64 + 5, 10**30])
def test_bulk_delete_id_beyond_64_bits_is_a_400(analyst_api, rule_id):
    """Found by tests/test_fuzz_forms.py: an id past BigAutoField's range reached the database
    (OverflowError on SQLite, an out-of-range error on PostgreSQL): a 500."""
    rule = rule_create(data=RuleInput("BINARY", sha(1), "BLOCKLIST"))
    before = state()
    response = analyst_api.post(
        "/api/v1/rules/bulk-delete/", {"ids": [rule.pk, rule_id]}, format="json"
    )
    assert_error(response, 400, "ids")
    assert state() == before
