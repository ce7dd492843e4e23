"""The rules inventory: every rule with its provenance, scope and delivery.

Per chunk of rules, one query each for: tags, excluded tags, listed hosts, the approval
requests that created rules, the rules' audit entries (justifications), and per rule type
present the last execution of a binary the rule matches (the console's "stale" filter's
definition: rules.filtersets.BINARY_FIELD against Binary.last_executed_at).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from django.db.models import Max

from audit.models import AuditEntry
from events.models import ApprovalRequest, Binary
from rules.filtersets import BINARY_FIELD, MAX_STALE_DAYS, SCOPE_CHOICES, RuleFilterSet
from rules.models import Policy, Rule, RuleType

from ..params import (
    ChoiceParam,
    IntParam,
    MultiChoiceParam,
    ReportParameters,
    TextParam,
    filter_data,
)
from . import stream

NAME = "rules"
DESCRIPTION = (
    "Every rule: scope, who created it and why, who approved it (approval requests), who "
    "changed it last and why, expiry, delivery (the workers' summary) and the last execution "
    "of a binary it matches."
)

COLUMNS = [
    "id",
    "rule_type",
    "identifier",
    "policy",
    "scope",
    "tags",
    "excluded_tags",
    "machine_ids",
    "created_by",
    "created_at",
    "justification",
    "updated_by",
    "updated_at",
    "last_change_justification",
    "approved_by",
    "approval_requests",
    "requesters",
    "expires_at",
    "delivery_target_hosts",
    "delivery_confirmed_hosts",
    "delivery_pending_hosts",
    "delivery_checked_at",
    "last_matching_execution",
    "custom_msg",
    "cel_expr",
    "comment",
]
FILTERS = (
    "rule_type",
    "policy",
    "scope",
    "tag",
    "identifier_contains",
    "identifier",
    "machine_id",
    "created_by",
    "stale_days",
)
CREATE_ACTIONS = ("rule.create", "rule.bulk_create")
CHANGE_ACTIONS = ("rule.update",)


class Parameters(ReportParameters):
    filterset_class = RuleFilterSet
    filter_names = FILTERS

    rule_type = MultiChoiceParam(RuleType.choices, label="Type")
    policy = MultiChoiceParam(Policy.choices, label="Policy")
    scope = ChoiceParam(SCOPE_CHOICES, label="Scope")
    tag = TextParam(label="Tag")
    identifier_contains = TextParam(label="Identifier contains")
    identifier = TextParam(label="Identifier (exact)")
    machine_id = TextParam(label="Listed machine ID")
    created_by = TextParam(label="Created by")
    stale_days = IntParam(
        label="Stale: no execution in (days)", min_value=1, max_value=MAX_STALE_DAYS
    )


def columns(values: dict) -> list[str]:
    return COLUMNS


def _queryset(values: dict):
    filterset = RuleFilterSet(filter_data(values, FILTERS), queryset=Rule.objects.all())
    if not filterset.is_valid():
        raise ValueError(f"invalid filters: {dict(filterset.errors)}")
    return filterset.qs


def count(values: dict) -> int:
    return _queryset(values).count()


FIELDS = (
    "id",
    "rule_type",
    "identifier",
    "policy",
    "created_by__username",
    "created_at",
    "updated_by__username",
    "updated_at",
    "expires_at",
    "target_hosts",
    "confirmed_hosts",
    "delivery_checked_at",
    "custom_msg",
    "cel_expr",
    "comment",
)


def _grouped(pairs) -> dict:
    grouped = defaultdict(list)
    for key, value in pairs:
        grouped[key].append(value)
    return grouped


def _justifications(rule_ids: list[int]) -> tuple[dict, dict]:
    """Per rule: the justification of its creation and of its last change (audit trail)."""
    created, changed = {}, {}
    for object_id, action, justification in (
        AuditEntry.objects.filter(
            object_type="rule",
            object_id__in=[str(pk) for pk in rule_ids],
            action__in=CREATE_ACTIONS + CHANGE_ACTIONS,
        )
        .order_by("seq")
        .values_list("object_id", "action", "justification")
    ):
        if action in CREATE_ACTIONS:
            created.setdefault(int(object_id), justification)
        else:
            changed[int(object_id)] = justification
    return created, changed


def _last_executions(rules: list[tuple]) -> dict[tuple[str, str], object]:
    """(rule type, identifier) -> the last execution of a binary the rule matches."""
    wanted = defaultdict(set)
    for row in rules:
        wanted[row[1]].add(row[2])
    last = {}
    for rule_type, identifiers in wanted.items():
        field = BINARY_FIELD.get(rule_type)
        if field is None:
            continue
        for identifier, when in (
            Binary.objects.filter(**{f"{field}__in": identifiers}, last_executed_at__isnull=False)
            .values(field)
            .annotate(last=Max("last_executed_at"))
            .values_list(field, "last")
        ):
            last[(rule_type, identifier)] = when
    return last


def rows(values: dict) -> Iterator[list]:
    queryset = _queryset(values).order_by("id").values_list(*FIELDS)
    for chunk in stream(queryset):
        ids = [row[0] for row in chunk]
        tags = _grouped(
            Rule.tags.through.objects.filter(rule_id__in=ids)
            .order_by("tag__name")
            .values_list("rule_id", "tag__name")
        )
        excluded = _grouped(
            Rule.excluded_tags.through.objects.filter(rule_id__in=ids)
            .order_by("tag__name")
            .values_list("rule_id", "tag__name")
        )
        hosts = _grouped(
            Rule.hosts.through.objects.filter(rule_id__in=ids)
            .order_by("host__machine_id")
            .values_list("rule_id", "host__machine_id")
        )
        requests = _grouped(
            (rule_id, rest)
            for rule_id, *rest in ApprovalRequest.objects.filter(rule_id__in=ids)
            .order_by("id")
            .values_list("rule_id", "id", "decided_by__username", "requester", "host__machine_id")
        )
        created, changed = _justifications(ids)
        last = _last_executions(chunk)
        for row in chunk:
            (
                pk,
                rule_type,
                identifier,
                policy,
                created_by,
                created_at,
                updated_by,
                updated_at,
                expires_at,
                target,
                confirmed,
                checked_at,
                custom_msg,
                cel_expr,
                comment,
            ) = row
            machine_ids = hosts.get(pk, [])
            rule_tags = tags.get(pk, [])
            asked = requests.get(pk, [])
            yield [
                pk,
                rule_type,
                identifier,
                policy,
                "hosts" if machine_ids else ("tags" if rule_tags else "everyone"),
                rule_tags,
                excluded.get(pk, []),
                machine_ids,
                created_by,
                created_at,
                created.get(pk),
                updated_by,
                updated_at,
                changed.get(pk),
                sorted({by for _, by, _, _ in asked if by}),
                [request_id for request_id, _, _, _ in asked],
                [f"{user}@{machine}" for _, _, user, machine in asked],
                expires_at,
                target,
                confirmed,
                target - confirmed if target is not None and confirmed is not None else None,
                checked_at,
                last.get((rule_type, identifier)),
                custom_msg,
                cel_expr,
                comment,
            ]
