"""Host compliance: each host's mode (reported and configured), last syncs, staleness, drift,
rule position against the fleet revision and rule counts reported against delivered.

Per chunk of hosts: one query for their current tags and three for their configuration
(hosts.selectors.configurations_for_hosts), instead of two per host.

A host is out of compliance when it is stale, drifted, has never completed a sync, confirmed
an older fleet revision than the current one ("behind": some change since may not concern it,
its next sync settles that), or dropped rules at its last sync.

`rules_reported` is what the host counted at its last preflight, `rules_expected` what the
server counts it holds since its last postflight: after a sync that changed its rules they
differ until its next preflight. Their comparison at each preflight is what sets `drifted`.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Q

from hosts.filtersets import HostFilterSet
from hosts.models import ClientMode, Host, HostTag
from hosts.selectors import HostModes, configurations_for_hosts, revision_current
from hosts.services import RULE_COUNT_KINDS

from ..params import BoolParam, ChoiceParam, ReportParameters, TextParam, filter_data
from . import stream

NAME = "hosts"
DESCRIPTION = (
    "Every host's compliance: mode reported and configured, last sync, Santa version, stale, "
    "drift and its reasons, rule position against the fleet revision, rules counted against "
    "delivered, dropped rules."
)
FILTERS = (
    "q",
    "machine_id",
    "hostname",
    "serial_number",
    "tag",
    "client_mode",
    "mode",
    "santa_version",
    "enrollment",
    "drifted",
    "stale",
    "rules_dropped",
)
# The rule types an agent counts (the compiler count is part of the binary count).
COUNTED = tuple(kind for kind in RULE_COUNT_KINDS if kind != "compiler")

COLUMNS = [
    "machine_id",
    "hostname",
    "serial_number",
    "enrollment",
    "tags",
    "primary_user",
    "reported_mode",
    "configured_mode",
    "configured_mode_source",
    "mode_as_configured",
    "santa_version",
    "os_version",
    "os_build",
    "model_identifier",
    "first_seen_at",
    "last_preflight_at",
    "last_successful_sync_at",
    "last_sync_type",
    "stale",
    "stale_since",
    "drifted",
    "drift_detected_at",
    "drift_reasons",
    "rules_synced_revision",
    "current_revision",
    "rules_status",
    "rules_reported",
    "rules_expected",
    "rules_dropped",
    "compliant",
    "noncompliance",
]


class Parameters(ReportParameters):
    filterset_class = HostFilterSet
    filter_names = FILTERS

    noncompliant = BoolParam(
        label="Out of compliance",
        help_text="Stale, drifted, never synced, behind the fleet revision or dropped rules.",
    )
    q = TextParam(label="Search", help_text="Machine ID, hostname, serial or user contains")
    machine_id = TextParam(label="Machine ID")
    hostname = TextParam(label="Hostname contains")
    serial_number = TextParam(label="Serial number")
    tag = TextParam(label="Tag")
    client_mode = ChoiceParam(ClientMode.choices, label="Reported mode")
    mode = ChoiceParam(ClientMode.choices, label="Mode (override, else reported)")
    santa_version = TextParam(label="Santa version")
    enrollment = TextParam(label="Enrollment")
    drifted = BoolParam(label="Drifted")
    stale = BoolParam(label="Stale")
    rules_dropped = BoolParam(label="Dropped rules")


def columns(values: dict) -> list[str]:
    return COLUMNS


def noncompliant(current: int) -> Q:
    return (
        Q(stale_since__isnull=False)
        | Q(drift_detected_at__isnull=False)
        | Q(rules_synced_rev__isnull=True)
        | Q(rules_synced_rev__lt=current)
        | Q(rules_dropped=True)
    )


def _queryset(values: dict, current: int):
    filterset = HostFilterSet(filter_data(values, FILTERS), queryset=Host.objects.all())
    if not filterset.is_valid():
        raise ValueError(f"invalid filters: {dict(filterset.errors)}")
    queryset = filterset.qs
    if values.get("noncompliant") is True:
        queryset = queryset.filter(noncompliant(current))
    elif values.get("noncompliant") is False:
        queryset = queryset.exclude(noncompliant(current))
    return queryset


def count(values: dict) -> int:
    return _queryset(values, revision_current()).count()


FIELDS = (
    "id",
    "machine_id",
    "hostname",
    "serial_number",
    "enrollment__name",
    "enrollment__client_mode",
    "client_mode_override",
    "primary_user",
    "reported_client_mode",
    "santa_version",
    "os_version",
    "os_build",
    "model_identifier",
    "first_seen_at",
    "last_preflight_at",
    "last_postflight_at",
    "last_sync_type",
    "stale_since",
    "drift_detected_at",
    "drift_reasons",
    "rules_synced_rev",
    "reported_counts",
    "expected_counts",
    "rules_dropped",
)


def _total(counts: dict | None) -> int:
    counts = counts or {}
    return sum(int(counts.get(kind) or 0) for kind in COUNTED)


def rows(values: dict) -> Iterator[list]:
    current = revision_current()
    queryset = _queryset(values, current).order_by("machine_id").values_list(*FIELDS)
    for chunk in stream(queryset):
        ids = [row[0] for row in chunk]
        tag_ids: dict[int, set[int]] = {pk: set() for pk in ids}
        tag_names: dict[int, list[str]] = {pk: [] for pk in ids}
        for host_id, tag_id, name in (
            HostTag.objects.filter(host_id__in=ids, rev_to__isnull=True)
            .order_by("tag__name")
            .values_list("host_id", "tag_id", "tag__name")
        ):
            if tag_id not in tag_ids[host_id]:  # assigned and automatic: one tag
                tag_ids[host_id].add(tag_id)
                tag_names[host_id].append(name)
        configurations = configurations_for_hosts(
            [HostModes(row[0], row[5], row[6]) for row in chunk], tag_ids
        )
        for row in chunk:
            yield _host_row(row, tag_names[row[0]], configurations[row[0]], current)


def _host_row(row, tags: list[str], configuration, current: int) -> list:
    (
        _pk,
        machine_id,
        hostname,
        serial,
        enrollment,
        _enrollment_mode,
        _override,
        primary_user,
        reported_mode,
        santa_version,
        os_version,
        os_build,
        model,
        first_seen,
        last_preflight,
        last_postflight,
        last_sync_type,
        stale_since,
        drift_detected_at,
        drift_reasons,
        synced_rev,
        reported,
        expected,
        dropped,
    ) = row
    configured = configuration.client_mode or ""
    if synced_rev is None:
        status = "never_synced"
    elif synced_rev < current:
        status = "behind"
    else:
        status = "in_sync"
    reasons = [
        reason
        for reason, applies in (
            ("stale", stale_since is not None),
            ("drifted", drift_detected_at is not None),
            ("never synced", synced_rev is None),
            ("behind the fleet revision", status == "behind"),
            ("dropped rules", dropped),
        )
        if applies
    ]
    return [
        machine_id,
        hostname,
        serial,
        enrollment,
        tags,
        primary_user,
        reported_mode,
        configured,
        configuration.sources.get("client_mode", ""),
        reported_mode == configured if configured and reported_mode else None,
        santa_version,
        os_version,
        os_build,
        model,
        first_seen,
        last_preflight,
        last_postflight,
        last_sync_type,
        stale_since is not None,
        stale_since,
        drift_detected_at is not None,
        drift_detected_at,
        list(drift_reasons or []),
        synced_rev,
        current,
        status,
        _total(reported) if reported else None,
        _total(expected) if synced_rev is not None else None,
        dropped,
        not reasons,
        reasons,
    ]
