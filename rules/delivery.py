"""Which rules a host should hold, and what to send it to get there.

A host's rule set at fleet revision R is computed from the rule versions valid at R and the
host's tags at R: for each (rule_type, identifier) the most specific applicable version wins —
host over tag over everyone; on a tie a blocking policy wins; then the oldest rule (lowest id).

* A **clean** download sends the whole set at revision S, one page of keys at a time.
* An **incremental** download sends, for each key that may have changed for this host between
  its confirmed revision P and S, the rule it should hold at S when that differs from what it
  held at P, or REMOVE when it should no longer hold one. The candidate keys come from index
  range scans on RuleTarget (versions opened or closed in (P, S] that target everyone, one of
  the host's tags or the host, plus the rules of tags the host gained or lost), so the cost is
  proportional to what changed for this host, not to the rule set or the fleet.

Both are pinned to S, so every page of one download describes the same state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q

from hosts.selectors import TagHistory, host_tag_history

from .models import BLOCK_POLICIES, Policy, RuleTarget, RuleType, RuleVersion, TargetKind

COUNT_KIND = {
    RuleType.BINARY: "binary",
    RuleType.CERTIFICATE: "certificate",
    RuleType.TEAMID: "teamid",
    RuleType.SIGNINGID: "signingid",
    RuleType.CDHASH: "cdhash",
}

Key = tuple[str, str]


@dataclass(frozen=True)
class DeliveredRule:
    """One rule as delivered to an agent (REMOVE included)."""

    rule_type: str
    identifier: str
    policy: str
    custom_msg: str = ""
    custom_url: str = ""
    cel_expr: str = ""
    rule_id: int | None = None

    @classmethod
    def of(cls, version: RuleVersion) -> DeliveredRule:
        return cls(
            version.rule_type,
            version.identifier,
            version.policy,
            version.custom_msg,
            version.custom_url,
            version.cel_expr,
            version.rule_id,
        )

    @classmethod
    def removal(cls, key: Key) -> DeliveredRule:
        return cls(key[0], key[1], Policy.REMOVE)


@dataclass
class Page:
    rules: list[DeliveredRule]
    last_key: Key | None
    done: bool
    counts: dict[str, int] = field(default_factory=dict)  # change to the host's rule counts


def _level(version: RuleVersion, host_id: int, tag_ids: frozenset[int]) -> int:
    if host_id in version.host_ids:
        return 3
    if tag_ids.intersection(version.excluded_tag_ids):
        return 0
    if version.tag_ids and tag_ids.intersection(version.tag_ids):
        return 2
    return 1 if version.scope_all else 0


def resolve(
    versions: Iterable[RuleVersion], host_id: int, tag_ids: frozenset[int]
) -> RuleVersion | None:
    """The version of one key that applies to a host, or None."""
    best, best_rank = None, None
    for version in versions:
        level = _level(version, host_id, tag_ids)
        if not level:
            continue
        rank = (level, version.policy in BLOCK_POLICIES, -version.rule_id)
        if best_rank is None or rank > best_rank:
            best, best_rank = version, rank
    return best


def _valid_at(version: RuleVersion, revision: int) -> bool:
    return version.rev_from <= revision and (version.rev_to is None or version.rev_to > revision)


def count_vector(version: RuleVersion | None) -> dict[str, int]:
    """What a held rule adds to the counts the agent reports at preflight (§4.2)."""
    if version is None or version.policy == Policy.REMOVE:
        return {}
    counts = {COUNT_KIND[version.rule_type]: 1}
    if version.policy == Policy.ALLOWLIST_COMPILER:
        counts["compiler"] = 1
    return counts


def add_counts(total: dict[str, int], change: dict[str, int], sign: int = 1) -> None:
    for kind, value in change.items():
        total[kind] = total.get(kind, 0) + sign * value


def _after(key: Key | None) -> Q:
    if key is None:
        return Q()
    return Q(rule_type__gt=key[0]) | Q(rule_type=key[0], identifier__gt=key[1])


def _valid_at_q(revision: int) -> Q:
    return Q(rev_from__lte=revision) & (Q(rev_to__isnull=True) | Q(rev_to__gt=revision))


def _versions_for(keys: list[Key], low: int, high: int) -> dict[Key, list[RuleVersion]]:
    """Versions of these keys valid at some revision in [low, high], in one query."""
    wanted = set(keys)
    by_key: dict[Key, list[RuleVersion]] = defaultdict(list)
    if not keys:
        return by_key
    rows = RuleVersion.objects.filter(
        Q(identifier__in={identifier for _, identifier in keys}),
        Q(rev_from__lte=high),
        Q(rev_to__isnull=True) | Q(rev_to__gt=low),
    ).only(
        "rule_id",
        "rev_from",
        "rev_to",
        "rule_type",
        "identifier",
        "policy",
        "custom_msg",
        "custom_url",
        "cel_expr",
        "scope_all",
        "tag_ids",
        "excluded_tag_ids",
        "host_ids",
    )
    for version in rows:
        key = (version.rule_type, version.identifier)
        if key in wanted:
            by_key[key].append(version)
    return by_key


def _targets_of_host(host_id: int, tag_ids: Iterable[int]) -> Q:
    return (
        Q(kind=TargetKind.ALL, target_id=0)
        | Q(kind=TargetKind.TAG, target_id__in=list(tag_ids))
        | Q(kind=TargetKind.HOST, target_id=host_id)
    )


def clean_page(
    host_id: int,
    revision: int,
    after: Key | None,
    limit: int,
    history: TagHistory | None = None,
) -> Page:
    """A page of the host's whole rule set at `revision`."""
    history = history or host_tag_history(host_id, None, revision)
    tag_ids = history.at(revision)
    keys = list(
        RuleTarget.objects.filter(_targets_of_host(host_id, tag_ids), _valid_at_q(revision))
        .filter(_after(after))
        .order_by("rule_type", "identifier")
        .values_list("rule_type", "identifier")
        .distinct()[:limit]
    )
    versions = _versions_for(keys, revision, revision)
    rules, counts = [], {}
    for key in keys:
        chosen = resolve((v for v in versions[key] if _valid_at(v, revision)), host_id, tag_ids)
        if chosen is not None:
            rules.append(DeliveredRule.of(chosen))
            add_counts(counts, count_vector(chosen))
    return Page(rules, keys[-1] if keys else after, len(keys) < limit, counts)


def changes_page(
    host_id: int,
    since: int,
    revision: int,
    after: Key | None,
    limit: int,
    history: TagHistory | None = None,
    unconfirmed: int | None = None,
) -> Page:
    """A page of what changed for the host between revisions `since` and `revision`.

    `unconfirmed` is the revision of a download the host completed without confirming it (a
    lost postflight, or a rule-only sync): each of its keys may then hold the state of any
    revision in [since, unconfirmed], so a key is sent unless it was the same at all of them.
    """
    history = history or host_tag_history(host_id, since, revision)
    tags_then, tags_now = history.at(since), history.at(revision)
    changed_tags = history.changed_between(since, revision)
    in_window = Q(rev_from__gt=since, rev_from__lte=revision) | Q(
        rev_to__gt=since, rev_to__lte=revision
    )
    relevant = _targets_of_host(host_id, tags_then | tags_now) | Q(
        kind=TargetKind.EXCLUDED_TAG, target_id__in=list(tags_then | tags_now)
    )
    candidates = Q(relevant & in_window)
    if changed_tags:
        # Tags gained or lost: every rule that targets (or excludes) them at either end.
        candidates |= Q(
            kind__in=[TargetKind.TAG, TargetKind.EXCLUDED_TAG],
            target_id__in=list(changed_tags),
            rev_from__lte=revision,
        ) & (Q(rev_to__isnull=True) | Q(rev_to__gt=since))
    keys = list(
        RuleTarget.objects.filter(candidates)
        .filter(_after(after))
        .order_by("rule_type", "identifier")
        .values_list("rule_type", "identifier")
        .distinct()[:limit]
    )
    versions = _versions_for(keys, since, revision)
    uncertain = min(unconfirmed, revision) if unconfirmed and unconfirmed > since else None
    tag_points = history.change_points(since, uncertain) if uncertain else set()
    rules, counts = [], {}
    for key in keys:
        then = _state(versions[key], host_id, history, since)
        now = _state(versions[key], host_id, history, revision)
        possibly_held = [then]
        if uncertain:
            points = tag_points | {
                r
                for v in versions[key]
                for r in (v.rev_from, v.rev_to)
                if r is not None and since < r <= uncertain
            }
            possibly_held += [_state(versions[key], host_id, history, p) for p in points]
        wanted = now.payload if now else None
        if all((held.payload if held else None) == wanted for held in possibly_held):
            continue
        if now is not None:
            rules.append(DeliveredRule.of(now))
        elif any(held is not None and held.policy != Policy.REMOVE for held in possibly_held):
            rules.append(DeliveredRule.removal(key))
        add_counts(counts, count_vector(then), -1)
        add_counts(counts, count_vector(now))
    return Page(rules, keys[-1] if keys else after, len(keys) < limit, counts)


def _state(versions, host_id: int, history: TagHistory, revision: int) -> RuleVersion | None:
    """The version a host holds for one key at a revision."""
    return resolve((v for v in versions if _valid_at(v, revision)), host_id, history.at(revision))


def host_rules(host_id: int, revision: int, page_size: int = 2000) -> list[DeliveredRule]:
    """Every rule the host holds once it has synced to `revision` (REMOVE rules excluded)."""
    history = host_tag_history(host_id, None, revision)
    held: list[DeliveredRule] = []
    after = None
    while True:
        page = clean_page(host_id, revision, after, page_size, history)
        held += [rule for rule in page.rules if rule.policy != Policy.REMOVE]
        if page.done:
            return held
        after = page.last_key
