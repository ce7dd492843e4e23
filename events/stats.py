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

from django.db import connection

from santaadmin.db import json_rows, prepared_cursor

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


def _rows(types: tuple[str, ...], rows: list[list]) -> tuple[str, list]:
    """A row source for `rows` (each one value per column of the given PostgreSQL types):
    on PostgreSQL one JSON parameter (santaadmin.db.json_rows), a statement of fixed text
    whatever the number of rows (a VALUES list of 10,000 rows cost more to build and parse
    than to run), elsewhere a VALUES list."""
    if connection.vendor == "postgresql":
        return json_rows(types, rows)
    adapt = connection.ops.adapt_datetimefield_value
    one = "(" + ", ".join(["%s"] * len(types)) + ")"
    params = [
        adapt(value) if isinstance(value, datetime.datetime) else value
        for row in rows
        for value in row
    ]
    return "VALUES " + ", ".join([one] * len(rows)), params


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
    source, params = _rows(
        (
            "text",
            "bigint",
            "bigint",
            "bigint",
            "timestamptz",
            "timestamptz",
            "text",
            "text",
            "boolean",
        ),
        rows,
    )
    sql = (
        f"INSERT INTO {table} (binary_id, host_id, executions, blocked, first_at, last_at, "
        f"last_user, last_decision, fresh) {source} "
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
    )
    new: dict[str, int] = defaultdict(int)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        for sha, fresh in cursor.fetchall():
            new[sha] += bool(fresh)
    return new


def _upsert_users(tallies: dict[tuple[str, str], list]) -> dict[str, int]:
    """Upsert (binary, user) rows; return, per binary, how many users are new."""
    table = BinaryUser._meta.db_table
    rows = []
    for sha, user in sorted(tallies):
        count, first, last = tallies[(sha, user)]
        rows.append([sha, user, count, first, last, True])
    source, params = _rows(
        ("text", "text", "bigint", "timestamptz", "timestamptz", "boolean"), rows
    )
    user_column = connection.ops.quote_name("user")
    sql = (
        f"INSERT INTO {table} (binary_id, {user_column}, executions, "
        f"first_at, last_at, fresh) {source} "
        f"ON CONFLICT (binary_id, {user_column}) DO UPDATE SET "
        f"executions = {table}.executions + excluded.executions, "
        f"first_at = {_earlier('first_at', table)}, "
        f"last_at = {_later('last_at', table)}, "
        f"fresh = false RETURNING binary_id, fresh"
    )
    new: dict[str, int] = defaultdict(int)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        for sha, fresh in cursor.fetchall():
            new[sha] += bool(fresh)
    return new


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


def _update_binaries(binaries: dict[str, _Tally], new_hosts: dict, new_users: dict) -> None:
    """One UPDATE for every binary of the batch (their rows are already locked, in sorted
    order, by the catalogue upsert of the same transaction)."""
    table = Binary._meta.db_table
    rows = []
    for sha in sorted(binaries):
        t = binaries[sha]
        rows.append(
            [
                sha,
                t.executions,
                t.blocked,
                t.would_block,
                new_hosts.get(sha, 0),
                new_users.get(sha, 0),
                t.first,
                t.last,
                t.last_decision,
            ]
        )
    source, params = _rows(
        (
            "text",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "timestamptz",
            "timestamptz",
            "text",
        ),
        rows,
    )
    sql = (
        f"WITH v(sha, n, blocked, would_block, hosts, users, first_at, last_at, decision) "  # noqa: S608
        f"AS ({source}) "
        f"UPDATE {table} SET executions = {table}.executions + v.n, "
        f"blocked = {table}.blocked + v.blocked, "
        f"would_block = {table}.would_block + v.would_block, "
        f"host_count = {table}.host_count + v.hosts, "
        f"user_count = {table}.user_count + v.users, "
        f"first_executed_at = CASE WHEN {table}.first_executed_at IS NULL "
        f"OR {table}.first_executed_at > v.first_at THEN v.first_at "
        f"ELSE {table}.first_executed_at END, "
        f"last_decision = CASE WHEN {table}.last_executed_at IS NULL "
        f"OR {table}.last_executed_at <= v.last_at THEN v.decision "
        f"ELSE {table}.last_decision END, "
        f"last_executed_at = CASE WHEN {table}.last_executed_at IS NULL "
        f"OR {table}.last_executed_at < v.last_at THEN v.last_at "
        f"ELSE {table}.last_executed_at END "
        f"FROM v WHERE {table}.sha256 = v.sha"
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)


def stats_record(*, events: Iterable[dict]) -> None:
    """Count new execution events (of any hosts; their columns as attnames). Call inside the
    ingesting transaction."""
    binaries: dict[str, _Tally] = defaultdict(_Tally)
    per_host: dict[tuple[str, int], _Tally] = defaultdict(_Tally)
    users: dict[tuple[str, str], list] = {}
    days: dict[tuple[datetime.date, str], int] = defaultdict(int)
    for event in events:
        outcome = outcome_of(event["decision"])
        if outcome is None:
            continue
        when = event["execution_time"] or event["received_at"]
        binary = event["binary_id"]
        binaries[binary].add(event, when, outcome)
        per_host[(binary, event["host_id"])].add(event, when, outcome)
        days[(when.astimezone(datetime.UTC).date(), outcome)] += 1
        user = event["executing_user"][:MAX_USER]
        if user:
            entry = users.setdefault((binary, user), [0, when, when])
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], when), max(entry[2], when)
    if not binaries:
        return
    new_hosts = _upsert_hosts(per_host)
    new_users = _upsert_users(users) if users else {}
    _update_binaries(binaries, new_hosts, new_users)
    _add_days(days)
