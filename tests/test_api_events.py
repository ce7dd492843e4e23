"""The events API: events uploaded by simulated agents, every field, filters, hostile strings."""

from datetime import UTC, datetime

import pytest
from django.utils.dateparse import parse_datetime

from events.models import Event
from tests.api import assert_error

URL = "/api/v1/events/"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
TEAM = "EQHXZ8M8AV"
T0 = 1767225600  # 2026-01-01T00:00:00Z

CHAIN = [
    {
        "sha256": "1" * 64,
        "cn": "Developer ID Application: Example Corp (EQHXZ8M8AV)",
        "org": "Example Corp",
        "ou": TEAM,
        "valid_from": 1700000000,
        "valid_until": 1900000000,
    },
    {
        "sha256": "2" * 64,
        "cn": "Developer ID Certification Authority",
        "org": "Apple Inc.",
        "ou": "Apple Certification Authority",
        "valid_from": 1300000000,
        "valid_until": 2000000000,
    },
]

FULL_EVENT = {
    "file_sha256": "AB" * 32,
    "file_path": "/Applications/Example.app/Contents/MacOS",
    "file_name": "Example",
    "executing_user": "alice",
    "execution_time": T0 + 0.25,
    "logged_in_users": ["alice", "bob"],
    "current_sessions": ["alice@console", "bob@ttys001"],
    "decision": "BLOCK_BINARY",
    "file_bundle_id": "com.example.app",
    "file_bundle_path": "/Applications/Example.app",
    "file_bundle_executable_rel_path": "Contents/MacOS/Example",
    "file_bundle_name": "Example",
    "file_bundle_version": "1234",
    "file_bundle_version_string": "1.2.3",
    "file_bundle_hash": "cd" * 32,
    "file_bundle_hash_millis": 250,
    "file_bundle_binary_count": 3,
    "pid": 4242,
    "ppid": 1,
    "parent_name": "launchd",
    "team_id": TEAM,
    "signing_id": f"{TEAM}:com.example.app",
    "cdhash": "ef" * 20,
    "quarantine_data_url": "https://downloads.example.com/example.dmg",
    "quarantine_referer_url": "https://example.com/download",
    "quarantine_timestamp": T0 - 86400,
    "quarantine_agent_bundle_id": "com.apple.Safari",
    "signing_chain": CHAIN,
    "entitlement_info": {
        "entitlements_filtered": True,
        "entitlements": [
            {"key": "com.apple.security.cs.allow-jit", "value": "true"},
            {"key": "com.apple.security.get-task-allow", "value": "false"},
        ],
    },
    "cs_flags": 570522385,
    "signing_status": "SIGNING_STATUS_PRODUCTION",
    "secure_signing_time": T0 - 3600,
    "signing_time": T0 - 7200,
    "static_rule": True,
}

TIME_FIELDS = ("execution_time", "quarantine_timestamp", "secure_signing_time", "signing_time")


def event(sha=SHA_A, decision="ALLOW_BINARY", at=T0, **fields) -> dict:
    return {
        "file_sha256": sha,
        "decision": decision,
        "execution_time": at,
        "file_name": "tool",
        **fields,
    }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def upload(agent, *events) -> None:
    """Send events through a full (normal) sync, as the agent does."""
    if agent.wanted_sync != "NORMAL":
        agent.sync()  # the first sync is clean, and a clean sync drops pending events
    for item in events:
        agent.add_event(**item)
    result = agent.sync()
    assert result.sync_type == "NORMAL"
    assert result.events_uploaded == len(events)
    assert ("eventupload", 200) in agent.requests


def listed(api, **params) -> list:
    response = api.get(URL, {"page_size": 1000, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(body["results"])
    return body["results"]


# --- fields ---------------------------------------------------------------------------------------


def test_every_uploaded_field_is_returned(auditor_api, agent):
    upload(agent, FULL_EVENT)
    (item,) = listed(auditor_api)

    assert item["machine_id"] == agent.machine_id
    assert item["file_sha256"] == FULL_EVENT["file_sha256"].lower()
    for name in TIME_FIELDS:
        assert parse_datetime(item[name]).timestamp() == FULL_EVENT[name], name
    assert item["signing_chain"] == CHAIN
    assert item["entitlements"] == FULL_EVENT["entitlement_info"]["entitlements"]
    assert item["entitlements_filtered"] is True
    skip = {"file_sha256", "signing_chain", "entitlement_info", *TIME_FIELDS}
    for name, value in FULL_EVENT.items():
        if name not in skip:
            assert item[name] == value, name
    assert parse_datetime(item["received_at"]) is not None
    assert isinstance(item["id"], int)
    assert "dedupe_key" not in item and "host" not in item

    response = auditor_api.get(f"{URL}{item['id']}/")
    assert response.status_code == 200
    assert response.json() == item


def test_minimal_event_has_empty_defaults(analyst_api, agent):
    upload(agent, {"file_sha256": SHA_B, "decision": "ALLOW_UNKNOWN", "execution_time": T0})
    (item,) = listed(analyst_api)
    assert item["file_sha256"] == SHA_B
    assert item["decision"] == "ALLOW_UNKNOWN"
    assert item["file_name"] == "" and item["signing_chain"] == [] and item["entitlements"] == []
    assert item["pid"] is None and item["quarantine_timestamp"] is None
    assert item["static_rule"] is False


def test_resent_event_is_stored_once(analyst_api, agent):
    upload(agent, event(pid=7))
    upload(agent, event(pid=7), event(pid=8))
    assert sorted(item["pid"] for item in listed(analyst_api)) == [7, 8]


def test_unknown_event_is_404_json(analyst_api, agent):
    upload(agent, event())
    assert_error(analyst_api.get(f"{URL}{Event.objects.get().pk + 100}/"), 404)


# --- filters --------------------------------------------------------------------------------------


@pytest.fixture
def fleet_events(make_agent):
    one, two = make_agent(), make_agent()
    upload(
        one,
        event(SHA_A, "ALLOW_BINARY", T0, pid=1),
        event(SHA_B, "BLOCK_BINARY", T0 + 100, pid=2),
        event(SHA_C, "BLOCK_CERTIFICATE", T0 + 200, pid=3),
    )
    upload(
        two,
        event(SHA_A, "BLOCK_UNKNOWN", T0 + 300, pid=4),
        event(SHA_B, "ALLOW_TEAMID", T0 + 400, pid=5),
    )
    return one, two


def pids(items) -> list:
    return [item["pid"] for item in items]


def test_events_are_newest_first(analyst_api, fleet_events):
    assert pids(listed(analyst_api)) == [5, 4, 3, 2, 1]


def test_filter_machine_id(analyst_api, fleet_events):
    one, two = fleet_events
    assert pids(listed(analyst_api, machine_id=one.machine_id)) == [3, 2, 1]
    assert pids(listed(analyst_api, machine_id=two.machine_id)) == [5, 4]
    assert listed(analyst_api, machine_id="NO-SUCH-MACHINE") == []


def test_filter_file_sha256(analyst_api, fleet_events):
    assert pids(listed(analyst_api, file_sha256=SHA_A)) == [4, 1]
    assert pids(listed(analyst_api, file_sha256=SHA_C)) == [3]
    assert listed(analyst_api, file_sha256="f" * 64) == []


def test_filter_decision_one_or_several(analyst_api, fleet_events):
    assert pids(listed(analyst_api, decision="BLOCK_BINARY")) == [2]
    assert pids(listed(analyst_api, decision=["BLOCK_BINARY", "BLOCK_UNKNOWN"])) == [4, 2]
    assert pids(listed(analyst_api, decision=["ALLOW_BINARY", "ALLOW_TEAMID"])) == [5, 1]
    assert listed(analyst_api, decision="ALLOW_CDHASH") == []


def test_filter_since_and_until(analyst_api, fleet_events):
    assert pids(listed(analyst_api, since=iso(T0 + 150))) == [5, 4, 3]
    assert pids(listed(analyst_api, until=iso(T0 + 150))) == [2, 1]
    assert pids(listed(analyst_api, since=iso(T0 + 50), until=iso(T0 + 350))) == [4, 3, 2]
    assert listed(analyst_api, since=iso(T0 + 1000)) == []
    # A zone offset other than UTC means the same instant.
    assert pids(listed(analyst_api, since="2026-01-01T02:02:30+02:00")) == [5, 4, 3]


def test_filters_combine(analyst_api, fleet_events):
    one, _ = fleet_events
    items = listed(
        analyst_api,
        machine_id=one.machine_id,
        decision=["BLOCK_BINARY", "BLOCK_CERTIFICATE", "BLOCK_UNKNOWN"],
        since=iso(T0 + 50),
    )
    assert pids(items) == [3, 2]


@pytest.mark.parametrize(
    "params",
    [
        {"decision": "block_binary"},
        {"decision": "NOT_A_DECISION"},
        {"since": "yesterday"},
        {"until": "2026-13-45T99:00:00Z"},
    ],
)
def test_invalid_filter_values_are_400(analyst_api, fleet_events, params):
    body = assert_error(analyst_api.get(URL, params), 400)
    assert next(iter(params)) in body["fields"]


def test_events_paginate(analyst_api, fleet_events):
    first = analyst_api.get(URL, {"page_size": 2}).json()
    assert first["count"] == 5 and pids(first["results"]) == [5, 4]
    second = analyst_api.get(first["next"]).json()
    assert pids(second["results"]) == [3, 2]


# --- hostile strings ------------------------------------------------------------------------------

HOSTILE = {
    "file_name": "<script>alert('x')</script>",
    "file_path": '/Users/alice/"><img src=x onerror=alert(1)>',
    "executing_user": "robert'); DROP TABLE events_event;--",
    "parent_name": '{"injected": true} \\u0000 ${jndi:ldap://x}',
    "file_bundle_name": "Ünïcödé ✓ 🍎 مرحبا",
    "quarantine_data_url": "javascript:alert(document.cookie)",
}


def test_hostile_strings_are_returned_verbatim_as_json(analyst_api, agent):
    upload(agent, event(**HOSTILE))
    response = analyst_api.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["X-Content-Type-Options"] == "nosniff"
    (item,) = response.json()["results"]
    for name, value in HOSTILE.items():
        assert item[name] == value, name
    assert Event.objects.get().file_name == HOSTILE["file_name"]
    # Filtering by a hostile value is plain data too.
    assert len(listed(analyst_api, machine_id="x' OR '1'='1")) == 0
