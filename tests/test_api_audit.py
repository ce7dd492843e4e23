"""The audit-entries API: read-only, the console's filters, cursor pagination without a count."""

import pytest

from audit.models import AuditEntry
from hosts.services import tag_create
from tests.api import assert_error

URL = "/api/v1/audit-entries/"


@pytest.fixture
def trail(analyst_api):
    """Five tag creations by the analyst, and two rule creations (the ids of those entries,
    newest first; creating the fixtures' users recorded entries before them)."""
    for number in range(5):
        response = analyst_api.post("/api/v1/tags/", {"name": f"t{number}"}, format="json")
        assert response.status_code == 201
    for identifier in ("a" * 64, "b" * 64):
        analyst_api.post(
            "/api/v1/rules/",
            {"rule_type": "BINARY", "identifier": identifier, "policy": "BLOCKLIST"},
            format="json",
        )
    return list(
        AuditEntry.objects.filter(action__in=("tag.create", "rule.create"))
        .order_by("-id")
        .values_list("pk", flat=True)
    )


def test_newest_first_with_cursor_pages_and_no_count(auditor_api, trail):
    first = auditor_api.get(URL, {"page_size": 3}).json()
    assert "count" not in first
    assert [e["id"] for e in first["results"]] == trail[:3]
    assert first["previous"] is None
    second = auditor_api.get(first["next"]).json()
    assert [e["id"] for e in second["results"]] == trail[3:6]
    back = auditor_api.get(second["previous"]).json()
    assert [e["id"] for e in back["results"]] == trail[:3]


def test_an_entry_inserted_meanwhile_does_not_shift_the_next_page(auditor_api, trail):
    first = auditor_api.get(URL, {"page_size": 3}).json()
    tag_create(name="late")
    second = auditor_api.get(first["next"]).json()
    assert [e["id"] for e in second["results"]] == trail[3:6]


def test_entry_fields(auditor_api, trail):
    entry = auditor_api.get(f"{URL}{trail[-1]}/").json()
    assert (entry["actor"], entry["action"], entry["object_type"]) == ("ana", "tag.create", "tag")
    assert entry["after"] == {"name": "t0", "description": ""}
    assert entry["seq"] and len(entry["hash"]) == 64


def test_filters(auditor_api, trail):
    def actions(**params):
        return [e["action"] for e in auditor_api.get(URL, params).json()["results"]]

    assert actions(action="rule.create") == ["rule.create", "rule.create"]
    assert set(actions(actor="ana")) == {"tag.create", "rule.create"}
    assert actions(actor="nobody") == []
    assert actions(object_type="tag", q="t3") == ["tag.create"]
    tag_id = AuditEntry.objects.get(object_repr="t2").object_id
    assert actions(object_type="tag", object_id=tag_id) == ["tag.create"]
    assert len(actions(since="2000-01-01", until="2999-12-31")) == AuditEntry.objects.count()
    assert actions(until="2000-01-01") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"page_size": "ten"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
    ],
)
def test_bad_parameters_are_400_json(auditor_api, trail, params, field):
    assert_error(auditor_api.get(URL, params), 400, field)


def test_read_only_for_everyone(admin_api, trail):
    before = AuditEntry.objects.count()
    assert_error(admin_api.post(URL, {"action": "x"}, format="json"), 405)
    assert_error(admin_api.delete(f"{URL}{trail[0]}/"), 405)
    assert_error(admin_api.patch(f"{URL}{trail[0]}/", {"action": "x"}, format="json"), 405)
    assert AuditEntry.objects.count() == before


def test_a_page_is_a_constant_number_of_queries(auditor_api, trail, django_assert_max_num_queries):
    for number in range(40):
        tag_create(name=f"more-{number}")
    auditor_api.get(URL)  # the token's first use records it (then at most once a minute)
    # Auth (token with its user, permissions) and one page: no COUNT(*).
    with django_assert_max_num_queries(4) as captured:
        auditor_api.get(URL, {"page_size": 100})
    assert not [q for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
