"""Delivery tracking (rules.tracking) against a brute-force computation.

For every open rule: its target hosts are the hosts whose effective rule for the key is this
rule (host over tag over everyone, a blocking policy on a tie, then the lowest id), computed
here from the raw RuleVersion and HostTag rows; a target host has confirmed it when its last
postflight confirmed a revision at or after the last relevant change — the rule's current
version, a version of the same key closing, or the host joining or leaving one of the tags
those versions name. Confirmed hosts must also really hold the rule: the simulated agent's
own store is checked.

Also: the stored summaries, the fan-out that refreshes them, a host's pending rules against
what its next download sends, and the API fields that show all of this.
"""

import contextlib
import random

import pytest

from hosts.fanout import fanout_execute
from hosts.models import FanOut, FanOutKind, FanOutState, Host, HostTag, Revision
from hosts.services import host_set_tags, tag_rule_create
from rules.errors import RuleConflict
from rules.models import Rule, RuleVersion
from rules.services import (
    RuleInput,
    rule_create,
    rule_delete,
    rule_update,
    rules_bulk_create,
)
from rules.tracking import (
    delivery_refresh_pending,
    delivery_summaries_refresh,
    fanout_rules,
    host_delivery,
    rule_delivery,
)
from tests.agent import SyncFailed, held

BLOCKING = {"BLOCKLIST", "SILENT_BLOCKLIST", "SILENT_GUI_BLOCKLIST", "SILENT_TTY_BLOCKLIST"}
POLICIES = ["ALLOWLIST", "ALLOWLIST_COMPILER", "BLOCKLIST", "SILENT_BLOCKLIST", "REMOVE"]
TAGS = ["eng", "ops", "qa"]
KEYS = [("BINARY", f"{n:064x}") for n in range(1, 4)] + [("TEAMID", "TEAM000001")]
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
SHA_D = "d" * 64
RULES = "/api/v1/rules/"
HOSTS = "/api/v1/hosts/"


def fleet_revision() -> int:
    return Revision.objects.get(pk=1).value


def host_of(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


# --- the brute-force model ------------------------------------------------------------------------


def effective(versions, host_id: int, tags: set[int]):
    """The version of one key a host with these tags holds (None: no rule applies)."""
    best = None
    for version in versions:
        if host_id in version.host_ids:
            level = 3
        elif set(version.excluded_tag_ids) & tags:
            continue
        elif version.tag_ids and set(version.tag_ids) & tags:
            level = 2
        elif version.scope_all:
            level = 1
        else:
            continue
        rank = (level, version.policy in BLOCKING, -version.rule_id)
        if best is None or rank > best[0]:
            best = (rank, version)
    return best[1] if best else None


def valid_at(version, revision: int) -> bool:
    return version.rev_from <= revision and (version.rev_to is None or version.rev_to > revision)


def tags_at(spans, revision: int) -> set[int]:
    return {
        tag for tag, start, end in spans if start <= revision and (end is None or end > revision)
    }


def brute_force(rule_id: int) -> dict:
    """target / confirmed / pending machine ids for one open rule, from the raw rows."""
    current = RuleVersion.objects.get(rule_id=rule_id, rev_to__isnull=True)
    versions = list(
        RuleVersion.objects.filter(rule_type=current.rule_type, identifier=current.identifier)
    )
    opened = current.rev_from
    relevant = [v for v in versions if v.rev_to is None or v.rev_to > opened]
    key_changes = [opened] + [v.rev_to for v in relevant if v.rev_to is not None]
    involved = {t for v in relevant for t in (*v.tag_ids, *v.excluded_tag_ids)}
    now_versions = [v for v in versions if v.rev_to is None]
    result = {"target": set(), "confirmed": set(), "pending": set()}
    for host in Host.objects.all():
        spans = list(HostTag.objects.filter(host=host).values_list("tag_id", "rev_from", "rev_to"))
        winner = effective(now_versions, host.pk, {t for t, _, end in spans if end is None})
        if winner is None or winner.rule_id != rule_id:
            continue
        result["target"].add(host.machine_id)
        last_change = max(
            key_changes + [end or start for tag, start, end in spans if tag in involved]
        )
        synced = host.rules_synced_rev
        if synced is not None and synced >= last_change:
            result["confirmed"].add(host.machine_id)
        else:
            result["pending"].add(host.machine_id)
    return result


def held_at(host: Host, key, revision: int):
    """What the host held for `key` once synced to `revision` (None: nothing or REMOVE)."""
    versions = [
        v
        for v in RuleVersion.objects.filter(rule_type=key[0], identifier=key[1])
        if valid_at(v, revision)
    ]
    spans = list(HostTag.objects.filter(host=host).values_list("tag_id", "rev_from", "rev_to"))
    version = effective(versions, host.pk, tags_at(spans, revision))
    if version is None or version.policy == "REMOVE":
        return None
    return version.policy, version.custom_msg, version.custom_url, version.cel_expr


def check_rule(rule_id: int, agents_by_id: dict) -> None:
    rule = Rule.objects.get(pk=rule_id)
    expected = brute_force(rule_id)
    delivery = rule_delivery(rule, sample=1000)
    assert delivery is not None
    assert (
        delivery.revision == RuleVersion.objects.get(rule_id=rule_id, rev_to__isnull=True).rev_from
    )
    assert (delivery.target_hosts, delivery.confirmed_hosts, delivery.pending_hosts) == (
        len(expected["target"]),
        len(expected["confirmed"]),
        len(expected["pending"]),
    ), (rule, expected)
    assert set(delivery.pending_sample) == expected["pending"]
    assert len(delivery.pending_sample) == len(expected["pending"])  # no duplicates

    small = rule_delivery(rule, sample=1)
    assert len(small.pending_sample) == min(1, len(expected["pending"]))
    assert set(small.pending_sample) <= expected["pending"]

    # A confirmed host really holds the rule: what it held at its confirmed revision is the
    # rule's current state, and so is what the simulated agent has stored.
    key = (rule.rule_type, rule.identifier)
    current = RuleVersion.objects.get(rule_id=rule_id, rev_to__isnull=True)
    wanted = (
        None
        if current.policy == "REMOVE"
        else (current.policy, current.custom_msg, current.custom_url, current.cel_expr)
    )
    for machine_id in expected["confirmed"]:
        host = Host.objects.get(machine_id=machine_id)
        assert held_at(host, key, host.rules_synced_rev) == wanted, (machine_id, rule)
        agent = agents_by_id.get(machine_id)
        if agent is not None:
            stored = agent.rules.get(key)
            assert stored == (None if wanted is None else held(*wanted)), (machine_id, rule)


def check_all(agents) -> int:
    by_id = {agent.machine_id: agent for agent in agents}
    rule_ids = list(Rule.objects.values_list("pk", flat=True))
    for rule_id in rule_ids:
        check_rule(rule_id, by_id)
    return len(rule_ids)


# --- randomized -----------------------------------------------------------------------------------


def _random_input(rng: random.Random, key, machine_ids) -> RuleInput:
    policy = rng.choice(POLICIES)
    scope = rng.random()
    tags, excluded, hosts = (), (), ()
    if scope < 0.4:
        tags = tuple(rng.sample(TAGS, rng.randint(1, 2)))
    elif scope < 0.6:
        hosts = tuple(rng.sample(machine_ids, rng.randint(1, 2)))
    if not hosts and rng.random() < 0.35:
        excluded = tuple(t for t in rng.sample(TAGS, 1) if t not in tags)
    return RuleInput(
        key[0],
        key[1],
        policy,
        custom_msg=rng.choice(["", "Ask IT"]),
        tags=tags,
        excluded_tags=excluded,
        machine_ids=hosts,
    )


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_rule_delivery_matches_brute_force(seed, make_agent):
    rng = random.Random(seed)
    agents = [
        make_agent(machine_id=f"TRK-{seed}-{n}", primary_user_groups=("staff",)) for n in range(6)
    ]
    machine_ids = [agent.machine_id for agent in agents]
    # Automatic memberships too, so a host can be in a tag through both sources.
    tag_rule_create(tag_name="qa", fact="primary_user_groups", operator="contains", value="qa")
    for agent in agents:
        agent.sync()
        host_set_tags(host=host_of(agent), tag_names=rng.sample(TAGS, rng.randint(0, 2)))

    checked = 0
    for step in range(70):
        action = rng.random()
        if action < 0.25:
            with contextlib.suppress(RuleConflict):
                rule_create(data=_random_input(rng, rng.choice(KEYS), machine_ids))
        elif action < 0.35 and Rule.objects.exists():
            rule = rng.choice(list(Rule.objects.all()))
            with contextlib.suppress(RuleConflict):
                rule_update(
                    rule=rule,
                    data=_random_input(rng, (rule.rule_type, rule.identifier), machine_ids),
                )
        elif action < 0.42 and Rule.objects.exists():
            rule_delete(rule=rng.choice(list(Rule.objects.all())))
        elif action < 0.55:
            agent = rng.choice(agents)
            host_set_tags(host=host_of(agent), tag_names=rng.sample(TAGS, rng.randint(0, 2)))
        elif action < 0.62:
            agent = rng.choice(agents)
            agent.facts["primary_user_groups"] = rng.choice([["staff"], ["staff", "qa"]])
            agent.sync(drop_postflight=rng.random() < 0.3)
        else:
            agent = rng.choice(agents)
            mode = rng.random()
            if mode > 0.92:
                with pytest.raises(SyncFailed):  # the connection drops before any page
                    agent.sync(stop_after_pages=0)
            else:
                agent.sync(drop_postflight=mode < 0.3)
        if step % 7 == 6:
            checked += check_all(agents)

    checked += check_all(agents)
    for agent in agents[:3]:
        agent.sync()
    checked += check_all(agents)
    for agent in agents:
        agent.sync()
    checked += check_all(agents)
    assert checked > 20  # the scenario produced rules to check
    # Once everyone synced, every rule is confirmed everywhere.
    for rule in Rule.objects.all():
        delivery = rule_delivery(rule)
        assert delivery.pending_hosts == 0 and delivery.pending_sample == []

    # The stored summaries are the same numbers.
    for agent in agents[::2]:
        host_set_tags(host=host_of(agent), tag_names=rng.sample(TAGS, 1))
    rule_ids = list(Rule.objects.values_list("pk", flat=True))
    assert delivery_summaries_refresh(rule_ids) == len(rule_ids)
    for rule in Rule.objects.all():
        live = rule_delivery(rule)
        assert (rule.target_hosts, rule.confirmed_hosts) == (
            live.target_hosts,
            live.confirmed_hosts,
        )
        assert rule.delivery_checked_at is not None


# --- deterministic scenarios ----------------------------------------------------------------------


@pytest.fixture
def fleet(make_agent, make_enrollment):
    """Four synced agents: A in eng, B in eng and ops, C and D in no tag."""
    agents = {}
    for name, tags in (("A", ["eng"]), ("B", ["eng", "ops"]), ("C", []), ("D", [])):
        _, secret = make_enrollment(name=f"enrollment-{name}", tags=tags)
        agents[name] = make_agent(machine_id=f"HOST-{name}", secret=secret)
        agents[name].sync()
    return agents


def counts(rule: Rule) -> tuple[int, int, int]:
    delivery = rule_delivery(rule)
    return delivery.target_hosts, delivery.confirmed_hosts, delivery.pending_hosts


def test_competing_rules_at_each_level(fleet):
    everyone = rule_create(data=RuleInput("BINARY", SHA_A, "ALLOWLIST", excluded_tags=["ops"]))
    eng = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["eng"]))
    host_d = rule_create(
        data=RuleInput("BINARY", SHA_A, "SILENT_BLOCKLIST", machine_ids=["HOST-D"])
    )
    assert counts(everyone) == (1, 0, 1)  # C; A and B are eng, B also excluded, D listed
    assert counts(eng) == (2, 0, 2)
    assert counts(host_d) == (1, 0, 1)
    assert rule_delivery(everyone).pending_sample == ["HOST-C"]

    for agent in fleet.values():
        agent.sync()
    assert counts(everyone) == (1, 1, 0)
    assert counts(eng) == (2, 2, 0)
    assert counts(host_d) == (1, 1, 0)
    check_all(fleet.values())

    # A new competitor that wins for one host moves it, and leaves the others confirmed.
    rule_create(data=RuleInput("BINARY", SHA_A, "ALLOWLIST", machine_ids=["HOST-A"]))
    assert counts(eng) == (1, 1, 0)
    check_all(fleet.values())

    # Deleting the tag rule: the everyone rule still skips B (excluded by ops) and A (listed).
    rule_delete(rule=eng)
    assert counts(everyone) == (1, 0, 1)  # C must confirm a revision after the delete
    check_all(fleet.values())
    fleet["C"].sync()
    assert counts(everyone) == (1, 1, 0)
    assert fleet["C"].rules == {("BINARY", SHA_A): held("ALLOWLIST")}
    assert fleet["B"].rules == {("BINARY", SHA_A): held("BLOCKLIST")}
    fleet["B"].sync()
    assert fleet["B"].rules == {}  # no rule applies to B any more
    check_all(fleet.values())


def test_tag_changes_make_only_that_host_pending(fleet):
    rule = rule_create(data=RuleInput("BINARY", SHA_B, "BLOCKLIST", tags=["eng"]))
    for agent in fleet.values():
        agent.sync()
    assert counts(rule) == (2, 2, 0)

    host_set_tags(host=host_of(fleet["C"]), tag_names=["eng"])
    assert counts(rule) == (3, 2, 1)
    assert rule_delivery(rule).pending_sample == ["HOST-C"]
    host_set_tags(host=host_of(fleet["A"]), tag_names=[])
    assert counts(rule) == (2, 1, 1)
    check_all(fleet.values())

    fleet["C"].sync(drop_postflight=True)  # holds it, but did not confirm
    assert counts(rule) == (2, 1, 1)
    fleet["C"].sync()
    assert counts(rule) == (2, 2, 0)
    check_all(fleet.values())


def test_a_change_of_the_rule_makes_every_target_pending(fleet):
    rule = rule_create(data=RuleInput("BINARY", SHA_C, "BLOCKLIST"))
    for agent in fleet.values():
        agent.sync()
    assert counts(rule) == (4, 4, 0)
    rule = rule_update(rule=rule, data=RuleInput("BINARY", SHA_C, "SILENT_BLOCKLIST"))
    assert counts(rule) == (4, 0, 4)
    assert sorted(rule_delivery(rule).pending_sample) == ["HOST-A", "HOST-B", "HOST-C", "HOST-D"]
    assert rule_delivery(rule, sample=2).pending_sample == ["HOST-A", "HOST-B"]
    fleet["A"].sync()
    fleet["D"].sync()
    assert counts(rule) == (4, 2, 2)
    check_all(fleet.values())


def test_deleted_rule_has_no_delivery(fleet):
    rule = rule_create(data=RuleInput("BINARY", SHA_C, "BLOCKLIST"))
    stale = Rule.objects.get(pk=rule.pk)
    rule_delete(rule=rule)
    assert rule_delivery(stale) is None


# --- stored summaries -----------------------------------------------------------------------------


def test_summaries_of_a_bulk_import_equal_live_tracking(fleet):
    rules = rules_bulk_create(
        items=[RuleInput("BINARY", f"{n:064x}", "BLOCKLIST", tags=["eng"]) for n in range(1, 6)]
        + [RuleInput("BINARY", f"{n:064x}", "ALLOWLIST") for n in range(6, 9)]
        + [RuleInput("BINARY", f"{n:064x}", "ALLOWLIST", excluded_tags=["ops"]) for n in (9, 10)]
    )
    # A competitor for one key of the import, so not every key is alone.
    rule_create(data=RuleInput("BINARY", f"{1:064x}", "ALLOWLIST", machine_ids=["HOST-A"]))
    fleet["A"].sync()
    fleet["C"].sync(drop_postflight=True)
    rule_ids = [r.pk for r in Rule.objects.all()]
    assert delivery_summaries_refresh(rule_ids) == len(rule_ids)
    for rule in Rule.objects.all():
        live = rule_delivery(rule)
        assert (rule.target_hosts, rule.confirmed_hosts) == (
            live.target_hosts,
            live.confirmed_hosts,
        ), rule
    first = Rule.objects.get(pk=rules[0].pk)
    assert (first.target_hosts, first.confirmed_hosts) == (1, 0)  # B; A is listed elsewhere
    second = Rule.objects.get(pk=rules[1].pk)
    assert (second.target_hosts, second.confirmed_hosts) == (2, 1)  # A and B; A synced
    everyone = Rule.objects.get(pk=rules[5].pk)
    assert (everyone.target_hosts, everyone.confirmed_hosts) == (4, 1)
    excluding = Rule.objects.get(pk=rules[8].pk)
    assert (excluding.target_hosts, excluding.confirmed_hosts) == (3, 1)


def test_fanout_of_a_rule_change_refreshes_its_summary(fleet, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        rule = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["eng"]))
    rule.refresh_from_db()
    assert rule.fanout.state == FanOutState.DONE
    assert rule.fanout.rule_ids == [rule.pk]
    assert rule.fanout.result == {"rules_refreshed": 1}
    assert (rule.target_hosts, rule.confirmed_hosts) == (2, 0)
    assert rule.delivery_checked_at is not None


def test_fanout_of_a_deleted_rule_refreshes_its_competitor(
    fleet, django_capture_on_commit_callbacks
):
    everyone = rule_create(data=RuleInput("BINARY", SHA_A, "ALLOWLIST"))
    eng = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["eng"]))
    unrelated = rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST"))
    for agent in fleet.values():
        agent.sync()
    delivery_summaries_refresh([everyone.pk, eng.pk, unrelated.pk])
    everyone.refresh_from_db()
    assert (everyone.target_hosts, everyone.confirmed_hosts) == (2, 2)
    unrelated.refresh_from_db()
    checked = unrelated.delivery_checked_at

    # Without the on-commit send the fan-out waits, and the summary is the old one.
    rule_delete(rule=eng)
    fanout = FanOut.objects.filter(kind=FanOutKind.RULES).latest("id")
    assert fanout.state == FanOutState.QUEUED and fanout.rule_ids == [eng.pk]
    everyone.refresh_from_db()
    assert (everyone.target_hosts, everyone.confirmed_hosts) == (2, 2)

    assert fanout_execute(fanout.pk) == FanOutState.DONE
    everyone.refresh_from_db()
    assert (everyone.target_hosts, everyone.confirmed_hosts) == (4, 0)
    unrelated.refresh_from_db()
    assert unrelated.delivery_checked_at == checked  # another key: not touched
    assert fanout_rules(fanout) == {"rules_refreshed": 1}

    # And with the on-commit send, the same happens at once.
    ops = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["ops"]))
    delivery_summaries_refresh([everyone.pk])
    everyone.refresh_from_db()
    assert everyone.target_hosts == 3  # the ops rule wins for B
    with django_capture_on_commit_callbacks(execute=True):
        rule_delete(rule=ops)
    everyone.refresh_from_db()
    assert (everyone.target_hosts, everyone.confirmed_hosts) == (4, 0)
    assert FanOut.objects.latest("id").state == FanOutState.DONE


def test_refresh_pending_follows_hosts_confirming(fleet):
    rule = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    other = rule_create(data=RuleInput("BINARY", SHA_B, "BLOCKLIST", tags=["eng"]))
    assert delivery_refresh_pending() == 2  # never summarised
    rule.refresh_from_db()
    assert (rule.target_hosts, rule.confirmed_hosts) == (4, 0)
    for agent in fleet.values():
        agent.sync()
    assert delivery_refresh_pending() == 2  # both were pending
    rule.refresh_from_db()
    other.refresh_from_db()
    assert (rule.target_hosts, rule.confirmed_hosts) == (4, 4)
    assert (other.target_hosts, other.confirmed_hosts) == (2, 2)
    # Confirmed everywhere: they are now checked in rotation, least recently checked first.
    checked = {r.pk: r.delivery_checked_at for r in (rule, other)}
    assert delivery_refresh_pending(limit=1) == 1
    rule.refresh_from_db()
    other.refresh_from_db()
    assert rule.delivery_checked_at > checked[rule.pk]
    assert other.delivery_checked_at == checked[other.pk]
    assert delivery_refresh_pending(limit=1) == 1
    other.refresh_from_db()
    assert other.delivery_checked_at > checked[other.pk]


def test_refresh_pending_notices_new_target_hosts(fleet, make_agent):
    rule = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    for agent in fleet.values():
        agent.sync()
    delivery_refresh_pending()
    rule.refresh_from_db()
    assert (rule.target_hosts, rule.confirmed_hosts) == (4, 4)
    make_agent(machine_id="HOST-NEW").sync(drop_postflight=True)
    assert counts(rule) == (5, 4, 1)
    delivery_refresh_pending()
    rule.refresh_from_db()
    assert (rule.target_hosts, rule.confirmed_hosts) == (5, 4)


# --- per host -------------------------------------------------------------------------------------


def record_downloads(agent) -> list:
    """Make the agent remember the rules each of its downloads accepted."""
    downloads = []
    original = agent.download_rules

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        downloads.append(result[0])
        return result

    agent.download_rules = recording
    return downloads


def as_set(rules) -> set:
    return {(r.rule_type, r.identifier, r.policy) for r in rules}


def received_set(accepted) -> set:
    return {(key[0], key[1], rule["policy"]) for key, rule in accepted}


def test_host_delivery_lists_what_the_next_download_sends(fleet, settings):
    settings.SYNC_RULES_PER_PAGE = 2
    agent = fleet["A"]
    kept = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    doomed = rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST", tags=["eng"]))
    changed = rule_create(data=RuleInput("BINARY", SHA_C, "ALLOWLIST"))
    agent.sync()
    delivery = host_delivery(host_of(agent))
    assert delivery.in_sync and delivery.pending == [] and delivery.pending_count == 0
    assert delivery.confirmed_revision == delivery.revision == fleet_revision()
    assert delivery.confirmed_rules == 3
    assert delivery.unconfirmed_download_revision is None

    rule_delete(rule=doomed)
    rule_update(rule=changed, data=RuleInput("BINARY", SHA_C, "BLOCKLIST", custom_msg="no"))
    rule_create(data=RuleInput("BINARY", SHA_D, "BLOCKLIST", tags=["eng"]))
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST"))
    rule_create(data=RuleInput("BINARY", "e" * 64, "BLOCKLIST", tags=["ops"]))  # not for A
    rule_update(rule=kept, data=RuleInput("BINARY", SHA_A, "BLOCKLIST", comment="note only"))
    delivery = host_delivery(host_of(agent))
    assert not delivery.in_sync
    assert delivery.pending_count == len(delivery.pending) == 4
    assert delivery.pending_count_exact
    assert as_set(delivery.pending) == {
        ("BINARY", SHA_B, "REMOVE"),
        ("BINARY", SHA_C, "BLOCKLIST"),
        ("BINARY", SHA_D, "BLOCKLIST"),
        ("TEAMID", "EQHXZ8M8AV", "ALLOWLIST"),
    }

    downloads = record_downloads(agent)
    result = agent.sync()
    assert result.sync_type == "NORMAL"
    assert received_set(downloads[-1]) == as_set(delivery.pending)
    assert result.rules_received == delivery.pending_count
    after = host_delivery(host_of(agent))
    assert after.in_sync and after.pending_count == 0


def test_host_delivery_after_tag_changes(fleet):
    agent = fleet["C"]
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["eng"]))
    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST", excluded_tags=["eng"]))
    agent.sync()
    assert host_delivery(host_of(agent)).in_sync
    host_set_tags(host=host_of(agent), tag_names=["eng"])
    delivery = host_delivery(host_of(agent))
    assert as_set(delivery.pending) == {("BINARY", SHA_A, "BLOCKLIST"), ("BINARY", SHA_B, "REMOVE")}
    downloads = record_downloads(agent)
    agent.sync()
    assert received_set(downloads[-1]) == as_set(delivery.pending)
    assert agent.rules == {("BINARY", SHA_A): held("BLOCKLIST")}


def test_host_delivery_of_a_host_never_synced_lists_its_whole_set(fleet, make_agent):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    rule_create(data=RuleInput("BINARY", SHA_B, "REMOVE"))
    agent = make_agent(machine_id="HOST-NEW")
    agent.sync(drop_postflight=True)
    delivery = host_delivery(host_of(agent))
    assert delivery.confirmed_revision is None and not delivery.in_sync
    assert delivery.unconfirmed_download_revision == fleet_revision()
    assert as_set(delivery.pending) == {("BINARY", SHA_A, "BLOCKLIST")}  # REMOVE not counted
    downloads = record_downloads(agent)
    agent.sync()
    assert {r for r in received_set(downloads[-1]) if r[2] != "REMOVE"} == as_set(delivery.pending)
    assert host_delivery(host_of(agent)).in_sync


def test_host_delivery_limits(fleet, settings):
    settings.SYNC_RULES_PER_PAGE = 2
    agent = fleet["D"]
    for n in range(1, 8):
        rule_create(data=RuleInput("BINARY", f"{n:064x}", "BLOCKLIST"))
    full = host_delivery(host_of(agent))
    assert full.pending_count == 7 and full.pending_count_exact
    short = host_delivery(host_of(agent), limit=3, max_pages=2)
    assert len(short.pending) == 3
    assert short.pending_count == 4 and not short.pending_count_exact
    assert [r.identifier for r in short.pending] == [r.identifier for r in full.pending[:3]]


def test_host_delivery_after_a_lost_postflight(fleet):
    agent = fleet["D"]
    rule = rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync(drop_postflight=True)
    assert set(agent.rules) == {("BINARY", SHA_A)}
    rule_delete(rule=rule)
    delivery = host_delivery(host_of(agent))
    downloads = record_downloads(agent)
    agent.sync()
    assert received_set(downloads[-1]) == {("BINARY", SHA_A, "REMOVE")}
    assert as_set(delivery.pending) == received_set(downloads[-1])
    assert not delivery.in_sync


# --- the API --------------------------------------------------------------------------------------


def test_rule_detail_shows_live_delivery_and_fanout(fleet, analyst_api):
    response = analyst_api.post(
        RULES,
        {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", "tags": ["eng"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["delivery"]["target_hosts"] == 2
    rule = Rule.objects.get(pk=created["id"])
    fleet["A"].sync()

    body = analyst_api.get(f"{RULES}{rule.pk}/").json()
    assert body["delivery"] == {
        "revision": rule.revision,
        "target_hosts": 2,
        "confirmed_hosts": 1,
        "pending_hosts": 1,
        "pending_sample": ["HOST-B"],
    }
    assert body["fanout"]["id"] == rule.fanout_id
    assert body["fanout"]["state"] == "queued" and body["fanout"]["finished_at"] is None
    assert body["delivery_summary"] == {
        "target_hosts": None,
        "confirmed_hosts": None,
        "checked_at": None,
    }

    fanout_execute(rule.fanout_id)
    body = analyst_api.get(f"{RULES}{rule.pk}/").json()
    assert body["fanout"]["state"] == "done" and body["fanout"]["finished_at"]
    assert body["delivery_summary"]["target_hosts"] == 2
    assert body["delivery_summary"]["confirmed_hosts"] == 1
    assert body["delivery_summary"]["checked_at"]

    listed = analyst_api.get(RULES).json()["results"]
    assert [r["id"] for r in listed] == [rule.pk]
    assert listed[0]["delivery_summary"] == body["delivery_summary"]
    assert "delivery" not in listed[0] and "fanout" not in listed[0]


def test_host_detail_shows_delivery(fleet, analyst_api):
    agent = fleet["B"]
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["ops"]))
    body = analyst_api.get(f"{HOSTS}{agent.machine_id}/").json()
    host = host_of(agent)
    assert body["delivery"] == {
        "revision": fleet_revision(),
        "confirmed_revision": host.rules_synced_rev,
        "unconfirmed_download_revision": None,
        "confirmed_rules": 0,
        "in_sync": False,
        "pending_count": 1,
        "pending_count_exact": True,
        "pending": [
            {
                "rule_id": Rule.objects.get().pk,
                "rule_type": "BINARY",
                "identifier": SHA_A,
                "policy": "BLOCKLIST",
            }
        ],
    }
    agent.sync()
    body = analyst_api.get(f"{HOSTS}{agent.machine_id}/").json()
    assert body["delivery"]["in_sync"] is True
    assert body["delivery"]["pending"] == [] and body["delivery"]["confirmed_rules"] == 1
    assert body["delivery"]["confirmed_revision"] == fleet_revision()
