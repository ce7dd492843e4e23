"""Execution statistics kept at ingestion: per binary, per (binary, host), per (binary, user)
and per day. They let the console list millions of events' worth of binaries by impact with
index scans instead of aggregating the events table on every page.

Only events that are new (not a replay of a stored event) are counted. The per-host and
per-user rows are upserts that report whether they inserted (the `fresh` column), so a
binary's host and user counts stay exact when two agents upload concurrently.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from django.db import connection

from santaadmin.db import json_rows, json_rows_type, prepared_cursor

from .models import Binary, BinaryHost, BinaryUser, EventDay

BUNDLE_BINARY = "BUNDLE_BINARY"
MAX_USER = 255


def outcome_of(decision: str) -> str | None:
    """blocked / would_block / allowed for an execution decision; None for bundle scans."""
    if decision == BUNDLE_BINARY:
        return None
    if decision.startswith("BLOCK_"):
        return EventDay.Outcome.BLOCKED
    if decision == "ALLOW_UNKNOWN":
        return EventDay.Outcome.WOULD_BLOCK
    return EventDay.Outcome.ALLOWED


@dataclass
class _Tally:
    executions: int = 0
    blocked: int = 0
    would_block: int = 0
    first: datetime.datetime | None = None
    last: datetime.datetime | None = None
    last_user: str = ""
    last_decision: str = ""
    users: set = field(default_factory=set)

    def add(self, event: dict, when: datetime.datetime, outcome: str) -> None:
        self.executions += 1
        self.blocked += outcome == EventDay.Outcome.BLOCKED
        self.would_block += outcome == EventDay.Outcome.WOULD_BLOCK
        if self.first is None or when < self.first:
            self.first = when
        if self.last is None or when >= self.last:
            self.last = when
            self.last_user = event["executing_user"][:MAX_USER]
            self.last_decision = event["decision"]


def _later(column: str, table: str) -> str:
    return (
        f"CASE WHEN excluded.{column} > {table}.{column} "
        f"THEN excluded.{column} ELSE {table}.{column} END"
    )


def _earlier(column: str, table: str) -> str:
    return (
        f"CASE WHEN excluded.{column} < {table}.{column} "
        f"THEN excluded.{column} ELSE {table}.{column} END"
    )


# SQLite binds at most 250,000 parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER).
_SQLITE_MAX_PARAMETERS = 250_000


def _row_chunks(types: tuple[str, ...], rows: list[list]):
    """Row sources for `rows` (each one value per column of the given PostgreSQL types), as
    (source, params): on PostgreSQL one JSON parameter (santaadmin.db.json_rows), a statement
    of fixed text whatever the number of rows (a VALUES list of 10,000 rows cost more to
    build and parse than to run); elsewhere VALUES lists within SQLite's parameter limit."""
    if connection.vendor == "postgresql":
        yield json_rows(types, rows)
        return
    adapt = connection.ops.adapt_datetimefield_value
    one = "(" + ", ".join(["%s"] * len(types)) + ")"
    size = _SQLITE_MAX_PARAMETERS // len(types)
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        params = [
            adapt(value) if isinstance(value, datetime.datetime) else value
            for row in chunk
            for value in row
        ]
        yield "VALUES " + ", ".join([one] * len(chunk)), params


def _fresh_per_binary(types: tuple[str, ...], rows: list[list], sql) -> dict[str, int]:
    """Run the upsert `sql(source)` over `rows`; per binary, how many rows it inserted."""
    new: dict[str, int] = defaultdict(int)
    for source, params in _row_chunks(types, rows):
        with prepared_cursor() as cursor:
            cursor.execute(sql(source), params)
            for sha, fresh in cursor.fetchall():
                new[sha] += bool(fresh)
    return new


def _upsert_hosts(tallies: dict[tuple[str, int], _Tally]) -> dict[str, int]:
    """Upsert (binary, host) rows; return, per binary, how many hosts ran it the first time."""
    table = BinaryHost._meta.db_table
    rows = []
    for sha, host_id in sorted(tallies):
        t = tallies[(sha, host_id)]
        rows.append(
            [
                sha,
                host_id,
                t.executions,
                t.blocked,
                t.first,
                t.last,
                t.last_user,
                t.last_decision,
                True,
            ]
        )
    types = (
        "text",
        "bigint",
        "bigint",
        "bigint",
        "timestamptz",
        "timestamptz",
        "text",
        "text",
        "boolean",
    )
    return _fresh_per_binary(
        types,
        rows,
        lambda source: (
            f"INSERT INTO {table} (binary_id, host_id, executions, blocked, first_at, "
            f"last_at, last_user, last_decision, fresh) {source} "
            f"ON CONFLICT (binary_id, host_id) DO UPDATE SET "
            f"executions = {table}.executions + excluded.executions, "
            f"blocked = {table}.blocked + excluded.blocked, "
            f"first_at = {_earlier('first_at', table)}, "
            f"last_user = CASE WHEN excluded.last_at >= {table}.last_at "
            f"THEN excluded.last_user ELSE {table}.last_user END, "
            f"last_decision = CASE WHEN excluded.last_at >= {table}.last_at "
            f"THEN excluded.last_decision ELSE {table}.last_decision END, "
            f"last_at = {_later('last_at', table)}, "
            f"fresh = false RETURNING binary_id, fresh"
        ),
    )


def _upsert_users(tallies: dict[tuple[str, str], list]) -> dict[str, int]:
    """Upsert (binary, user) rows; return, per binary, how many users are new."""
    table = BinaryUser._meta.db_table
    rows = []
    for sha, user in sorted(tallies):
        count, first, last = tallies[(sha, user)]
        rows.append([sha, user, count, first, last, True])
    user_column = connection.ops.quote_name("user")
    return _fresh_per_binary(
        ("text", "text", "bigint", "timestamptz", "timestamptz", "boolean"),
        rows,
        lambda source: (
            f"INSERT INTO {table} (binary_id, {user_column}, executions, "
            f"first_at, last_at, fresh) {source} "
            f"ON CONFLICT (binary_id, {user_column}) DO UPDATE SET "
            f"executions = {table}.executions + excluded.executions, "
            f"first_at = {_earlier('first_at', table)}, "
            f"last_at = {_later('last_at', table)}, "
            f"fresh = false RETURNING binary_id, fresh"
        ),
    )


def _add_days(days: dict[tuple[datetime.date, str], int]) -> None:
    table = EventDay._meta.db_table
    rows, params = [], []
    for (day, outcome), count in sorted(days.items()):
        rows.append("(%s, %s, %s)")
        params += [connection.ops.adapt_datefield_value(day), outcome, count]
    sql = (
        f"INSERT INTO {table} (day, outcome, count) VALUES {', '.join(rows)} "  # noqa: S608
        f"ON CONFLICT (day, outcome) DO UPDATE SET count = {table}.count + excluded.count"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# The catalogue columns of a binary (what its latest event said about it), then its counts.
BINARY_FACTS = (
    "sha256",
    "file_name",
    "file_path",
    "team_id",
    "signing_id",
    "cdhash",
    "signing_status",
    "leaf_certificate_id",
    "signing_chain",
    "entitlements",
    "file_bundle_id",
    "file_bundle_name",
    "file_bundle_version_string",
    "first_seen_at",
    "last_seen_at",
)
_BINARY_COUNTS = (
    "executions",
    "blocked",
    "would_block",
    "host_count",
    "user_count",
    "first_executed_at",
    "last_executed_at",
    "last_decision",
)


def _binary_sql(table: str, source: str) -> str:
    def earlier(column: str) -> str:
        return (
            f"CASE WHEN {table}.{column} IS NULL OR excluded.{column} < {table}.{column} "
            f"THEN excluded.{column} ELSE {table}.{column} END"
        )

    later_run = (
        f"excluded.last_executed_at IS NOT NULL AND ({table}.last_executed_at IS NULL "
        f"OR {table}.last_executed_at <= excluded.last_executed_at)"
    )
    facts = [
        f"{column} = excluded.{column}" for column in BINARY_FACTS[1:] if column != "first_seen_at"
    ]
    counts = [f"{column} = {table}.{column} + excluded.{column}" for column in _BINARY_COUNTS[:5]]
    return (
        f"INSERT INTO {table} ({', '.join(BINARY_FACTS + _BINARY_COUNTS)}) {source} "
        f"ON CONFLICT (sha256) DO UPDATE SET {', '.join(facts + counts)}, "
        f"first_executed_at = {earlier('first_executed_at')}, "
        f"last_decision = CASE WHEN {later_run} THEN excluded.last_decision "
        f"ELSE {table}.last_decision END, "
        f"last_executed_at = CASE WHEN {later_run} THEN excluded.last_executed_at "
        f"ELSE {table}.last_executed_at END"
    )


def _upsert_binaries(
    catalogue: list[Binary], binaries: dict[str, _Tally], new_hosts: dict, new_users: dict
) -> None:
    """Each binary's catalogue row and its new counts in one upsert: one new row version per
    binary and batch, not two (an upsert of the facts, then an update of the counts). The rows
    go in the order given (sha256), so concurrent drains lock them in the same order."""
    if not catalogue:
        return
    table = Binary._meta.db_table
    fields = [Binary._meta.get_field(column) for column in BINARY_FACTS + _BINARY_COUNTS]
    json_columns = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    postgres = connection.vendor == "postgresql"
    rows = []
    for binary in catalogue:
        row = [getattr(binary, column) for column in BINARY_FACTS]
        if not postgres:  # json_rows sends lists as JSON itself
            row = [
                orjson.dumps(value).decode() if column in json_columns else value
                for column, value in zip(BINARY_FACTS, row, strict=True)
            ]
        t = binaries.get(binary.sha256)
        if t is None:  # only replays, or bundle scans: no new execution
            row += [0, 0, 0, 0, 0, None, None, ""]
        else:
            row += [
                t.executions,
                t.blocked,
                t.would_block,
                new_hosts.get(binary.sha256, 0),
                new_users.get(binary.sha256, 0),
                t.first,
                t.last,
                t.last_decision,
            ]
        rows.append(row)
    types = tuple(json_rows_type(f) for f in fields)
    for source, params in _row_chunks(types, rows):
        with prepared_cursor() as cursor:
            cursor.execute(_binary_sql(table, source), params)


@dataclass
class Counts:
    """What a batch's new execution events add to the statistics (stats_count)."""

    binaries: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    per_host: dict[tuple[str, int], _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    users: dict[tuple[str, str], list] = field(default_factory=dict)
    days: dict[tuple[datetime.date, str], int] = field(default_factory=lambda: defaultdict(int))
    new_hosts: dict[str, int] = field(default_factory=dict)  # per binary, by stats_record_pairs
    new_users: dict[str, int] = field(default_factory=dict)


def stats_count(events: Iterable[dict]) -> Counts:
    """Tally new execution events (of any hosts; their columns as attnames), in memory."""
    counts = Counts()
    for event in events:
        outcome = outcome_of(event["decision"])
        if outcome is None:
            continue
        when = event["execution_time"] or event["received_at"]
        binary = event["binary_id"]
        counts.binaries[binary].add(event, when, outcome)
        counts.per_host[(binary, event["host_id"])].add(event, when, outcome)
        counts.days[(when.astimezone(datetime.UTC).date(), outcome)] += 1
        user = event["executing_user"][:MAX_USER]
        if user:
            entry = counts.users.setdefault((binary, user), [0, when, when])
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], when), max(entry[2], when)
    return counts


def stats_record_pairs(counts: Counts) -> None:
    """Write the per (binary, host) and (binary, user) counts, noting per binary how many
    hosts and users ran it for the first time. Inside the ingesting transaction."""
    if counts.per_host:
        counts.new_hosts = _upsert_hosts(counts.per_host)
    if counts.users:
        counts.new_users = _upsert_users(counts.users)


def stats_record_binaries(counts: Counts, catalogue: list[Binary]) -> None:
    """Write the batch's binaries (`catalogue`: rows sorted by sha256, every binary of the
    counted events among them) with their facts and counts, then the daily counts; after
    stats_record_pairs, in the same transaction. These rows are shared with every other
    batch: they stay locked until the transaction commits, so they come last."""
    _upsert_binaries(catalogue, counts.binaries, counts.new_hosts, counts.new_users)
    if counts.days:
        _add_days(counts.days)
