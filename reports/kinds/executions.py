"""Blocked and would-be-blocked executions in a period [since, until): one row per execution,
or, with `group_by`, one row per host, user, binary or signer with its counts.

"Blocked" is a BLOCK_* decision, "would be blocked" is ALLOW_UNKNOWN (an unknown binary a
host in monitor mode let run), as in events.stats. Every query starts from exactly
`decision IN REPORTED_DECISIONS`, the condition of the partial index event_reported_time
(execution_time, id), so a period is read in time order from that index alone: no sort, and
no allowed executions read and thrown away. The filters are EventFilterSet's.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, F, Max, Min, Q

from events.filtersets import EventFilterSet
from events.models import (
    BLOCKED_DECISIONS,
    REPORTED_DECISIONS,
    WOULD_BLOCK_DECISIONS,
    Binary,
    Certificate,
    Event,
)
from hosts.models import Host

from ..params import (
    ChoiceParam,
    MultiChoiceParam,
    PeriodMixin,
    ReportParameters,
    TextParam,
    TimeParam,
    filter_data,
)
from . import stream

NAME = "executions"
DESCRIPTION = (
    "Blocked and would-be-blocked (monitor mode) executions in a period, one row each, or "
    "counted by host, user, binary or signer (Team ID and leaf certificate)."
)
OUTCOMES = [("blocked", "Blocked"), ("would_block", "Would be blocked (monitor mode)")]
GROUPS = [
    ("host", "Host"),
    ("user", "User"),
    ("binary", "Binary"),
    ("signer", "Signer (Team ID and certificate)"),
]
FILTERS = (
    "since",
    "until",
    "machine_id",
    "file_sha256",
    "decision",
    "executing_user",
    "team_id",
    "signing_id",
)

DETAIL_COLUMNS = [
    "execution_time",
    "machine_id",
    "hostname",
    "executing_user",
    "decision",
    "outcome",
    "file_name",
    "file_path",
    "file_sha256",
    "team_id",
    "signing_id",
    "cdhash",
    "signing_status",
    "certificate_cn",
    "certificate_sha256",
    "file_bundle_id",
    "file_bundle_name",
    "file_bundle_version_string",
    "file_bundle_path",
    "pid",
    "ppid",
    "parent_name",
    "quarantine_data_url",
    "received_at",
    "event_id",
]
COUNTS = ["blocked", "would_block", "executions", "first_at", "last_at"]
GROUP_COLUMNS = {
    "host": ["machine_id", "hostname", *COUNTS, "binaries", "users"],
    "user": ["executing_user", *COUNTS, "hosts", "binaries"],
    "binary": [
        "file_sha256",
        "file_name",
        "team_id",
        "signing_id",
        "certificate_cn",
        *COUNTS,
        "hosts",
        "users",
    ],
    "signer": ["team_id", "certificate_sha256", "certificate_cn", *COUNTS, "hosts", "binaries"],
}


class Parameters(PeriodMixin, ReportParameters):
    filterset_class = EventFilterSet
    filter_names = FILTERS

    since = TimeParam(label="Since (UTC)", help_text="Executions at or after this time.")
    until = TimeParam(label="Until (UTC)", help_text="Executions before this time.")
    group_by = ChoiceParam(GROUPS, label="Group by")
    outcome = ChoiceParam(OUTCOMES, label="Outcome")
    decision = MultiChoiceParam([(d, d) for d in REPORTED_DECISIONS], label="Decision")
    machine_id = TextParam(label="Machine ID")
    executing_user = TextParam(label="User")
    file_sha256 = TextParam(label="Binary SHA-256")
    team_id = TextParam(label="Team ID")
    signing_id = TextParam(label="Signing ID")


def columns(values: dict) -> list[str]:
    group = values.get("group_by")
    return GROUP_COLUMNS[group] if group else DETAIL_COLUMNS


def _queryset(values: dict):
    # The index's condition, first and verbatim (see the module docstring).
    base = Event.objects.filter(decision__in=REPORTED_DECISIONS)
    filterset = EventFilterSet(filter_data(values, FILTERS), queryset=base)
    if not filterset.is_valid():
        raise ValueError(f"invalid filters: {dict(filterset.errors)}")
    queryset = filterset.qs
    outcome = values.get("outcome")
    if outcome == "blocked":
        queryset = queryset.filter(decision__in=BLOCKED_DECISIONS)
    elif outcome == "would_block":
        queryset = queryset.filter(decision__in=WOULD_BLOCK_DECISIONS)
    return queryset


def count(values: dict) -> int | None:
    """Rows for the progress bar: exact for executions (an index-only count), unknown for
    the grouped variants (counting the groups is as costly as the report)."""
    if values.get("group_by"):
        return None
    return _queryset(values).order_by().count()


def rows(values: dict) -> Iterator[list]:
    group = values.get("group_by")
    if group:
        return GROUPED[group](_queryset(values))
    return _detail(_queryset(values))


def _outcome(decision: str) -> str:
    return "would_block" if decision in WOULD_BLOCK_DECISIONS else "blocked"


DETAIL_FIELDS = (
    "execution_time",
    "host__machine_id",
    "host__hostname",
    "executing_user",
    "decision",
    "file_name",
    "file_path",
    "binary_id",
    "team_id",
    "signing_id",
    "cdhash",
    "signing_status",
    # The leaf certificate as the agent reported it with this execution (chain: leaf first).
    "signing_chain__0__cn",
    "signing_chain__0__sha256",
    "file_bundle_id",
    "file_bundle_name",
    "file_bundle_version_string",
    "file_bundle_path",
    "pid",
    "ppid",
    "parent_name",
    "quarantine_data_url",
    "received_at",
    "id",
)


def _detail(queryset) -> Iterator[list]:
    queryset = queryset.order_by("execution_time", "id").values_list(*DETAIL_FIELDS)
    for chunk in stream(queryset):
        for row in chunk:
            row = list(row)
            row.insert(5, _outcome(row[4]))
            yield row


def _counts():
    return {
        "blocked": Count("id", filter=Q(decision__in=BLOCKED_DECISIONS)),
        "would_block": Count("id", filter=Q(decision__in=WOULD_BLOCK_DECISIONS)),
        "executions": Count("id"),
        "first_at": Min("execution_time"),
        "last_at": Max("execution_time"),
    }


def _grouped(queryset, keys: list[str], distinct: dict[str, str]):
    """One row per distinct `keys`: the counts, then COUNT(DISTINCT ...) of `distinct`; most
    executions first."""
    annotations = {**_counts(), **{n: Count(f, distinct=True) for n, f in distinct.items()}}
    return (
        queryset.order_by()
        .values(*keys)
        .annotate(**annotations)
        .order_by(F("executions").desc(), *keys)
        .values_list(*keys, *annotations)
    )


def _by_host(queryset) -> Iterator[list]:
    rows = _grouped(queryset, ["host_id"], {"binaries": "binary_id", "users": "executing_user"})
    for chunk in stream(rows):
        hosts = {
            pk: (machine_id, hostname)
            for pk, machine_id, hostname in Host.objects.filter(
                pk__in=[row[0] for row in chunk]
            ).values_list("pk", "machine_id", "hostname")
        }
        for host_id, *rest in chunk:
            yield [*hosts.get(host_id, (f"#{host_id}", "")), *rest]


def _by_user(queryset) -> Iterator[list]:
    rows = _grouped(queryset, ["executing_user"], {"hosts": "host_id", "binaries": "binary_id"})
    for chunk in stream(rows):
        yield from (list(row) for row in chunk)


def _by_binary(queryset) -> Iterator[list]:
    rows = _grouped(queryset, ["binary_id"], {"hosts": "host_id", "users": "executing_user"})
    for chunk in stream(rows):
        binaries = {
            sha: (name, team, signing, cn or "")
            for sha, name, team, signing, cn in Binary.objects.filter(
                pk__in=[row[0] for row in chunk]
            ).values_list("sha256", "file_name", "team_id", "signing_id", "leaf_certificate__cn")
        }
        for sha, *rest in chunk:
            yield [sha, *binaries.get(sha, ("", "", "", "")), *rest]


def _by_signer(queryset) -> Iterator[list]:
    rows = _grouped(
        queryset,
        ["team_id", "binary__leaf_certificate"],
        {"hosts": "host_id", "binaries": "binary_id"},
    )
    for chunk in stream(rows):
        names = dict(
            Certificate.objects.filter(pk__in={row[1] for row in chunk if row[1]}).values_list(
                "sha256", "cn"
            )
        )
        for team_id, certificate, *rest in chunk:
            yield [team_id, certificate, names.get(certificate, ""), *rest]


GROUPED = {"host": _by_host, "user": _by_user, "binary": _by_binary, "signer": _by_signer}
