"""Analyst console pages on large data, on PostgreSQL.

Loads a fleet the size the console is promised to stay fast at (100,000 hosts in 20 tags,
1,000,000 execution events over 90 days from 20,000 binaries of Zipf-like popularity, 5,000
rules, 100,000 audit entries, approval requests) into a dedicated database with set-based SQL
(INSERT ... SELECT over generate_series, the statistics tables aggregated from the events), then
renders every console page signed in as an analyst and reports the median and p95 render time
and the SQL statements per render:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/santaadmin_console_bench SECRET_KEY=x \\
    ALLOWED_HOSTS=127.0.0.1 CELERY_TASK_ALWAYS_EAGER=1 \\
    .venv/bin/python benchmarks/console.py [--write] [--drop] [--reuse] [--explain PATH]

The variables above are the defaults when unset (tasks run in-process: loading the rules runs
their fan-out jobs; rendering a page sends none). The database must be named `*_bench`; it is
not the one benchmarks/fanout.py uses, so the two never empty each other's data. It is created
when missing and its `public` schema is emptied before loading (`--drop` drops the whole
database at the end). Nothing else in the cluster is touched.

`--scale 0.01` loads a hundredth of the data into `santaadmin_console_trial_bench` (a trial
run in seconds). `--reuse` keeps a database this script loaded completely before (only
`migrate` runs, for migrations added since): a second run measures without loading again.
`--write` replaces the section between `<!-- console:start -->` and `<!-- console:end -->` in
docs/benchmarks.md. `--explain PATH` writes `EXPLAIN (ANALYZE, BUFFERS)` of the slowest
statements of every page to PATH; `--profile` prints a cProfile of one render of each page
(`--only TEXT` keeps the pages whose label contains TEXT). Pages that answer 404 (not built
yet) are reported as such, not measured.
"""

# The loader writes its SQL from constants of this file (no outside input): S608 is noise here.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import fanout  # noqa: E402 (needs ROOT on the path)
from benchmarks.docs import write_section  # noqa: E402

DEFAULT_ENV = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/santaadmin_console_bench",
    "SECRET_KEY": "x",
    "ALLOWED_HOSTS": "127.0.0.1",
    # No broker: loading runs the rules' fan-out jobs in-process; page renders send no task.
    "CELERY_BROKER_URL": "",
    "CELERY_TASK_ALWAYS_EAGER": "1",
}
START, END = "<!-- console:start -->", "<!-- console:end -->"
GOAL_MS = 300.0
DOMINANT = 5  # the slowest pages explained under the table
META_TABLE = "bench_console_meta"

HOSTS = 100_000
EVENTS = 1_000_000
BINARIES = 20_000
USERS = 5_000
TEAMS = 500
CERTIFICATES = 2_000  # 4 per team, plus one intermediate and one root
RULES = 5_000
AUDIT = 100_000
DAYS = 90
STALE_SHARE = 0.03
ANALYSTS = 10
TAGS = (
    "eng",
    "sales",
    "finance",
    "design",
    "support",
    "marketing",
    "it",
    "security",
    "data",
    "ops",
    "legal",
    "hr",
    "research",
    "qa",
    "mobile",
    "web",
    "exec",
    "contractors",
    "interns",
    "canary",
)
WORDS = [
    "chrome",
    "zoom",
    "slack",
    "docker",
    "python3",
    "node",
    "terraform",
    "kubectl",
    "code",
    "firefox",
    "spotify",
    "teams",
    "outlook",
    "excel",
    "word",
    "powerpoint",
    "onedrive",
    "dropbox",
    "onepassword",
    "notion",
    "figma",
    "iterm2",
    "postman",
    "tableplus",
    "cursor",
    "obsidian",
    "discord",
    "whatsapp",
    "telegram",
    "signal",
    "vlc",
    "handbrake",
    "transmission",
    "utorrent",
    "anydesk",
    "teamviewer",
    "ngrok",
    "nmap",
    "wireshark",
    "burp",
    "steam",
    "minecraft",
    "xcode",
    "git",
    "go",
    "rustc",
    "java",
    "ollama",
    "chatgpt",
    "claude",
]
SEARCH = "zoom"  # ?q= on the binaries page: one product name of the 50 (2% of binaries)


def setup_django(trial: bool = False) -> None:
    for name, value in DEFAULT_ENV.items():
        if trial and name == "DATABASE_URL":  # a scaled-down trial keeps the full database
            value = value.replace("_console_bench", "_console_trial_bench")
        os.environ.setdefault(name, value)
    fanout.setup_django()


# --- set-based loading --------------------------------------------------------------------------


def uniform(md5_expr: str, k: int = 0) -> str:
    """SQL for a uniform number in [0, 1) from 32 bits (chunk k of 0..3) of an md5 hex digest:
    reproducible whatever the plan, unlike random()."""
    return f"(('x' || substr({md5_expr}, {1 + 8 * k}, 8))::bit(32)::bigint / 4294967296.0)"


def zipf(md5_expr: str, n: int, k: int = 0) -> str:
    """SQL for a rank in 1..n drawn with P(rank) ~ 1/rank (log-uniform, Zipf s=1)."""
    return f"least({n}, floor(power({n + 1}, {uniform(md5_expr, k)})))::int"


def team_id(t: str) -> str:
    return f"upper(substr(md5('team' || {t}), 1, 10))"


def certificate_sha(c: str) -> str:
    return f"encode(sha256(('cert' || {c})::bytea), 'hex')"


def machine_id(g: str) -> str:
    m = f"md5('host' || {g})"
    return (
        f"upper(substr({m}, 1, 8) || '-' || substr({m}, 9, 4) || '-' || substr({m}, 13, 4) "
        f"|| '-' || substr({m}, 17, 4) || '-' || substr({m}, 21, 12))"
    )


def user_name(g: str) -> str:
    return f"'user' || lpad((({g}) * 7 % {USERS})::text, 4, '0')"


def insert_select(model, values: dict[str, str], source: str, params=()) -> int:
    """INSERT INTO model's table SELECT one SQL expression per column FROM source; columns not
    in `values` get the model's default as the ORM would write it (auto_now: now()). Returns
    the row count."""
    from django.db import connection, models

    columns, select, defaults = [], [], []
    for f in model._meta.concrete_fields:
        if f.attname in values:
            expression = values[f.attname]
        elif isinstance(f, models.AutoField):
            continue
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            expression = "now()"
        else:
            default = f.get_default()
            if default is None and not f.null:
                raise ValueError(f"{model.__name__}.{f.attname} needs a value")
            expression = "%s"
            defaults.append(f.get_db_prep_save(default, connection))
        columns.append(connection.ops.quote_name(f.column))
        select.append(expression if expression == "%s" else expression.replace("%", "%%"))
    unknown = set(values) - {f.attname for f in model._meta.concrete_fields}
    if unknown:
        raise ValueError(f"{model.__name__} has no {', '.join(sorted(unknown))}")
    sql = "INSERT INTO {} ({}) SELECT {} FROM {}".format(
        connection.ops.quote_name(model._meta.db_table),
        ", ".join(columns),
        ", ".join(select),
        source.replace("%", "%%"),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*defaults, *params])
        return cursor.rowcount


def execute(sql: str, params=None) -> int:
    """Run SQL; with params, a literal % is written %%."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def reset_sequence(model) -> None:
    table = model._meta.db_table
    execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
    )


@contextmanager
def indexes_dropped(*models) -> Iterator[None]:
    """Drop the plain indexes (not the primary keys and unique constraints) of these tables
    and build them again afterwards: faster than maintaining them row by row."""
    from django.db import connection

    saved = []
    with connection.cursor() as cursor:
        for model in models:
            table = model._meta.db_table
            cursor.execute(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
                "AND i.tablename = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conname = i.indexname AND c.conrelid = %s::regclass)",
                [table, table],
            )
            saved += cursor.fetchall()
        for name, _ in saved:
            cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for _, definition in saved:
                cursor.execute(definition)


@contextmanager
def step(load: dict, key: str, label: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"loading: {label} ...", file=sys.stderr, flush=True)
    yield
    load[key] = time.perf_counter() - start
    print(f"loading: {label}: {load[key]:.1f} s", file=sys.stderr, flush=True)


def load_all(seed: int) -> dict[str, float]:
    """Every table, consistent with each other; seconds per step."""
    from django.db import connection

    load: dict[str, float] = {}
    with connection.cursor() as cursor:
        # Load in one backend, without parallel workers (the machine is shared) and without
        # waiting for WAL flushes; indexes are built with enough memory to sort in one go.
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.execute("SET max_parallel_maintenance_workers = 0")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        cursor.execute("SET work_mem = '64MB'")
        # Foreign keys hold by construction; skipping their triggers saves a check per row.
        cursor.execute("SET session_replication_role = replica")
    try:
        with step(load, "people", "analysts, enrollment, tags"):
            people = load_people()
        with step(load, "hosts", f"{HOSTS:,} hosts and their tags"):
            load_hosts(people)
        with step(load, "catalogue", f"{CERTIFICATES:,} certificates, {BINARIES:,} binaries"):
            load_catalogue()
        with step(load, "events", f"{EVENTS:,} events"):
            load_events()
        with step(load, "stats", "execution statistics from the events"):
            load_stats()
        with step(load, "audit", f"{AUDIT:,} audit entries"):
            load_audit(people)
        with step(load, "requests", "approval requests"):
            load_requests(people)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("RESET max_parallel_workers_per_gather")
    with step(load, "rules", f"{RULES:,} rules (rules_bulk_create)"):
        load_rules(people, seed)
    with step(load, "synced", "hosts synced, rules' delivery summaries"):
        mark_synced(people)
    with step(load, "vacuum", "VACUUM (FULL) of the updated tables, VACUUM (ANALYZE)"):
        compact()
    return load


def compact() -> None:
    """The loader updates every row of these tables once or twice after inserting them;
    rewrite them so that the figures are those of a well-vacuumed database, not of the
    loader's dead rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("hosts_host", "events_binary", "rules_rule"):
            cursor.execute(f"VACUUM (FULL) {table}")
    fanout.vacuum_analyze()


@dataclass
class People:
    analysts: list  # User objects, analyst01 first (the one the pages are rendered for)
    enrollment_id: int = 0
    tag_ids: list[int] = field(default_factory=list)
    revision_before_rules: int = 0


def load_people() -> People:
    from django.contrib.auth.models import Group, User

    from hosts.services import enrollment_create, tags_get_or_create
    from santaadmin.roles import ANALYST

    group = Group.objects.get(name=ANALYST)
    analysts = []
    for n in range(1, ANALYSTS + 1):
        user = User(username=f"analyst{n:02d}", email=f"analyst{n:02d}@example.com")
        user.set_unusable_password()
        analysts.append(user)
    User.objects.bulk_create(analysts)
    analysts = list(User.objects.filter(username__startswith="analyst").order_by("username"))
    group.user_set.add(*analysts)
    enrollment, _ = enrollment_create(name="fleet")
    by_name = {tag.name: tag.id for tag in tags_get_or_create(TAGS)}
    return People(analysts, enrollment.id, [by_name[name] for name in TAGS])


def load_hosts(people: People) -> None:
    from hosts.models import Host, HostTag
    from hosts.selectors import revision_current

    stale = f"{uniform('m', 0)} < {STALE_SHARE}"
    source = (
        f"(SELECT g, m, {stale} AS stale, CASE WHEN {stale} "
        f"THEN now() - interval '3 days' - {uniform('m', 1)} * interval '60 days' "
        f"ELSE now() - {uniform('m', 1)} * interval '15 minutes' END AS seen "
        f"FROM (SELECT g, md5('host' || g) AS m FROM generate_series(1, {HOSTS}) g) x) s"
    )
    drift = f"{uniform('m', 2)} < 0.01"
    insert_select(
        Host,
        {
            "id": "g",
            "machine_id": machine_id("g"),
            "enrollment_id": str(int(people.enrollment_id)),
            "serial_number": "'C02' || lpad(g::text, 9, '0')",
            "hostname": "'mac-' || lpad(g::text, 6, '0') || '.corp.example.com'",
            "os_version": "(ARRAY['14.7.1', '15.1', '15.2', '15.3'])[1 + g % 4]",
            "os_build": "(ARRAY['23H222', '24B83', '24C101', '24D60'])[1 + g % 4]",
            "model_identifier": (
                "(ARRAY['MacBookPro18,3', 'Mac14,2', 'Mac15,3', 'MacBookAir10,1'])[1 + g % 4]"
            ),
            "santa_version": "(ARRAY['2025.11', '2026.1', '2026.8.1'])[1 + g % 3]",
            "primary_user": user_name("g"),
            "primary_user_groups": "'[\"staff\"]'::jsonb",
            # One host in five in lockdown: they block unknown binaries, the others would.
            "reported_client_mode": "CASE WHEN g % 5 = 0 THEN 'LOCKDOWN' ELSE 'MONITOR' END",
            "sip_status": "111",
            "first_seen_at": "now() - interval '180 days' + g * interval '1 minute'",
            "last_preflight_at": "seen",
            "last_eventupload_at": "seen + interval '1 second'",
            "last_ruledownload_at": "seen + interval '2 seconds'",
            "last_postflight_at": "seen + interval '3 seconds'",
            "last_sync_type": "'NORMAL'",
            "stale_after": "seen + interval '1 day'",
            "stale_since": "CASE WHEN stale THEN seen + interval '1 day' END",
            "drift_reasons": (
                f"CASE WHEN {drift} THEN '[\"binary: 12 reported, 13 expected\"]'::jsonb "
                "ELSE '[]'::jsonb END"
            ),
            "drift_detected_at": f"CASE WHEN {drift} THEN seen END",
        },
        source,
    )
    reset_sequence(Host)
    # Each host in 1 to 3 tags drawn with Zipf-like sizes (the first tag holds about a third
    # of the fleet, the last about 1%).
    tags = "ARRAY[{}]".format(", ".join(str(int(t)) for t in people.tag_ids))
    pick = zipf("md5('hosttag' || h || '-' || k)", len(people.tag_ids))
    insert_select(
        HostTag,
        {
            "host_id": "h",
            "tag_id": "tag_id",
            "source": "'manual'",
            "rev_from": str(int(revision_current())),
        },
        f"(SELECT DISTINCT h, ({tags})[{pick}] AS tag_id "
        f"FROM generate_series(1, {HOSTS}) h, generate_series(1, 3) k "
        f"WHERE k <= 1 + h % 3) s",
    )


def load_catalogue() -> None:
    """Certificates (4 per team), then binaries: 4 versions per app, 80% of apps signed by a
    team of Zipf-like size; each binary has a verdict class deciding its events' decisions."""
    from events.models import Binary, Certificate

    vendor_cn = "'Developer ID Application: Vendor ' || t || ' (' || {} || ')'".format(team_id("t"))
    insert_select(
        Certificate,
        {
            "sha256": certificate_sha("c"),
            "cn": (
                f"CASE c % 4 WHEN 0 THEN {vendor_cn} WHEN 1 THEN 'Apple Development: Vendor ' "
                f"|| t WHEN 2 THEN 'Apple Distribution: Vendor ' || t "
                f"ELSE '3rd Party Mac Developer Application: Vendor ' || t END"
            ),
            "org": "'Vendor ' || t",
            "ou": team_id("t"),
            "valid_from": "now() - interval '2 years' + (c % 300) * interval '1 day'",
            "valid_until": "now() + interval '3 years' - (c % 300) * interval '1 day'",
            "first_seen_at": "now() - interval '90 days'",
            "last_seen_at": "now()",
        },
        f"(SELECT c, c / 4 + 1 AS t FROM generate_series(0, {CERTIFICATES - 1}) c) s",
    )
    for name, cn in (("intermediate", "Developer ID Certification Authority"), ("root", "Apple")):
        insert_select(
            Certificate,
            {
                "sha256": f"encode(sha256('{name}'::bytea), 'hex')",
                "cn": f"'{cn}'",
                "org": "'Apple Inc.'",
                "ou": "'Apple Certification Authority'",
                "first_seen_at": "now() - interval '90 days'",
                "last_seen_at": "now()",
            },
            "(SELECT 1) s",
        )
    words = "ARRAY[{}]".format(", ".join(f"'{w}'" for w in WORDS))
    klass = uniform("md5('class' || n)")
    how = uniform("md5('how' || a)")
    execute(
        f"""
        CREATE TEMPORARY TABLE bench_binaries AS
        SELECT n, a, encode(sha256(('binary' || n)::bytea), 'hex') AS sha,
               a % 5 <> 0 AS signed, {zipf("md5('team' || a)", TEAMS)} AS t,
               ({words})[1 + a % {len(WORDS)}] AS word,
               CASE WHEN {klass} < 0.08 THEN 'blocked'
                    WHEN {klass} < 0.55 THEN 'unknown' ELSE 'allowed' END AS class,
               {how} AS how
        FROM (SELECT n, (n + 3) / 4 AS a FROM generate_series(1, {BINARIES}) n) s
        """
    )
    # The decision of the binary's events; NULL: decided by the host's mode (unknown binary).
    execute(
        """
        ALTER TABLE bench_binaries ADD COLUMN decision text;
        UPDATE bench_binaries SET decision = CASE
            WHEN class = 'blocked' AND signed AND how < 0.2 THEN 'BLOCK_TEAMID'
            WHEN class = 'blocked' THEN 'BLOCK_BINARY'
            WHEN class = 'allowed' AND signed AND how < 0.4 THEN 'ALLOW_TEAMID'
            WHEN class = 'allowed' AND signed AND how < 0.7 THEN 'ALLOW_SIGNINGID'
            WHEN class = 'allowed' AND signed AND how < 0.85 THEN 'ALLOW_CERTIFICATE'
            WHEN class = 'allowed' THEN 'ALLOW_BINARY' END;
        CREATE UNIQUE INDEX ON bench_binaries (n);
        ANALYZE bench_binaries
        """
    )
    leaf = certificate_sha("(t - 1) * 4 + a % 4")
    # What an event of the binary carries: the whole chain, one object per certificate.
    entry = (
        "jsonb_build_object('sha256', {sha}, 'cn', {cn}, 'org', {org}, "
        "'valid_from', 1700000000, 'valid_until', 1900000000)"
    )
    event_chain = ", ".join(
        (
            entry.format(
                sha=leaf,
                cn=f"'Developer ID Application: Vendor ' || t || ' (' || {team_id('t')} || ')'",
                org="'Vendor ' || t",
            ),
            entry.format(
                sha="encode(sha256('intermediate'::bytea), 'hex')",
                cn="'Developer ID Certification Authority'",
                org="'Apple Inc.'",
            ),
            entry.format(
                sha="encode(sha256('root'::bytea), 'hex')", cn="'Apple'", org="'Apple Inc.'"
            ),
        )
    )
    execute(
        "ALTER TABLE bench_binaries ADD COLUMN event_chain jsonb; "
        f"UPDATE bench_binaries SET event_chain = CASE WHEN signed "
        f"THEN jsonb_build_array({event_chain}) ELSE '[]'::jsonb END"
    )
    chain = (
        f"jsonb_build_array({leaf}, encode(sha256('intermediate'::bytea), 'hex'), "
        "encode(sha256('root'::bytea), 'hex'))"
    )
    app = "word || (a / 50)"
    bundled = "a % 3 <> 0"
    insert_select(
        Binary,
        {
            "sha256": "sha",
            "file_name": app,
            "file_path": (
                f"CASE WHEN {bundled} THEN '/Applications/' || initcap(word) "
                "|| '.app/Contents/MacOS' ELSE '/usr/local/bin' END"
            ),
            "team_id": f"CASE WHEN signed THEN {team_id('t')} ELSE '' END",
            "signing_id": (
                f"CASE WHEN signed THEN {team_id('t')} || ':com.vendor' || t || '.' || {app} "
                "ELSE '' END"
            ),
            "cdhash": (
                "CASE WHEN signed THEN substr(encode(sha256(('cd' || n)::bytea), 'hex'), 1, 40) "
                "ELSE '' END"
            ),
            "signing_status": (
                "CASE WHEN signed THEN 'SIGNING_STATUS_PRODUCTION' "
                "ELSE 'SIGNING_STATUS_UNSIGNED' END"
            ),
            "leaf_certificate_id": f"CASE WHEN signed THEN {leaf} END",
            "signing_chain": f"CASE WHEN signed THEN {chain} ELSE '[]'::jsonb END",
            "entitlements": (
                "CASE WHEN signed AND a % 7 = 0 THEN "
                '\'[{"key": "com.apple.security.cs.allow-jit", "value": true}]\'::jsonb '
                "ELSE '[]'::jsonb END"
            ),
            "file_bundle_id": (
                f"CASE WHEN {bundled} THEN 'com.vendor' || t || '.' || {app} ELSE '' END"
            ),
            "file_bundle_name": f"CASE WHEN {bundled} THEN initcap(word) ELSE '' END",
            "file_bundle_version_string": f"CASE WHEN {bundled} THEN '1.' || (n % 4) ELSE '' END",
            "first_seen_at": "now()",
            "last_seen_at": "now()",
        },
        "bench_binaries",
    )


def load_events() -> None:
    """Execution events in chunks: binary by Zipf rank (rank r is binary r*7919 mod 20,000,
    so popularity and verdict class are independent), host uniform, time uniform over the
    last 90 days."""
    from events.models import Event

    chunk = 250_000
    m = "m"
    with indexes_dropped(Event):
        for low in range(1, EVENTS + 1, chunk):
            high = min(low + chunk - 1, EVENTS)
            source = (
                "(SELECT g, m, "
                f"{zipf(m, BINARIES, 0)} AS rank, 1 + floor({uniform(m, 1)} * {HOSTS})::int AS h, "
                f"now() - {uniform(m, 2)} * interval '{DAYS} days' AS ts, {uniform(m, 3)} AS r "
                f"FROM (SELECT g, md5('event' || g) AS m FROM generate_series({low}, {high}) g) x"
                ") s "
                f"JOIN bench_binaries bb ON bb.n = s.rank::bigint * 7919 % {BINARIES} + 1 "
                "JOIN events_binary b ON b.sha256 = bb.sha"
            )
            user = user_name("h")
            insert_select(
                Event,
                {
                    "id": "g",
                    "host_id": "h",
                    "dedupe_key": "m",
                    "binary_id": "b.sha256",
                    "decision": (
                        "coalesce(bb.decision, CASE WHEN h % 5 = 0 THEN 'BLOCK_UNKNOWN' "
                        "ELSE 'ALLOW_UNKNOWN' END)"
                    ),
                    "execution_time": "ts",
                    "received_at": "least(now(), ts + r * interval '15 minutes')",
                    "file_path": "b.file_path",
                    "file_name": "b.file_name",
                    "executing_user": f"CASE WHEN r < 0.05 THEN 'root' ELSE {user} END",
                    "logged_in_users": f"jsonb_build_array({user})",
                    "current_sessions": f"jsonb_build_array({user} || '@console')",
                    "pid": "1000 + g % 60000",
                    "ppid": "CASE WHEN r < 0.5 THEN 1 ELSE 900 + g % 100 END",
                    "parent_name": "CASE WHEN r < 0.5 THEN 'launchd' ELSE 'zsh' END",
                    "team_id": "b.team_id",
                    "signing_id": "b.signing_id",
                    "cdhash": "b.cdhash",
                    "cs_flags": "CASE WHEN bb.signed THEN 570522385 END",
                    "signing_status": "b.signing_status",
                    "signing_chain": "bb.event_chain",
                    "entitlements": "b.entitlements",
                    "file_bundle_id": "b.file_bundle_id",
                    "file_bundle_path": (
                        "CASE WHEN b.file_bundle_id <> '' "
                        "THEN '/Applications/' || initcap(bb.word) || '.app' ELSE '' END"
                    ),
                    "file_bundle_name": "b.file_bundle_name",
                    "file_bundle_version_string": "b.file_bundle_version_string",
                    "quarantine_data_url": (
                        "CASE WHEN r < 0.1 THEN 'https://downloads.example.com/' "
                        "|| b.file_name || '.dmg' ELSE '' END"
                    ),
                },
                source,
            )
            print(f"loading: events {high:,}", file=sys.stderr, flush=True)
    reset_sequence(Event)


def load_stats() -> None:
    """What events.stats keeps at ingestion, aggregated from the events in one pass each."""
    from events.models import BinaryHost, BinaryUser, EventDay

    blocked = "left(decision, 6) = 'BLOCK_'"
    executions = "FROM events_event WHERE decision <> 'BUNDLE_BINARY'"
    with indexes_dropped(BinaryHost, BinaryUser):
        insert_select(
            BinaryHost,
            {
                "binary_id": "binary_id",
                "host_id": "host_id",
                "executions": "n",
                "blocked": "blocked",
                "first_at": "first_at",
                "last_at": "last_at",
                "last_user": "last_user",
                "last_decision": "last_decision",
                "fresh": "false",
            },
            "(SELECT binary_id, host_id, count(*) AS n, "
            f"count(*) FILTER (WHERE {blocked}) AS blocked, "
            "min(execution_time) AS first_at, max(execution_time) AS last_at, "
            "(array_agg(left(executing_user, 255) ORDER BY execution_time DESC, id DESC))[1] "
            "AS last_user, (array_agg(decision ORDER BY execution_time DESC, id DESC))[1] "
            f"AS last_decision {executions} GROUP BY binary_id, host_id) s",
        )
        insert_select(
            BinaryUser,
            {
                "binary_id": "binary_id",
                "user": "u",
                "executions": "n",
                "first_at": "first_at",
                "last_at": "last_at",
                "fresh": "false",
            },
            "(SELECT binary_id, left(executing_user, 255) AS u, count(*) AS n, "
            "min(execution_time) AS first_at, max(execution_time) AS last_at "
            f"{executions} AND executing_user <> '' GROUP BY 1, 2) s",
        )
    execute(
        f"""
        UPDATE events_binary b SET executions = s.n, blocked = s.blocked,
            would_block = s.would_block, first_executed_at = s.first_at,
            last_executed_at = s.last_at, last_decision = s.last_decision,
            first_seen_at = s.first_received, last_seen_at = s.last_received
        FROM (SELECT binary_id, count(*) AS n, count(*) FILTER (WHERE {blocked}) AS blocked,
                     count(*) FILTER (WHERE decision = 'ALLOW_UNKNOWN') AS would_block,
                     min(execution_time) AS first_at, max(execution_time) AS last_at,
                     (array_agg(decision ORDER BY execution_time DESC, id DESC))[1]
                         AS last_decision,
                     min(received_at) AS first_received, max(received_at) AS last_received
              {executions} GROUP BY binary_id) s
        WHERE b.sha256 = s.binary_id
        """
    )
    execute(
        """
        UPDATE events_binary b SET host_count = s.n
        FROM (SELECT binary_id, count(*) AS n FROM events_binaryhost GROUP BY binary_id) s
        WHERE b.sha256 = s.binary_id;
        UPDATE events_binary b SET user_count = s.n
        FROM (SELECT binary_id, count(*) AS n FROM events_binaryuser GROUP BY binary_id) s
        WHERE b.sha256 = s.binary_id
        """
    )
    insert_select(
        EventDay,
        {"day": "day", "outcome": "outcome", "count": "n"},
        "(SELECT (execution_time AT TIME ZONE 'UTC')::date AS day, "
        f"CASE WHEN {blocked} THEN 'blocked' WHEN decision = 'ALLOW_UNKNOWN' "
        "THEN 'would_block' ELSE 'allowed' END AS outcome, count(*) AS n "
        f"{executions} GROUP BY 1, 2) s",
    )


AUDIT_ACTIONS = (  # (share, action, object type)
    (0.30, "rule.create", "rule"),
    (0.15, "rule.update", "rule"),
    (0.08, "rule.delete", "rule"),
    (0.05, "rule.expire", "rule"),
    (0.20, "host.set_tags", "host"),
    (0.05, "host.set_mode", "host"),
    (0.03, "host.clean_sync", "host"),
    (0.06, "request.approve", "approvalrequest"),
    (0.03, "request.deny", "approvalrequest"),
    (0.03, "tag_rule.create", "tagrule"),
    (0.02, "tag_rule.delete", "tagrule"),
)


def load_audit(people: People) -> None:
    """Entries spread evenly over the last 90 days (so newest id = newest time), by ten
    analysts of Zipf-like activity; rule expiry is the system's."""
    from audit.models import AuditEntry

    action, kind, bound = ["CASE"], ["CASE"], 0.0
    u = uniform("m", 0)
    for share, name, object_type in AUDIT_ACTIONS:
        bound += share
        action.append(f"WHEN {u} < {bound:.4f} THEN '{name}'")
        kind.append(f"WHEN {u} < {bound:.4f} THEN '{object_type}'")
    action.append(f"ELSE '{AUDIT_ACTIONS[-1][1]}' END")
    kind.append(f"ELSE '{AUDIT_ACTIONS[-1][2]}' END")
    ids = "ARRAY[{}]".format(", ".join(str(int(user.pk)) for user in people.analysts))
    analyst = zipf("m", len(people.analysts), 1)
    host = f"(1 + floor({uniform('m', 2)} * {HOSTS})::int)"
    rule = f"(1 + floor({uniform('m', 2)} * {RULES})::int)"
    span = f"interval '{DAYS} days'"
    # The entries continue the hash chain's numbering after those written so far (the
    # enrollment's); their hashes are stand-ins, the pages never verify the chain.
    first = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    insert_select(
        AuditEntry,
        {
            "seq": f"{int(first)} + g",
            "hash": "encode(sha256(('audit' || g)::bytea), 'hex')",
            "at": f"now() - {span} + g * ({span} / {AUDIT}) - interval '1 hour'",
            "actor_id": f"CASE WHEN action <> 'rule.expire' THEN ({ids})[{analyst}] END",
            "actor_name": (
                f"CASE WHEN action = 'rule.expire' THEN 'system' "
                f"ELSE 'analyst' || lpad({analyst}::text, 2, '0') END"
            ),
            "action": "action",
            "object_type": "object_type",
            "object_id": f"(CASE WHEN object_type = 'host' THEN {host} ELSE {rule} END)::text",
            "object_repr": (
                f"CASE WHEN object_type = 'host' THEN {machine_id(host)} "
                "WHEN object_type = 'rule' THEN 'BINARY ' || substr(m, 1, 16) || ' BLOCKLIST' "
                "ELSE object_type || ' ' || substr(m, 1, 8) END"
            ),
            "before": (
                "CASE WHEN action IN ('rule.update', 'rule.delete', 'rule.expire') "
                "THEN jsonb_build_object('policy', 'ALLOWLIST', 'tags', jsonb_build_array()) "
                "WHEN action = 'host.set_tags' THEN jsonb_build_object('tags', "
                "jsonb_build_array('eng')) END"
            ),
            "after": (
                "CASE WHEN action IN ('rule.create', 'rule.update') "
                "THEN jsonb_build_object('policy', 'BLOCKLIST', 'tags', jsonb_build_array()) "
                "WHEN action = 'host.set_tags' THEN jsonb_build_object('tags', "
                "jsonb_build_array('eng', 'canary')) END"
            ),
            "justification": "'Ticket SEC-' || (1000 + g % 9000)",
            "source_ip": "('10.0.' || (g % 250) || '.' || (1 + g % 200))::inet",
        },
        f"(SELECT g, m, {' '.join(action)} AS action, {' '.join(kind)} AS object_type "
        f"FROM (SELECT g, md5('audit' || g) AS m FROM generate_series(1, {AUDIT}) g) x "
        "ORDER BY g) s",
    )
    # Later entries (the rules' creation) chain from the last one loaded.
    execute(
        "UPDATE audit_auditchain SET seq = e.seq, hash = e.hash FROM (SELECT seq, hash FROM "
        "audit_auditentry ORDER BY seq DESC LIMIT 1) e WHERE audit_auditchain.id = 1"
    )


def load_requests(people: People) -> None:
    """About 2,000 requests from blocked executions (one event in a hundred): a quarter still
    waiting, the rest approved or denied by an analyst."""
    from events.models import ApprovalRequest

    ids = "ARRAY[{}]".format(", ".join(str(int(user.pk)) for user in people.analysts))
    u = uniform("md5('request' || id)")
    insert_select(
        ApprovalRequest,
        {
            "binary_id": "binary_id",
            "host_id": "host_id",
            "requester": "executing_user",
            "reason": "'I need ' || file_name || ' for my work (ticket ' || id || ')'",
            "state": "state",
            "created_at": "execution_time + interval '2 minutes'",
            "updated_at": "execution_time + CASE WHEN state = 'pending' "
            "THEN interval '2 minutes' ELSE interval '3 hours' END",
            "decided_by_id": f"CASE WHEN state <> 'pending' THEN ({ids})[1 + id % {ANALYSTS}] END",
            "decided_at": "CASE WHEN state <> 'pending' THEN execution_time + interval '3 hours' "
            "END",
            "response": "CASE WHEN state = 'denied' THEN 'Use the approved alternative.' "
            "ELSE '' END",
        },
        "(SELECT DISTINCT ON (binary_id, host_id, executing_user) id, binary_id, host_id, "
        "executing_user, file_name, execution_time, "
        f"CASE WHEN {u} < 0.25 THEN 'pending' WHEN {u} < 0.75 THEN 'approved' "
        "ELSE 'denied' END AS state "
        "FROM events_event WHERE id % 100 = 0 AND left(decision, 6) = 'BLOCK_' "
        "ORDER BY binary_id, host_id, executing_user, id) s",
    )


def rule_candidates(rng: random.Random) -> list[tuple[str, str, str]]:
    """(rule type, identifier, policy) matching the catalogue's verdicts: block rules for the
    blocked binaries (by hash or Team ID), allow rules by the type their events name."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bb.decision, b.sha256, b.team_id, b.signing_id, b.cdhash, "
            "b.leaf_certificate_id FROM bench_binaries bb JOIN events_binary b "
            "ON b.sha256 = bb.sha WHERE b.executions > 0 ORDER BY bb.n"
        )
        rows = cursor.fetchall()
    blocks: dict[tuple[str, str], str] = {}
    allows: dict[tuple[str, str], str] = {}
    extra: dict[tuple[str, str], str] = {}
    for decision, sha, team, signing_id, cdhash, leaf in rows:
        if decision == "BLOCK_BINARY":
            blocks[("BINARY", sha)] = "BLOCKLIST"
        elif decision == "BLOCK_TEAMID":
            blocks[("TEAMID", team)] = "BLOCKLIST"
        elif decision == "ALLOW_TEAMID":
            allows[("TEAMID", team)] = "ALLOWLIST"
        elif decision == "ALLOW_SIGNINGID":
            allows[("SIGNINGID", signing_id)] = "ALLOWLIST"
        elif decision == "ALLOW_CERTIFICATE":
            allows[("CERTIFICATE", leaf)] = "ALLOWLIST"
        elif decision == "ALLOW_BINARY":
            allows[("BINARY", sha)] = "ALLOWLIST"
        if decision and decision.startswith("ALLOW_") and cdhash:
            extra[("CDHASH", cdhash)] = "ALLOWLIST"
    chosen = [(*key, policy) for key, policy in blocks.items()]
    rest = [(*k, p) for k, p in allows.items() if k not in blocks]
    rng.shuffle(rest)
    chosen += rest[: RULES - len(chosen)]
    if len(chosen) < RULES:
        more = sorted((*k, p) for k, p in extra.items())
        rng.shuffle(more)
        chosen += more[: RULES - len(chosen)]
    assert len(chosen) == RULES, len(chosen)
    return chosen


def load_rules(people: People, seed: int) -> None:
    """5,000 rules in ten imports of 500 by ten analysts: 80% for everyone (4% of them
    excluding a tag), 15% for one or two tags, 5% for one to three hosts; 3% expire."""
    import datetime

    from django.utils import timezone

    from hosts.selectors import revision_current
    from rules.services import RuleInput, rules_bulk_create

    rng = random.Random(seed)  # noqa: S311 (reproducible data, not secrets)
    people.revision_before_rules = revision_current()
    items = []
    for rule_type, identifier, policy in rule_candidates(rng):
        roll = rng.random()
        scope: dict = {}
        if roll < 0.05:
            hosts = rng.sample(range(1, HOSTS + 1), rng.randint(1, 3))
            scope["machine_ids"] = tuple(_machine_id(h) for h in hosts)
        elif roll < 0.20:
            scope["tags"] = tuple(rng.sample(TAGS, 2 if rng.random() < 0.3 else 1))
        elif rng.random() < 0.04:
            scope["excluded_tags"] = (rng.choice(TAGS),)
        if rng.random() < 0.03:
            scope["expires_at"] = timezone.now() + datetime.timedelta(days=rng.randint(1, 60))
        if policy == "BLOCKLIST" and rng.random() < 0.2:
            scope["custom_msg"] = "Blocked by Security: see https://it.example.com/blocked"
        items.append(
            RuleInput(
                rule_type,
                identifier,
                policy,
                comment=f"Ticket SEC-{rng.randint(1000, 9999)}",
                **scope,
            )
        )
    batch = math.ceil(len(items) / len(people.analysts))
    # The fan-out jobs (delivery summaries) are computed once for all rules by mark_synced.
    with mock.patch("hosts.fanout.fanout_send", lambda fanout_id: True):
        for n, analyst in enumerate(people.analysts):
            if items[n * batch : (n + 1) * batch]:
                rules_bulk_create(items=items[n * batch : (n + 1) * batch], actor=analyst)
    execute(
        "UPDATE hosts_fanout SET state = 'done', attempts = 1, started_at = now(), "
        "finished_at = now() WHERE state = 'queued'"
    )


def _machine_id(g: int) -> str:
    import hashlib

    m = hashlib.md5(f"host{g}".encode()).hexdigest()  # noqa: S324 (the loader's formula)
    return f"{m[:8]}-{m[8:12]}-{m[12:16]}-{m[16:20]}-{m[20:32]}".upper()


def mark_synced(people: People) -> None:
    """90% of hosts confirmed the current revision, 10% the one before the last import, the
    stale ones nothing since before the rules; then every rule's delivery summary."""
    from hosts.selectors import revision_current

    now = revision_current()
    execute(
        "UPDATE hosts_host SET rules_synced_rev = CASE WHEN stale_since IS NOT NULL THEN %s "
        "WHEN id %% 10 = 0 THEN %s ELSE %s END, expected_counts = '{}'::jsonb",
        [people.revision_before_rules, now - 1, now],
    )
    delivery_summaries()
    load_sync_history()


SYNCS_PER_HOST = 10


def load_sync_history() -> None:
    """Each host's last syncs, ten minutes apart, ending at its last postflight (when the
    tree has hosts.models.HostSync)."""
    import hosts.models

    model = getattr(hosts.models, "HostSync", None)
    if model is None:
        return
    with indexes_dropped(model):
        insert_select(
            model,
            {
                "host_id": "h.id",
                "finished_at": "h.last_postflight_at - (k - 1) * interval '10 minutes'",
                "sync_type": "'NORMAL'",
                "rules_received": "0",
                "rules_processed": "0",
                "revision": "h.rules_synced_rev",
            },
            f"hosts_host h, generate_series(1, {SYNCS_PER_HOST}) k",
        )


def delivery_summaries() -> None:
    """What the workers' job (rules.tracking.delivery_summaries_refresh) stores on each rule,
    computed with sets in memory: every key has one rule and every tag span opened before the
    rules, so a host is targeted by the rule's scope and has confirmed it when it synced at or
    after the rule's revision. Three rules are checked against rules.tracking.rule_delivery."""
    from django.db import connection, transaction

    from hosts.models import Host, HostTag
    from rules.models import Rule, RuleVersion
    from rules.tracking import rule_delivery

    synced = dict(Host.objects.values_list("id", "rules_synced_rev").iterator(chunk_size=20_000))
    members: dict[int, set[int]] = {}
    for host_id, tag_id in HostTag.objects.filter(rev_to__isnull=True).values_list(
        "host_id", "tag_id"
    ):
        members.setdefault(tag_id, set()).add(host_id)
    everyone = set(synced)
    memo: dict[tuple, tuple[int, int]] = {}
    rows = []
    for version in RuleVersion.objects.filter(rev_to__isnull=True).iterator(chunk_size=2_000):
        signature = (
            version.rev_from,
            tuple(version.tag_ids),
            tuple(version.excluded_tag_ids),
            tuple(version.host_ids),
        )
        if signature not in memo:
            if version.host_ids:
                targets = set(version.host_ids)
            else:
                targets = set().union(*(members.get(t, ()) for t in version.tag_ids))
                targets = targets if version.tag_ids else everyone
                excluded = set().union(*(members.get(t, ()) for t in version.excluded_tag_ids))
                targets = targets - excluded
            confirmed = sum(1 for h in targets if (synced[h] or 0) >= version.rev_from)
            memo[signature] = (len(targets), confirmed)
        rows.append((version.rule_id, *memo[signature]))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_delivery (rule_id bigint PRIMARY KEY, target int, "
            "confirmed int) ON COMMIT DROP"
        )
        with cursor.copy("COPY bench_delivery FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            "UPDATE rules_rule r SET target_hosts = d.target, confirmed_hosts = d.confirmed, "
            "delivery_checked_at = now() FROM bench_delivery d WHERE d.rule_id = r.id"
        )
    samples = [
        Rule.objects.filter(tags=None, hosts=None, excluded_tags=None).first(),
        Rule.objects.exclude(tags=None).first(),
        Rule.objects.exclude(excluded_tags=None).first(),
        Rule.objects.exclude(hosts=None).first(),
    ]
    for rule in filter(None, samples):
        rule.refresh_from_db()
        live = rule_delivery(rule, sample=0)
        stored = (rule.target_hosts, rule.confirmed_hosts)
        if (live.target_hosts, live.confirmed_hosts) != stored:
            raise AssertionError(f"rule {rule.pk}: stored {stored}, tracking computes {live}")


# --- the loaded database ------------------------------------------------------------------------


def meta_read() -> dict | None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [META_TABLE])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'load'")
        row = cursor.fetchone()
    if not row:
        return None
    return json.loads(row[0]) if isinstance(row[0], str) else row[0]


def meta_write(value: dict) -> None:
    execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
    execute(
        f"INSERT INTO {META_TABLE} VALUES ('load', %s::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [json.dumps(value)],
    )


def migrate_only() -> None:
    from django.core.management import call_command

    try:
        call_command("makemigrations", check=True, dry_run=True, verbosity=0)
    except SystemExit:
        sys.exit(
            "The models have changes without migrations; the benchmark needs a consistent tree."
        )
    call_command("migrate", interactive=False, verbosity=0)


TABLES = [
    ("hosts_host", "Hosts"),
    ("hosts_hosttag", "Host tag spans"),
    ("events_event", "Events"),
    ("events_binary", "Binaries"),
    ("events_binaryhost", "Binary-host rows"),
    ("events_binaryuser", "Binary-user rows"),
    ("events_certificate", "Certificates"),
    ("rules_rule", "Rules"),
    ("rules_ruleversion", "Rule versions"),
    ("events_approvalrequest", "Approval requests"),
    ("hosts_hostsync", "Host sync history"),
    ("audit_auditentry", "Audit entries"),
]


def table_stats() -> dict[str, int]:
    from django.db import connection

    stats = {}
    with connection.cursor() as cursor:
        for table, _ in TABLES:
            cursor.execute("SELECT to_regclass(%s)", [table])
            if cursor.fetchone()[0] is None:
                stats[table] = 0
                continue
            cursor.execute(f"SELECT count(*) FROM {table}")
            stats[table] = cursor.fetchone()[0]
        cursor.execute("SELECT count(DISTINCT team_id) FROM events_binary WHERE team_id <> ''")
        stats["teams"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM hosts_host WHERE stale_since IS NOT NULL")
        stats["stale"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM events_binary WHERE blocked > 0 OR would_block > 0")
        stats["blocked_binaries"] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_database_size(current_database())")
        stats["database_bytes"] = cursor.fetchone()[0]
    return stats


# --- the pages ----------------------------------------------------------------------------------


@dataclass
class Page:
    label: str
    url: str
    note: str = ""


def pages() -> list[Page]:
    """Every console page, with the filters analysts use most, on the heaviest objects."""
    from django.db import connection
    from django.db.models import Count

    from events.models import Binary
    from hosts.models import HostTag, Tag
    from rules.models import Rule

    top = Binary.objects.order_by("-host_count", "-executions", "sha256").first()
    biggest = (
        HostTag.objects.filter(rev_to__isnull=True)
        .values("tag_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    tag = Tag.objects.get(pk=biggest["tag_id"])
    with connection.cursor() as cursor:
        busiest = {}
        for stale in (False, True):
            cursor.execute(
                "SELECT host_id FROM events_binaryhost bh JOIN hosts_host h ON h.id = bh.host_id "
                "WHERE (h.stale_since IS NOT NULL) = %s "
                "GROUP BY host_id ORDER BY count(*) DESC, host_id LIMIT 1",
                [stale],
            )
            (busiest[stale],) = cursor.fetchone()
    everyone = Rule.objects.filter(tags=None, hosts=None, excluded_tags=None).order_by("id")
    everyone = everyone.first()
    tagged = Rule.objects.filter(tags=tag).order_by("id").first()
    return [
        Page("Dashboard", "/"),
        Page("Blocked binaries", "/binaries/"),
        Page("Blocked binaries, search", f"/binaries/?q={SEARCH}"),
        Page("Blocked binaries, blocked only", "/binaries/?outcome=blocked"),
        Page("Blocked binaries, most recent", "/binaries/?ordering=recent"),
        Page("Blocked binaries, no rule", "/binaries/?rule=none"),
        Page("Blocked binaries, page 200", "/binaries/?page=200"),
        Page(
            "Binary detail (most hosts)",
            f"/binaries/{top.sha256}/",
            f"{top.host_count:,} hosts, {top.executions:,} events",
        ),
        Page("Rules", "/rules/"),
        Page("Rules, block rules", "/rules/?policy=BLOCKLIST"),
        Page("Rules, not matched in 30 days", "/rules/?stale_days=30"),
        Page("Rule detail (everyone)", f"/rules/{everyone.pk}/", "a rule for every host"),
        Page(
            "Rule detail (largest tag)",
            f"/rules/{tagged.pk}/",
            f"a rule for tag {tag.name}, {biggest['n']:,} hosts",
        ),
        Page(
            "Rule delivery fragment (largest tag)",
            f"/rules/{tagged.pk}/delivery/",
            "the detail page's live delivery part alone",
        ),
        Page("Hosts", "/hosts/"),
        Page("Hosts, largest tag", f"/hosts/?tag={tag.name}", f"{biggest['n']:,} hosts"),
        Page("Hosts, stale", "/hosts/?stale=true"),
        Page("Hosts, search", "/hosts/?q=user0042"),
        Page("Hosts, page 500", "/hosts/?page=500"),
        Page("Host detail (in sync)", f"/hosts/{busiest[False]}/", "the busiest in-sync host"),
        Page(
            "Host detail (stale)",
            f"/hosts/{busiest[True]}/",
            "the busiest stale host: every rule pending",
        ),
        Page("Approval requests", "/requests/"),
        Page("Approval requests, all", "/requests/?state=all"),
        Page("Audit trail", "/audit/"),
        Page("Audit trail, one action", "/audit/?action=rule.update"),
        Page("Audit trail, one analyst", "/audit/?actor=analyst07"),
        Page("Audit trail, search", "/audit/?q=SEC-4242"),
    ]


class Recorder:
    """connection.execute_wrapper hook: every statement Django sends (not BEGIN/COMMIT), with
    its parameters and time in the driver."""

    def __init__(self):
        self.calls: list[tuple[str, object, float]] = []

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.calls.append((sql, params, time.perf_counter() - start))

    @property
    def sql_seconds(self) -> float:
        return sum(seconds for _, _, seconds in self.calls)

    def repeats(self) -> tuple[int, str]:
        """The most repeated statement (same SQL, other parameters): per-row queries."""
        if not self.calls:
            return 0, ""
        sql, count = Counter(sql for sql, _, _ in self.calls).most_common(1)[0]
        return count, sql


@dataclass
class Result:
    page: Page
    status: int = 0
    seconds: list[float] = field(default_factory=list)
    sql_seconds: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    repeats: int = 0
    repeated_sql: str = ""
    slowest: list[tuple[float, str, object]] = field(default_factory=list)  # last render
    hotspot: str = ""
    bytes: int = 0

    @property
    def measured(self) -> bool:
        return self.status == 200 and bool(self.seconds)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000

    @property
    def sql_ms(self) -> float:
        return statistics.median(self.sql_seconds) * 1000

    def statements_cell(self) -> str:
        low, high = min(self.statements), max(self.statements)
        return f"{low}" if low == high else f"{low} to {high}"


def client_for(user):
    from django.test import Client

    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    return client


def measure(client, page: Page, reps: int, warmup: int) -> Result:
    from django.db import connection

    result = Result(page)
    for rep in range(warmup + reps):
        recorder = Recorder()
        with connection.execute_wrapper(recorder):
            start = time.perf_counter()
            response = client.get(page.url, secure=True)
            elapsed = time.perf_counter() - start
        result.status = response.status_code
        if response.status_code != 200:
            return result
        if rep < warmup:
            continue
        result.seconds.append(elapsed)
        result.sql_seconds.append(recorder.sql_seconds)
        result.statements.append(len(recorder.calls))
        result.repeats, result.repeated_sql = recorder.repeats()
        result.slowest = sorted(
            ((seconds, sql, params) for sql, params, seconds in recorder.calls),
            key=lambda call: call[0],
            reverse=True,
        )[:3]
        result.bytes = len(response.content)
    return result


def _profiled(client, page: Page):
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    client.get(page.url, secure=True)
    profiler.disable()
    return pstats.Stats(profiler, stream=sys.stderr)


def profile(client, page: Page) -> None:
    """Where one render spends its time in Python: the project's functions by cumulative time."""
    print(f"\n--- profile of {page.label}: {page.url}", file=sys.stderr)
    stats = _profiled(client, page).sort_stats("cumulative")
    stats.print_stats(r"/(rules|hosts|events|audit|santaadmin)/|template", 25)


def _where(function: tuple) -> str:
    filename, _, name = function
    path = Path(filename)
    if "site-packages" in path.parts:
        path = Path(*path.parts[path.parts.index("site-packages") + 1 :])
    elif ROOT in path.parents:
        path = path.relative_to(ROOT)
    return f"{path} {name}"


def hotspot(client, page: Page) -> str:
    """Where one profiled render goes: from the view, follow the callee taking at least half
    of its caller's time; name the last two project functions on that path and what the last
    one spends its time in."""
    stats = _profiled(client, page)
    total = stats.total_tt or 1.0
    callees: dict[tuple, dict[tuple, float]] = {}
    for function, (_, _, _, _, callers) in stats.stats.items():
        for caller, (_, _, _, cumulative) in callers.items():
            callees.setdefault(caller, {})[function] = cumulative

    def ours(function: tuple) -> bool:
        path = Path(function[0])
        return ROOT in path.parents and not {".venv", "benchmarks"} & set(path.parts)

    import inspect

    from django.urls import resolve

    view = inspect.unwrap(resolve(page.url.split("?")[0]).func).__code__
    node = (view.co_filename, view.co_firstlineno, view.co_name)
    if node not in stats.stats:
        return ""
    path, seen = [node], {node}
    while len(path) < 200:
        below = sorted(callees.get(node, {}).items(), key=lambda item: -item[1])
        if not below or below[0][1] < 0.5 * stats.stats[node][3] or below[0][0] in seen:
            break
        node = below[0][0]
        path.append(node)
        seen.add(node)
    chain = [f for f in path if ours(f)]
    if not chain:
        return ""
    node = chain[-1]
    share = stats.stats[node][3] / total
    text = " → ".join(f"`{_where(f)}`" for f in chain[-2:]) + f" {share:.0%}"
    parts = sorted(callees.get(node, {}).items(), key=lambda item: -item[1])[:2]
    if parts:
        text += " (in it: " + ", ".join(f"`{_where(f)}` {t / total:.0%}" for f, t in parts) + ")"
    return text


def explain(results: list[Result], out) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the three slowest statements of each page's last render,
    in a transaction rolled back."""
    from django.db import connection, transaction

    for result in results:
        if not result.measured:
            continue
        out.write(f"\n## {result.page.label}: {result.page.url}\n")
        for seconds, sql, params in result.slowest:
            if not re.match(r"\s*(SELECT|WITH)\b", sql, re.I):
                continue
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                transaction.set_rollback(True)
            out.write(f"\n-- {seconds * 1000:.1f} ms in the render\n{sql}\n{params!r}\n{plan}\n")
    out.flush()


# --- report -------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def shorten(sql: str, limit: int = 220) -> str:
    """A statement as a reader wants it: the select list elided, at most `limit` characters."""
    sql = re.sub(r"^SELECT .{60,}? FROM ", "SELECT … FROM ", sql, flags=re.S)
    sql = re.sub(r"\((?:%s, )+%s\)", "(%s, …)", sql)
    sql = re.sub(r"\s+", " ", sql).replace('"', "")
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"


def render_section(
    results: list[Result], facts: dict, stats: dict, load: dict, args, source: str
) -> str:
    lines = [
        "## Console pages on large data",
        "",
        f"`python benchmarks/console.py` on {facts['date']}: {facts['cores']} cores "
        f"({facts['cpu']}), "
        f"PostgreSQL {facts['postgres']}, Python {facts['python']}, {source}. "
        f"{stats['hosts_host']:,} hosts in {len(TAGS)} tags (1 to 3 each, Zipf-sized, "
        f"{stats['stale']:,} stale), {stats['events_event']:,} execution events over the last "
        f"{DAYS} days from {stats['events_binary']:,} binaries of Zipf-like popularity "
        f"({stats['blocked_binaries']:,} of them blocked or would-be-blocked), {USERS:,} users, "
        f"{stats['events_certificate']:,} certificates of {stats['teams']:,} teams, "
        f"{stats['rules_rule']:,} rules, {stats['audit_auditentry']:,} audit entries, "
        f"{stats['events_approvalrequest']:,} approval requests. Loaded with set-based SQL "
        "(the statistics tables aggregated from the events, the rules by `rules_bulk_create`), "
        "the tables the loader updates rewritten by `VACUUM (FULL)`, then `VACUUM (ANALYZE)`.",
        "",
        "Each page is rendered for a signed-in analyst through the whole Django stack (test "
        "client: middleware, session, permissions, templates; no HTTP server), "
        f"{args.warmup} warm-up renders then {args.reps} measured. Median / p95: wall clock "
        "in the benchmark process, Django and PostgreSQL on the same machine, other work "
        "running. SQL: median time spent in the database driver. Statements: SQL statements "
        f"Django sent per render (BEGIN/COMMIT not counted). Goal: under {GOAL_MS:.0f} ms.",
        "",
        "| Page | Median | p95 | SQL | Statements | |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        url = f"`{r.page.url if len(r.page.url) <= 40 else r.page.url[:36] + '…/'}`"
        title = f"{r.page.label}<br>{url}"
        if r.page.note:
            title += f" ({r.page.note})"
        if not r.measured:
            reason = "not built yet" if r.status == 404 else "not measured"
            lines.append(f"| {title} | — | — | — | — | {r.status}: {reason} |")
            continue
        flags = []
        if r.median_ms > GOAL_MS:
            flags.append("**over goal**")
        if r.repeats >= 5:
            flags.append(f"one statement sent {r.repeats} times")
        lines.append(
            f"| {title} | {_ms(r.median_ms)} ms | {_ms(r.p95_ms)} ms | {_ms(r.sql_ms)} ms "
            f"| {r.statements_cell()} | {', '.join(flags)} |"
        )
    measured = sorted((r for r in results if r.measured), key=lambda r: -r.median_ms)
    if measured:
        lines += ["", "What dominates the slowest pages (last measured render):", ""]
        for r in measured[:DOMINANT]:
            seconds, sql, _ = r.slowest[0] if r.slowest else (0.0, "", None)
            share = r.sql_ms / r.median_ms if r.median_ms else 0
            line = (
                f"* **{r.page.label}**: {_ms(r.median_ms)} ms, of which {_ms(r.sql_ms)} ms "
                f"({share:.0%}) in the database; slowest statement "
                f"({seconds * 1000:.1f} ms): `{shorten(sql)}`"
            )
            if r.hotspot:
                line += f". A profiled render: {r.hotspot}"
            lines.append(line)
    missing = [r.page.label for r in results if not r.measured]
    if missing:
        lines += ["", f"Not measured (page not answering 200): {', '.join(missing)}."]
    lines += [
        "",
        "| Data | Rows |",
        "| --- | ---: |",
    ]
    lines += [f"| {label} | {stats[table]:,} |" for table, label in TABLES]
    lines.append(f"| Database size | {stats['database_bytes'] / 2**20:,.0f} MiB |")
    if load:
        steps = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in load.items())
        lines += ["", f"Loading took {sum(load.values()):.0f} s ({steps})."]
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    write_section(path, START, END, section)


# --- main ---------------------------------------------------------------------------------------


def scale(factor: float) -> None:
    """Multiply the data sizes (not the tags, teams and analysts)."""
    global HOSTS, EVENTS, BINARIES, USERS, RULES, AUDIT
    HOSTS, EVENTS, BINARIES = (max(100, int(n * factor)) for n in (HOSTS, EVENTS, BINARIES))
    USERS, RULES, AUDIT = (max(100, int(n * factor)) for n in (USERS, RULES, AUDIT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="measured renders per page")
    parser.add_argument("--warmup", type=int, default=2, help="renders before measuring")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--reuse", action="store_true", help="keep a completely loaded database")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--explain", type=Path, help="write EXPLAIN ANALYZE plans to this file")
    parser.add_argument("--only", help="measure only pages whose label contains this text")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one render of each page"
    )
    parser.add_argument("--source", help="what code is measured (default: git HEAD of the tree)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every data size (a quick trial: 0.01)"
    )
    args = parser.parse_args(argv)
    if args.scale != 1.0:
        scale(args.scale)

    setup_django(trial=args.scale != 1.0)
    from django.contrib.auth.models import User

    name = fanout.bench_database_name()
    log = sys.stderr
    try:
        load = meta_read() if args.reuse else None
        if load is not None:
            print(f"reusing {name} (loaded before)", file=log)
            migrate_only()
        else:
            fanout.prepare_database(name)
            load = load_all(args.seed)
            meta_write(load)
        facts = fanout.machine_facts()
        source = args.source or fanout.source_description()
        stats = table_stats()
        client = client_for(User.objects.get(username="analyst01"))
        results = []
        for page in pages():
            if args.only and args.only.lower() not in page.label.lower():
                continue
            result = measure(client, page, args.reps, args.warmup)
            results.append(result)
            if result.measured:
                print(
                    f"{page.label:<34} {result.median_ms:8.1f} / {result.p95_ms:8.1f} ms  "
                    f"SQL {result.sql_ms:7.1f} ms  {result.statements_cell():>8} statements"
                    f"  (max repeat {result.repeats}, {result.bytes / 1024:.0f} KiB)",
                    file=log,
                )
                if result.repeats >= 3:
                    print(f"    repeated: {shorten(result.repeated_sql, 160)}", file=log)
            else:
                print(f"{page.label:<34} status {result.status}", file=log)
        slowest = sorted((r for r in results if r.measured), key=lambda r: -r.median_ms)
        for result in slowest[:DOMINANT]:
            result.hotspot = hotspot(client, result.page)
        if args.profile:
            for result in results:
                profile(client, result.page)
        if args.explain:
            with args.explain.open("w") as out:
                explain(results, out)
            print(f"wrote {args.explain}", file=log)
        section = render_section(results, facts, stats, load, args, source)
        print(section)
        if args.write:
            write_doc(args.doc, section)
            print(f"wrote {args.doc}", file=log)
    finally:
        if args.drop:
            fanout.drop_database(name)


if __name__ == "__main__":
    main()
