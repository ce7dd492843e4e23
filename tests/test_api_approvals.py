"""The approval-requests API: the queue and its filters, approving into a rule that reaches the
requester's Mac, denying with a message, and every refusal changing nothing."""

import pytest

from audit.models import AuditEntry
from events.approvals import approval_request_submit
from events.models import ApprovalRequest, Binary
from hosts.models import Host
from rules.models import Rule
from tests.agent import held
from tests.api import assert_error

URL = "/api/v1/approval-requests/"
SHA = "5" * 64
OTHER_SHA = "6" * 64
T0 = 1767225600


def detail(pk) -> str:
    return f"{URL}{pk}/"


def state() -> tuple:
    return (
        sorted(ApprovalRequest.objects.values_list("pk", "state", "response", "rule_id")),
        sorted(Rule.objects.values_list("pk", "identifier", "policy")),
    )


@pytest.fixture
def queue(make_agent):
    """alice asked for Builder on her Mac; bob asked for another binary on his."""
    alice, bob = make_agent(machine_id="MAC-ALICE"), make_agent(machine_id="MAC-BOB")
    for agent, sha, user in ((alice, SHA, "alice"), (bob, OTHER_SHA, "bob")):
        agent.sync()
        agent.upload_events(
            [
                {
                    "file_sha256": sha,
                    "file_name": "Builder",
                    "decision": "BLOCK_UNKNOWN",
                    "execution_time": T0,
                    "executing_user": user,
                    "team_id": "EQHXZ8M8AV",
                }
            ]
        )
    first = approval_request_submit(
        binary=Binary.objects.get(pk=SHA),
        host=Host.objects.get(machine_id="MAC-ALICE"),
        requester="alice",
        reason="I build the app with it.",
    )
    second = approval_request_submit(
        binary=Binary.objects.get(pk=OTHER_SHA),
        host=Host.objects.get(machine_id="MAC-BOB"),
        requester="bob",
        reason="Please.",
    )
    return alice, first, second


def test_list_and_detail(auditor_api, queue):
    _, first, second = queue
    body = auditor_api.get(URL).json()
    assert [r["id"] for r in body["results"]] == [second.pk, first.pk]
    item = auditor_api.get(detail(first.pk)).json()
    assert (item["sha256"], item["machine_id"], item["requester"], item["state"]) == (
        SHA,
        "MAC-ALICE",
        "alice",
        "pending",
    )
    assert item["reason"] == "I build the app with it." and item["rule"] is None


def test_filters(auditor_api, queue, analyst_api):
    _, first, second = queue
    analyst_api.post(f"{detail(second.pk)}deny/", {"response": "No."}, format="json")

    def ids(**params):
        return [r["id"] for r in auditor_api.get(URL, params).json()["results"]]

    assert ids(state="pending") == [first.pk]
    assert ids(state="denied") == [second.pk]
    assert ids(sha256=SHA.upper()) == [first.pk]
    assert ids(machine_id="MAC-BOB") == [second.pk]
    assert ids(requester="alice") == [first.pk]
    assert ids(since="2000-01-01T00:00:00Z") == [second.pk, first.pk]
    assert ids(since="2100-01-01T00:00:00Z") == []
    assert_error(auditor_api.get(URL, {"state": "maybe"}), 400, "state")
    assert_error(auditor_api.get(URL, {"since": "last week"}), 400, "since")


def test_approve_creates_the_rule_and_it_reaches_the_mac(analyst_api, queue, analyst):
    alice, first, _ = queue
    response = analyst_api.post(
        f"{detail(first.pk)}approve/",
        {
            "rule_type": "BINARY",
            "machine_ids": ["MAC-ALICE"],
            "justification": "Build tool for the app team.",
            "response": "Approved for your Mac.",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["state"], body["decided_by"], body["response"]) == (
        "approved",
        "ana",
        "Approved for your Mac.",
    )
    rule = Rule.objects.get(pk=body["rule"])
    assert (rule.rule_type, rule.identifier, rule.policy) == ("BINARY", SHA, "ALLOWLIST")
    assert rule.comment == "Build tool for the app team."
    alice.sync()
    assert alice.rules == {("BINARY", SHA): held("ALLOWLIST")}
    entry = AuditEntry.objects.get(action="approval_request.approve")
    assert (entry.actor_id, entry.justification) == (analyst.pk, "Build tool for the app team.")
    assert AuditEntry.objects.filter(action="rule.create", object_id=str(rule.pk)).exists()


def test_approve_with_a_block_policy_closes_it_denied(analyst_api, queue):
    _, first, _ = queue
    body = analyst_api.post(
        f"{detail(first.pk)}approve/",
        {"rule_type": "TEAMID", "policy": "BLOCKLIST", "justification": "Not allowed here."},
        format="json",
    ).json()
    assert body["state"] == "denied"
    assert Rule.objects.get(pk=body["rule"]).identifier == "EQHXZ8M8AV"


def test_deny(analyst_api, queue):
    _, first, _ = queue
    response = analyst_api.post(
        f"{detail(first.pk)}deny/", {"response": "Use the approved one."}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "denied"
    assert not Rule.objects.exists()
    assert AuditEntry.objects.get(action="approval_request.deny").justification == (
        "Use the approved one."
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rule_type": "BINARY"}, "justification"),
        ({"rule_type": "BINARY", "justification": "   "}, "justification"),
        ({"rule_type": "BINARY", "justification": 7}, "justification"),
        ({"justification": "x"}, "rule_type"),
        ({"rule_type": "HASH", "justification": "x"}, "rule_type"),
        ({"rule_type": "CDHASH", "justification": "x"}, "rule_type"),  # the binary has none
        ({"rule_type": "BINARY", "policy": "REMOVE", "justification": "x"}, "policy"),
        ({"rule_type": "BINARY", "policy": "CEL", "justification": "x"}, "policy"),
        ({"rule_type": "BINARY", "justification": "x", "machine_ids": ["NOPE"]}, "machine_ids"),
        ({"rule_type": "BINARY", "justification": "x", "tags": ["Bad Tag"]}, "tags"),
        ({"rule_type": "BINARY", "justification": "x", "tag": ["eng"]}, "tag"),
        (
            {"rule_type": "BINARY", "justification": "x", "expires_at": "2000-01-01T00:00Z"},
            "expires_at",
        ),
        ({"rule_type": "BINARY", "justification": "x", "response": "a\x00b"}, "response"),
        ({"rule_type": "BINARY", "justification": "x" * 8193}, "justification"),
    ],
)
def test_approve_refusals_change_nothing(analyst_api, queue, body, field):
    _, first, _ = queue
    before = state()
    entries = AuditEntry.objects.count()
    assert_error(analyst_api.post(f"{detail(first.pk)}approve/", body, format="json"), 400, field)
    assert state() == before
    assert AuditEntry.objects.count() == entries


@pytest.mark.parametrize("body", [{}, {"response": ""}, {"response": "  "}, {"reason": "x"}])
def test_deny_needs_a_response(analyst_api, queue, body):
    _, first, _ = queue
    before = state()
    assert_error(analyst_api.post(f"{detail(first.pk)}deny/", body, format="json"), 400)
    assert state() == before


@pytest.mark.parametrize("second_action", ["approve", "deny"])
def test_a_decided_request_is_409(analyst_api, queue, second_action):
    _, first, _ = queue
    analyst_api.post(f"{detail(first.pk)}deny/", {"response": "No."}, format="json")
    before = state()
    body = {"rule_type": "BINARY", "justification": "x", "response": "Yes after all."}
    if second_action == "deny":
        body = {"response": "Still no."}
    response = analyst_api.post(f"{detail(first.pk)}{second_action}/", body, format="json")
    assert assert_error(response, 409)["error"] == "request_decided"
    assert state() == before


def test_a_conflicting_rule_is_409_and_the_request_stays_pending(analyst_api, queue):
    _, first, _ = queue
    analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": SHA, "policy": "BLOCKLIST"},
        format="json",
    )
    before = state()
    response = analyst_api.post(
        f"{detail(first.pk)}approve/",
        {"rule_type": "BINARY", "justification": "x"},
        format="json",
    )
    assert assert_error(response, 409)["error"] == "rule_conflict"
    assert state() == before


def test_unknown_request_is_404(analyst_api, queue):
    assert_error(analyst_api.post(f"{detail(999)}deny/", {"response": "x"}, format="json"), 404)


def test_list_queries_are_bounded(auditor_api, make_agent, django_assert_max_num_queries):
    agent = make_agent(machine_id="MAC-MANY")
    agent.sync()
    agent.upload_events(
        [
            {"file_sha256": f"{n:064x}", "decision": "BLOCK_UNKNOWN", "execution_time": T0 + n}
            for n in range(1, 21)
        ]
    )
    host = Host.objects.get(machine_id="MAC-MANY")
    for binary in Binary.objects.all():
        approval_request_submit(binary=binary, host=host, requester="u", reason="r")
    with django_assert_max_num_queries(6):
        body = auditor_api.get(URL, {"page_size": 100}).json()
    assert body["count"] == 20
