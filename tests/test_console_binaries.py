"""Blocked binaries in the console: the list, one binary, and approving it into a rule."""

import pytest

from audit.models import AuditEntry
from events.models import Binary, BinaryHost
from hosts.models import Host
from hosts.services import host_set_tags
from rules.models import Rule

SHA = "c" * 64
EVENT = {
    "file_sha256": SHA,
    "file_name": "tool",
    "file_path": "/usr/local/bin",
    "decision": "BLOCK_BINARY",
    "execution_time": 1_760_000_000.5,
    "executing_user": "alice",
    "team_id": "EQHXZ8M8AV",
    "signing_id": "EQHXZ8M8AV:com.example.tool",
    "cdhash": "d" * 40,
    "signing_chain": [{"sha256": "b" * 64, "cn": "Developer ID Application: X"}],
}


@pytest.fixture
def blocked(make_agent):
    agents = [make_agent() for _ in range(3)]
    for n, agent in enumerate(agents):
        agent.preflight()
        agent.upload_events(
            [{**EVENT, "execution_time": EVENT["execution_time"] + n, "pid": 100 + n}]
        )
    return agents


def test_upload_counts_hosts_users_and_replays_once(blocked):
    blocked[0].upload_events([{**EVENT, "pid": 100}])  # a replay of the first upload
    binary = Binary.objects.get(pk=SHA)
    assert (binary.executions, binary.blocked, binary.host_count, binary.user_count) == (3, 3, 3, 1)
    assert BinaryHost.objects.filter(binary=binary).count() == 3


def test_list_and_detail(blocked, analyst_console):
    page = analyst_console.get("/binaries/")
    assert page.status_code == 200
    assert b"tool" in page.content
    detail = analyst_console.get(f"/binaries/{SHA}/")
    assert detail.status_code == 200
    assert b"Approve" in detail.content and b"Justification" in detail.content


def test_approve_for_tag_creates_rule_and_audit(blocked, analyst_console):
    host = Host.objects.get(machine_id=blocked[0].machine_id)
    host_set_tags(host=host, tag_names=["eng"])
    response = analyst_console.post(
        f"/binaries/{SHA}/decide/",
        {
            "rule_type": "TEAMID",
            "scope": "tags",
            "tags": ["eng"],
            "justification": "Needed by the build team",
            "decision": "allow",
        },
    )
    assert response.status_code == 302, response.content
    rule = Rule.objects.get()
    assert (rule.rule_type, rule.identifier, rule.policy) == ("TEAMID", "EQHXZ8M8AV", "ALLOWLIST")
    assert [t.name for t in rule.tags.all()] == ["eng"]
    entry = AuditEntry.objects.get(action="rule.create")
    assert entry.actor == analyst_console.user
    assert entry.justification == "Needed by the build team"


def test_approve_needs_justification(blocked, analyst_console):
    response = analyst_console.post(
        f"/binaries/{SHA}/decide/",
        {"rule_type": "BINARY", "scope": "everyone", "justification": " ", "decision": "allow"},
    )
    assert response.status_code == 400
    assert not Rule.objects.exists()


def test_auditor_cannot_decide(blocked, auditor_console):
    assert auditor_console.get(f"/binaries/{SHA}/").status_code == 200
    response = auditor_console.post(
        f"/binaries/{SHA}/decide/",
        {"rule_type": "BINARY", "scope": "everyone", "justification": "x", "decision": "allow"},
    )
    assert response.status_code == 403
    assert not Rule.objects.exists()


OTHERS = {
    # sha256: (team id, signing id, cdhash, leaf certificate)
    "1" * 64: ("TEAM111111", "TEAM111111:one", "1" * 40, "a1" * 32),
    "2" * 64: ("TEAM222222", "TEAM222222:two", "2" * 40, "a2" * 32),
    "3" * 64: ("TEAM333333", "TEAM333333:three", "3" * 40, "a3" * 32),
    "4" * 64: ("TEAM444444", "TEAM444444:four", "4" * 40, "a4" * 32),
    "5" * 64: ("TEAM555555", "TEAM555555:five", "5" * 40, "a5" * 32),
    "6" * 64: ("TEAM666666", "TEAM666666:six", "6" * 40, "a6" * 32),
}


def test_rule_filter_matches_each_rule_type(make_agent, analyst_console):
    from rules.services import RuleInput, rules_bulk_create

    agent = make_agent()
    agent.preflight()
    agent.upload_events(
        [
            {
                **EVENT,
                "file_sha256": sha,
                "file_name": f"f{sha[0]}",
                "team_id": team,
                "signing_id": signing,
                "cdhash": cdhash,
                "signing_chain": [{"sha256": cert, "cn": "c"}],
                "pid": n,
            }
            for n, (sha, (team, signing, cdhash, cert)) in enumerate(OTHERS.items())
        ]
    )
    shas = list(OTHERS)
    rules_bulk_create(
        items=[
            RuleInput("BINARY", shas[0], "ALLOWLIST"),
            RuleInput("CDHASH", OTHERS[shas[1]][2], "ALLOWLIST"),
            RuleInput("SIGNINGID", OTHERS[shas[2]][1], "ALLOWLIST"),
            RuleInput("CERTIFICATE", OTHERS[shas[3]][3], "ALLOWLIST"),
            RuleInput("TEAMID", OTHERS[shas[4]][0], "BLOCKLIST"),
        ]
    )

    def listed(rule):
        page = analyst_console.get("/binaries/", {"rule": rule}).content.decode()
        return {sha for sha in OTHERS if f"/binaries/{sha}/" in page}

    assert listed("some") == set(shas[:5])
    assert listed("none") == {shas[5]}
