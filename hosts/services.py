"""Every write of the hosts app: enrollments, tags, host facts and sync state."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.forms.models import model_to_dict
from django.utils import timezone

from audit.services import audit_record

from . import liveness, tagging
from .errors import (
    EnrollmentExists,
    EnrollmentIssuerTaken,
    EnrollmentNotFound,
    InvalidEnrollment,
    InvalidProfile,
    InvalidTag,
    MachineBoundToOtherEnrollment,
    ProfileExists,
    TagExists,
    TagInUse,
    TagRuleExists,
)
from .fanout import fanout_record
from .models import (
    TAG_NAME_PATTERN,
    CleanSync,
    ClientMode,
    ConfigurationProfile,
    Enrollment,
    FanOut,
    FanOutKind,
    Host,
    HostSync,
    HostTag,
    Revision,
    SyncType,
    Tag,
    TagRule,
    TagSource,
)
from .selectors import (
    SyncConfiguration,
    hash_secret,
    hosts_by_machine_id,
    revision_current,
    tag_references,
)
from .settings_cache import settings_snapshot

DEFAULT_FULL_SYNC_INTERVAL = 600  # the agent's default when the server sends none (§5.2)
RULE_COUNT_KINDS = ("binary", "certificate", "teamid", "signingid", "cdhash", "compiler")
_TAG_RE = re.compile(TAG_NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TAG_DESCRIPTION = 2048


# --- the fleet revision -------------------------------------------------------------------------


def revision_bump() -> int:
    """Take the next fleet revision. Call inside transaction.atomic(): the row lock taken by
    the UPDATE is held until commit, so revisions are committed in the order they are taken."""
    assert transaction.get_connection().in_atomic_block, "revision_bump needs a transaction"
    Revision.objects.filter(pk=1).update(value=F("value") + 1)
    return revision_current()


# --- tags ---------------------------------------------------------------------------------------


def normalize_tag_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidTag("Tag names are strings.")
    normalized = name.strip().lower()
    if not _TAG_RE.fullmatch(normalized):
        raise InvalidTag(
            f"Invalid tag name {name!r}: 1-64 characters, lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit."
        )
    return normalized


def tags_get_or_create(names: Iterable[str]) -> list[Tag]:
    wanted = sorted({normalize_tag_name(name) for name in names})
    if not wanted:
        return []
    existing = {tag.name: tag for tag in Tag.objects.filter(name__in=wanted)}
    missing = [name for name in wanted if name not in existing]
    if missing:
        Tag.objects.bulk_create([Tag(name=name) for name in missing], ignore_conflicts=True)
        existing = {tag.name: tag for tag in Tag.objects.filter(name__in=wanted)}
    return [existing[name] for name in wanted]


def revision_lock() -> None:
    """Take the fleet revision's row lock without spending a revision: for changes to tags
    that reach no agent (a rename, a delete) but must not interleave with writers that bind
    tags (rules, memberships, profiles, tag rules all take this lock first)."""
    assert transaction.get_connection().in_atomic_block, "revision_lock needs a transaction"
    Revision.objects.select_for_update().filter(pk=1).values_list("pk", flat=True).first()


def _tag_values(tag: Tag) -> dict:
    return {"name": tag.name, "description": tag.description}


def _audit_tag(tag: Tag, action: str, before, after) -> None:
    audit_record(
        action=action,
        object_type="tag",
        object_id=tag.pk,
        object_repr=tag.name,
        before=before,
        after=after,
    )


def _tag_description(description) -> str:
    if not isinstance(description, str):
        raise InvalidTag("A tag's description is text.")
    if _CONTROL.search(description):
        raise InvalidTag("The description contains control characters.")
    if len(description) > MAX_TAG_DESCRIPTION:
        raise InvalidTag(f"The description is longer than {MAX_TAG_DESCRIPTION} characters.")
    return description


def tag_create(*, name: str, description: str = "") -> Tag:
    """A tag with no hosts yet (hosts join it by hand, by enrollment or by tag rule)."""
    name = normalize_tag_name(name)
    description = _tag_description(description)
    with transaction.atomic():
        revision_lock()  # tags are created only under the revision lock
        if Tag.objects.filter(name=name).exists():
            raise TagExists(f"A tag named {name!r} already exists.")
        tag = Tag.objects.create(name=name, description=description)
        _audit_tag(tag, "tag.create", None, _tag_values(tag))
    return tag


def tag_update(*, tag: Tag, name: str | None = None, description: str | None = None) -> Tag:
    """Change a tag's description or rename it.

    A rename is safe for delivery: rules (their versions and targets), memberships, profiles,
    tag rules and enrollments all point at the tag's id, never its name, so no host's rule set
    or configuration changes and no revision is taken. Only what people read changes (the
    audit trail keeps the old name in its earlier entries)."""
    new_name = normalize_tag_name(name) if name is not None else None
    new_description = _tag_description(description) if description is not None else None
    with transaction.atomic():
        revision_lock()
        tag = Tag.objects.select_for_update().get(pk=tag.pk)
        before = _tag_values(tag)
        if new_name is not None and new_name != tag.name:
            if Tag.objects.filter(name=new_name).exists():
                raise TagExists(f"A tag named {new_name!r} already exists.")
            tag.name = new_name
        if new_description is not None:
            tag.description = new_description
        if _tag_values(tag) != before:
            tag.save(update_fields=["name", "description"])
            _audit_tag(tag, "tag.update", before, _tag_values(tag))
    return tag


def tag_delete(*, tag: Tag) -> None:
    """Delete a tag nothing refers to, now or in the past.

    A tag that ever had a member, or that a rule version, profile, tag rule or enrollment
    names, is kept (TagInUse): the revisioned history that rule downloads read (memberships
    and rule targets by tag id) would otherwise lose rows and change what a host is computed
    to have held."""
    with transaction.atomic():
        revision_lock()
        # The row lock also holds back, until commit, any insert that would refer to the tag.
        tag = Tag.objects.select_for_update().get(pk=tag.pk)
        used = tag_references(tag)
        if used:
            raise TagInUse(
                f"Tag {tag.name!r} is used by {', '.join(used)}; a tag that was ever used is "
                "kept so that delivery history stays exact. Rename it or change its "
                "description instead."
            )
        _audit_tag(tag, "tag.delete", _tag_values(tag), None)
        tag.delete()


# --- enrollments --------------------------------------------------------------------------------


def _enrollment_checks(*, client_mode: str | None, client_cert_issuer: str | None) -> None:
    if client_mode is not None and client_mode not in ("", *ClientMode.values):
        raise InvalidEnrollment(
            f"client_mode must be one of {', '.join(ClientMode.values)} or empty.", "client_mode"
        )
    if client_cert_issuer is not None:
        if not isinstance(client_cert_issuer, str) or len(client_cert_issuer) > 512:
            raise InvalidEnrollment(
                "client_cert_issuer is a DN of at most 512 characters.", "client_cert_issuer"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in client_cert_issuer):
            raise InvalidEnrollment(
                "client_cert_issuer contains control characters.", "client_cert_issuer"
            )


def _issuer_free(issuer: str, exclude_pk: int | None = None) -> None:
    if not issuer:
        return
    others = Enrollment.objects.filter(client_cert_issuer=issuer)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    other = others.first()
    if other is not None:
        raise EnrollmentIssuerTaken(
            f"Enrollment {other.name!r} already admits agents with this certificate issuer."
        )


def _enrollment_values(enrollment: Enrollment) -> dict:
    return {
        "name": enrollment.name,
        "tags": sorted(t.name for t in enrollment.tags.all()),
        "client_mode": enrollment.client_mode,
        "client_cert_issuer": enrollment.client_cert_issuer,
        "secret_prefix": enrollment.secret_prefix,
    }


def enrollment_create(
    *,
    name: str,
    tag_names: Iterable[str] = (),
    client_mode: str = "",
    client_cert_issuer: str = "",
) -> tuple[Enrollment, str]:
    """Create an enrollment; returns it with its secret, which is shown once and never stored."""
    _enrollment_checks(client_mode=client_mode, client_cert_issuer=client_cert_issuer)
    secret = "sa_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        if Enrollment.objects.filter(name=name).exists():
            raise EnrollmentExists(f"An enrollment named {name!r} already exists.")
        _issuer_free(client_cert_issuer)
        enrollment = Enrollment.objects.create(
            name=name,
            secret_hash=hash_secret(secret),
            secret_prefix=secret[:8],
            client_mode=client_mode,
            client_cert_issuer=client_cert_issuer,
        )
        enrollment.tags.set(tags_get_or_create(tag_names))
        after = {
            "name": name,
            "tags": sorted(tag_names),
            "client_mode": client_mode,
            "secret_prefix": enrollment.secret_prefix,
        }
        if client_cert_issuer:
            after["client_cert_issuer"] = client_cert_issuer
        audit_record(
            action="enrollment.create",
            object_type="enrollment",
            object_id=enrollment.pk,
            object_repr=name,
            after=after,
        )
    return enrollment, secret


def enrollment_update(
    *,
    enrollment: Enrollment,
    tag_names: Iterable[str] | None = None,
    client_mode: str | None = None,
    client_cert_issuer: str | None = None,
) -> Enrollment:
    """Change what an enrollment gives its hosts (None leaves a value as it is).

    * `tag_names` are given to hosts when they register (hosts.services.host_register): hosts
      already registered keep the tags they have; change those on the hosts themselves.
    * `client_mode` is the enrollment's layer of the configuration (hosts.selectors,
      configuration_layers: above the default profile, below tag and host profiles and the
      host's override), so it reaches every host of the enrollment at its next preflight.
    * `client_cert_issuer` admits agents whose verified client certificate has this issuer
      DN ("" turns that off); agents already registered are not affected otherwise.
    """
    names = None if tag_names is None else sorted({normalize_tag_name(n) for n in tag_names})
    _enrollment_checks(client_mode=client_mode, client_cert_issuer=client_cert_issuer)
    with transaction.atomic():
        if names is not None:
            revision_lock()  # tags are created only under the revision lock
        enrollment = Enrollment.objects.select_for_update().get(pk=enrollment.pk)
        before = _enrollment_values(enrollment)
        if client_cert_issuer is not None:
            _issuer_free(client_cert_issuer, exclude_pk=enrollment.pk)
            enrollment.client_cert_issuer = client_cert_issuer
        if client_mode is not None:
            enrollment.client_mode = client_mode
        enrollment.save(update_fields=["client_mode", "client_cert_issuer"])
        if names is not None:
            enrollment.tags.set(tags_get_or_create(names))
        after = _enrollment_values(enrollment)
        if after != before:
            audit_record(
                action="enrollment.update",
                object_type="enrollment",
                object_id=enrollment.pk,
                object_repr=enrollment.name,
                before=before,
                after=after,
            )
    return enrollment


def enrollment_revoke(*, name: str) -> Enrollment:
    """Revoke at once: the next request with its secret is refused (nothing is cached)."""
    enrollment = Enrollment.objects.filter(name=name).first()
    if enrollment is None:
        raise EnrollmentNotFound(f"No enrollment named {name!r}.")
    if enrollment.revoked_at is None:
        with transaction.atomic():
            enrollment.revoked_at = timezone.now()
            enrollment.save(update_fields=["revoked_at"])
            audit_record(
                action="enrollment.revoke",
                object_type="enrollment",
                object_id=enrollment.pk,
                object_repr=name,
                before={"revoked_at": None},
                after={"revoked_at": enrollment.revoked_at},
            )
    return enrollment


# --- hosts: operator actions --------------------------------------------------------------------


def host_set_tags(*, host: Host, tag_names: Iterable[str], justification: str = "") -> list[Tag]:
    """Replace a host's assigned tags (tag rules' automatic tags are kept apart); rules of
    gained or lost tags reach it at its next sync."""
    names = sorted({normalize_tag_name(name) for name in tag_names})
    with transaction.atomic():
        open_spans = HostTag.objects.select_for_update().filter(
            host=host, rev_to__isnull=True, source=TagSource.MANUAL
        )
        current = set(open_spans.values_list("tag_id", flat=True))
        before = sorted(Tag.objects.filter(pk__in=current).values_list("name", flat=True))
        if before == names:
            return list(Tag.objects.filter(name__in=names))
        # Tags are created only under the revision lock (see rules.services).
        revision = revision_bump()
        tags = tags_get_or_create(names)
        wanted = {tag.id for tag in tags}
        open_spans.filter(tag_id__in=current - wanted).update(rev_to=revision)
        HostTag.objects.bulk_create(
            [HostTag(host=host, tag_id=tag_id, rev_from=revision) for tag_id in wanted - current]
        )
        _audit_host(host, "host.set_tags", {"tags": before}, {"tags": names}, justification)
    return tags


def _audit_host(host: Host, action: str, before, after, justification: str = "") -> None:
    audit_record(
        action=action,
        object_type="host",
        object_id=host.pk,
        object_repr=host.machine_id,
        before=before,
        after=after,
        justification=justification,
    )


def host_set_mode_override(*, host: Host, client_mode: str, justification: str = "") -> None:
    """Override the mode the host's configuration gives it ("" follows the configuration)."""
    if client_mode and client_mode not in ClientMode.values:
        raise ValueError(client_mode)
    with transaction.atomic():
        before = host.client_mode_override
        host.client_mode_override = client_mode or ""
        host.save(update_fields=["client_mode_override"])
        _audit_host(
            host,
            "host.set_mode",
            {"client_mode_override": before},
            {"client_mode_override": host.client_mode_override},
            justification,
        )


def host_request_clean_sync(*, host: Host, kind: str, justification: str = "") -> None:
    """Make the host's next preflight answer CLEAN or CLEAN_ALL (empty string cancels)."""
    if kind and kind not in CleanSync.values:
        raise ValueError(kind)
    with transaction.atomic():
        before = host.clean_sync_requested
        host.clean_sync_requested = kind or ""
        host.save(update_fields=["clean_sync_requested"])
        _audit_host(
            host,
            "host.request_clean_sync",
            {"clean_sync_requested": before},
            {"clean_sync_requested": host.clean_sync_requested},
            justification,
        )


# --- hosts: the sync stages ---------------------------------------------------------------------


def host_register(*, machine_id: str, enrollment: Enrollment) -> Host:
    """The host for `machine_id`, created (with the enrollment's tags) on first contact.

    A machine id stays bound to the enrollment that registered it; another enrollment's secret
    cannot read or write its data (moving a host is an operator action).
    """
    host = Host.objects.select_related("enrollment").filter(machine_id=machine_id).first()
    if host is None:
        try:
            with transaction.atomic():
                host = Host.objects.create(machine_id=machine_id, enrollment=enrollment)
                tag_ids = list(enrollment.tags.values_list("id", flat=True))
                if tag_ids:
                    # A new host's first sync is a clean one, so its tags need no new revision.
                    revision = revision_current()
                    HostTag.objects.bulk_create(
                        [HostTag(host=host, tag_id=t, rev_from=revision) for t in tag_ids]
                    )
        except IntegrityError:  # a concurrent first request registered it
            host = Host.objects.select_related("enrollment").get(machine_id=machine_id)
    if host.enrollment_id != enrollment.id:
        raise MachineBoundToOtherEnrollment(
            f"Machine {machine_id} is registered with another enrollment."
        )
    host.enrollment = enrollment
    return host


# --- configuration profiles ---------------------------------------------------------------------

_FLAG_RE = re.compile(r"[a-z][a-z0-9]{0,31}")


def _profile_check(profile: ConfigurationProfile) -> None:
    for model_field in ConfigurationProfile._meta.get_fields():
        name = model_field.name
        if getattr(model_field, "choices", None) and getattr(profile, name, None) == "":
            # "" is not "inherit" (null): it would hide every lower layer and is no valid
            # value for the agent.
            raise InvalidProfile(f"{name} must be one of its choices or null.", name)
    for name in ("allowed_path_regex", "blocked_path_regex"):
        pattern = getattr(profile, name)
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidProfile(f"Invalid regular expression: {exc}.", name) from None
    for name in ("removable_media_remount_flags", "encrypted_removable_media_remount_flags"):
        flags = getattr(profile, name)
        if flags is None:
            continue
        if (
            not isinstance(flags, list)
            or len(flags) > 16
            or not all(isinstance(f, str) and _FLAG_RE.fullmatch(f) for f in flags)
        ):
            raise InvalidProfile(
                "Remount flags are a list of mount option names such as rdonly, noexec.", name
            )
    try:
        profile.full_clean(exclude=["tags", "hosts"], validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidProfile(" ".join(messages), field) from None


def _profile_scope(profile, tag_names, machine_ids) -> None:
    if tag_names is not None:
        profile.tags.set(tags_get_or_create(tag_names))
    if machine_ids is not None:
        hosts, unknown = hosts_by_machine_id(machine_ids)
        if unknown:
            raise InvalidProfile(f"Unknown machine ids: {', '.join(unknown)}.", "machine_ids")
        profile.hosts.set(hosts)


def profile_create(
    *, name: str, values: dict, tag_names=(), machine_ids=()
) -> ConfigurationProfile:
    """A profile of settings for some tags and/or hosts (null settings inherit). It applies at
    each host's next preflight; nothing else needs to happen."""
    profile = ConfigurationProfile(name=name, **values)
    _profile_check(profile)
    with transaction.atomic():
        if ConfigurationProfile.objects.filter(name=name).exists():
            raise ProfileExists(f"A profile named {name!r} already exists.")
        if tag_names:
            revision_bump()  # tags are created only under the revision lock
        profile.save()
        _profile_scope(profile, tag_names, machine_ids)
        _audit_profile(profile, "profile.create", None, _profile_values(profile))
    return profile


def _profile_values(profile: ConfigurationProfile) -> dict:
    values = model_to_dict(profile, exclude=["id", "tags", "hosts"])
    values["tags"] = sorted(t.name for t in profile.tags.all())
    values["machine_ids"] = sorted(h.machine_id for h in profile.hosts.all())
    return values


def _audit_profile(profile, action: str, before, after) -> None:
    audit_record(
        action=action,
        object_type="profile",
        object_id=profile.pk,
        object_repr=profile.name,
        before=before,
        after=after,
    )


def profile_update(
    *, profile: ConfigurationProfile, values: dict, tag_names=None, machine_ids=None
) -> ConfigurationProfile:
    if profile.is_default and (tag_names or machine_ids):
        raise InvalidProfile("The default profile applies to every host; it has no scope.")
    before = _profile_values(ConfigurationProfile.objects.get(pk=profile.pk))
    for name, value in values.items():
        setattr(profile, name, value)
    _profile_check(profile)
    with transaction.atomic():
        if ConfigurationProfile.objects.filter(name=profile.name).exclude(pk=profile.pk).exists():
            raise ProfileExists(f"A profile named {profile.name!r} already exists.")
        if tag_names:
            revision_bump()  # tags are created only under the revision lock
        profile.save()
        _profile_scope(profile, tag_names, machine_ids)
        _audit_profile(profile, "profile.update", before, _profile_values(profile))
    return profile


def profile_delete(*, profile: ConfigurationProfile) -> None:
    if profile.is_default:
        raise InvalidProfile("The default profile cannot be deleted; change its settings.")
    with transaction.atomic():
        _audit_profile(profile, "profile.delete", _profile_values(profile), None)
        profile.delete()


# --- tag rules ----------------------------------------------------------------------------------


def _tag_rule_changed(revision: int) -> FanOut:
    return fanout_record(kind=FanOutKind.TAG_RULES, revision=revision)


def tag_rule_create(
    *, tag_name: str, fact: str, operator: str, value: str, description: str = ""
) -> TagRule:
    """Add an automatic-tag condition; a worker then re-tags the fleet (hosts also re-evaluate
    it at their next preflight)."""
    tagging.validate_condition(fact, operator, value)
    name = normalize_tag_name(tag_name)
    with transaction.atomic():
        revision = revision_bump()  # tags are created only under the revision lock
        (tag,) = tags_get_or_create([name])
        if TagRule.objects.filter(tag=tag, fact=fact, operator=operator, value=value).exists():
            raise TagRuleExists(f"Tag {name!r} already has this condition.")
        rule = TagRule.objects.create(
            tag=tag, fact=fact, operator=operator, value=value, description=description
        )
        _tag_rule_changed(revision)
        _audit_tag_rule(rule, "tag_rule.create", None, _tag_rule_values(rule))
    return rule


def _tag_rule_values(rule: TagRule) -> dict:
    return {
        "tag": rule.tag.name,
        "fact": rule.fact,
        "operator": rule.operator,
        "value": rule.value,
        "description": rule.description,
    }


def _audit_tag_rule(rule: TagRule, action: str, before, after) -> None:
    audit_record(
        action=action,
        object_type="tag_rule",
        object_id=rule.pk,
        object_repr=f"{rule.tag.name}: {rule.fact} {rule.operator} {rule.value}",
        before=before,
        after=after,
    )


def tag_rule_update(*, rule: TagRule, **changes) -> TagRule:
    fact = changes.get("fact", rule.fact)
    operator = changes.get("operator", rule.operator)
    value = changes.get("value", rule.value)
    tagging.validate_condition(fact, operator, value)
    before = _tag_rule_values(rule)
    with transaction.atomic():
        revision = revision_bump()
        if "tag_name" in changes:
            (rule.tag,) = tags_get_or_create([normalize_tag_name(changes["tag_name"])])
        duplicate = TagRule.objects.filter(
            tag=rule.tag, fact=fact, operator=operator, value=value
        ).exclude(pk=rule.pk)
        if duplicate.exists():
            raise TagRuleExists(f"Tag {rule.tag.name!r} already has this condition.")
        rule.fact, rule.operator, rule.value = fact, operator, value
        rule.description = changes.get("description", rule.description)
        rule.save()
        _tag_rule_changed(revision)
        _audit_tag_rule(rule, "tag_rule.update", before, _tag_rule_values(rule))
    return rule


def tag_rule_delete(*, rule: TagRule) -> None:
    with transaction.atomic():
        revision = revision_bump()
        _audit_tag_rule(rule, "tag_rule.delete", _tag_rule_values(rule), None)
        rule.delete()
        _tag_rule_changed(revision)


def _auto_spans(host_ids) -> dict[int, set[int]]:
    spans: dict[int, set[int]] = {host_id: set() for host_id in host_ids}
    for host_id, tag_id in HostTag.objects.filter(
        host_id__in=list(host_ids), source=TagSource.AUTO, rev_to__isnull=True
    ).values_list("host_id", "tag_id"):
        spans[host_id].add(tag_id)
    return spans


def _apply_auto_tags(wanted: dict[int, set[int]]) -> int:
    """Give these hosts exactly these automatic tags, at one new revision; returns how many
    hosts changed. Call inside transaction.atomic().

    The differences are computed again under the revision lock, which every writer of tag
    spans takes, so a preflight and a fleet re-tag of the same host cannot both insert the
    same span. When nothing is left to change the transaction is rolled back (no revision is
    spent)."""
    revision = revision_bump()
    current = _auto_spans(wanted)
    changes = {
        host_id: (tags - current[host_id], current[host_id] - tags)
        for host_id, tags in wanted.items()
        if tags != current[host_id]
    }
    if not changes:
        transaction.set_rollback(True)
        return 0
    for host_id, (_, lost) in changes.items():
        if lost:
            HostTag.objects.filter(
                host_id=host_id, tag_id__in=lost, source=TagSource.AUTO, rev_to__isnull=True
            ).update(rev_to=revision)
    HostTag.objects.bulk_create(
        [
            HostTag(host_id=host_id, tag_id=tag_id, source=TagSource.AUTO, rev_from=revision)
            for host_id, (gained, _) in changes.items()
            for tag_id in gained
        ]
    )
    return len(changes)


def tag_rules_apply_batch(*, after_id: int = 0, limit: int = 1000) -> tuple[int | None, int]:
    """Re-evaluate tag rules for up to `limit` hosts with id > after_id, in one transaction and
    at most one revision. Returns (last host id, or None when done; hosts re-tagged)."""
    conds = tagging.conditions()
    fields = ("id", "enrollment__name", *tagging.FACT_FIELDS)
    rows = list(Host.objects.filter(id__gt=after_id).order_by("id").values(*fields)[:limit])
    if not rows:
        return None, 0
    current = _auto_spans([row["id"] for row in rows])
    wanted = {}
    for row in rows:
        row[tagging.TagFact.ENROLLMENT] = row.pop("enrollment__name")
        tags = tagging.auto_tag_ids(conds, row)
        if tags != current[row["id"]]:
            wanted[row["id"]] = tags
    changed = 0
    if wanted:
        with transaction.atomic():
            changed = _apply_auto_tags(wanted)
    return (rows[-1]["id"] if len(rows) == limit else None), changed


def tag_rules_apply_fleet(fanout: FanOut | None = None) -> dict:
    """The TAG_RULES fan-out: every host's automatic tags recomputed from the current tag
    rules (so a late or repeated run converges to the same memberships)."""
    after, retagged = 0, 0
    while after is not None:
        after, changed = tag_rules_apply_batch(after_id=after, limit=settings.TAG_RULES_BATCH_SIZE)
        retagged += changed
    return {"hosts_retagged": retagged}


# --- periodic -----------------------------------------------------------------------------------


def hosts_mark_stale(*, now=None) -> int:
    """Mark hosts that missed HOST_STALE_MISSED_SYNCS full-sync intervals (one UPDATE)."""
    now = now or timezone.now()
    return Host.objects.filter(stale_since__isnull=True, stale_after__lt=now).update(
        stale_since=F("stale_after")
    )


@dataclass(frozen=True)
class PreflightFacts:
    """What an agent reports about itself at preflight (domain names, not wire names)."""

    serial_number: str = ""
    hostname: str = ""
    os_version: str = ""
    os_build: str = ""
    model_identifier: str = ""
    santa_version: str = ""
    primary_user: str = ""
    primary_user_groups: tuple[str, ...] = ()
    push_notification_token: str = ""
    client_mode: str = ""
    request_clean_sync: bool = False
    rule_counts: dict = field(default_factory=dict)  # RULE_COUNT_KINDS + "transitive"
    sip_status: int | None = None
    rules_hash: str = ""


@dataclass(frozen=True)
class PreflightResult:
    host: Host
    configuration: SyncConfiguration
    sync_type: str
    drift_reasons: list[str]


def _count_differences(reported: dict, expected: dict) -> list[str]:
    return [
        f"{kind} {reported.get(kind, 0)} (expected {expected.get(kind, 0)})"
        for kind in RULE_COUNT_KINDS
        if reported.get(kind, 0) != expected.get(kind, 0)
    ]


def _drift_reasons(host: Host, facts: PreflightFacts) -> list[str]:
    """How the rules the host reports differ from what this server delivered.

    After a download the host never confirmed (lost postflight), it holds either the confirmed
    set or the downloaded one; only a match with neither is drift.
    """
    if host.rules_synced_rev is None:
        return []
    reasons = []
    differences = _count_differences(facts.rule_counts, host.expected_counts or {})
    if (
        differences
        and host.pending_counts is not None
        and not _count_differences(facts.rule_counts, host.pending_counts)
    ):
        differences = []
    if differences:
        reasons.append("rule counts differ: " + ", ".join(differences))
    if (
        host.pending_rev is None
        and host.postflight_rules_hash
        and facts.rules_hash != host.postflight_rules_hash
    ):
        reasons.append("rules hash changed since the last postflight")
    return reasons


def _preflight_tags(
    host: Host, facts: PreflightFacts, spans: list[tuple[int, str]], conditions
) -> set[int]:
    """The host's tags after re-evaluating tag rules on the facts it just reported; `spans`
    are its current memberships (tag id, source)."""
    auto = {tag for tag, source in spans if source == TagSource.AUTO}
    values = {name: getattr(facts, name) for name in tagging.FACT_FIELDS}
    values[tagging.TagFact.ENROLLMENT] = host.enrollment.name
    wanted = tagging.auto_tag_ids(conditions, values)
    if wanted != auto:
        with transaction.atomic():
            _apply_auto_tags({host.pk: wanted})
    return {tag for tag, source in spans if source == TagSource.MANUAL} | wanted


# Written behind the request when nothing else changed (hosts.liveness).
_LIVENESS = frozenset({"last_preflight_at", "stale_after", "stale_since"})


def host_preflight(
    *,
    host: Host,
    facts: PreflightFacts,
    tag_spans: list[tuple[int, str]] | None = None,
    host_profile_ids=None,
    settings_token: str | None = None,
) -> PreflightResult:
    """Record a preflight's facts and decide the sync type and configuration to answer with.

    `tag_spans` and `host_profile_ids` (the host's current memberships and attached profiles)
    come with the sync's one statement (hosts.selectors.sync_context); profiles and tag rules
    come from memory under `settings_token` (hosts.settings_cache). A preflight that changes
    nothing but the host's last-seen time writes that behind the request (hosts.liveness).
    """
    now = timezone.now()
    if tag_spans is None:
        tag_spans = list(
            HostTag.objects.filter(host=host, rev_to__isnull=True).values_list("tag_id", "source")
        )
    if host_profile_ids is None:
        host_profile_ids = ConfigurationProfile.hosts.through.objects.filter(
            host_id=host.pk
        ).values_list("configurationprofile_id", flat=True)
    snapshot = settings_snapshot(settings_token)
    tag_ids = _preflight_tags(host, facts, tag_spans, snapshot.conditions)
    configuration = snapshot.configuration(
        tag_ids,
        host_profile_ids,
        enrollment_mode=host.enrollment.client_mode,
        host_mode_override=host.client_mode_override,
    )
    reasons = _drift_reasons(host, facts)

    if host.clean_sync_requested:
        sync_type = host.clean_sync_requested
    elif facts.request_clean_sync or host.rules_synced_rev is None:
        # The agent repeats request_clean_sync until it gets a clean sync (protocol.md §5.7);
        # a host this server never completed a sync with is cleaned so that it holds exactly
        # the rules sent from here.
        sync_type = SyncType.CLEAN
    elif reasons and configuration.clean_sync_on_drift:
        sync_type = SyncType.CLEAN
    else:
        sync_type = SyncType.NORMAL

    updates = {
        "serial_number": facts.serial_number,
        "hostname": facts.hostname,
        "os_version": facts.os_version,
        "os_build": facts.os_build,
        "model_identifier": facts.model_identifier,
        "santa_version": facts.santa_version,
        "primary_user": facts.primary_user,
        "primary_user_groups": list(facts.primary_user_groups),
        "push_notification_token": facts.push_notification_token,
        "reported_client_mode": facts.client_mode,
        "sip_status": facts.sip_status,
        "request_clean_sync": facts.request_clean_sync,
        "reported_counts": dict(facts.rule_counts),
        "preflight_rules_hash": facts.rules_hash,
        "last_preflight_at": now,
        # Only a clean sync is remembered for the rule download; NORMAL needs no mark.
        "pending_sync_type": sync_type if sync_type != SyncType.NORMAL else "",
        "drift_reasons": reasons,
        "drift_detected_at": (host.drift_detected_at or now) if reasons else None,
        "stale_since": None,
        "stale_after": now
        + timedelta(
            seconds=settings.HOST_STALE_MISSED_SYNCS
            * (configuration.full_sync_interval or DEFAULT_FULL_SYNC_INTERVAL)
        ),
    }
    changed = {
        name: value
        for name, value in updates.items()
        if name in _LIVENESS or getattr(host, name) != value
    }
    if changed.keys() <= _LIVENESS and host.stale_since is None:
        liveness.writer.preflight(host.pk, now, updates["stale_after"])
    else:
        Host.objects.filter(pk=host.pk).update(**changed)
    for name, value in updates.items():
        setattr(host, name, value)
    return PreflightResult(host, configuration, sync_type, reasons)


def host_record_eventupload(*, host: Host, at=None) -> None:
    """When the host last uploaded events: a last-seen time, written behind the request."""
    at = at or timezone.now()
    liveness.writer.eventupload(host.pk, at)
    host.last_eventupload_at = at


def host_record_ruledownload(*, host: Host, revision: int, clean: bool, counts: dict) -> None:
    """The last page of a rule download was served: remember what it delivered, to be
    confirmed by the postflight (the position only advances then, protocol.md §5.5.1).

    Until then the host may hold either set; the next download allows for both
    (rules.delivery.changes_page, `unconfirmed`)."""
    now = timezone.now()
    updates = {
        "last_ruledownload_at": now,
        "pending_rev": revision,
        "pending_clean": clean,
        "pending_counts": counts,
    }
    Host.objects.filter(pk=host.pk).update(**updates)
    for name, value in updates.items():
        setattr(host, name, value)


@dataclass(frozen=True)
class PostflightReport:
    rules_received: int = 0
    rules_processed: int = 0
    sync_type: str = ""
    rules_hash: str = ""


def host_postflight(*, host: Host, report: PostflightReport) -> None:
    """Confirm the sync: the host now holds the rule set of the revision it downloaded.

    A steady-state postflight (nothing downloaded, nothing else changed) writes only its time
    and the sync's history row, behind the request (hosts.liveness)."""
    performed = report.sync_type if report.sync_type in SyncType.values else SyncType.NORMAL
    cleaned = performed in (SyncType.CLEAN, SyncType.CLEAN_ALL)
    updates = {
        "last_postflight_at": timezone.now(),
        "last_sync_type": performed,
        "postflight_rules_hash": report.rules_hash,
        "rules_received": report.rules_received,
        "rules_processed": report.rules_processed,
        "rules_dropped": report.rules_processed < report.rules_received,
        "pending_rev": None,
        "pending_counts": None,
        "pending_clean": False,
        "pending_sync_type": "",
    }
    if host.pending_rev is not None:
        if cleaned and not host.pending_clean:
            # The agent wiped its rules but was served only changes: its set is unknown now,
            # so the next sync must be clean.
            updates["rules_synced_rev"] = None
            updates["expected_counts"] = {}
        else:
            updates["rules_synced_rev"] = host.pending_rev
            updates["expected_counts"] = host.pending_counts or {}
    if cleaned and (host.clean_sync_requested == performed or performed == SyncType.CLEAN_ALL):
        updates["clean_sync_requested"] = ""
    changed = {
        name: value
        for name, value in updates.items()
        if name == "last_postflight_at" or getattr(host, name) != value
    }
    record = HostSync(
        host=host,
        finished_at=updates["last_postflight_at"],
        sync_type=performed,
        rules_received=report.rules_received,
        rules_processed=report.rules_processed,
        revision=updates.get("rules_synced_rev", host.rules_synced_rev),
        rules_dropped=updates["rules_dropped"],
    )
    if changed.keys() == {"last_postflight_at"}:
        liveness.writer.postflight(host.pk, updates["last_postflight_at"], record)
    else:
        # Together or not at all: a connection lost between them must not leave the host's
        # position advanced without its sync in the history (the agent retries the postflight).
        with transaction.atomic():
            Host.objects.filter(pk=host.pk).update(**changed)
            record.save()
    for name, value in updates.items():
        setattr(host, name, value)


def hosts_prune_syncs(*, now=None, batch: int = 10_000) -> int:
    """Delete sync history older than SYNC_HISTORY_RETENTION_DAYS (0 keeps it forever), in
    batches of primary keys, each its own short statement (as events.services.events_prune)."""
    days = settings.SYNC_HISTORY_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    total = 0
    while True:
        ids = list(
            HostSync.objects.filter(finished_at__lt=cutoff)
            .order_by("finished_at")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            return total
        total += HostSync.objects.filter(id__in=ids).delete()[0]
