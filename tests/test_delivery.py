"""Rule delivery under random churn, checked against an independent model of the rules.

Random rule creations, scope and policy changes, deletions and tag membership changes are
interleaved with syncs that complete, drop their postflight, or stop halfway through the cursor.
After every sync that completes, the simulated agent must hold exactly what the model says;
the server's own view (`/api/v1/hosts/<id>/rules/`) must agree; and no host may be flagged as
drifted (the server's expected counts are exact).
"""

import random

import pytest

from hosts.models import Host
from hosts.services import host_set_tags
from rules.errors import RuleConflict
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_delete, rule_update
from tests.agent import SyncFailed

BLOCKING = {"BLOCKLIST", "SILENT_BLOCKLIST", "SILENT_GUI_BLOCKLIST", "SILENT_TTY_BLOCKLIST"}
POLICIES = ["ALLOWLIST", "ALLOWLIST_COMPILER", "BLOCKLIST", "SILENT_BLOCKLIST", "REMOVE", "CEL"]
KEYS = (
    [("BINARY", f"{n:064x}") for n in range(1, 7)]
    + [("TEAMID", f"TEAM{n:06d}") for n in range(3)]
    + [("SIGNINGID", f"TEAM{n:06d}:com.example.app{n}") for n in range(2)]
    + [("CDHASH", f"{n:040x}") for n in range(1, 3)]
)
TAGS = ["eng", "finance", "ops", "contractors"]


def model_holds(rules: list[dict], machine_id: str, tags: set[str]) -> dict:
    """What a host holds under the documented precedence, computed from scratch."""
    best: dict = {}
    for rule in rules:
        excluded = bool(tags & set(rule["excluded_tags"]))
        if machine_id in rule["machine_ids"]:
            level = 3
        elif rule["tags"] and tags & set(rule["tags"]) and not excluded:
            level = 2
        elif not rule["tags"] and not rule["machine_ids"] and not excluded:
            level = 1
        else:
            continue
        rank = (level, rule["policy"] in BLOCKING, -rule["id"])
        key = (rule["rule_type"], rule["identifier"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, rule)
    return {
        key: {
            "policy": rule["policy"],
            "custom_msg": rule["custom_msg"],
            "custom_url": "",
            "cel_expr": rule["cel_expr"],
        }
        for key, (_, rule) in best.items()
        if rule["policy"] != "REMOVE"
    }


def _random_input(rng: random.Random, key, machine_ids: list[str]) -> RuleInput:
    policy = rng.choice(POLICIES)
    scope = rng.random()
    tags, excluded, hosts = (), (), ()
    if scope < 0.35:
        tags = tuple(rng.sample(TAGS, rng.randint(1, 2)))
    elif scope < 0.55:
        hosts = tuple(rng.sample(machine_ids, rng.randint(1, 2)))
    if not hosts and rng.random() < 0.3:
        excluded = tuple(t for t in rng.sample(TAGS, 1) if t not in tags)
    return RuleInput(
        key[0],
        key[1],
        policy,
        custom_msg=rng.choice(["", "Ask IT", "Blocked by policy"]),
        cel_expr="target.signing_time >= timestamp('2025-01-01T00:00:00Z')"
        if policy == "CEL"
        else "",
        tags=tags,
        excluded_tags=excluded,
        machine_ids=hosts,
    )


def _as_model(rule: Rule) -> dict:
    return {
        "id": rule.pk,
        "rule_type": rule.rule_type,
        "identifier": rule.identifier,
        "policy": rule.policy,
        "custom_msg": rule.custom_msg,
        "cel_expr": rule.cel_expr,
        "tags": [t.name for t in rule.tags.all()],
        "excluded_tags": [t.name for t in rule.excluded_tags.all()],
        "machine_ids": [h.machine_id for h in rule.hosts.all()],
    }


class Model:
    """The independent record of what analysts did, kept in plain Python."""

    def __init__(self):
        self.rules: dict[int, dict] = {}
        self.tags: dict[str, set[str]] = {}

    def holds(self, machine_id: str) -> dict:
        return model_holds(list(self.rules.values()), machine_id, self.tags[machine_id])


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_churn_converges_to_the_model(seed, make_agent, analyst_api, settings):
    settings.SYNC_RULES_PER_PAGE = 3  # many pages, so interrupted cursors happen
    rng = random.Random(seed)
    agents = [make_agent(machine_id=f"HOST-{seed}-{n}") for n in range(5)]
    model = Model()
    for agent in agents:
        agent.sync()
        model.tags[agent.machine_id] = set()
    machine_ids = [agent.machine_id for agent in agents]

    for _ in range(120):
        action = rng.random()
        if action < 0.25:
            try:
                rule = rule_create(data=_random_input(rng, rng.choice(KEYS), machine_ids))
            except RuleConflict:
                continue
            model.rules[rule.pk] = _as_model(rule)
        elif action < 0.40 and model.rules:
            rule = Rule.objects.get(pk=rng.choice(sorted(model.rules)))
            key = (rule.rule_type, rule.identifier)
            try:
                rule = rule_update(rule=rule, data=_random_input(rng, key, machine_ids))
            except RuleConflict:
                continue
            model.rules[rule.pk] = _as_model(rule)
        elif action < 0.50 and model.rules:
            rule_id = rng.choice(sorted(model.rules))
            rule_delete(rule=Rule.objects.get(pk=rule_id))
            del model.rules[rule_id]
        elif action < 0.62:
            agent = rng.choice(agents)
            tags = set(rng.sample(TAGS, rng.randint(0, 2)))
            host_set_tags(host=Host.objects.get(machine_id=agent.machine_id), tag_names=tags)
            model.tags[agent.machine_id] = tags
        else:
            agent = rng.choice(agents)
            mode = rng.random()
            stop = rng.choice([0, 1, 2]) if mode < 0.15 else None
            if 0.15 <= mode < 0.25:
                agent.request_clean_sync(rng.choice(["CLEAN", "CLEAN_ALL"]))
            drop = mode > 0.85
            try:
                agent.sync(drop_postflight=drop, stop_after_pages=stop)
            except SyncFailed:
                assert stop is not None
                continue  # the agent applied nothing and will repeat the sync
            assert agent.rules == model.holds(agent.machine_id)
            # The agent never changes its rules itself, so nothing may look like drift, even
            # after lost postflights: the server's expected counts are exact.
            host = Host.objects.get(machine_id=agent.machine_id)
            assert host.drift_reasons == [], host.drift_reasons

    for agent in agents:
        agent.sync()
        expected = model.holds(agent.machine_id)
        assert agent.rules == expected
        listed = analyst_api.get(
            f"/api/v1/hosts/{agent.machine_id}/rules/", {"page_size": 1000}
        ).json()
        served = {
            (r["rule_type"], r["identifier"]): {
                "policy": r["policy"],
                "custom_msg": r["custom_msg"],
                "custom_url": r["custom_url"],
                "cel_expr": r["cel_expr"],
            }
            for r in listed["results"]
        }
        assert served == expected
