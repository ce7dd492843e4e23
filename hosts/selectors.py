"""Reads of the hosts app that are more than one line."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from santaadmin.db import prepared_cursor

from .models import ConfigurationProfile, Enrollment, Host, HostTag, Revision, Tag, TagSource


def hash_secret(secret: str) -> str:
    """SHA-256 of an enrollment secret.

    Secrets are 256-bit random tokens, so a fast hash is enough (a slow password hash protects
    guessable passwords, not random keys) and it allows an indexed lookup: the comparison is an
    index probe on the hash, which reveals nothing usable about the secret itself.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class SyncContext:
    """Everything a sync stage needs to start, read in one statement (sync_context)."""

    enrollment: Enrollment
    host: Host | None  # None: first contact, or the machine is bound to another enrollment
    bound_elsewhere: bool  # the machine id belongs to a host of another enrollment
    tag_spans: list[tuple[int, str]]  # the host's current memberships: (tag id, source)
    host_profile_ids: frozenset[int]  # profiles attached to the host itself
    revision: int
    settings_token: str | None

    @property
    def tag_ids(self) -> set[int]:
        return {tag for tag, _ in self.tag_spans}


_ENROLLMENT_COLUMNS = ("id", "name", "client_mode", "secret_hash")
_HOST_FIELDS = tuple(Host._meta.concrete_fields)
_context_sql: dict[str, str] = {}
_converters: dict[str, list] = {}


def _aggregate(vendor: str, expression: str) -> str:
    if vendor == "postgresql":
        return f"string_agg(({expression})::text, ',')"
    return f"group_concat({expression}, ',')"


def _sync_context_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    host_columns = ", ".join(f"h.{quote(f.column)}" for f in _HOST_FIELDS)
    enrollment_columns = ", ".join(f"e.{quote(c)}" for c in _ENROLLMENT_COLUMNS)
    # Identifiers come from the models; the values are parameters.
    return f"""
        SELECT {enrollment_columns}, {host_columns},
            (SELECT {_aggregate(vendor, "t.tag_id || ':' || t.source")}
               FROM {HostTag._meta.db_table} t WHERE t.host_id = h.id AND t.rev_to IS NULL),
            (SELECT {_aggregate(vendor, "p.configurationprofile_id")}
               FROM {ConfigurationProfile.hosts.through._meta.db_table} p
              WHERE p.host_id = h.id),
            (SELECT value FROM {Revision._meta.db_table} WHERE id = 1),
            (SELECT token FROM hosts_settingsversion WHERE id = 1)
        FROM {Enrollment._meta.db_table} e
        LEFT JOIN {Host._meta.db_table} h ON h.machine_id = %s
        WHERE e.{{column}} = %s AND e.revoked_at IS NULL
    """  # noqa: S608


def _host_converters() -> list:
    """Per host column: its expression and the converters the ORM would apply to it on this
    database."""
    vendor = connection.vendor
    if vendor not in _converters:
        columns = [f.get_col("h") for f in _HOST_FIELDS]
        _converters[vendor] = [
            (
                column,
                [
                    *connection.ops.get_db_converters(column),
                    *f.get_db_converters(connection),
                ],
            )
            for f, column in zip(_HOST_FIELDS, columns, strict=True)
        ]
    return _converters[vendor]


def sync_context(*, machine_id: str, secret: str = "", cert_issuer: str = "") -> SyncContext | None:
    """The active enrollment admitting an agent (by bearer secret or, without one, by the
    client-certificate issuer a TLS proxy vouched for), the host with this machine id, its
    current tags and attached profiles, the fleet revision and the settings token: one
    statement, no ORM query compilation. None when no active enrollment matches (revocation
    is immediate: nothing is cached)."""
    if secret:
        column, value = "secret_hash", hash_secret(secret)
    elif cert_issuer:
        column, value = "client_cert_issuer", cert_issuer
    else:
        return None
    vendor = connection.vendor
    if vendor not in _context_sql:
        _context_sql[vendor] = _sync_context_sql(vendor)
    sql = _context_sql[vendor].replace("{column}", column)
    with prepared_cursor() as cursor:
        cursor.execute(sql, [machine_id, value])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(_ENROLLMENT_COLUMNS)
    enrollment_id, name, client_mode, secret_hash = row[:n]
    if secret and not hmac.compare_digest(secret_hash, value):
        return None
    enrollment = Enrollment(
        id=enrollment_id, name=name, client_mode=client_mode, secret_hash=secret_hash
    )
    host_values = row[n : n + len(_HOST_FIELDS)]
    spans_text, profiles_text, revision, token = row[n + len(_HOST_FIELDS) :]
    host = None
    bound_elsewhere = False
    if host_values[0] is not None:
        converted = []
        for (expression, converters), value_ in zip(_host_converters(), host_values, strict=True):
            for convert in converters:
                value_ = convert(value_, expression, connection)
            converted.append(value_)
        host = Host.from_db(connection.alias, [f.attname for f in _HOST_FIELDS], converted)
        if host.enrollment_id == enrollment.id:
            host.enrollment = enrollment
        else:
            host, bound_elsewhere = None, True
    spans = []
    for item in (spans_text or "").split(","):
        if item:
            tag, _, source = item.partition(":")
            spans.append((int(tag), source or TagSource.MANUAL))
    profiles = frozenset(int(p) for p in (profiles_text or "").split(",") if p)
    return SyncContext(
        enrollment=enrollment,
        host=host,
        bound_elsewhere=bound_elsewhere,
        tag_spans=spans if host is not None else [],
        host_profile_ids=profiles if host is not None else frozenset(),
        revision=revision or 0,
        settings_token=token,
    )


def revision_current() -> int:
    return Revision.objects.values_list("value", flat=True).get(pk=1)


def hosts_by_machine_id(machine_ids) -> tuple[list[Host], list[str]]:
    """The hosts with these machine ids, and the ids no host has (sorted)."""
    wanted = sorted(set(machine_ids))
    hosts = list(Host.objects.filter(machine_id__in=wanted)) if wanted else []
    return hosts, sorted(set(wanted) - {host.machine_id for host in hosts})


def host_tag_ids(host: Host) -> set[int]:
    return set(
        HostTag.objects.filter(host=host, rev_to__isnull=True).values_list("tag_id", flat=True)
    )


@dataclass
class TagHistory:
    """A host's tag memberships over a window of revisions."""

    spans: list[tuple[int, int, int | None]] = field(default_factory=list)  # tag, from, to

    def at(self, revision: int) -> frozenset[int]:
        return frozenset(
            tag
            for tag, start, end in self.spans
            if start <= revision and (end is None or end > revision)
        )

    def change_points(self, after: int, upto: int) -> set[int]:
        """Revisions in (after, upto] at which the host's tags changed."""
        return {
            r
            for _, start, end in self.spans
            for r in (start, end)
            if r is not None and after < r <= upto
        }

    def changed_between(self, after: int, upto: int) -> frozenset[int]:
        """Tags the host gained or lost in revisions after < r <= upto."""
        return frozenset(
            tag
            for tag, start, end in self.spans
            if after < start <= upto or (end is not None and after < end <= upto)
        )


def host_tag_history(host_id: int, after: int | None, upto: int) -> TagHistory:
    """Memberships valid at any revision in [after, upto] (after=None: only at upto)."""
    low = upto if after is None else after
    rows = HostTag.objects.filter(host_id=host_id, rev_from__lte=upto).filter(
        Q(rev_to__isnull=True) | Q(rev_to__gt=low)
    )
    return TagHistory([(r.tag_id, r.rev_from, r.rev_to) for r in rows])


def _current_members(**conditions) -> Coalesce:
    """Hosts currently in the outer tag (a correlated count on the (tag, rev_to) index; a host
    in a tag both by hand and by a tag rule is one member)."""
    members = (
        HostTag.objects.filter(tag_id=OuterRef("pk"), rev_to__isnull=True, **conditions)
        .order_by()
        .values("tag_id")
        .annotate(n=Count("host_id", distinct=True))
        .values("n")
    )
    return Coalesce(Subquery(members, output_field=IntegerField()), 0)


def tags_with_host_counts():
    """Tags annotated with their current members: `host_count`, `assigned_host_count` (by
    hand, API or enrollment) and `automatic_host_count` (tag rules). Three index-only counts
    per tag row, in the same query as the tags: a page of tags is one statement."""
    return Tag.objects.annotate(
        host_count=_current_members(),
        assigned_host_count=_current_members(source=TagSource.MANUAL),
        automatic_host_count=_current_members(source=TagSource.AUTO),
    )


def tag_references(tag: Tag) -> list[str]:
    """What refers to a tag, now or in the past (empty: nothing, it may be deleted)."""
    from rules.models import Rule, RuleTarget, TargetKind

    probes = [
        ("host memberships (current or past)", HostTag.objects.filter(tag=tag)),
        (
            "rules (current or past versions)",
            RuleTarget.objects.filter(
                kind__in=[TargetKind.TAG, TargetKind.EXCLUDED_TAG], target_id=tag.pk
            ),
        ),
        ("rules", Rule.objects.filter(Q(tags=tag) | Q(excluded_tags=tag))),
        ("configuration profiles", ConfigurationProfile.objects.filter(tags=tag)),
        ("tag rules", tag.tag_rules.all()),
        ("enrollments", Enrollment.objects.filter(tags=tag)),
    ]
    used = []
    for label, queryset in probes:
        if label not in used and queryset.exists():
            used.append(label)
    if "rules" in used and "rules (current or past versions)" in used:
        used.remove("rules")
    return used


# --- configuration ------------------------------------------------------------------------------

SETTING_FIELDS = (
    "client_mode",
    "batch_size",
    "full_sync_interval",
    "enable_bundles",
    "enable_transitive_rules",
    "enable_all_event_upload",
    "disable_unknown_event_upload",
    "allowed_path_regex",
    "blocked_path_regex",
    "removable_media_action",
    "removable_media_remount_flags",
    "encrypted_removable_media_action",
    "encrypted_removable_media_remount_flags",
    "override_file_access_action",
    "event_detail_url",
    "event_detail_text",
    "clean_sync_on_drift",
)


@dataclass(frozen=True)
class SyncConfiguration:
    """A host's effective configuration; None means "not managed by the server"."""

    client_mode: str | None = None
    batch_size: int | None = None
    full_sync_interval: int | None = None
    enable_bundles: bool | None = None
    enable_transitive_rules: bool | None = None
    enable_all_event_upload: bool | None = None
    disable_unknown_event_upload: bool | None = None
    allowed_path_regex: str | None = None
    blocked_path_regex: str | None = None
    removable_media_action: str | None = None
    removable_media_remount_flags: list | None = None
    encrypted_removable_media_action: str | None = None
    encrypted_removable_media_remount_flags: list | None = None
    override_file_access_action: str | None = None
    event_detail_url: str | None = None
    event_detail_text: str | None = None
    clean_sync_on_drift: bool | None = None
    sources: dict = field(default_factory=dict, compare=False)  # setting -> where it came from


def profiles_for_host(host_id: int | None, tag_ids) -> list[ConfigurationProfile]:
    """Default, tag and host profiles in the order they apply (later wins), in one query.

    Among tag profiles a higher priority applies later; on equal priority the name that sorts
    first applies last, so the order is total and does not depend on the database.
    """
    condition = Q(is_default=True) | Q(tags__in=list(tag_ids))
    linked = Value(False)
    if host_id is not None:
        condition |= Q(hosts=host_id)
        linked = Exists(
            ConfigurationProfile.hosts.through.objects.filter(
                configurationprofile_id=OuterRef("pk"), host_id=host_id
            )
        )
    profiles = ConfigurationProfile.objects.filter(condition).annotate(host_linked=linked)
    unique = {p.id: p for p in profiles}
    return order_profiles(unique.values(), {p.id for p in unique.values() if p.host_linked})


def order_profiles(profiles, host_linked: set[int]) -> list[ConfigurationProfile]:
    """Profiles in the order they apply (later wins): default, tag profiles by priority, then
    profiles attached to the host (`host_linked` ids)."""

    def order(profile):
        level = 2 if profile.id in host_linked else (0 if profile.is_default else 1)
        return (level, profile.priority)

    # Names in reverse order first; the stable sort by (level, priority) keeps that order
    # among equals, so the name that sorts first applies last (and "a" wins over "ab").
    by_name = sorted(profiles, key=lambda p: p.name, reverse=True)
    return sorted(by_name, key=order)


def resolve_configuration(layers: list[tuple[str, dict]]) -> SyncConfiguration:
    """Apply (source, settings) layers in order; a None value inherits from earlier layers."""
    values: dict = {}
    sources: dict = {}
    for source, settings in layers:
        for name, value in settings.items():
            if value is not None:
                values[name] = value
                sources[name] = source
    return SyncConfiguration(**values, sources=sources)


def configuration_layers(
    profiles: list[ConfigurationProfile], *, enrollment_mode: str, host_mode_override: str
) -> list[tuple[str, dict]]:
    layers = []
    for profile in profiles:
        layers.append(
            (f"profile:{profile.name}", {name: getattr(profile, name) for name in SETTING_FIELDS})
        )
        if profile.is_default:
            # The enrollment's mode sits just above the default profile.
            layers.append(("enrollment", {"client_mode": enrollment_mode or None}))
    if not any(p.is_default for p in profiles):
        layers.insert(0, ("enrollment", {"client_mode": enrollment_mode or None}))
    layers.append(("host override", {"client_mode": host_mode_override or None}))
    return layers


def configuration_for_host(host: Host, tag_ids=None) -> SyncConfiguration:
    if tag_ids is None:
        tag_ids = host_tag_ids(host)
    return resolve_configuration(
        configuration_layers(
            profiles_for_host(host.id, tag_ids),
            enrollment_mode=host.enrollment.client_mode,
            host_mode_override=host.client_mode_override,
        )
    )


@dataclass(frozen=True)
class HostModes:
    """What `configurations_for_hosts` needs of a host besides its tags."""

    host_id: int
    enrollment_mode: str
    host_mode_override: str


def configurations_for_hosts(
    hosts: list[HostModes], tag_ids: dict[int, set[int]]
) -> dict[int, SyncConfiguration]:
    """`configuration_for_host` for many hosts at once (reports, lists): three queries for the
    whole batch instead of two per host. `tag_ids` maps each host id to its current tags."""
    host_ids = [host.host_id for host in hosts]
    all_tags = set().union(*tag_ids.values()) if tag_ids else set()
    linked: dict[int, set[int]] = {}
    for host_id, profile_id in ConfigurationProfile.hosts.through.objects.filter(
        host_id__in=host_ids
    ).values_list("host_id", "configurationprofile_id"):
        linked.setdefault(host_id, set()).add(profile_id)
    tagged: dict[int, set[int]] = {}  # tag id -> profiles attached to it
    for profile_id, tag_id in ConfigurationProfile.tags.through.objects.filter(
        tag_id__in=all_tags
    ).values_list("configurationprofile_id", "tag_id"):
        tagged.setdefault(tag_id, set()).add(profile_id)
    wanted = set().union(*linked.values(), *tagged.values())
    profiles = {
        p.id: p for p in ConfigurationProfile.objects.filter(Q(is_default=True) | Q(pk__in=wanted))
    }
    defaults = [p for p in profiles.values() if p.is_default]
    result = {}
    for host in hosts:
        mine = linked.get(host.host_id, set())
        applying = {p.id: p for p in defaults}
        for tag in tag_ids.get(host.host_id, ()):
            applying.update((pid, profiles[pid]) for pid in tagged.get(tag, ()))
        applying.update((pid, profiles[pid]) for pid in mine)
        result[host.host_id] = resolve_configuration(
            configuration_layers(
                order_profiles(applying.values(), mine),
                enrollment_mode=host.enrollment_mode,
                host_mode_override=host.host_mode_override,
            )
        )
    return result
