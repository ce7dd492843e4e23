"""Delivery tracking: which hosts a rule reaches and which of them confirmed it; what a host
confirmed and what is still pending for it. Also the drift audit.

Nothing here writes per host per rule. A host has *confirmed* a rule when its last postflight
confirmed a revision at or after the last change that could have altered its state for the
rule's key: the rule's own version, a competing rule of the same key changing or going away,
or the host joining or leaving one of the tags involved. That bound is conservative: a host can
show as pending although its state did not change, never the reverse.

Cost: a rule's tracking reads the versions of its key, the tag memberships of the tags those
versions name (so proportional to the members of those tags), and two counts over hosts for
the rest of the fleet. A host's tracking is an incremental download computed without sending.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Case, Count, F, Max, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from hosts.models import FanOut, Host, HostTag
from hosts.selectors import revision_current

from .delivery import COUNT_KIND, DeliveredRule, changes_page, clean_page, host_rules, resolve
from .models import Policy, Rule, RuleVersion

PENDING_SAMPLE = 50
NOT_A_HOST = -1


@dataclass
class RuleDelivery:
    revision: int  # the fleet revision of the rule's current state
    target_hosts: int = 0
    confirmed_hosts: int = 0
    pending_sample: list[str] = field(default_factory=list)  # machine ids, at most 50

    @property
    def pending_hosts(self) -> int:
        return self.target_hosts - self.confirmed_hosts


def _key_versions(keys: Iterable[tuple[str, str]], since: int | None = None):
    """Versions of these keys that are open, or closed after `since` (all closed ones when
    since is None), grouped by key; one query per 500 identifiers."""
    keys = set(keys)
    by_key = defaultdict(list)
    identifiers = sorted({identifier for _, identifier in keys})
    for start in range(0, len(identifiers), 500):
        rows = RuleVersion.objects.filter(identifier__in=identifiers[start : start + 500])
        rows = rows.filter(Q(rev_to__isnull=True) | Q(rev_to__gt=since or 0))
        for version in rows:
            key = (version.rule_type, version.identifier)
            if key in keys:
                by_key[key].append(version)
    return by_key


def _tag_rule_delivery(version: RuleVersion, sample: int) -> RuleDelivery:
    """_rule_delivery for the common case, in SQL: the key's only version since it opened,
    scoped to tags, with no listed hosts and no exclusions. Its targets are exactly the hosts
    with an open span in its tags; each host's `since` is computed as the general case does
    (the latest of the version's revision, its spans' openings and its recent span closings),
    grouped per host by the database instead of walked in Python."""
    since = Max(Case(When(rev_to__isnull=True, then=F("rev_from")), default=F("rev_to")))
    per_host = (
        HostTag.objects.filter(tag_id__in=version.tag_ids)
        .filter(Q(rev_to__isnull=True) | Q(rev_to__gt=version.rev_from))
        .values("host_id")
        .annotate(
            open_spans=Count("id", filter=Q(rev_to__isnull=True)),
            since=Greatest(since, Value(version.rev_from)),
            synced=Max("host__rules_synced_rev"),
            machine_id=Max("host__machine_id"),
        )
        .filter(open_spans__gt=0)
    )
    confirmed = Q(synced__isnull=False) & Q(synced__gte=F("since"))
    counts = per_host.aggregate(
        targets=Count("host_id"), confirmed=Count("host_id", filter=confirmed)
    )
    result = RuleDelivery(
        revision=version.rev_from,
        target_hosts=counts["targets"],
        confirmed_hosts=counts["confirmed"],
    )
    if result.pending_hosts and sample:
        result.pending_sample = list(
            per_host.exclude(confirmed)
            .order_by("machine_id")
            .values_list("machine_id", flat=True)[:sample]
        )
    return result


def _rule_delivery(version: RuleVersion, versions: list[RuleVersion], sample: int):
    """Tracking for one open version, given every version of its key open or closed after it
    opened."""
    relevant = [v for v in versions if v.rev_to is None or v.rev_to > version.rev_from]
    if (
        relevant == [version]
        and version.tag_ids
        and not version.host_ids
        and not version.excluded_tag_ids
    ):
        return _tag_rule_delivery(version, sample)
    competing = [v for v in relevant if v.rev_to is None]
    since = max([version.rev_from] + [v.rev_to for v in relevant if v.rev_to is not None])
    tags = {t for v in relevant for t in (*v.tag_ids, *v.excluded_tag_ids)}
    open_tags = {t for v in competing for t in (*v.tag_ids, *v.excluded_tag_ids)}
    listed = {h for v in competing for h in v.host_ids}
    result = RuleDelivery(revision=version.rev_from)

    # Hosts in (or recently out of) the tags involved, and hosts listed by name: one by one.
    special: dict[int, dict] = {}
    spans = HostTag.objects.filter(tag_id__in=tags).filter(
        Q(rev_to__isnull=True) | Q(rev_to__gt=version.rev_from)
    )
    for host_id, tag_id, rev_from, rev_to, synced, machine_id in spans.values_list(
        "host_id", "tag_id", "rev_from", "rev_to", "host__rules_synced_rev", "host__machine_id"
    ):
        entry = special.setdefault(
            host_id, {"tags": set(), "since": since, "synced": synced, "machine_id": machine_id}
        )
        if rev_to is None and tag_id in open_tags:
            entry["tags"].add(tag_id)
        entry["since"] = max(entry["since"], rev_from if rev_to is None else rev_to)
    missing = listed - special.keys()
    for host_id, synced, machine_id in Host.objects.filter(pk__in=missing).values_list(
        "pk", "rules_synced_rev", "machine_id"
    ):
        special[host_id] = {
            "tags": set(),
            "since": since,
            "synced": synced,
            "machine_id": machine_id,
        }
    for host_id, entry in special.items():
        winner = resolve(competing, host_id, frozenset(entry["tags"]))
        if winner is None or winner.rule_id != version.rule_id:
            continue
        result.target_hosts += 1
        if entry["synced"] is not None and entry["synced"] >= entry["since"]:
            result.confirmed_hosts += 1
        elif len(result.pending_sample) < sample:
            result.pending_sample.append(entry["machine_id"])

    # Everyone else has none of the tags involved and is not listed: one state for all.
    winner = resolve(competing, NOT_A_HOST, frozenset())
    if winner is not None and winner.rule_id == version.rule_id:
        others = Host.objects.exclude(pk__in=spans.values("host_id")).exclude(pk__in=listed)
        if not special:
            others = Host.objects.all()
        result.target_hosts += others.count()
        result.confirmed_hosts += others.filter(rules_synced_rev__gte=since).count()
        room = sample - len(result.pending_sample)
        if room > 0:
            pending = others.filter(
                Q(rules_synced_rev__isnull=True) | Q(rules_synced_rev__lt=since)
            )
            result.pending_sample += list(
                pending.order_by("machine_id").values_list("machine_id", flat=True)[:room]
            )
    return result


def rule_delivery(rule: Rule, sample: int = PENDING_SAMPLE) -> RuleDelivery | None:
    """Live tracking for one rule (None for a rule with no open version: deleted meanwhile)."""
    version = RuleVersion.objects.filter(rule_id=rule.pk, rev_to__isnull=True).first()
    if version is None:
        return None
    key = (version.rule_type, version.identifier)
    versions = _key_versions([key], since=version.rev_from)[key]
    return _rule_delivery(version, versions, sample)


def delivery_summaries_refresh(rule_ids: Iterable[int]) -> int:
    """Store target/confirmed counts on these rules (the lists' and reports' columns).

    Rules of one revision whose keys have no competing versions and the same scope have the
    same figures, so a bulk import of thousands of rules costs a few queries per scope.
    """
    rule_ids = sorted(set(rule_ids))
    now = timezone.now()
    refreshed = 0
    for start in range(0, len(rule_ids), 500):
        chunk = rule_ids[start : start + 500]
        opened = list(RuleVersion.objects.filter(rule_id__in=chunk, rev_to__isnull=True))
        if not opened:
            continue
        by_key = _key_versions(
            [(v.rule_type, v.identifier) for v in opened], since=min(v.rev_from for v in opened)
        )
        memo: dict[tuple, RuleDelivery] = {}
        for version in opened:
            versions = by_key[(version.rule_type, version.identifier)]
            alone = len(versions) == 1
            signature = (
                version.rev_from,
                version.scope_all,
                tuple(version.tag_ids),
                tuple(version.excluded_tag_ids),
                tuple(version.host_ids),
            )
            if alone and signature in memo:
                delivery = memo[signature]
            else:
                delivery = _rule_delivery(version, versions, sample=0)
                if alone:
                    memo[signature] = delivery
            refreshed += Rule.objects.filter(pk=version.rule_id).update(
                target_hosts=delivery.target_hosts,
                confirmed_hosts=delivery.confirmed_hosts,
                delivery_checked_at=now,
            )
    return refreshed


def fanout_rules(fanout: FanOut) -> dict:
    """The RULES fan-out: refresh the delivery summaries of every rule whose key changed at
    the fan-out's revision (a deleted or re-scoped rule changes who its competitors reach)."""
    keys = set(
        RuleVersion.objects.filter(Q(rev_from=fanout.revision) | Q(rev_to=fanout.revision))
        .values_list("rule_type", "identifier")
        .distinct()
    )
    rule_ids = {
        v.rule_id
        for versions in _key_versions(keys, since=fanout.revision).values()
        for v in versions
        if not v.rev_to
    }
    return {"rules_refreshed": delivery_summaries_refresh(rule_ids)}


def delivery_refresh_pending(limit: int = 2000) -> int:
    """Periodic: refresh the summaries of rules never summarised or not yet confirmed
    everywhere first, then spend what is left of `limit` on the least recently checked (new
    hosts and tag changes alter a rule's targets without touching the rule)."""
    unsettled = (
        Rule.objects.filter(
            Q(delivery_checked_at__isnull=True) | Q(confirmed_hosts__lt=F("target_hosts"))
        )
        .order_by(F("delivery_checked_at").asc(nulls_first=True), "id")
        .values_list("pk", flat=True)[:limit]
    )
    rule_ids = list(unsettled)
    if len(rule_ids) < limit:
        rule_ids += list(
            Rule.objects.exclude(pk__in=rule_ids)
            .order_by("delivery_checked_at", "id")
            .values_list("pk", flat=True)[: limit - len(rule_ids)]
        )
    return delivery_summaries_refresh(rule_ids)


# --- per host -----------------------------------------------------------------------------------


@dataclass
class HostDelivery:
    revision: int
    confirmed_revision: int | None
    unconfirmed_download_revision: int | None
    confirmed_rules: int
    pending: list[DeliveredRule]
    pending_count: int
    pending_count_exact: bool

    @property
    def in_sync(self) -> bool:
        return self.pending_count == 0 and self.confirmed_revision is not None


def host_delivery(host: Host, limit: int = 100, max_pages: int = 10) -> HostDelivery:
    """What the host confirmed and what its next sync will send it (computed, not sent)."""
    revision = revision_current()
    confirmed = host.rules_synced_rev
    pending: list[DeliveredRule] = []
    count, exact, after = 0, True, None
    if confirmed is None or confirmed < revision:
        page_size = settings.SYNC_RULES_PER_PAGE
        for _ in range(max_pages):
            if confirmed is None:
                page = clean_page(host.pk, revision, after, page_size)
                page.rules = [r for r in page.rules if r.policy != Policy.REMOVE]
            else:
                page = changes_page(
                    host.pk, confirmed, revision, after, page_size, unconfirmed=host.pending_rev
                )
            count += len(page.rules)
            pending += page.rules[: max(0, limit - len(pending))]
            after = page.last_key
            if page.done:
                break
        else:
            exact = False
    counts = host.expected_counts or {}
    return HostDelivery(
        revision=revision,
        confirmed_revision=confirmed,
        unconfirmed_download_revision=host.pending_rev,
        confirmed_rules=sum(counts.get(kind, 0) for kind in COUNT_KIND.values()),
        pending=pending,
        pending_count=count,
        pending_count_exact=exact,
    )


# --- drift audit --------------------------------------------------------------------------------


def _counts_of(rules: list[DeliveredRule]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in rules:
        kind = COUNT_KIND[rule.rule_type]
        counts[kind] = counts.get(kind, 0) + 1
        if rule.policy == Policy.ALLOWLIST_COMPILER:
            counts["compiler"] = counts.get("compiler", 0) + 1
    return counts


def drift_audit(limit: int | None = None) -> dict:
    """Periodic: recompute, from the rule history, the counts each host confirmed and compare
    them with the incremental bookkeeping the preflight drift check relies on.

    A host whose bookkeeping is wrong gets it corrected, a drift reason, and a CLEAN sync at
    its next preflight (so it ends up holding exactly its rules whatever went wrong). Runs over
    a rotating slice of the fleet, least recently audited first.
    """
    limit = settings.DRIFT_CHECK_BATCH if limit is None else limit
    now = timezone.now()
    hosts = list(
        Host.objects.filter(rules_synced_rev__isnull=False, pending_rev__isnull=True)
        .order_by(F("drift_checked_at").asc(nulls_first=True), "id")
        .only(
            "id",
            "machine_id",
            "rules_synced_rev",
            "expected_counts",
            "drift_reasons",
            "clean_sync_requested",
        )[:limit]
    )
    corrected = []
    for host in hosts:
        held = [r for r in host_rules(host.pk, host.rules_synced_rev) if r.policy != Policy.REMOVE]
        actual = _counts_of(held)
        recorded = {k: v for k, v in (host.expected_counts or {}).items() if v}
        updates = {"drift_checked_at": now}
        if actual != recorded:
            corrected.append(host.machine_id)
            updates.update(
                expected_counts=actual,
                drift_reasons=[
                    *host.drift_reasons,
                    f"server bookkeeping corrected: expected {recorded}, history says {actual}",
                ],
                drift_detected_at=now,
                # A CLEAN_ALL an operator already asked for stays (it cleans more).
                clean_sync_requested=host.clean_sync_requested or "CLEAN",
            )
        # Only if the host did not sync meanwhile (its position is what was audited).
        Host.objects.filter(
            pk=host.pk, rules_synced_rev=host.rules_synced_rev, pending_rev__isnull=True
        ).update(**updates)
    return {"audited": len(hosts), "corrected": corrected}
