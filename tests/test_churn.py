"""Rule delivery under random churn made through the REST API, checked against a plain model.

Analyst changes (rules created, patched, deleted and bulk-imported; host tags replaced; tag
rules created, changed and deleted) are interleaved with syncs of many simulated agents that
complete, drop their postflight, stop part-way through the rule-download cursor or are clean
syncs asked for by the agent or an operator. Agents also change their primary user and groups
between syncs, so tag rules move them in and out of tags at their preflight.

The model below is written from docs/architecture.md ("What a host holds at revision R"), the
README and the API's own descriptions, never by calling the project's code:

* a host's tags are its assigned tags (the enrollment's default tags until a PATCH replaces
  them) plus its automatic tags, those of every tag rule that matches the facts the host last
  reported at a preflight (re-evaluated for the fleet when tag rules change);
* per key, a rule applies at level 3 if it lists the host, at level 2 if it targets one of the
  host's tags and excludes none of them, at level 1 if it is for everyone and excludes none of
  them; the highest level wins, then a blocking policy, then the lowest rule id; a REMOVE
  winner means nothing is held.

Every API answer (201, 200, or 400/409 for refused rules and duplicate tag rules) is the one the
model predicts. After every sync that completes the agent holds exactly the model's set and is
not flagged as drifted; now and then delivery tracking is checked to claim nothing untrue. At
the end every agent syncs once more, and the server's view of each host
(`/api/v1/hosts/<id>/rules/`, its tags, its delivery tracking) and of a sample of rules (their
delivery tracking) must equal the model.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from hosts.models import Host
from tests.agent import SyncFailed

BLOCKING = {"BLOCKLIST", "SILENT_BLOCKLIST", "SILENT_GUI_BLOCKLIST", "SILENT_TTY_BLOCKLIST"}
POLICIES = [
    "ALLOWLIST",
    "ALLOWLIST_COMPILER",
    "BLOCKLIST",
    "SILENT_BLOCKLIST",
    "SILENT_GUI_BLOCKLIST",
    "SILENT_TTY_BLOCKLIST",
    "REMOVE",
    "CEL",
]
CEL_EXPR = "target.signing_time >= timestamp('2025-01-01T00:00:00Z')"
KEYS = (
    [("BINARY", f"{n:064x}") for n in range(1, 6)]
    + [("CERTIFICATE", f"{n:064x}") for n in range(1, 3)]
    + [("TEAMID", f"TEAM{n:06d}") for n in range(3)]
    + [("SIGNINGID", f"TEAM{n:06d}:com.example.app{n}") for n in range(2)]
    + [("CDHASH", f"{n:040x}") for n in range(1, 3)]
)
TAGS = ["eng", "finance", "ops", "contractors", "corp", "admins", "devs"]
MESSAGES = ["", "Ask IT", "Blocked by policy"]
URLS = ["", "https://help.example.com/santa"]

PLAIN_ENROLLMENT = "default-enrollment"  # conftest's `enrollment` fixture, no tags
TAGGED_ENROLLMENT = "corp-laptops"
TAGGED_ENROLLMENT_TAGS = ("corp", "eng")

# Conditions analysts pick tag rules from: (tag, fact, operator, value).
TAG_RULE_POOL = [
    ("admins", "primary_user_groups", "contains", "admin"),
    ("devs", "primary_user_groups", "starts_with", "dev"),
    ("finance", "primary_user_groups", "equals", "finance-team"),
    ("eng", "primary_user_groups", "matches", "^eng[a-z]*$"),
    ("contractors", "primary_user", "starts_with", "ext-"),
    ("contractors", "primary_user_groups", "contains", "vendors"),
    ("ops", "enrollment", "equals", TAGGED_ENROLLMENT),
    ("corp", "hostname", "contains", "corp"),
]
# "administrators" is not the group "admin": `contains` on groups means membership.
GROUPS = [
    "staff",
    "admin",
    "administrators",
    "developers",
    "dev",
    "finance-team",
    "finance",
    "engineering",
    "eng",
    "vendors",
    "wheel",
]
USERS = ["alice", "bob", "ext-carol", "ext-dave"]


# --- the independent model ------------------------------------------------------------------


def condition_holds(fact: str, operator: str, value: str, facts: dict) -> bool:
    """One tag-rule condition on reported facts (operators as the API describes them)."""

    def test(text: str) -> bool:
        if operator == "equals":
            return text == value
        if operator == "contains":
            return value in text
        if operator == "starts_with":
            return text.startswith(value)
        if operator == "matches":
            return re.search(value, text) is not None
        raise AssertionError(operator)

    reported = facts.get(fact)
    if fact == "primary_user_groups":
        groups = list(reported or [])
        if operator == "contains":
            return value in groups  # "has member" for the groups fact
        return any(test(group) for group in groups)
    return bool(reported) and test(reported)


def _everyone(rule: dict) -> bool:
    return not rule["tags"] and not rule["machine_ids"]


class Model:
    """What analysts and agents did, in plain Python."""

    def __init__(self):
        self.rules: dict[int, dict] = {}  # id -> rule (scope as sets of names / machine ids)
        self.assigned: dict[str, set[str]] = {}  # machine id -> assigned tags
        self.facts: dict[str, dict] = {}  # machine id -> facts of its last preflight
        self.tag_rules: dict[int, tuple[str, str, str, str]] = {}

    # hosts and tags

    def report(self, agent, enrollment: str) -> None:
        """The agent's preflight: the server now knows these facts."""
        self.facts[agent.machine_id] = {
            "primary_user": agent.facts["primary_user"],
            "primary_user_groups": list(agent.facts["primary_user_groups"]),
            "hostname": agent.facts["hostname"],
            "serial_number": agent.facts["serial_number"],
            "enrollment": enrollment,
        }

    def automatic_tags(self, machine_id: str) -> set[str]:
        facts = self.facts[machine_id]
        return {
            tag
            for tag, fact, operator, value in self.tag_rules.values()
            if condition_holds(fact, operator, value, facts)
        }

    def tags(self, machine_id: str) -> set[str]:
        return self.assigned[machine_id] | self.automatic_tags(machine_id)

    # rules

    def ranked(self, machine_id: str) -> dict[tuple[str, str], list]:
        """Per key, the rules that apply to the host as (rank, rule), best first."""
        tags = self.tags(machine_id)
        applicable: dict = {}
        for rule in self.rules.values():
            if machine_id in rule["machine_ids"]:
                level = 3  # a host listing ignores exclusions
            elif tags & rule["excluded_tags"]:
                continue
            elif rule["tags"]:
                if not tags & rule["tags"]:
                    continue
                level = 2
            elif not rule["machine_ids"]:
                level = 1
            else:
                continue
            rank = (level, rule["policy"] in BLOCKING, -rule["id"])
            key = (rule["rule_type"], rule["identifier"])
            applicable.setdefault(key, []).append((rank, rule))
        return {
            key: sorted(found, key=lambda c: c[0], reverse=True)
            for key, found in applicable.items()
        }

    def winners(self, machine_id: str) -> dict[tuple[str, str], dict]:
        """The winning rule per key (REMOVE winners included)."""
        return {key: found[0][1] for key, found in self.ranked(machine_id).items()}

    def decided_by(self, machine_id: str) -> Counter:
        """Which precedence step picked each key's winner (to show the churn exercises all)."""
        steps = Counter()
        for found in self.ranked(machine_id).values():
            if len(found) == 1:
                continue
            (first, _), (second, _) = found[:2]
            steps[
                ("level", "blocking policy", "lowest rule id")[
                    0 if first[0] != second[0] else 1 if first[1] != second[1] else 2
                ]
            ] += 1
        return steps

    def holds(self, machine_id: str) -> dict:
        return {
            key: {
                "policy": rule["policy"],
                "custom_msg": rule["custom_msg"],
                "custom_url": rule["custom_url"],
                "cel_expr": rule["cel_expr"],
            }
            for key, rule in self.winners(machine_id).items()
            if rule["policy"] != "REMOVE"
        }

    @staticmethod
    def invalid(rule: dict) -> bool:
        """Refused with 400 (README: excluded tags apply to tag or everyone scopes)."""
        if rule["policy"] == "CEL" and not rule["cel_expr"].strip():
            return True
        if rule["policy"] != "CEL" and rule["cel_expr"]:
            return True
        if rule["excluded_tags"] and rule["machine_ids"] and not rule["tags"]:
            return True
        return bool(rule["tags"] & rule["excluded_tags"])

    @staticmethod
    def clash(a: dict, b: dict) -> bool:
        """Two rules of one key may not share a scope: everyone, a tag, or a host."""
        if (a["rule_type"], a["identifier"]) != (b["rule_type"], b["identifier"]):
            return False
        if _everyone(a) and _everyone(b):
            return True
        return bool(a["tags"] & b["tags"] or a["machine_ids"] & b["machine_ids"])

    def conflicts(self, rule: dict, exclude: int | None = None) -> bool:
        return any(self.clash(rule, other) for rid, other in self.rules.items() if rid != exclude)


def as_model_rule(payload: dict, rule_id: int | None = None) -> dict:
    return {
        "id": rule_id,
        "rule_type": payload["rule_type"],
        "identifier": payload["identifier"],
        "policy": payload["policy"],
        "custom_msg": payload.get("custom_msg", ""),
        "custom_url": payload.get("custom_url", ""),
        "cel_expr": payload.get("cel_expr", ""),
        "tags": set(payload.get("tags", ())),
        "excluded_tags": set(payload.get("excluded_tags", ())),
        "machine_ids": set(payload.get("machine_ids", ())),
    }


def as_payload(rule: dict) -> dict:
    return {
        "rule_type": rule["rule_type"],
        "identifier": rule["identifier"],
        "policy": rule["policy"],
        "custom_msg": rule["custom_msg"],
        "custom_url": rule["custom_url"],
        "cel_expr": rule["cel_expr"],
        "tags": sorted(rule["tags"]),
        "excluded_tags": sorted(rule["excluded_tags"]),
        "machine_ids": sorted(rule["machine_ids"]),
    }


# --- random operations ------------------------------------------------------------------------


def random_scope(rng: random.Random, machine_ids: list[str]) -> dict:
    roll = rng.random()
    tags, hosts, excluded = [], [], []
    if roll < 0.40:
        tags = rng.sample(TAGS, rng.randint(1, 2))
    elif roll < 0.60:
        hosts = rng.sample(machine_ids, rng.randint(1, 3))
    elif roll < 0.70:
        tags = rng.sample(TAGS, 1)
        hosts = rng.sample(machine_ids, rng.randint(1, 2))
    if rng.random() < 0.35:
        pick = [t for t in rng.sample(TAGS, 2) if t not in tags][:1]
        if tags or not hosts or rng.random() < 0.1:  # now and then an invalid exclusion
            excluded = pick
    return {"tags": tags, "excluded_tags": excluded, "machine_ids": hosts}


def random_policy(rng: random.Random) -> dict:
    policy = rng.choice(POLICIES)
    return {"policy": policy, "cel_expr": CEL_EXPR if policy == "CEL" else ""}


def random_rule(rng: random.Random, machine_ids: list[str], model: Model) -> dict:
    """A new rule; half of them for a key that already has rules, and some of those for one
    of a host's tags with a policy chosen against a rule of that key, so that rules compete
    and every precedence step (level, blocking policy, rule id) gets to decide."""
    used = sorted({(r["rule_type"], r["identifier"]) for r in model.rules.values()})
    rule_type, identifier = rng.choice(used if used and rng.random() < 0.5 else KEYS)
    scope, policy = random_scope(rng, machine_ids), random_policy(rng)
    if (rule_type, identifier) in used and rng.random() < 0.4:
        machine_id = rng.choice(machine_ids)
        host_tags = model.tags(machine_id)
        same_key = [
            r
            for _, r in sorted(model.rules.items())
            if (r["rule_type"], r["identifier"]) == (rule_type, identifier)
        ]
        free = sorted(host_tags - {t for r in same_key for t in r["tags"]})
        if free:
            scope = {"tags": [rng.choice(free)], "excluded_tags": [], "machine_ids": []}
            rivals = [
                r
                for r in same_key
                if r["tags"] & host_tags
                and not r["excluded_tags"] & host_tags
                and machine_id not in r["machine_ids"]
            ]
            rival = rng.choice(rivals or same_key)
            blocking = (rival["policy"] in BLOCKING) == (rng.random() < 0.6)
            choice = rng.choice([p for p in POLICIES if (p in BLOCKING) == blocking])
            policy = {"policy": choice, "cel_expr": CEL_EXPR if choice == "CEL" else ""}
    return {
        "rule_type": rule_type,
        "identifier": identifier,
        **policy,
        "custom_msg": rng.choice(MESSAGES),
        "custom_url": rng.choice(URLS),
        **scope,
    }


def random_patch(rng: random.Random, machine_ids: list[str]) -> dict:
    kind = rng.choices(
        ["policy", "scope", "tags", "excluded_tags", "machine_ids", "text", "key"],
        weights=[5, 4, 3, 2, 2, 1, 1],
    )[0]
    if kind == "policy":
        patch = random_policy(rng)
        if rng.random() < 0.15:
            del patch["cel_expr"]  # may leave a CEL expression on another policy: refused
        return patch
    if kind == "scope":
        return random_scope(rng, machine_ids)
    if kind == "tags":
        return {"tags": rng.sample(TAGS, rng.randint(0, 2))}
    if kind == "excluded_tags":
        return {"excluded_tags": rng.sample(TAGS, rng.randint(0, 1))}
    if kind == "machine_ids":
        return {"machine_ids": rng.sample(machine_ids, rng.randint(0, 2))}
    if kind == "text":
        return {"custom_msg": rng.choice(MESSAGES), "custom_url": rng.choice(URLS)}
    rule_type, identifier = rng.choice(KEYS)  # move the rule to another key
    return {"rule_type": rule_type, "identifier": identifier}


# --- the analyst, through the REST API --------------------------------------------------------


class Analyst:
    """API writes with their on-commit work (fan-outs) run, as it runs in production."""

    def __init__(self, api, capture):
        self.api, self.capture = api, capture

    def write(self, method: str, path: str, data=None):
        with self.capture(execute=True):
            return getattr(self.api, method)(path, data, format="json")

    def get(self, path: str, params=None) -> dict:
        response = self.api.get(path, params or {})
        assert response.status_code == 200, response.content
        return response.json()


def served_rules(analyst: Analyst, machine_id: str) -> dict:
    listed = analyst.get(f"/api/v1/hosts/{machine_id}/rules/", {"page_size": 1000})
    assert listed["next"] is None
    return {
        (r["rule_type"], r["identifier"]): (
            r["rule_id"],
            {
                "policy": r["policy"],
                "custom_msg": r["custom_msg"],
                "custom_url": r["custom_url"],
                "cel_expr": r["cel_expr"],
            },
        )
        for r in listed["results"]
    }


def check_tags(analyst: Analyst, model: Model) -> None:
    """Every host's tags and automatic tags, as the host list shows them."""
    listed = analyst.get("/api/v1/hosts/", {"page_size": 1000})
    assert listed["count"] == len(model.assigned)
    for host in listed["results"]:
        machine_id = host["machine_id"]
        assert host["automatic_tags"] == sorted(model.automatic_tags(machine_id)), machine_id
        assert host["tags"] == sorted(model.tags(machine_id)), machine_id


def check_tracking(analyst: Analyst, model: Model, confirmed: dict, machine_id: str, rng) -> None:
    """Delivery tracking never claims more than is true: a host shown in sync confirmed exactly
    the model's set, its pending list names every key it confirmed differently; a rule's
    targets are the hosts it wins for, and those not pending confirmed holding it.

    `confirmed` is what each agent held at its last accepted postflight."""
    now = model.holds(machine_id)
    differs = {
        key
        for key in set(now) | set(confirmed[machine_id])
        if now.get(key) != confirmed[machine_id].get(key)
    }
    delivery = analyst.get(f"/api/v1/hosts/{machine_id}/")["delivery"]
    if delivery["in_sync"]:
        assert not differs, (machine_id, differs, delivery)
    if delivery["pending_count_exact"] and delivery["pending_count"] <= 100:
        pending = {(r["rule_type"], r["identifier"]) for r in delivery["pending"]}
        assert differs <= pending, (machine_id, differs, delivery)
    if not model.rules:
        return
    rule_id = rng.choice(sorted(model.rules))
    rule = model.rules[rule_id]
    key = (rule["rule_type"], rule["identifier"])
    reached = [m for m in model.assigned if model.winners(m).get(key) is rule]
    delivery = analyst.get(f"/api/v1/rules/{rule_id}/")["delivery"]
    assert delivery["target_hosts"] == len(reached), (rule_id, rule, delivery)
    assert delivery["pending_hosts"] == len(delivery["pending_sample"]), delivery
    for m in reached:
        if m not in delivery["pending_sample"]:
            assert confirmed[m].get(key) == model.holds(m).get(key), (rule_id, m, delivery)


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_api_churn_with_interrupted_syncs_converges_to_the_model(
    seed,
    make_agent,
    make_enrollment,
    analyst_api,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.SYNC_RULES_PER_PAGE = 3  # several pages per download: cursors get interrupted
    rng = random.Random(seed)
    analyst = Analyst(analyst_api, django_capture_on_commit_callbacks)
    _, tagged_secret = make_enrollment(name=TAGGED_ENROLLMENT, tags=TAGGED_ENROLLMENT_TAGS)
    model = Model()

    agents, enrollment_of = [], {}
    for n in range(14):
        tagged = n % 7 >= 4  # 8 hosts from the plain enrollment, 6 from the tagged one
        agent = make_agent(
            machine_id=f"CHURN-{seed}-{n:02d}",
            secret=tagged_secret if tagged else None,
            fmt="proto" if n % 3 == 0 else "json",
            hostname=f"mac-{'corp-' if n % 4 == 0 else ''}{n}.example.com",
            primary_user=rng.choice(USERS),
            primary_user_groups=tuple(rng.sample(GROUPS, rng.randint(0, 3))),
        )
        agents.append(agent)
        enrollment_of[agent.machine_id] = TAGGED_ENROLLMENT if tagged else PLAIN_ENROLLMENT
        model.assigned[agent.machine_id] = set(TAGGED_ENROLLMENT_TAGS) if tagged else set()
        model.report(agent, enrollment_of[agent.machine_id])
        agent.sync()
        assert agent.rules == {}
    machine_ids = [agent.machine_id for agent in agents]
    check_tags(analyst, model)

    stats = Counter()
    confirmed = {agent.machine_id: {} for agent in agents}  # held at the last postflight
    check_rng = random.Random(-seed)  # checks do not shift the operations' sequence

    def sync(agent, *, drop: bool = False, stop: int | None = None) -> None:
        model.report(agent, enrollment_of[agent.machine_id])
        try:
            result = agent.sync(drop_postflight=drop, stop_after_pages=stop)
        except SyncFailed as exc:
            assert stop is not None and exc.stage == "ruledownload", exc
            stats["stopped mid-cursor" if stop else "stopped before the download"] += 1
            return  # the agent applied nothing and will repeat the sync
        stats[f"{result.sync_type} sync, {result.pages} pages"] += 1
        stats["postflight dropped"] += drop
        assert agent.rules == model.holds(agent.machine_id), (agent.machine_id, result)
        if not drop:
            confirmed[agent.machine_id] = dict(agent.rules)
        stats.update(f"decided by {step}" for step in model.decided_by(agent.machine_id))
        # The agent never changes its rules itself: the server's expected counts are exact.
        drift = Host.objects.values_list("drift_reasons", flat=True).get(
            machine_id=agent.machine_id
        )
        assert drift == [], drift

    for _ in range(150):
        action = rng.random()
        if action < 0.13:  # create a rule
            payload = random_rule(rng, machine_ids, model)
            candidate = as_model_rule(payload)
            response = analyst.write("post", "/api/v1/rules/", payload)
            if model.invalid(candidate):
                assert response.status_code == 400, response.content
            elif model.conflicts(candidate):
                assert response.status_code == 409, response.content
            else:
                assert response.status_code == 201, response.content
                candidate["id"] = response.json()["id"]
                model.rules[candidate["id"]] = candidate
            stats[f"rule create {response.status_code}"] += 1
        elif action < 0.17:  # bulk create
            payloads = [random_rule(rng, machine_ids, model) for _ in range(rng.randint(2, 4))]
            candidates = [as_model_rule(p) for p in payloads]
            response = analyst.write("post", "/api/v1/rules/bulk/", {"rules": payloads})
            if any(model.invalid(c) for c in candidates):
                assert response.status_code == 400, response.content
            elif any(model.conflicts(c) for c in candidates) or any(
                Model.clash(a, b) for i, a in enumerate(candidates) for b in candidates[:i]
            ):
                assert response.status_code == 409, response.content
            else:
                assert response.status_code == 201, response.content
                results = response.json()["results"]
                assert len(results) == len(candidates)
                for candidate, created in zip(candidates, results, strict=True):
                    assert (created["rule_type"], created["identifier"]) == (
                        candidate["rule_type"],
                        candidate["identifier"],
                    )
                    assert set(created["machine_ids"]) == candidate["machine_ids"]
                    assert set(created["tags"]) == candidate["tags"]
                    candidate["id"] = created["id"]
                    model.rules[created["id"]] = candidate
            stats[f"bulk create {response.status_code}"] += 1
        elif action < 0.29 and model.rules:  # patch a rule
            rule_id = rng.choice(sorted(model.rules))
            patch = random_patch(rng, machine_ids)
            merged = as_model_rule({**as_payload(model.rules[rule_id]), **patch}, rule_id)
            response = analyst.write("patch", f"/api/v1/rules/{rule_id}/", patch)
            if model.invalid(merged):
                assert response.status_code == 400, response.content
            elif model.conflicts(merged, exclude=rule_id):
                assert response.status_code == 409, response.content
            else:
                assert response.status_code == 200, response.content
                model.rules[rule_id] = merged
            stats[f"rule patch {response.status_code}"] += 1
        elif action < 0.35 and model.rules:  # delete a rule
            rule_id = rng.choice(sorted(model.rules))
            response = analyst.write("delete", f"/api/v1/rules/{rule_id}/")
            assert response.status_code == 204, response.content
            del model.rules[rule_id]
            stats["rule delete"] += 1
        elif action < 0.42:  # replace a host's assigned tags
            agent = rng.choice(agents)
            tags = rng.sample(TAGS, rng.randint(0, 3))
            response = analyst.write("patch", f"/api/v1/hosts/{agent.machine_id}/", {"tags": tags})
            assert response.status_code == 200, response.content
            model.assigned[agent.machine_id] = set(tags)
            assert response.json()["tags"] == sorted(model.tags(agent.machine_id))
            stats["host tags"] += 1
        elif action < 0.47:  # add a tag rule (or try a duplicate)
            condition = rng.choice(TAG_RULE_POOL)
            tag, fact, operator, value = condition
            body = {"tag": tag, "fact": fact, "operator": operator, "value": value}
            response = analyst.write("post", "/api/v1/tag-rules/", body)
            if condition in model.tag_rules.values():
                assert response.status_code == 409, response.content
            else:
                assert response.status_code == 201, response.content
                model.tag_rules[response.json()["id"]] = condition
                check_tags(analyst, model)  # the fan-out re-tagged the fleet
            stats[f"tag rule create {response.status_code}"] += 1
        elif action < 0.50 and model.tag_rules:  # delete a tag rule
            tag_rule_id = rng.choice(sorted(model.tag_rules))
            response = analyst.write("delete", f"/api/v1/tag-rules/{tag_rule_id}/")
            assert response.status_code == 204, response.content
            del model.tag_rules[tag_rule_id]
            check_tags(analyst, model)
            stats["tag rule delete"] += 1
        elif action < 0.53 and model.tag_rules:  # change a tag rule's condition
            tag_rule_id = rng.choice(sorted(model.tag_rules))
            old, new = model.tag_rules[tag_rule_id], rng.choice(TAG_RULE_POOL)
            fields = ("tag", "fact", "operator", "value")
            body = {f: n for f, o, n in zip(fields, old, new, strict=True) if o != n}
            response = analyst.write("patch", f"/api/v1/tag-rules/{tag_rule_id}/", body)
            others = {c for i, c in model.tag_rules.items() if i != tag_rule_id}
            if new in others:
                assert response.status_code == 409, response.content
            else:
                assert response.status_code == 200, response.content
                model.tag_rules[tag_rule_id] = new
                check_tags(analyst, model)
            stats[f"tag rule patch {response.status_code}"] += 1
        elif action < 0.61:  # the Mac's user or groups change; the server learns at preflight
            agent = rng.choice(agents)
            if rng.random() < 0.75:
                groups = rng.sample(GROUPS, rng.randint(0, 3))
                agent.facts["primary_user_groups"] = groups
            else:
                agent.facts["primary_user"] = rng.choice(USERS)
            stats["facts changed"] += 1
        else:  # a sync
            agent = rng.choice(agents)
            roll = rng.random()
            if roll < 0.10:
                agent.request_clean_sync(rng.choice(["CLEAN", "CLEAN_ALL"]))
                stats["agent asked for a clean sync"] += 1
            elif roll < 0.15:
                response = analyst.write(
                    "patch",
                    f"/api/v1/hosts/{agent.machine_id}/",
                    {"clean_sync_requested": rng.choice(["CLEAN", "CLEAN_ALL"])},
                )
                assert response.status_code == 200, response.content
                stats["operator asked for a clean sync"] += 1
            roll = rng.random()
            if roll < 0.25:
                sync(agent, stop=rng.choice([0, 1, 1, 2, 2, 3]))
            elif roll < 0.45:
                sync(agent, drop=True)
            else:
                sync(agent)
        if check_rng.random() < 0.12:
            check_tracking(analyst, model, confirmed, check_rng.choice(machine_ids), check_rng)

    # Everyone syncs to the end; the server's view must equal the model everywhere.
    for agent in agents:
        sync(agent)
    check_tags(analyst, model)
    for agent in agents:
        machine_id = agent.machine_id
        holds = model.holds(machine_id)
        expected = {
            key: (rule["id"], holds[key])
            for key, rule in model.winners(machine_id).items()
            if rule["policy"] != "REMOVE"
        }
        assert served_rules(analyst, machine_id) == expected, machine_id
        assert agent.rules == {key: held for key, (_, held) in expected.items()}
        detail = analyst.get(f"/api/v1/hosts/{machine_id}/")
        delivery = detail["delivery"]
        assert delivery["in_sync"] is True, (machine_id, delivery)
        assert delivery["pending_count"] == 0, (machine_id, delivery)
        assert detail["drift_reasons"] == []

    winners = {agent.machine_id: model.winners(agent.machine_id) for agent in agents}
    sample = rng.sample(sorted(model.rules), min(12, len(model.rules)))
    for rule_id in sample:
        rule = model.rules[rule_id]
        key = (rule["rule_type"], rule["identifier"])
        reached = sum(1 for held in winners.values() if key in held and held[key] is rule)
        delivery = analyst.get(f"/api/v1/rules/{rule_id}/")["delivery"]
        assert delivery["pending_hosts"] == 0, (rule_id, delivery)
        assert delivery["target_hosts"] == reached, (rule_id, rule, delivery)

    fanouts = analyst.get("/api/v1/fanouts/", {"page_size": 1000})
    assert fanouts["next"] is None
    assert {f["state"] for f in fanouts["results"]} <= {"done"}, fanouts["results"]

    # The churn did what it is meant to: interrupted cursors, lost postflights, clean syncs.
    print(seed, sorted(stats.items()))
    assert stats["stopped mid-cursor"] and stats["postflight dropped"]
    assert any(name.startswith("CLEAN") for name in stats)
    assert stats["decided by blocking policy"] and stats["decided by lowest rule id"]
