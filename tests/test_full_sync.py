"""Whole four-stage syncs, in every encoding the agent uses, with the interruptions it suffers."""

import pytest

from hosts.models import Host
from hosts.services import host_set_tags
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_delete, rule_update
from tests.agent import SyncFailed, held

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
TEAM = "EQHXZ8M8AV"


def _held(agent):
    return {key: rule["policy"] for key, rule in agent.rules.items()}


@pytest.mark.parametrize(
    ("fmt", "encoding"),
    [
        ("json", "none"),
        ("json", "deflate"),
        ("json", "gzip"),
        ("proto", "none"),
        ("proto", "deflate"),
        ("proto", "gzip"),
    ],
)
def test_full_sync_each_encoding(make_agent, fmt, encoding):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", custom_msg="Blocked by IT"))
    rule_create(data=RuleInput("TEAMID", TEAM, "ALLOWLIST"))
    rule_create(
        data=RuleInput(
            "SIGNINGID",
            f"{TEAM}:com.example.app",
            "CEL",
            cel_expr="target.signing_time >= timestamp('2025-01-01T00:00:00Z')",
        )
    )
    agent = make_agent(fmt=fmt, encoding=encoding)
    agent.add_event(
        file_sha256=SHA_B,
        file_name="tool",
        file_path="/usr/local/bin",
        decision="BLOCK_UNKNOWN",
        execution_time=1_760_000_000.5,
    )

    first = agent.sync()

    assert first.sync_type == "CLEAN_ALL"
    assert first.rules_received == first.rules_processed == 3
    assert agent.rules[("BINARY", SHA_A)]["custom_msg"] == "Blocked by IT"
    assert agent.rules[("SIGNINGID", f"{TEAM}:com.example.app")]["policy"] == "CEL"
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.serial_number == agent.facts["serial_number"]
    assert host.last_sync_type == "CLEAN_ALL"
    assert host.rules_processed == 3 and not host.rules_dropped

    agent.add_event(
        file_sha256=SHA_C,
        file_name="other",
        file_path="/Users/Shared",
        decision="BLOCK_BINARY",
        execution_time=1_760_000_100,
    )
    second = agent.sync()
    assert second.sync_type == "NORMAL"
    assert second.events_uploaded == 1
    assert host.events.count() == 1  # the first event was dropped by the agent's clean sync
    assert second.rules_received == 0


def test_changes_reach_the_host_incrementally(agent):
    blocked = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()

    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST"))
    rule_update(rule=blocked, data=RuleInput("BINARY", SHA_A, "SILENT_BLOCKLIST"))
    result = agent.sync()
    assert result.sync_type == "NORMAL"
    assert result.rules_received == 2
    assert _held(agent) == {("BINARY", SHA_A): "SILENT_BLOCKLIST", ("BINARY", SHA_B): "ALLOWLIST"}

    rule_delete(rule=blocked)
    result = agent.sync()
    assert result.rules_received == 1  # exactly one REMOVE
    assert _held(agent) == {("BINARY", SHA_B): "ALLOWLIST"}


def test_tag_membership_changes_add_and_remove_rules(agent):
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    rule_create(data=RuleInput("BINARY", SHA_A, "ALLOWLIST", tags=("eng",)))
    agent.sync()
    assert agent.rules == {}

    host_set_tags(host=host, tag_names=["eng"])
    agent.sync()
    assert _held(agent) == {("BINARY", SHA_A): "ALLOWLIST"}

    host_set_tags(host=host, tag_names=[])
    result = agent.sync()
    assert result.rules_received == 1
    assert agent.rules == {}


def test_retried_event_batch_is_stored_once(agent):
    agent.sync()
    event = {
        "file_sha256": SHA_A,
        "file_name": "x",
        "file_path": "/Applications",
        "decision": "BLOCK_BINARY",
        "execution_time": 1_760_000_000.25,
        "pid": 42,
    }
    agent.upload_events([event])
    agent.upload_events([event])  # the agent re-sends a batch whose response it lost
    agent.upload_events([event, {**event, "execution_time": 1_760_000_001}])
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.events.count() == 2


def test_dropped_postflight_repeats_the_changes_next_time(agent):
    agent.sync()
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    lost = agent.sync(drop_postflight=True)
    assert lost.rules_received == 1
    assert _held(agent) == {("BINARY", SHA_A): "BLOCKLIST"}  # applied despite the lost postflight
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.pending_rev is not None

    again = agent.sync()
    # The position never advanced, so the change is sent again (idempotent for the agent).
    assert again.rules_received == 1
    assert _held(agent) == {("BINARY", SHA_A): "BLOCKLIST"}
    third = agent.sync()
    assert third.rules_received == 0


def test_interrupted_pagination_applies_nothing_and_is_repeated(agent, settings):
    settings.SYNC_RULES_PER_PAGE = 2
    agent.sync()
    for n in range(5):
        rule_create(data=RuleInput("BINARY", f"{n:064x}", "BLOCKLIST"))
    with pytest.raises(SyncFailed):
        agent.sync(stop_after_pages=1)
    assert agent.rules == {}  # nothing from any page is applied (§5.5.1)
    assert Host.objects.get(machine_id=agent.machine_id).pending_rev is None

    result = agent.sync()
    assert result.pages == 3
    assert result.rules_received == 5
    assert len(agent.rules) == 5


def test_client_requested_clean_sync_replaces_local_rules(agent):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    agent.rules[("BINARY", SHA_C)] = held("ALLOWLIST")  # a rule added locally (santactl)
    agent.request_clean_sync("CLEAN")
    result = agent.sync()
    assert result.sync_type == "CLEAN"
    assert _held(agent) == {("BINARY", SHA_A): "BLOCKLIST"}
    assert agent.wanted_sync == "NORMAL"
    assert agent.sync().sync_type == "NORMAL"


def test_clean_sync_of_an_empty_set_empties_the_host(agent):
    rule = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    rule_delete(rule=rule)
    agent.rules[("BINARY", SHA_C)] = held("ALLOWLIST")
    agent.request_clean_sync("CLEAN_ALL")
    agent.sync()
    assert agent.rules == {}


def test_operator_forced_clean_sync(agent):
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    host.clean_sync_requested = "CLEAN_ALL"
    host.save()
    assert agent.sync().sync_type == "CLEAN_ALL"
    host.refresh_from_db()
    assert host.clean_sync_requested == ""
    assert agent.sync().sync_type == "NORMAL"


def test_rule_download_without_preflight_is_served(agent):
    """A push-triggered rule-only sync (§5.1) has no preflight or postflight."""
    agent.sync()
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    accepted, received, _ = agent.download_rules()
    assert received == 1
    agent.apply_rules(accepted, "NORMAL")
    assert _held(agent) == {("BINARY", SHA_A): "BLOCKLIST"}


def test_specificity_host_over_tag_over_everyone(make_agent):
    plain, tagged, listed = make_agent(), make_agent(), make_agent()
    for agent in (plain, tagged, listed):
        agent.sync()
    host_set_tags(host=Host.objects.get(machine_id=tagged.machine_id), tag_names=["eng"])
    host_set_tags(host=Host.objects.get(machine_id=listed.machine_id), tag_names=["eng"])
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    rule_create(data=RuleInput("BINARY", SHA_A, "ALLOWLIST", tags=("eng",)))
    rule_create(
        data=RuleInput("BINARY", SHA_A, "SILENT_BLOCKLIST", machine_ids=(listed.machine_id,))
    )
    for agent in (plain, tagged, listed):
        agent.sync()
    assert _held(plain) == {("BINARY", SHA_A): "BLOCKLIST"}
    assert _held(tagged) == {("BINARY", SHA_A): "ALLOWLIST"}
    assert _held(listed) == {("BINARY", SHA_A): "SILENT_BLOCKLIST"}

    # Removing the host rule hands the listed host back to its tag rule, not to REMOVE.
    rule_delete(rule=Rule.objects.get(policy="SILENT_BLOCKLIST"))
    listed.sync()
    assert _held(listed) == {("BINARY", SHA_A): "ALLOWLIST"}


def test_excluded_tag_and_remove_policy(make_agent):
    kept, excluded = make_agent(), make_agent()
    for agent in (kept, excluded):
        agent.sync()
    host_set_tags(host=Host.objects.get(machine_id=excluded.machine_id), tag_names=["contractors"])
    rule_create(data=RuleInput("TEAMID", TEAM, "ALLOWLIST", excluded_tags=("contractors",)))
    kept.sync()
    excluded.sync()
    assert _held(kept) == {("TEAMID", TEAM): "ALLOWLIST"}
    assert excluded.rules == {}

    # A REMOVE rule for one host takes a locally added rule away from it.
    excluded.rules[("BINARY", SHA_B)] = held("ALLOWLIST")
    rule_create(data=RuleInput("BINARY", SHA_B, "REMOVE", machine_ids=(excluded.machine_id,)))
    excluded.sync()
    assert excluded.rules == {}


def test_drift_is_flagged_when_local_rules_change(agent):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.drift_reasons == []

    agent.rules[("BINARY", SHA_C)] = held("ALLOWLIST")
    agent.sync()
    host.refresh_from_db()
    assert any("rule counts differ" in reason for reason in host.drift_reasons)
    assert any("rules hash" in reason for reason in host.drift_reasons)
    assert host.drift_detected_at is not None


def test_drift_answered_with_clean_sync_where_configured(agent):
    from hosts.models import ConfigurationProfile

    ConfigurationProfile.objects.filter(is_default=True).update(clean_sync_on_drift=True)
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    agent.rules[("BINARY", SHA_C)] = held("ALLOWLIST")
    assert agent.sync().sync_type == "CLEAN"
    assert _held(agent) == {("BINARY", SHA_A): "BLOCKLIST"}


def test_rules_processed_below_received_is_flagged(agent):
    agent.sync()
    agent.call(
        "postflight",
        "PostflightRequest",
        "PostflightResponse",
        {
            "rules_received": 5,
            "rules_processed": 3,
            "machine_id": agent.machine_id,
            "sync_type": "NORMAL",
        },
    )
    assert Host.objects.get(machine_id=agent.machine_id).rules_dropped
