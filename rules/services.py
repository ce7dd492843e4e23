"""Every write of the rules app. Each change runs in one transaction that takes the next fleet
revision, closes the changed rules' current versions and opens new ones, so hosts pick the
change up at their next rule download (rules/delivery.py)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record, audit_record_many
from hosts.errors import HostsError, InvalidTag
from hosts.fanout import fanout_record
from hosts.models import FanOut, FanOutKind, Host, Tag
from hosts.selectors import hosts_by_machine_id
from hosts.services import normalize_tag_name, revision_bump, tags_get_or_create

from .errors import InvalidImport, InvalidRule, RuleConflict, RulesError
from .identifiers import normalize_identifier
from .imports import ImportedRule
from .models import Policy, Rule, RuleTarget, RuleType, RuleVersion, TargetKind

MAX_TEXT = {"custom_msg": 2048, "custom_url": 2048, "cel_expr": 8192, "comment": 8192}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class RuleInput:
    """A rule as an analyst or script asks for it, before validation."""

    rule_type: str
    identifier: str
    policy: str
    custom_msg: str = ""
    custom_url: str = ""
    cel_expr: str = ""
    comment: str = ""
    tags: Sequence[str] = ()
    excluded_tags: Sequence[str] = ()
    machine_ids: Sequence[str] = ()
    expires_at: datetime.datetime | None = None


@dataclass(frozen=True)
class _Valid:
    rule_type: str
    identifier: str
    policy: str
    custom_msg: str
    custom_url: str
    cel_expr: str
    comment: str
    tag_names: tuple[str, ...]
    excluded_names: tuple[str, ...]
    hosts: tuple[Host, ...]
    expires_at: datetime.datetime | None = None
    # Bound inside the writing transaction (_bind_tags), so a refused request creates no tag.
    tags: tuple[Tag, ...] = ()
    excluded_tags: tuple[Tag, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule_type, self.identifier)

    @property
    def scope_all(self) -> bool:
        return not self.tag_names and not self.hosts


def _tag_names(names, field: str) -> tuple[str, ...]:
    try:
        return tuple(sorted({normalize_tag_name(name) for name in names}))
    except InvalidTag as exc:
        raise InvalidRule(exc.detail, field) from None


def _bind_tags(valid_items: list[_Valid]) -> list[_Valid]:
    names = {n for v in valid_items for n in (*v.tag_names, *v.excluded_names)}
    tags = {tag.name: tag for tag in tags_get_or_create(names)}
    return [
        replace(
            v,
            tags=tuple(tags[n] for n in v.tag_names),
            excluded_tags=tuple(tags[n] for n in v.excluded_names),
        )
        for v in valid_items
    ]


def _validate(data: RuleInput) -> _Valid:
    if data.rule_type not in RuleType.values:
        raise InvalidRule(f"rule_type must be one of {', '.join(RuleType.values)}.", "rule_type")
    if data.policy not in Policy.values:
        raise InvalidRule(f"policy must be one of {', '.join(Policy.values)}.", "policy")
    identifier = normalize_identifier(data.rule_type, data.identifier)
    texts = {}
    for name, limit in MAX_TEXT.items():
        value = getattr(data, name) or ""
        if not isinstance(value, str):
            raise InvalidRule(f"{name} must be a string.", name)
        if len(value) > limit:
            raise InvalidRule(f"{name} is longer than {limit} characters.", name)
        if _CONTROL.search(value):
            raise InvalidRule(f"{name} contains control characters.", name)
        texts[name] = value
    if data.policy == Policy.CEL and not texts["cel_expr"].strip():
        raise InvalidRule("A CEL rule needs a cel_expr.", "cel_expr")
    if data.policy != Policy.CEL and texts["cel_expr"]:
        raise InvalidRule("cel_expr is only used with the CEL policy.", "cel_expr")
    url = texts["custom_url"]
    if url and not re.match(r"https?://[^\s]+$", url):
        raise InvalidRule("custom_url must be an http:// or https:// URL.", "custom_url")

    expires_at = data.expires_at
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            raise InvalidRule("expires_at needs a time zone.", "expires_at")
        if expires_at <= timezone.now():
            raise InvalidRule("expires_at must be in the future.", "expires_at")
    hosts, unknown = hosts_by_machine_id(data.machine_ids)
    if unknown:
        raise InvalidRule(f"Unknown machine ids: {', '.join(unknown)}.", "machine_ids")
    tags = _tag_names(data.tags, "tags")
    excluded = _tag_names(data.excluded_tags, "excluded_tags")
    if excluded and hosts and not tags:
        raise InvalidRule(
            "excluded_tags apply to tag or everyone scopes, not to a list of machines.",
            "excluded_tags",
        )
    if set(tags) & set(excluded):
        raise InvalidRule("A tag cannot be both targeted and excluded.", "excluded_tags")
    return _Valid(
        rule_type=data.rule_type,
        identifier=identifier,
        policy=data.policy,
        tag_names=tags,
        excluded_names=excluded,
        hosts=tuple(hosts),
        expires_at=expires_at,
        **texts,
    )


def _existing_keys(keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these keys already have a rule (one query per 500 identifiers), so a bulk
    import checks conflicts only where there can be one."""
    wanted, found = set(keys), set()
    identifiers = sorted({identifier for _, identifier in wanted})
    for start in range(0, len(identifiers), 500):
        rows = Rule.objects.filter(identifier__in=identifiers[start : start + 500])
        found |= set(rows.values_list("rule_type", "identifier")) & wanted
    return found


def _check_conflicts(valid: _Valid, *, exclude_rule_id: int | None = None) -> None:
    """Two rules for one key may not share a scope level: one everyone rule, one rule per tag,
    one rule per host. Overlaps across levels are resolved at delivery (most specific wins)."""
    others = Rule.objects.filter(rule_type=valid.rule_type, identifier=valid.identifier)
    if exclude_rule_id is not None:
        others = others.exclude(pk=exclude_rule_id)
    if valid.scope_all:
        clash = others.filter(tags__isnull=True, hosts__isnull=True).first()
        if clash:
            raise RuleConflict(
                f"Rule {clash.pk} already applies {valid.identifier} to every host.", "identifier"
            )
    if valid.tag_names:
        clash = others.filter(tags__name__in=valid.tag_names).first()
        if clash:
            raise RuleConflict(
                f"Rule {clash.pk} already targets one of these tags for {valid.identifier}.",
                "tags",
            )
    if valid.hosts:
        clash = others.filter(hosts__in=valid.hosts).first()
        if clash:
            raise RuleConflict(
                f"Rule {clash.pk} already targets one of these hosts for {valid.identifier}.",
                "machine_ids",
            )


def _open_versions(rules_and_data: list[tuple[Rule, _Valid]], revision: int, actor) -> None:
    versions = RuleVersion.objects.bulk_create(
        [
            RuleVersion(
                rule_id=rule.pk,
                rev_from=revision,
                rule_type=valid.rule_type,
                identifier=valid.identifier,
                policy=valid.policy,
                custom_msg=valid.custom_msg,
                custom_url=valid.custom_url,
                cel_expr=valid.cel_expr,
                scope_all=valid.scope_all,
                tag_ids=sorted(t.pk for t in valid.tags),
                excluded_tag_ids=sorted(t.pk for t in valid.excluded_tags),
                host_ids=sorted(h.pk for h in valid.hosts),
                changed_by=actor,
                comment=valid.comment,
            )
            for rule, valid in rules_and_data
        ]
    )
    targets = []
    for version in versions:
        kinds = [(TargetKind.HOST, host_id) for host_id in version.host_ids]
        kinds += [(TargetKind.TAG, tag_id) for tag_id in version.tag_ids]
        kinds += [(TargetKind.EXCLUDED_TAG, tag_id) for tag_id in version.excluded_tag_ids]
        if version.scope_all:
            kinds.append((TargetKind.ALL, 0))
        targets += [
            RuleTarget(
                version=version,
                kind=kind,
                target_id=target_id,
                rule_type=version.rule_type,
                identifier=version.identifier,
                rev_from=revision,
            )
            for kind, target_id in kinds
        ]
    RuleTarget.objects.bulk_create(targets, batch_size=2000)


def _close_versions(rule_ids: Iterable[int], revision: int) -> None:
    rule_ids = list(rule_ids)
    RuleTarget.objects.filter(version__rule_id__in=rule_ids, rev_to__isnull=True).update(
        rev_to=revision
    )
    RuleVersion.objects.filter(rule_id__in=rule_ids, rev_to__isnull=True).update(rev_to=revision)


def _set_scope(rule: Rule, valid: _Valid) -> None:
    rule.tags.set(valid.tags)
    rule.excluded_tags.set(valid.excluded_tags)
    rule.hosts.set(valid.hosts)


def rule_create(
    *, data: RuleInput, actor: AbstractBaseUser | None = None, justification: str = ""
) -> Rule:
    try:
        return rules_bulk_create(items=[data], actor=actor, justification=justification)[0]
    except (RulesError, HostsError) as exc:
        exc.index = None  # a position only means something in a bulk request
        raise


def rules_bulk_create(
    *,
    items: Sequence[RuleInput],
    actor: AbstractBaseUser | None = None,
    justification: str = "",
) -> list[Rule]:
    """Create rules in one transaction and one revision: all of them or none."""
    valid_items = []
    for index, data in enumerate(items):
        try:
            valid_items.append(_validate(data))
        except (RulesError, HostsError) as exc:
            exc.index = index  # which item of a bulk request was refused
            raise
    _check_batch_conflicts(valid_items)
    actor = actor if actor is not None and actor.is_authenticated else None
    with transaction.atomic():
        # The revision lock first: it serialises the conflict checks below, and tags are only
        # ever created under it (no lock-order inversion between two writers).
        revision = revision_bump()
        fanout = fanout_record(kind=FanOutKind.RULES, revision=revision)
        valid_items = _bind_tags(valid_items)
        existing = _existing_keys([v.key for v in valid_items])
        for index, valid in enumerate(valid_items):
            if valid.key not in existing:
                continue  # no rule for this key yet: nothing to clash with
            try:
                _check_conflicts(valid)
            except RuleConflict as exc:
                exc.index = index
                raise
        rules = Rule.objects.bulk_create(
            [
                Rule(
                    rule_type=v.rule_type,
                    identifier=v.identifier,
                    policy=v.policy,
                    custom_msg=v.custom_msg,
                    custom_url=v.custom_url,
                    cel_expr=v.cel_expr,
                    comment=v.comment,
                    expires_at=v.expires_at,
                    created_by=actor,
                    updated_by=actor,
                    revision=revision,
                    fanout=fanout,
                )
                for v in valid_items
            ],
            batch_size=2000,
        )
        pairs = list(zip(rules, valid_items, strict=True))
        for through, attr, column in (
            (Rule.tags.through, "tags", "tag_id"),
            (Rule.excluded_tags.through, "excluded_tags", "tag_id"),
            (Rule.hosts.through, "hosts", "host_id"),
        ):
            through.objects.bulk_create(
                [
                    through(rule_id=rule.pk, **{column: obj.pk})
                    for rule, valid in pairs
                    for obj in getattr(valid, attr)
                ],
                batch_size=2000,
            )
        _open_versions(pairs, revision, actor)
        FanOut.objects.filter(pk=fanout.pk).update(rule_ids=[rule.pk for rule in rules])
        # One entry per rule (one INSERT), so each rule's page shows who created it and why.
        audit_record_many(
            action="rule.create" if len(pairs) == 1 else "rule.bulk_create",
            object_type="rule",
            objects=[(r.pk, str(r), None, rule_snapshot(r, v)) for r, v in pairs],
            justification=justification or (pairs[0][1].comment if len(pairs) == 1 else ""),
            actor=actor,
        )
    return rules


def _check_batch_conflicts(valid_items: list[_Valid]) -> None:
    seen: dict[tuple, int] = {}
    for index, valid in enumerate(valid_items):
        scopes = [("all",)] if valid.scope_all else []
        scopes += [("tag", name) for name in valid.tag_names]
        scopes += [("host", h.pk) for h in valid.hosts]
        for scope in scopes:
            marker = (*valid.key, *scope)
            if marker in seen:
                exc = RuleConflict(
                    f"Items {seen[marker]} and {index} target the same scope for "
                    f"{valid.identifier}.",
                    "identifier",
                )
                exc.index = index
                raise exc
            seen[marker] = index


def _unchanged(version: RuleVersion, valid: _Valid) -> bool:
    names = dict(
        Tag.objects.filter(pk__in=[*version.tag_ids, *version.excluded_tag_ids]).values_list(
            "pk", "name"
        )
    )
    return (
        (version.rule_type, version.identifier) == valid.key
        and version.payload == (valid.policy, valid.custom_msg, valid.custom_url, valid.cel_expr)
        and sorted(names[t] for t in version.tag_ids) == list(valid.tag_names)
        and sorted(names[t] for t in version.excluded_tag_ids) == list(valid.excluded_names)
        and version.host_ids == sorted(h.pk for h in valid.hosts)
    )


def rule_update(
    *,
    rule: Rule,
    data: RuleInput,
    actor: AbstractBaseUser | None = None,
    justification: str = "",
) -> Rule:
    """Change a rule; hosts that gain it get it, hosts that lose it get REMOVE.

    A change to the comment or the expiry alone is not delivered and takes no revision.
    """
    valid = _validate(data)
    actor = actor if actor is not None and actor.is_authenticated else None
    current = RuleVersion.objects.get(rule_id=rule.pk, rev_to__isnull=True)
    if _unchanged(current, valid):
        with transaction.atomic():
            rule = Rule.objects.select_for_update().get(pk=rule.pk)
            if (rule.comment, rule.expires_at) != (valid.comment, valid.expires_at):
                before = rule_snapshot(rule)
                rule.comment = valid.comment
                rule.expires_at = valid.expires_at
                rule.updated_by = actor
                rule.save(update_fields=["comment", "expires_at", "updated_by", "updated_at"])
                _audit_update(rule, before, justification, actor)
        return rule
    with transaction.atomic():
        revision = revision_bump()
        [valid] = _bind_tags([valid])
        rule = Rule.objects.select_for_update().get(pk=rule.pk)
        before = rule_snapshot(rule)
        _check_conflicts(valid, exclude_rule_id=rule.pk)
        for name in (
            "rule_type",
            "identifier",
            "policy",
            "custom_msg",
            "custom_url",
            "cel_expr",
            "comment",
        ):
            setattr(rule, name, getattr(valid, name))
        rule.expires_at = valid.expires_at
        rule.updated_by = actor
        rule.revision = revision
        rule.fanout = fanout_record(kind=FanOutKind.RULES, revision=revision, rule_ids=[rule.pk])
        rule.save()
        _set_scope(rule, valid)
        _close_versions([rule.pk], revision)
        _open_versions([(rule, valid)], revision, actor)
        _audit_update(rule, before, justification, actor)
    return rule


def _audit_update(rule: Rule, before: dict, justification: str, actor) -> None:
    audit_record(
        action="rule.update",
        object_type="rule",
        object_id=rule.pk,
        object_repr=str(rule),
        before=before,
        after=rule_snapshot(rule),
        justification=justification or rule.comment,
        actor=actor,
    )


def rule_delete(
    *, rule: Rule, actor: AbstractBaseUser | None = None, justification: str = ""
) -> None:
    """Delete a rule; hosts that held it get REMOVE (or the next most specific rule)."""
    rules_bulk_delete(rule_ids=[rule.pk], actor=actor, justification=justification)


def rules_bulk_delete(
    *,
    rule_ids: Sequence[int],
    actor: AbstractBaseUser | None = None,
    justification: str = "",
    action: str = "rule.delete",
    require_all: bool = False,
) -> int:
    """Delete these rules in one revision. With `require_all`, an id that names no rule (any
    more) refuses the whole request (InvalidRule, field ids) and nothing is deleted."""
    actor = actor if actor is not None and actor.is_authenticated else None
    with transaction.atomic():
        revision = revision_bump()
        doomed = list(
            Rule.objects.select_for_update()
            .filter(pk__in=list(rule_ids))
            .prefetch_related("tags", "excluded_tags", "hosts")
        )
        existing = [rule.pk for rule in doomed]
        missing = sorted(set(rule_ids) - set(existing))
        if require_all and missing:
            raise InvalidRule(
                f"No rule has the id{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing[:50]))}{' …' if len(missing) > 50 else ''}; "
                "nothing was deleted.",
                "ids",
            )
        if not existing:
            transaction.set_rollback(True)
            return 0
        for rule in doomed:
            audit_record(
                action=action,
                object_type="rule",
                object_id=rule.pk,
                object_repr=str(rule),
                before=rule_snapshot(rule),
                justification=justification,
                actor=actor,
            )
        _close_versions(existing, revision)
        Rule.objects.filter(pk__in=existing).delete()
        fanout_record(kind=FanOutKind.RULES, revision=revision, rule_ids=existing)
    return len(existing)


SCOPE_FIELDS = ("tags", "machine_ids")


def rules_import(
    *,
    rules: Sequence[ImportedRule],
    tags: Sequence[str] = (),
    machine_ids: Sequence[str] = (),
    justification: str = "",
    actor: AbstractBaseUser | None = None,
    dry_run: bool = False,
) -> list[Rule]:
    """Create the rules of a parsed rule file (rules.imports.parse_rules), all in one scope,
    all or none; the console's import page and the API's import share it.

    A rule without a comment gets the justification as its comment. A refused rule is an
    InvalidImport naming its item or row and field (`index`: its position); a refused scope
    keeps its own error (field tags or machine_ids). With `dry_run` everything is checked as
    for real, conflicts with existing rules included, under the same locks, and then rolled
    back: the rules returned (unsaved) are what the import would create.
    """
    items = [
        RuleInput(
            rule_type=rule.rule_type,
            identifier=rule.identifier,
            policy=rule.policy,
            custom_msg=rule.custom_msg,
            custom_url=rule.custom_url,
            cel_expr=rule.cel_expr,
            comment=rule.comment or justification,
            tags=tuple(tags),
            machine_ids=tuple(machine_ids),
        )
        for rule in rules
    ]
    try:
        with transaction.atomic():
            created = rules_bulk_create(items=items, actor=actor, justification=justification)
            if dry_run:
                # Undoes the revision, the rules, their fan-out (never sent: on-commit work
                # of a rolled-back block is dropped) and the audit entries.
                transaction.set_rollback(True)
    except (RulesError, HostsError) as exc:
        field = getattr(exc, "field", None)
        index = getattr(exc, "index", None)
        if field in SCOPE_FIELDS or index is None:
            exc.index = None  # the scope or the whole file, not one rule
            raise
        named = f", field {field}" if field else ""
        refused = InvalidImport(
            f"{rules[index].label}{named}: {exc.detail} Nothing was imported.", field, index
        )
        # A conflict with an existing rule stays a conflict (409, rule_conflict).
        refused.status, refused.code = exc.status, exc.code
        raise refused from None
    if dry_run:
        for rule in created:
            rule.pk = None
    return created


def rule_approve(
    *,
    binary,
    rule_type: str,
    policy: str = Policy.ALLOWLIST,
    tags: Sequence[str] = (),
    machine_ids: Sequence[str] = (),
    expires_at: datetime.datetime | None = None,
    custom_msg: str = "",
    justification: str,
    actor: AbstractBaseUser | None = None,
) -> Rule:
    """Turn an analyst's decision on a binary into a rule of the chosen type and scope.

    The identifier comes from what the agent reported for the binary; the justification is
    required and kept as the rule's comment and in the audit trail.
    """
    from events.selectors import identifier_for

    if rule_type not in RuleType.values:
        raise InvalidRule(f"rule_type must be one of {', '.join(RuleType.values)}.", "rule_type")
    identifier = identifier_for(binary, rule_type)
    if not identifier:
        raise InvalidRule(
            f"This binary has no {RuleType(rule_type).label} to make a rule from.", "rule_type"
        )
    if not isinstance(justification, str) or not justification.strip():
        raise InvalidRule("A justification is required.", "justification")
    return rule_create(
        data=RuleInput(
            rule_type=rule_type,
            identifier=identifier,
            policy=policy,
            custom_msg=custom_msg,
            comment=justification.strip(),
            tags=tuple(tags),
            machine_ids=tuple(machine_ids),
            expires_at=expires_at,
        ),
        actor=actor,
        justification=justification.strip(),
    )


def rule_snapshot(rule: Rule, valid: _Valid | None = None) -> dict:
    """A rule's values as the audit trail records them (and the API's PATCH starts from).

    For a rule just created, its validated input gives the scope without a query.
    """
    if valid is None:
        tags = sorted(t.name for t in rule.tags.all())
        excluded = sorted(t.name for t in rule.excluded_tags.all())
        machine_ids = sorted(h.machine_id for h in rule.hosts.all())
    else:
        tags, excluded = list(valid.tag_names), list(valid.excluded_names)
        machine_ids = sorted(h.machine_id for h in valid.hosts)
    return {
        "rule_type": rule.rule_type,
        "identifier": rule.identifier,
        "policy": rule.policy,
        "custom_msg": rule.custom_msg,
        "custom_url": rule.custom_url,
        "cel_expr": rule.cel_expr,
        "comment": rule.comment,
        "expires_at": rule.expires_at,
        "tags": tags,
        "excluded_tags": excluded,
        "machine_ids": machine_ids,
    }


def rules_expire(*, now: datetime.datetime | None = None) -> int:
    """Delete the rules whose expiry has passed (periodic: rules.expire)."""
    now = now or timezone.now()
    ids = list(Rule.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[:1000])
    if not ids:
        return 0
    return rules_bulk_delete(rule_ids=ids, action="rule.expire", justification="Expired.")
