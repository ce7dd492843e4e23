"""What each report holds, checked against data made through the real services and simulated
agents syncing through the real endpoints; both formats; filters and period bounds."""

from __future__ import annotations

import datetime
import itertools

import pytest
from django.contrib.auth.models import User

from audit.chain import entry_hash
from audit.models import AuditEntry
from events.approvals import approval_request_approve, approval_request_submit
from events.models import ApprovalRequest, Binary
from hosts.models import Host
from hosts.selectors import configuration_for_host
from hosts.services import host_set_tags, hosts_mark_stale, profile_create
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_update
from rules.tracking import delivery_summaries_refresh
from tests.reports_support import export

T0 = 1767225600  # 2026-01-01T00:00:00Z
SHA_TOOL = "7e" * 32
SHA_GAME = "9a" * 32
SHA_EDITOR = "3c" * 32
TEAM = "EQHXZ8M8AV"
LEAF = "ab" * 32
FORMULA = '=HYPERLINK("http://evil.example","x")'


def iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(sha: str, decision: str, at: int, user: str, **extra) -> dict:
    return {
        "file_sha256": sha,
        "decision": decision,
        "execution_time": at,
        "executing_user": user,
        "file_path": "/usr/local/bin",
        "pid": at % 10_000,
        "ppid": 1,
        "parent_name": "zsh",
        **extra,
    }


@pytest.fixture
def world(make_agent, django_capture_on_commit_callbacks):
    """Two hosts in sync, a third that never completed a sync; executions of three
    binaries; three rules: one from an approved request, one changed, one for a host."""
    analyst = User.objects.create_user("ana-reports")
    dana = make_agent(hostname="dana-mbp.example.com", primary_user="dana")
    erin = make_agent(hostname="erin-mbp.example.com", primary_user="erin")
    fresh = make_agent(hostname="new-mac.example.com")
    dana.sync()  # the first sync of an agent is clean, which drops its pending events
    erin.sync()
    host_dana = Host.objects.get(machine_id=dana.machine_id)
    host_erin = Host.objects.get(machine_id=erin.machine_id)
    host_set_tags(host=host_dana, tag_names=["eng"])
    profile_create(name="eng-lockdown", values={"client_mode": "LOCKDOWN"}, tag_names=["eng"])
    signed = {
        "team_id": TEAM,
        "signing_id": f"{TEAM}:com.example.tool",
        "signing_chain": [{"sha256": LEAF, "cn": "Developer ID Application: Example (TEAM)"}],
    }
    dana.add_event(**event(SHA_TOOL, "BLOCK_BINARY", T0, "dana", file_name=FORMULA, **signed))
    dana.add_event(**event(SHA_GAME, "ALLOW_UNKNOWN", T0 + 3600, "erin", file_name="game"))
    dana.add_event(**event(SHA_EDITOR, "ALLOW_BINARY", T0 + 7200, "dana", file_name="editor"))
    erin.add_event(
        **event(SHA_TOOL, "BLOCK_TEAMID", T0 + 86400, "erin", file_name=FORMULA, **signed)
    )
    dana.sync()
    erin.sync()
    fresh.preflight()  # registered, never completed a sync

    with django_capture_on_commit_callbacks(execute=True):
        request = approval_request_submit(
            binary=Binary.objects.get(pk=SHA_TOOL),
            host=host_dana,
            requester="dana",
            reason="I need it for builds",
        )
        approved = approval_request_approve(
            request=request,
            actor=analyst,
            rule_type="BINARY",
            tags=["eng"],
            justification="Needed for the release builds",
        )
        team = rule_create(
            data=RuleInput("TEAMID", TEAM, "BLOCKLIST", excluded_tags=("eng",)),
            actor=analyst,
            justification="Known bad team",
        )
        team = rule_update(
            rule=team,
            data=RuleInput("TEAMID", TEAM, "SILENT_BLOCKLIST", excluded_tags=("eng",)),
            actor=analyst,
            justification="Quieter",
        )
        pinned = rule_create(
            data=RuleInput("CDHASH", "f" * 40, "ALLOWLIST", machine_ids=(erin.machine_id,)),
            actor=analyst,
            justification="Erin's signed build",
        )
    delivery_summaries_refresh([approved.pk, team.pk, pinned.pk])
    for _ in range(2):  # the second preflight reports the rules the first sync brought
        dana.sync()
        erin.sync()
    hosts_mark_stale(now=datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
    Host.objects.filter(pk=host_dana.pk).update(stale_since=None)  # dana is still alive
    return {
        "analyst": analyst,
        "dana": host_dana,
        "erin": host_erin,
        "fresh": Host.objects.get(machine_id=fresh.machine_id),
        "request": ApprovalRequest.objects.get(),
        "approved": Rule.objects.get(pk=approved.pk),
        "team": Rule.objects.get(pk=team.pk),
        "pinned": Rule.objects.get(pk=pinned.pk),
    }


# --- rules ----------------------------------------------------------------------------------------


def test_rules_inventory_has_provenance_scope_and_delivery(world, auditor_api):
    _, rows = export(auditor_api, "rules")
    by_id = {int(row["id"]): row for row in rows}
    assert list(by_id) == sorted(r.pk for r in (world["approved"], world["team"], world["pinned"]))
    approved, team, pinned = (by_id[world[name].pk] for name in ("approved", "team", "pinned"))
    machine = world["dana"].machine_id

    assert (approved["rule_type"], approved["identifier"], approved["policy"]) == (
        "BINARY",
        SHA_TOOL,
        "ALLOWLIST",
    )
    assert (approved["scope"], approved["tags"], approved["machine_ids"]) == ("tags", "eng", "")
    assert approved["created_by"] == "ana-reports"
    assert approved["justification"] == "Needed for the release builds"
    assert approved["approved_by"] == "ana-reports"
    assert approved["approval_requests"] == str(world["request"].pk)
    assert approved["requesters"] == f"dana@{machine}"
    # The last execution of a binary the rule matches: the tool, last run on erin's Mac.
    assert approved["last_matching_execution"] == iso(T0 + 86400)

    assert (team["scope"], team["excluded_tags"], team["policy"]) == (
        "everyone",
        "eng",
        "SILENT_BLOCKLIST",
    )
    assert team["justification"] == "Known bad team"
    assert (team["updated_by"], team["last_change_justification"]) == ("ana-reports", "Quieter")
    assert (team["approved_by"], team["approval_requests"], team["requesters"]) == ("", "", "")
    assert team["last_matching_execution"] == iso(T0 + 86400)  # the tool is signed by TEAM

    assert (pinned["scope"], pinned["machine_ids"]) == ("hosts", world["erin"].machine_id)
    assert pinned["last_matching_execution"] == ""  # no binary with that CDHash ran
    assert pinned["last_change_justification"] == ""

    for rule in (world["approved"], world["team"], world["pinned"]):
        row = by_id[rule.pk]
        assert row["delivery_target_hosts"] == str(rule.target_hosts)
        assert row["delivery_confirmed_hosts"] == str(rule.confirmed_hosts)
        assert int(row["delivery_pending_hosts"]) == rule.target_hosts - rule.confirmed_hosts
        assert row["delivery_checked_at"].endswith("Z")
        assert row["created_at"] == rule.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert world["pinned"].target_hosts == 1


def test_rules_json_has_the_same_rows_typed(world, auditor_api):
    _, csv_rows = export(auditor_api, "rules", "csv")
    response, json_rows = export(auditor_api, "rules", "json")
    assert len(json_rows) == len(csv_rows) == 3
    by_id = {row["id"]: row for row in json_rows}
    approved = by_id[world["approved"].pk]
    assert approved["tags"] == ["eng"] and approved["machine_ids"] == []
    assert approved["approval_requests"] == [world["request"].pk]
    assert approved["delivery_target_hosts"] == world["approved"].target_hosts
    assert by_id[world["pinned"].pk]["last_matching_execution"] is None
    assert response["Content-Type"] == "application/json"


def test_rules_filters_are_the_rule_lists(world, auditor_api):
    _, rows = export(auditor_api, "rules", scope="hosts")
    assert [int(r["id"]) for r in rows] == [world["pinned"].pk]
    _, rows = export(auditor_api, "rules", rule_type=["TEAMID", "CDHASH"])
    assert {int(r["id"]) for r in rows} == {world["team"].pk, world["pinned"].pk}
    _, rows = export(auditor_api, "rules", tag="eng")
    assert [int(r["id"]) for r in rows] == [world["approved"].pk]
    # Stale: no binary the rule matches ran in the last N days (all ran in 2026 or never).
    _, rows = export(auditor_api, "rules", stale_days=1)
    assert len(rows) == 3


# --- executions -----------------------------------------------------------------------------------


def test_executions_lists_blocked_and_would_block_in_time_order(world, auditor_api):
    _, rows = export(auditor_api, "executions")
    assert [(r["file_sha256"], r["decision"], r["outcome"]) for r in rows] == [
        (SHA_TOOL, "BLOCK_BINARY", "blocked"),
        (SHA_GAME, "ALLOW_UNKNOWN", "would_block"),
        (SHA_TOOL, "BLOCK_TEAMID", "blocked"),
    ]
    first = rows[0]
    assert first["execution_time"] == iso(T0)
    assert (first["machine_id"], first["hostname"]) == (
        world["dana"].machine_id,
        "dana-mbp.example.com",
    )
    assert (first["executing_user"], first["team_id"], first["signing_id"]) == (
        "dana",
        TEAM,
        f"{TEAM}:com.example.tool",
    )
    assert (first["certificate_sha256"], first["certificate_cn"]) == (
        LEAF,
        "Developer ID Application: Example (TEAM)",
    )
    assert (first["file_path"], first["parent_name"], first["ppid"]) == (
        "/usr/local/bin",
        "zsh",
        "1",
    )
    # A file name an agent sent as a spreadsheet formula is text in the CSV...
    assert first["file_name"] == "'" + FORMULA
    # ...and exactly what the agent sent in the JSON.
    _, json_rows = export(auditor_api, "executions", "json")
    assert json_rows[0]["file_name"] == FORMULA
    assert json_rows[0]["pid"] == T0 % 10_000


def test_executions_period_is_since_inclusive_until_exclusive(world, auditor_api):
    _, rows = export(auditor_api, "executions", since=iso(T0), until=iso(T0 + 86400))
    assert [r["execution_time"] for r in rows] == [iso(T0), iso(T0 + 3600)]
    _, rows = export(auditor_api, "executions", since="2026-01-01T00:00:01Z")
    assert [r["execution_time"] for r in rows] == [iso(T0 + 3600), iso(T0 + 86400)]
    # A time without an offset, and a date alone, are UTC.
    _, rows = export(auditor_api, "executions", since="2026-01-01T01:00", until="2026-01-02")
    assert [r["execution_time"] for r in rows] == [iso(T0 + 3600)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"outcome": "would_block"}, [SHA_GAME]),
        ({"outcome": "blocked"}, [SHA_TOOL, SHA_TOOL]),
        ({"decision": "BLOCK_TEAMID"}, [SHA_TOOL]),
        ({"decision": ["BLOCK_TEAMID", "ALLOW_UNKNOWN"]}, [SHA_GAME, SHA_TOOL]),
        ({"executing_user": "erin"}, [SHA_GAME, SHA_TOOL]),
        ({"file_sha256": SHA_TOOL.upper()}, [SHA_TOOL, SHA_TOOL]),
        ({"team_id": TEAM}, [SHA_TOOL, SHA_TOOL]),
        ({"signing_id": f"{TEAM}:com.example.tool"}, [SHA_TOOL, SHA_TOOL]),
    ],
)
def test_executions_filters(world, auditor_api, params, expected):
    _, rows = export(auditor_api, "executions", **params)
    assert [r["file_sha256"] for r in rows] == expected


def test_executions_filter_by_machine(world, auditor_api):
    _, rows = export(auditor_api, "executions", machine_id=world["erin"].machine_id)
    assert [(r["hostname"], r["decision"]) for r in rows] == [
        ("erin-mbp.example.com", "BLOCK_TEAMID")
    ]


def test_executions_grouped_by_host_user_binary_and_signer(world, auditor_api):
    _, rows = export(auditor_api, "executions", "json", group_by="host")
    assert [
        (r["hostname"], r["blocked"], r["would_block"], r["executions"], r["binaries"], r["users"])
        for r in rows
    ] == [("dana-mbp.example.com", 1, 1, 2, 2, 2), ("erin-mbp.example.com", 1, 0, 1, 1, 1)]
    assert (rows[0]["first_at"], rows[0]["last_at"]) == (iso(T0), iso(T0 + 3600))

    _, rows = export(auditor_api, "executions", "json", group_by="user")
    assert {r["executing_user"]: (r["blocked"], r["would_block"], r["hosts"]) for r in rows} == {
        "erin": (1, 1, 2),
        "dana": (1, 0, 1),
    }

    _, rows = export(auditor_api, "executions", "json", group_by="binary")
    assert [(r["file_sha256"], r["executions"], r["hosts"], r["users"]) for r in rows] == [
        (SHA_TOOL, 2, 2, 2),
        (SHA_GAME, 1, 1, 1),
    ]
    assert rows[0]["team_id"] == TEAM and rows[0]["certificate_cn"].startswith("Developer ID")

    _, rows = export(auditor_api, "executions", "json", group_by="signer")
    signers = {(r["team_id"], r["certificate_sha256"]): r for r in rows}
    assert signers[(TEAM, LEAF)]["blocked"] == 2
    assert signers[(TEAM, LEAF)]["certificate_cn"] == "Developer ID Application: Example (TEAM)"
    assert signers[("", None)]["would_block"] == 1  # the unsigned game

    _, rows = export(auditor_api, "executions", group_by="host", since=iso(T0 + 1))
    assert [(r["hostname"], r["blocked"], r["would_block"]) for r in rows] == [
        ("dana-mbp.example.com", "0", "1"),
        ("erin-mbp.example.com", "1", "0"),
    ]


# --- hosts ----------------------------------------------------------------------------------------


def test_hosts_compliance(world, auditor_api):
    _, rows = export(auditor_api, "hosts", "json")
    by_machine = {row["machine_id"]: row for row in rows}
    dana = by_machine[world["dana"].machine_id]
    erin = by_machine[world["erin"].machine_id]
    fresh = by_machine[world["fresh"].machine_id]

    assert dana["tags"] == ["eng"]
    assert (dana["reported_mode"], dana["configured_mode"]) == ("LOCKDOWN", "LOCKDOWN")
    assert dana["configured_mode_source"] == "profile:eng-lockdown"
    assert dana["mode_as_configured"] is True
    assert (dana["rules_status"], dana["stale"], dana["drifted"]) == ("in_sync", False, False)
    assert dana["rules_synced_revision"] == dana["current_revision"]
    assert dana["rules_reported"] == dana["rules_expected"] == 1  # the approved BINARY rule
    assert (dana["compliant"], dana["noncompliance"]) == (True, [])
    synced = Host.objects.get(pk=world["dana"].pk).last_postflight_at
    assert dana["last_successful_sync_at"] == synced.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    assert erin["configured_mode"] == "MONITOR" and erin["tags"] == []
    assert erin["rules_reported"] == erin["rules_expected"] == 2  # the team and CDHash rules
    assert (erin["stale"], erin["compliant"], erin["noncompliance"]) == (True, False, ["stale"])
    assert fresh["rules_status"] == "never_synced"
    assert fresh["rules_expected"] is None
    assert "never synced" in fresh["noncompliance"]


def test_hosts_configured_mode_is_the_per_host_configuration(world, auditor_api):
    from hosts.services import host_set_mode_override

    host_set_mode_override(host=world["erin"], client_mode="LOCKDOWN")
    _, rows = export(auditor_api, "hosts", "json")
    for row in rows:
        host = Host.objects.select_related("enrollment").get(machine_id=row["machine_id"])
        configuration = configuration_for_host(host)
        assert row["configured_mode"] == (configuration.client_mode or "")
        assert row["configured_mode_source"] == configuration.sources.get("client_mode", "")
    erin = next(r for r in rows if r["machine_id"] == world["erin"].machine_id)
    assert (erin["configured_mode_source"], erin["mode_as_configured"]) == ("host override", False)


def test_hosts_noncompliant_and_host_filters(world, auditor_api):
    _, rows = export(auditor_api, "hosts", noncompliant="true")
    assert {r["machine_id"] for r in rows} == {world["erin"].machine_id, world["fresh"].machine_id}
    _, rows = export(auditor_api, "hosts", noncompliant="false")
    assert [r["machine_id"] for r in rows] == [world["dana"].machine_id]
    _, rows = export(auditor_api, "hosts", stale="true")
    assert {r["machine_id"] for r in rows} == {world["erin"].machine_id, world["fresh"].machine_id}
    _, rows = export(auditor_api, "hosts", tag="eng")
    assert [r["machine_id"] for r in rows] == [world["dana"].machine_id]
    _, rows = export(auditor_api, "hosts", q="new-mac")
    assert [r["machine_id"] for r in rows] == [world["fresh"].machine_id]


def test_a_host_behind_the_fleet_revision_is_not_compliant(world, auditor_api):
    rule_create(data=RuleInput("BINARY", "1" * 64, "BLOCKLIST"), actor=world["analyst"])
    _, rows = export(auditor_api, "hosts", "json", machine_id=world["dana"].machine_id)
    [dana] = rows
    assert dana["rules_status"] == "behind"
    assert dana["noncompliance"] == ["behind the fleet revision"]


# --- audit ----------------------------------------------------------------------------------------


def _verify(row: dict) -> bool:
    """The chain's hash recomputed from an exported row alone (as an auditor would)."""
    fields = dict(row)
    fields["at"] = datetime.datetime.fromisoformat(row["at"].replace("Z", "+00:00"))
    return entry_hash(row["prev_hash"], row["seq"], fields) == row["hash"]


def test_audit_log_rows_verify_offline(world, auditor_api):
    _, rows = export(auditor_api, "audit", "json")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    # Every entry, the export's own (recorded before it starts) the last.
    assert len(rows) == AuditEntry.objects.count()
    assert (rows[-1]["action"], rows[-1]["actor_name"]) == ("report.generate", "audrey")
    assert all(_verify(row) for row in rows)
    assert all(a["hash"] == b["prev_hash"] for a, b in itertools.pairwise(rows))
    update = next(r for r in rows if r["action"] == "rule.update")
    assert update["before"]["policy"] == "BLOCKLIST"
    assert update["after"]["policy"] == "SILENT_BLOCKLIST"
    assert (update["actor_name"], update["justification"]) == ("ana-reports", "Quieter")
    # A tampered row no longer verifies.
    assert not _verify({**update, "justification": "Something else"})


def test_audit_log_filters_keep_each_row_verifiable(world, auditor_api):
    _, rows = export(auditor_api, "audit", "json", action="rule.update")
    assert [r["action"] for r in rows] == ["rule.update"]
    assert rows[0]["seq"] > 1 and _verify(rows[0])
    _, rows = export(auditor_api, "audit", "json", actor="ana-reports", object_type="rule")
    assert {r["action"] for r in rows} == {"rule.create", "rule.update"}


def test_audit_log_period(world, auditor_api):
    entries = list(AuditEntry.objects.order_by("seq"))
    middle = entries[len(entries) // 2]
    _, rows = export(auditor_api, "audit", "json", since=middle.at.isoformat())
    assert rows[0]["seq"] == min(e.seq for e in entries if e.at >= middle.at)
    _, rows = export(auditor_api, "audit", "json", until=middle.at.isoformat())
    assert rows and all(r["seq"] < middle.seq for r in rows)


def test_audit_csv_cells(world, auditor_api):
    _, rows = export(auditor_api, "audit", action="rule.update")
    [row] = rows
    assert row["before"].startswith('{"cel_expr":')  # compact JSON, sorted keys
    assert row["at"].endswith("Z")
    assert row["source_ip"] == ""  # made by a service outside a request
