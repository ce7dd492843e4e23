"""Every stage retried the way the agent retries (protocol.md §5.2: up to five attempts, the
same body each time), when the server did the work and the answer was lost on the way.

tests/test_full_sync.py covers one retried upload, a dropped postflight and a download cut
part-way; tests/test_deferred_events.py replays around the deferred drain. Here every request of
whole syncs is sent five times — event batches, each rule-download page with the same cursor,
postflights — on both ways of storing events, and nothing may be stored or counted twice, no
rule skipped, no position advanced past what the agent holds.
"""

from __future__ import annotations

import json
import zlib

import pytest
from django.db.models import Sum

from events.models import Binary, BinaryHost, BinaryUser, Event, EventDay, EventUpload
from events.services import events_drain_all
from hosts.models import Host
from hosts.selectors import revision_current
from rules.delivery import host_rules
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_delete
from tests.agent import SimulatedAgent, django_transport

ATTEMPTS = 5  # the agent's limit (§5.2)
SHA = "9" * 64
T0 = 1_767_225_600


def lost_answers(transport, attempts: int = ATTEMPTS):
    """The server answers every attempt; the agent hears only the last (the earlier answers
    were lost: a dropped connection, a timeout)."""
    log: list[str] = []

    def send(path: str, body: bytes, headers: dict):
        for _ in range(attempts - 1):
            transport(path, body, headers)
        log.append(path.split("/")[2])
        return transport(path, body, headers)

    send.log = log
    return send


@pytest.fixture(params=[False, True], ids=["stored-in-request", "deferred"])
def defer(request, settings):
    settings.SYNC_DEFER_EVENTS = request.param
    return request.param


@pytest.fixture
def retrying_agent(client, enrollment):
    return SimulatedAgent(
        lost_answers(django_transport(client)), "RETRY-0001", enrollment[1], serial="C02RETRY1"
    )


def _event(n: int) -> dict:
    return {
        "file_sha256": SHA,
        "file_name": "tool",
        "file_path": "/usr/local/bin",
        "executing_user": f"user{n % 2}",
        "decision": "BLOCK_BINARY",
        "execution_time": T0 + n,
        "pid": 100 + n,
    }


def _holds_exactly_its_rules(agent: SimulatedAgent) -> None:
    host = Host.objects.get(machine_id=agent.machine_id)
    expected = {
        (rule.rule_type, rule.identifier): rule.policy
        for rule in host_rules(host.id, revision_current())
    }
    assert {key: rule["policy"] for key, rule in agent.rules.items()} == expected


def test_whole_syncs_retried_five_times_store_and_count_everything_once(
    retrying_agent, defer, settings
):
    agent = retrying_agent
    settings.SYNC_RULES_PER_PAGE = 2
    for n in range(5):
        rule_create(data=RuleInput("BINARY", f"{n + 1:064x}", "BLOCKLIST"))
    agent.sync()  # clean, three pages, each fetched five times
    _holds_exactly_its_rules(agent)
    assert len(agent.rules) == 5

    # Events in two batches of a normal sync, plus one batch again out of band.
    agent.settings["batch_size"] = 3
    for n in range(5):
        agent.add_event(**_event(n))
    rule_delete(rule=Rule.objects.get(identifier=f"{1:064x}"))
    for n in range(5, 10):
        rule_create(data=RuleInput("BINARY", f"{n + 1:064x}", "ALLOWLIST"))
    result = agent.sync()
    assert (result.events_uploaded, result.rules_received) == (5, 6)
    assert result.pages >= 3  # six changes, two a page
    agent.upload_events([_event(n) for n in range(3)])
    if defer:
        assert EventUpload.objects.count() == 3 * ATTEMPTS  # every attempt accepted
        events_drain_all()
        assert not EventUpload.objects.exists()

    assert Event.objects.count() == 5
    binary = Binary.objects.get(pk=SHA)
    assert (binary.executions, binary.blocked, binary.host_count, binary.user_count) == (
        5,
        5,
        1,
        2,
    )
    assert BinaryHost.objects.get().executions == 5
    assert sorted(BinaryUser.objects.values_list("user", "executions")) == [
        ("user0", 3),
        ("user1", 2),
    ]
    assert EventDay.objects.aggregate(n=Sum("count"))["n"] == 5

    # No rule skipped, none twice, and the position is where the agent is.
    _holds_exactly_its_rules(agent)
    assert len(agent.rules) == 9
    host = Host.objects.get(machine_id=agent.machine_id)
    assert (host.rules_synced_rev, host.pending_rev) == (revision_current(), None)
    assert agent.sync().rules_received == 0  # nothing left to send, nothing sent again
    assert set(agent.transport.log) == {"preflight", "eventupload", "ruledownload", "postflight"}


def test_a_page_retried_after_a_change_is_the_same_page_and_the_change_comes_next(
    client, enrollment, settings
):
    """A rule changes between two attempts of the same page: the retried page (same cursor)
    is the page the first attempt got — the cursor pins the revision — and the change is
    delivered by the next sync instead of being skipped."""
    settings.SYNC_RULES_PER_PAGE = 2
    plain = django_transport(client)
    changed = {"done": False}

    def change_between_attempts(path: str, body: bytes, headers: dict):
        first = plain(path, body, headers)
        resumed = b"cursor" in zlib.decompress(body)  # a page after the first
        if "/ruledownload/" in path and resumed and not changed["done"]:
            changed["done"] = True
            rule_create(data=RuleInput("BINARY", "f" * 64, "BLOCKLIST"))
            again = plain(path, body, headers)
            assert again[0] == first[0] == 200
            # The same rules (the cursor's own signature carries a timestamp).
            assert json.loads(again[1])["rules"] == json.loads(first[1])["rules"]
            return again
        return first

    for n in range(3):
        rule_create(data=RuleInput("BINARY", f"{n + 1:064x}", "BLOCKLIST"))
    agent = SimulatedAgent(change_between_attempts, "RETRY-0002", enrollment[1])
    agent.sync()
    assert len(agent.rules) == 3 and changed["done"]
    result = agent.sync()
    assert result.rules_received == 1
    assert agent.rules[("BINARY", "f" * 64)]["policy"] == "BLOCKLIST"
    _holds_exactly_its_rules(agent)
