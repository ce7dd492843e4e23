"""The audit log of a period [since, until), in chain order, every field of every entry.

Each row carries its `seq`, its `hash` and the hash of the entry before it in the chain
(`prev_hash`, looked up per chunk), so an exported log can be checked offline, entry by entry,
also when filters leave gaps: hash = SHA-256(prev_hash + canonical JSON), audit/chain.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from audit.chain import GENESIS
from audit.filtersets import AuditEntryFilterSet
from audit.models import AuditEntry

from ..params import PeriodMixin, ReportParameters, TextParam, TimeParam, filter_data
from . import stream

NAME = "audit"
DESCRIPTION = (
    "Every audit entry of a period in chain order: who (and through which API token), what, "
    "before and after, why, from "
    "where, with the hash chain (seq, previous hash, hash) to check it offline."
)
# AuditEntryFilterSet's filters but its day-based since/until: a report's period is in time.
FILTERS = ("actor", "action", "object_type", "object_id", "q")

COLUMNS = [
    "seq",
    "at",
    "actor_name",
    "actor_token",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "before",
    "after",
    "justification",
    "source_ip",
    "prev_hash",
    "hash",
]
# The columns as stored: prev_hash is looked up per chunk (rows()).
FIELDS = tuple(column for column in COLUMNS if column != "prev_hash")


class Parameters(PeriodMixin, ReportParameters):
    filterset_class = AuditEntryFilterSet
    filter_names = FILTERS

    since = TimeParam(label="Since (UTC)", help_text="Entries at or after this time.")
    until = TimeParam(label="Until (UTC)", help_text="Entries before this time.")
    actor = TextParam(label="Who", help_text="User name, or system")
    action = TextParam(label="Action", help_text="e.g. rule.create")
    object_type = TextParam(label="Object type", help_text="rule, host, report…")
    object_id = TextParam(label="Object ID")
    q = TextParam(label="Search", help_text="Object or justification contains")


def columns(values: dict) -> list[str]:
    return COLUMNS


def _queryset(values: dict):
    filterset = AuditEntryFilterSet(filter_data(values, FILTERS), queryset=AuditEntry.objects.all())
    if not filterset.is_valid():
        raise ValueError(f"invalid filters: {dict(filterset.errors)}")
    queryset = filterset.qs
    if values.get("since") is not None:
        queryset = queryset.filter(at__gte=values["since"])
    if values.get("until") is not None:
        queryset = queryset.filter(at__lt=values["until"])
    return queryset


def count(values: dict) -> int:
    return _queryset(values).count()


def rows(values: dict) -> Iterator[list]:
    queryset = _queryset(values).order_by("seq").values_list(*FIELDS)
    for chunk in stream(queryset):
        previous = dict(
            AuditEntry.objects.filter(seq__in=[row[0] - 1 for row in chunk]).values_list(
                "seq", "hash"
            )
        )
        previous[0] = GENESIS
        for row in chunk:
            yield [*row[:-1], previous.get(row[0] - 1, ""), row[-1]]
