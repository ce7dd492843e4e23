"""The binaries and certificates API: the catalogue agents' events built, its statistics, a
binary's signing chain, entitlements and matching rules, and their filters."""

import pytest

from tests.api import assert_error

BINARIES = "/api/v1/binaries/"
CERTIFICATES = "/api/v1/certificates/"
SHA_BLOCKED = "a" * 64
SHA_ALLOWED = "b" * 64
LEAF, ROOT, UNKNOWN = "1" * 64, "2" * 64, "3" * 64
TEAM = "EQHXZ8M8AV"
T0 = 1767225600

CHAIN = [
    {
        "sha256": LEAF,
        "cn": "Developer ID Application: Example Corp (EQHXZ8M8AV)",
        "org": "Example Corp",
        "ou": TEAM,
        "valid_from": 1700000000,
        "valid_until": 1900000000,
    },
    {
        "sha256": ROOT,
        "cn": "Developer ID Certification Authority",
        "org": "Apple Inc.",
        "ou": "Apple Certification Authority",
        "valid_from": 1300000000,
        "valid_until": 2000000000,
    },
]


@pytest.fixture
def catalogue(make_agent):
    """Two Macs: both blocked Example (signed, with entitlements), one ran an allowed tool."""
    first, second = make_agent(), make_agent()
    for number, agent in enumerate((first, second)):
        agent.sync()
        agent.upload_events(
            [
                {
                    "file_sha256": SHA_BLOCKED,
                    "file_name": "Example",
                    "decision": "BLOCK_UNKNOWN",
                    "execution_time": T0 + number,
                    "executing_user": f"user{number}",
                    "team_id": TEAM,
                    "signing_id": f"{TEAM}:com.example.app",
                    "signing_chain": CHAIN,
                    "entitlement_info": {
                        "entitlements": [{"key": "com.apple.security.cs.allow-jit", "value": "1"}]
                    },
                }
            ]
        )
    first.upload_events(
        [
            {
                "file_sha256": SHA_ALLOWED,
                "file_name": "tool",
                "decision": "ALLOW_BINARY",
                "execution_time": T0 + 5,
                "executing_user": "user0",
            }
        ]
    )
    return first, second


def test_list_defaults_to_blocked_binaries_with_statistics(auditor_api, catalogue):
    body = auditor_api.get(BINARIES).json()
    assert body["count"] == 1
    binary = body["results"][0]
    assert binary["sha256"] == SHA_BLOCKED
    assert (
        binary["executions"],
        binary["blocked"],
        binary["host_count"],
        binary["user_count"],
    ) == (
        2,
        2,
        2,
        2,
    )
    assert binary["leaf_certificate"]["sha256"] == LEAF
    assert binary["leaf_certificate"]["ou"] == TEAM
    assert binary["last_decision"] == "BLOCK_UNKNOWN"


def test_list_filters_are_the_consoles(auditor_api, catalogue):
    first, _ = catalogue

    def shas(**params):
        return [b["sha256"] for b in auditor_api.get(BINARIES, params).json()["results"]]

    assert shas(outcome="any") == [SHA_BLOCKED, SHA_ALLOWED]
    assert shas(outcome="any", q="tool") == [SHA_ALLOWED]
    assert shas(q=SHA_BLOCKED[:8]) == [SHA_BLOCKED]
    assert shas(team_id=TEAM.lower()) == [SHA_BLOCKED]
    assert shas(outcome="any", machine_id=first.machine_id, ordering="name") == [
        SHA_BLOCKED,
        SHA_ALLOWED,
    ]
    assert shas(user="user1") == [SHA_BLOCKED]
    assert shas(rule="some") == []
    auditor_api_rules = shas(rule="none")
    assert auditor_api_rules == [SHA_BLOCKED]
    assert_error(auditor_api.get(BINARIES, {"outcome": "sometimes"}), 400, "outcome")
    assert_error(auditor_api.get(BINARIES, {"since": "yesterday"}), 400, "since")


def test_detail_has_chain_entitlements_and_matching_rules(analyst_api, catalogue):
    team_rule = analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "TEAMID", "identifier": TEAM, "policy": "ALLOWLIST"},
        format="json",
    ).json()
    binary_rule = analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": SHA_BLOCKED, "policy": "BLOCKLIST"},
        format="json",
    ).json()
    response = analyst_api.get(f"{BINARIES}{SHA_BLOCKED.upper()}/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [c["sha256"] for c in body["signing_chain"]] == [LEAF, ROOT]
    assert body["signing_chain"][1]["org"] == "Apple Inc."
    assert body["entitlements"]
    # Most specific type first, as Santa evaluates them.
    assert [r["id"] for r in body["rules"]] == [binary_rule["id"], team_rule["id"]]
    assert body["rules"][0]["created_by"] == "ana"


def test_detail_of_a_binary_outside_the_default_list(auditor_api, catalogue):
    assert auditor_api.get(f"{BINARIES}{SHA_ALLOWED}/").status_code == 200


def test_a_chain_certificate_missing_from_the_catalogue_is_its_sha(auditor_api, catalogue):
    from events.models import Binary

    Binary.objects.filter(pk=SHA_BLOCKED).update(signing_chain=[LEAF, UNKNOWN])
    chain = auditor_api.get(f"{BINARIES}{SHA_BLOCKED}/").json()["signing_chain"]
    assert chain[1] == {"sha256": UNKNOWN}


@pytest.mark.parametrize("sha", ["f" * 64, "g" * 64, "a" * 63])
def test_unknown_or_malformed_sha_is_404_json(auditor_api, catalogue, sha):
    assert_error(auditor_api.get(f"{BINARIES}{sha}/"), 404)
    assert_error(auditor_api.get(f"{CERTIFICATES}{sha}/"), 404)


def test_binary_list_queries_are_bounded(auditor_api, make_agent, django_assert_max_num_queries):
    agent = make_agent()
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": f"{number:064x}",
                "decision": "BLOCK_UNKNOWN",
                "execution_time": T0 + number,
                "signing_chain": CHAIN,
            }
            for number in range(1, 31)
        ]
    )
    with django_assert_max_num_queries(6):
        body = auditor_api.get(BINARIES, {"page_size": 100}).json()
    assert body["count"] == 30


def test_certificates_list_detail_and_filters(auditor_api, catalogue):
    body = auditor_api.get(CERTIFICATES).json()
    assert {c["sha256"] for c in body["results"]} == {LEAF, ROOT}

    def shas(**params):
        return [c["sha256"] for c in auditor_api.get(CERTIFICATES, params).json()["results"]]

    assert shas(cn="developer id application") == [LEAF]
    assert shas(org="apple") == [ROOT]
    assert shas(ou=TEAM) == [LEAF]
    assert shas(valid_until_before="2031-01-01T00:00:00Z") == [LEAF]
    assert shas(valid_until_after="2031-01-01T00:00:00Z") == [ROOT]
    assert_error(auditor_api.get(CERTIFICATES, {"valid_until_before": "soon"}), 400)
    detail = auditor_api.get(f"{CERTIFICATES}{LEAF.upper()}/").json()
    assert detail["cn"].startswith("Developer ID Application")


def test_binaries_and_certificates_are_read_only(admin_api, catalogue):
    for url in (BINARIES, f"{BINARIES}{SHA_BLOCKED}/", CERTIFICATES, f"{CERTIFICATES}{LEAF}/"):
        assert_error(admin_api.post(url, {}, format="json"), 405)
        assert_error(admin_api.delete(url), 405)
