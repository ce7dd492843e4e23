"""Rule fan-out and incremental RuleDownload at fleet scale, on PostgreSQL.

Builds a fleet in a dedicated database (one enrollment, 50 tags, hosts in 0-3 tags each, 20,000
rules written by `rules.services.rules_bulk_create`), grows it step by step (1,000, 10,000,
100,000 hosts by default) and at each size measures what a rule change costs the server and how
long until a host has it:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/santaadmin_bench SECRET_KEY=x \\
    ALLOWED_HOSTS=127.0.0.1 CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
    .venv/bin/python benchmarks/fanout.py [--write] [--drop] [--explain PATH]

The four variables above (and `CELERY_TASK_ALWAYS_EAGER=0`) are the defaults when unset.
The database must be named `*_bench`: it is created when missing and its `public` schema is
emptied at the start of every run (`--drop` drops the whole database at the end).
Nothing else in the cluster is touched.

`--write` replaces the section between `<!-- fanout:start -->` and `<!-- fanout:end -->` in
docs/benchmarks.md (the file is created when missing). `--explain PATH` writes
`EXPLAIN (ANALYZE, BUFFERS)` of every statement of an incremental download, a rule creation and a
rule deletion at each fleet size to PATH (run in transactions that are rolled back).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from bisect import bisect
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/santaadmin_bench",
    "SECRET_KEY": "x",
    "ALLOWED_HOSTS": "127.0.0.1",
    # Production's web side: tasks are published to Redis (a bench-only database, purged at
    # the end) and never run in the request; the workers' jobs are timed apart (f, g, h).
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
    "CELERY_TASK_ALWAYS_EAGER": "0",
}
START, END = "<!-- fanout:start -->", "<!-- fanout:end -->"
TAGS = 50
RULES = 20_000
SIZES = (1_000, 10_000, 100_000)
KINDS = ("binary", "certificate", "teamid", "signingid", "cdhash", "compiler")


def setup_django() -> None:
    for name, value in DEFAULT_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import warnings

    import django

    # Whitenoise warns that STATIC_ROOT was never collected; no static file is served here.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    django.setup()
    # One INFO line per task run is noise here.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


# --- the database -------------------------------------------------------------------------------


def bench_database_name() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        sys.exit(
            "This benchmark needs PostgreSQL: set DATABASE_URL=postgresql://…/santaadmin_bench"
        )
    name = str(db["NAME"])
    if not name.endswith("_bench"):
        sys.exit(f"Refusing to use database {name!r}: the benchmark empties it (use *_bench).")
    return name


def _maintenance_connection():
    """A connection to the cluster's `postgres` database, for CREATE/DROP DATABASE only."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(
        dbname="postgres",
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        autocommit=True,
    )


def prepare_database(name: str) -> None:
    """Create the bench database if missing, empty it, migrate."""
    from django.core.management import call_command
    from django.db import connection
    from psycopg import sql

    with _maintenance_connection() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS public CASCADE")
        cursor.execute("CREATE SCHEMA public")
    try:
        call_command("makemigrations", check=True, dry_run=True, verbosity=0)
    except SystemExit:
        sys.exit(
            "The models have changes without migrations; the benchmark needs a consistent tree."
        )
    call_command("migrate", interactive=False, verbosity=0)


def drop_database(name: str) -> None:
    from django.db import connections
    from psycopg import sql

    connections.close_all()
    with _maintenance_connection() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def copy_into(model, rows: list[dict]) -> None:
    """COPY rows (attname -> value) into a model's table; unset fields get the model's default,
    exactly as the ORM would write them (JSON as text, auto_now fields now)."""
    from django.db import connection, models
    from django.utils import timezone

    now = timezone.now()
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    template = []
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            value = now
        else:  # the model default; "" for text without one, as the ORM writes
            value = f.get_default()
            if value is None and not f.null:
                value = _REQUIRED
        template.append(_copy_value(f, value))
    index = {f.attname: i for i, f in enumerate(fields)}
    quote = connection.ops.quote_name
    statement = "COPY {} ({}) FROM STDIN".format(
        quote(model._meta.db_table), ", ".join(quote(f.column) for f in fields)
    )
    json_fields = {f.attname for f in fields if isinstance(f, models.JSONField)}
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            values = list(template)
            for name, value in row.items():
                values[index[name]] = json.dumps(value) if name in json_fields else value
            if _REQUIRED in values:
                missing = [fields[i].attname for i, v in enumerate(values) if v is _REQUIRED]
                raise ValueError(f"{model.__name__}: no value for {', '.join(missing)}")
            copy.write_row(values)


_REQUIRED = object()


def _copy_value(f, value):
    from django.db import models

    if isinstance(f, models.JSONField) and value is not None and value is not _REQUIRED:
        return json.dumps(value)
    return value


def vacuum_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE)")


# --- counting and timing ------------------------------------------------------------------------


class StatementCounter:
    """connection.execute_wrapper hook: counts the statements Django sends (not BEGIN/COMMIT,
    which psycopg issues itself)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def counting() -> Iterator[StatementCounter]:
    from django.db import connection

    counter = StatementCounter()
    with connection.execute_wrapper(counter):
        yield counter


@dataclass
class Series:
    """Repeated measurements of one operation: seconds and statements per run."""

    seconds: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)

    def add(self, seconds: float, statements: int) -> None:
        self.seconds.append(seconds)
        self.statements.append(statements)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000

    def cell(self) -> str:
        low, high = min(self.statements), max(self.statements)
        counted = f"{low}" if low == high else f"{low} to {high}"
        return f"{_ms(self.median_ms)} / {_ms(self.p95_ms)} ms · {counted}"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


# --- the fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    rng: random.Random
    enrollment: object = None
    secret: str = ""
    tag_ids: list[int] = field(default_factory=list)
    tag_names: dict[int, str] = field(default_factory=dict)
    hosts: list[tuple[int, str]] = field(default_factory=list)  # (id, machine id)
    keys: int = 0  # identifiers handed out so far (each benchmark rule gets a new one)
    load: dict[str, str] = field(default_factory=dict)

    def new_key(self) -> int:
        self.keys += 1
        return self.keys


def create_fleet(seed: int) -> Fleet:
    from hosts.services import enrollment_create, tags_get_or_create

    fleet = Fleet(rng=random.Random(seed))  # noqa: S311 (reproducible data, not secrets)
    fleet.enrollment, fleet.secret = enrollment_create(name="bench")
    tags = tags_get_or_create(f"tag-{n:02d}" for n in range(TAGS))
    fleet.tag_ids = [tag.id for tag in tags]
    fleet.tag_names = {tag.id: tag.name for tag in tags}
    return fleet


def grow_hosts(fleet: Fleet, target: int) -> float:
    """COPY hosts (and their tag memberships) until the fleet has `target` hosts; seconds."""
    from django.db import transaction

    from hosts.models import Host, HostTag
    from hosts.selectors import revision_current

    start = time.perf_counter()
    rng, first = fleet.rng, len(fleet.hosts)
    # Zipf-like tag sizes: the biggest tag holds about a third of the fleet, the smallest ~1%.
    cumulative = list(accumulate(1 / (rank + 1) for rank in range(TAGS)))
    with transaction.atomic():
        revision = revision_current()
        last_id = Host.objects.order_by("-id").values_list("id", flat=True).first() or 0
        rows = []
        for n in range(first, target):
            machine_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
            rows.append(
                {
                    "machine_id": machine_id,
                    "enrollment_id": fleet.enrollment.id,
                    "serial_number": f"C02B{n:08d}",
                    "hostname": f"mac-{n}.example.com",
                    "os_version": "15.1",
                    "os_build": "24B83",
                    "model_identifier": "MacBookPro18,3",
                    "santa_version": "2026.8.1",
                    "primary_user": f"user{n}",
                    "primary_user_groups": ["staff"],
                    "reported_client_mode": "MONITOR",
                    "sip_status": 111,
                    "last_sync_type": "NORMAL",
                }
            )
        copy_into(Host, rows)
        new = list(
            Host.objects.filter(id__gt=last_id).order_by("id").values_list("id", "machine_id")
        )
        spans = []
        for host_id, _ in new:
            chosen: set[int] = set()
            wanted = rng.randint(0, 3)
            while len(chosen) < wanted:
                chosen.add(bisect(cumulative, rng.random() * cumulative[-1]))
            spans += [
                {"host_id": host_id, "tag_id": fleet.tag_ids[i], "rev_from": revision}
                for i in sorted(chosen)
            ]
        copy_into(HostTag, spans)
    fleet.hosts += new
    return time.perf_counter() - start


def _identifier(rule_type: str, n: int) -> str:
    digest = hashlib.sha256(f"santaadmin-bench-{n}".encode()).hexdigest()
    return {
        "BINARY": digest,
        "CERTIFICATE": digest,
        "CDHASH": digest[:40],
        "TEAMID": f"T{n:09d}",
        "SIGNINGID": f"S{n % 1000:09d}:com.example.app{n}",
    }[rule_type]


def _rule_type(rng: random.Random) -> str:
    roll = rng.random()
    for rule_type, share in (
        ("BINARY", 0.60),
        ("SIGNINGID", 0.15),
        ("TEAMID", 0.10),
        ("CERTIFICATE", 0.10),
    ):
        if roll < share:
            return rule_type
        roll -= share
    return "CDHASH"


def _policy(rng: random.Random) -> dict:
    roll = rng.random()
    if roll < 0.45:
        return {"policy": "BLOCKLIST"}
    if roll < 0.50:
        return {
            "policy": "BLOCKLIST",
            "custom_msg": "Blocked by IT",
            "custom_url": "https://it.example.com/",
        }
    if roll < 0.55:
        return {"policy": "SILENT_BLOCKLIST"}
    if roll < 0.95:
        return {"policy": "ALLOWLIST"}
    if roll < 0.98:
        return {"policy": "ALLOWLIST_COMPILER"}
    return {"policy": "CEL", "cel_expr": "target.signing_time >= timestamp('2025-01-01T00:00:00Z')"}


def rule_inputs(fleet: Fleet, count: int) -> list:
    """~70% for everyone (5% of them excluding a tag), ~25% for one or two tags, ~5% for one
    to three hosts; half of the host rules override a rule for everyone on the same key."""
    from rules.services import RuleInput

    rng = fleet.rng
    everyone, tagged = int(count * 0.70), int(count * 0.25)
    hosted = count - everyone - tagged
    items, overridable = [], []
    for _ in range(everyone):
        n, rule_type = fleet.new_key(), _rule_type(rng)
        policy = _policy(rng)
        excluded = ()
        if rng.random() < 0.05:
            excluded = (fleet.tag_names[rng.choice(fleet.tag_ids)],)
        elif policy["policy"] != "ALLOWLIST_COMPILER":
            overridable.append((rule_type, _identifier(rule_type, n)))
        items.append(
            RuleInput(rule_type, _identifier(rule_type, n), excluded_tags=excluded, **policy)
        )
    for _ in range(tagged):
        n, rule_type = fleet.new_key(), _rule_type(rng)
        tags = rng.sample(fleet.tag_ids, 2 if rng.random() < 0.2 else 1)
        items.append(
            RuleInput(
                rule_type,
                _identifier(rule_type, n),
                tags=tuple(fleet.tag_names[t] for t in tags),
                **_policy(rng),
            )
        )
    overrides = rng.sample(overridable, hosted // 2)
    for index in range(hosted):
        if index < len(overrides):
            rule_type, identifier = overrides[index]
        else:
            n, rule_type = fleet.new_key(), _rule_type(rng)
            identifier = _identifier(rule_type, n)
        machines = rng.sample(fleet.hosts, rng.randint(1, 3))
        items.append(
            RuleInput(
                rule_type,
                identifier,
                rng.choice(["ALLOWLIST", "BLOCKLIST"]),
                machine_ids=tuple(machine_id for _, machine_id in machines),
            )
        )
    return items


def load_rules(fleet: Fleet, count: int) -> tuple[float, int]:
    from rules.services import rules_bulk_create

    items = rule_inputs(fleet, count)
    start = time.perf_counter()
    with counting() as counter:
        rules_bulk_create(items=items)
    return time.perf_counter() - start, counter.count


# --- every host synced --------------------------------------------------------------------------


def _vector(rule_type: str, policy: str) -> tuple[int, ...]:
    from rules.delivery import COUNT_KIND

    kinds = {str(k): v for k, v in COUNT_KIND.items()}
    if policy == "REMOVE":
        return (0,) * len(KINDS)
    held = {kinds[rule_type], "compiler"} if policy == "ALLOWLIST_COMPILER" else {kinds[rule_type]}
    return tuple(int(kind in held) for kind in KINDS)


def _add(total: list[int], vector) -> None:
    for i, value in enumerate(vector):
        total[i] += value


def expected_counts() -> dict[int, dict[str, int]]:
    """What each host holds at the current revision, per count kind, from the open versions.

    Keys are unique among rules for everyone and for tags (the generator makes them so), and a
    host rule either has a key of its own or overrides a rule for everyone without exclusions
    and with the same count kind; so a host's counts are: everyone minus the rules excluding
    one of its tags, plus the tag rules of any of its tags, plus its own host rules.
    """
    from hosts.models import HostTag
    from rules.models import RuleVersion

    versions = list(
        RuleVersion.objects.filter(rev_to__isnull=True).values_list(
            "rule_type",
            "identifier",
            "policy",
            "scope_all",
            "tag_ids",
            "excluded_tag_ids",
            "host_ids",
        )
    )
    plain_everyone = {
        (t, i): _vector(t, p)
        for t, i, p, scope_all, tags, excluded, hosts in versions
        if scope_all and not excluded and not hosts
    }
    tag_bit: dict[int, int] = {}

    def mask(tag_ids) -> int:
        bits = 0
        for tag_id in tag_ids:
            bits |= 1 << tag_bit.setdefault(tag_id, len(tag_bit))
        return bits

    everyone = [0] * len(KINDS)
    excluded_by: dict[int, list[int]] = defaultdict(lambda: [0] * len(KINDS))
    tagged_by: dict[int, list[int]] = defaultdict(lambda: [0] * len(KINDS))
    by_host: dict[int, list[int]] = defaultdict(lambda: [0] * len(KINDS))
    seen: set[tuple[str, str]] = set()
    for rule_type, identifier, policy, scope_all, tags, excluded, hosts in versions:
        key, vector = (rule_type, identifier), _vector(rule_type, policy)
        if hosts:
            assert not tags and not scope_all, "benchmark data: host rules list hosts only"
            if key in plain_everyone:
                assert plain_everyone[key] == vector, f"override of {key} changes the counts"
                continue
            for host_id in hosts:
                _add(by_host[host_id], vector)
            continue
        assert key not in seen, f"benchmark data: {key} has two tag/everyone rules"
        seen.add(key)
        if tags:
            assert not excluded, "benchmark data: tag rules exclude nothing"
            _add(tagged_by[mask(tags)], vector)
        elif scope_all:
            _add(everyone, vector)
            if excluded:
                _add(excluded_by[mask(excluded)], vector)
    host_masks: dict[int, int] = defaultdict(int)
    for host_id, tag_id in HostTag.objects.filter(rev_to__isnull=True).values_list(
        "host_id", "tag_id"
    ):
        host_masks[host_id] |= mask([tag_id])
    per_mask: dict[int, list[int]] = {}
    counts = {}
    from hosts.models import Host

    for host_id in Host.objects.values_list("id", flat=True).iterator(chunk_size=20_000):
        bits = host_masks.get(host_id, 0)
        if bits not in per_mask:
            total = list(everyone)
            for excluded_bits, vector in excluded_by.items():
                if excluded_bits & bits:
                    _add(total, [-v for v in vector])
            for tag_bits, vector in tagged_by.items():
                if tag_bits & bits:
                    _add(total, vector)
            per_mask[bits] = total
        total = list(per_mask[bits])
        if host_id in by_host:
            _add(total, by_host[host_id])
        counts[host_id] = {kind: n for kind, n in zip(KINDS, total, strict=True) if n}
    return counts


def mark_all_synced() -> tuple[float, int]:
    """Every host confirmed the current revision: one UPDATE of the host table (from a COPY of
    each host's counts into a temporary table); seconds and the revision."""
    from django.db import connection, transaction

    from hosts.selectors import revision_current

    start = time.perf_counter()
    counts = expected_counts()
    revision = revision_current()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_synced"
            " (host_id bigint PRIMARY KEY, counts jsonb NOT NULL) ON COMMIT DROP"
        )
        with cursor.copy("COPY bench_synced (host_id, counts) FROM STDIN") as copy:
            for host_id, value in counts.items():
                copy.write_row((host_id, json.dumps(value)))
        cursor.execute(
            """
            UPDATE hosts_host AS h SET
                rules_synced_rev = %s, expected_counts = s.counts, pending_rev = NULL,
                pending_counts = NULL, pending_clean = false, pending_sync_type = '',
                clean_sync_requested = '', request_clean_sync = false, last_sync_type = 'NORMAL',
                drift_reasons = '[]'::jsonb, drift_detected_at = NULL
            FROM bench_synced AS s WHERE s.host_id = h.id
            """,
            [revision],
        )
        assert cursor.rowcount == len(counts), (cursor.rowcount, len(counts))
    return time.perf_counter() - start, revision


def verify_counts(fleet: Fleet, sample: int = 3) -> list[int]:
    """The counts set for a few hosts equal what rule delivery computes for them."""
    from hosts.models import Host
    from hosts.selectors import revision_current
    from rules.delivery import add_counts, count_vector, host_rules

    revision = revision_current()
    host_ids = [host_id for host_id, _ in fleet.rng.sample(fleet.hosts, sample)]
    host_ids.append(Host.rules.through.objects.values_list("host_id", flat=True).first())
    for host_id in host_ids:
        computed: dict[str, int] = {}
        for rule in host_rules(host_id, revision):
            add_counts(computed, count_vector(rule))
        stored = Host.objects.values_list("expected_counts", flat=True).get(pk=host_id)
        if stored != {k: v for k, v in computed.items() if v}:
            raise AssertionError(f"host {host_id}: stored {stored}, delivery computes {computed}")
    return host_ids


def position(host_id: int, revision: int) -> None:
    """The host confirmed `revision` at its last postflight and has nothing pending."""
    from hosts.models import Host

    Host.objects.filter(pk=host_id).update(
        rules_synced_rev=revision,
        pending_rev=None,
        pending_counts=None,
        pending_clean=False,
        pending_sync_type="",
    )


# --- the measurements ---------------------------------------------------------------------------


class Agent:
    """What an agent sends for a rule download, through the whole in-process stack."""

    def __init__(self, secret: str):
        from django.test import Client

        self.client = Client(SERVER_NAME="127.0.0.1")
        self.secret = secret

    def ruledownload(self, machine_id: str) -> dict:
        response = self.client.post(
            f"/sync/ruledownload/{machine_id}",
            data=json.dumps({"machine_id": machine_id}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.secret}",
            HTTP_USER_AGENT="santactl-sync/2026.8.1",
        )
        assert response.status_code == 200, (response.status_code, response.content[:300])
        return json.loads(response.content)


def _holds(answer: dict, identifier: str, policy: str) -> bool:
    return any(
        rule["identifier"] == identifier and rule["policy"] == policy
        for rule in answer.get("rules", [])
    )


@dataclass
class SizeResult:
    hosts: int
    series: dict[str, Series] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)


def measure_size(fleet: Fleet, reps: int, warmup: int = 3) -> dict[str, Series]:
    from hosts.models import HostTag
    from hosts.selectors import revision_current
    from rules.models import Rule
    from rules.services import RuleInput, rule_create, rule_delete

    rng, agent = fleet.rng, Agent(fleet.secret)
    series = {name: Series() for name in ("a", "b", "c", "d", "e_tag", "e_delete")}
    created: list[int] = []

    # a, b, c: a rule for everyone, and a random host that had synced just before picking it up.
    for rep in range(warmup + reps):
        host_id, machine_id = rng.choice(fleet.hosts)
        position(host_id, revision_current())
        identifier = _identifier("BINARY", fleet.new_key())
        start = time.perf_counter()
        with counting() as create:
            rule = rule_create(data=RuleInput("BINARY", identifier, "BLOCKLIST"))
        created_at = time.perf_counter()
        with counting() as download:
            answer = agent.ruledownload(machine_id)
        downloaded_at = time.perf_counter()
        got_it = _holds(answer, identifier, "BLOCKLIST")
        received_at = time.perf_counter()
        assert got_it, f"host {machine_id} did not get {identifier}: {answer}"
        created.append(rule.pk)
        if rep >= warmup:
            series["a"].add(created_at - start, create.count)
            series["b"].add(received_at - start, create.count + download.count)
            series["c"].add(downloaded_at - created_at, download.count)

    # d: steady state, the host is at the current revision.
    for rep in range(warmup + reps):
        host_id, machine_id = rng.choice(fleet.hosts)
        position(host_id, revision_current())
        start = time.perf_counter()
        with counting() as download:
            answer = agent.ruledownload(machine_id)
        elapsed = time.perf_counter() - start
        assert answer == {}, answer
        if rep >= warmup:
            series["d"].add(elapsed, download.count)

    # e: a rule for one tag; then delete the rules for everyone created above.
    for rep in range(warmup + reps):
        tag_id = rng.choice(fleet.tag_ids)
        identifier = _identifier("BINARY", fleet.new_key())
        member = None
        if rep == 0:
            member = HostTag.objects.filter(tag_id=tag_id, rev_to__isnull=True).first()
            position(member.host_id, revision_current())
        start = time.perf_counter()
        with counting() as create:
            rule_create(
                data=RuleInput("BINARY", identifier, "ALLOWLIST", tags=(fleet.tag_names[tag_id],))
            )
        elapsed = time.perf_counter() - start
        if member is not None:
            machine_id = dict(fleet.hosts)[member.host_id]
            assert _holds(agent.ruledownload(machine_id), identifier, "ALLOWLIST")
        if rep >= warmup:
            series["e_tag"].add(elapsed, create.count)
    for rep, rule_id in enumerate(created):
        rule = Rule.objects.get(pk=rule_id)
        holder = None
        if rep == 0:
            holder = rng.choice(fleet.hosts)
            position(holder[0], revision_current())
        start = time.perf_counter()
        with counting() as delete:
            rule_delete(rule=rule)
        elapsed = time.perf_counter() - start
        if holder is not None:
            assert _holds(agent.ruledownload(holder[1]), rule.identifier, "REMOVE")
        if rep >= warmup:
            series["e_delete"].add(elapsed, delete.count)
    return series


# --- the workers' side ---------------------------------------------------------------------------

FANOUT_MEASUREMENTS = [
    (
        "fanout_everyone",
        "f. fan-out job of a rule for everyone (worker)",
        "`hosts.fanout.fanout_execute` of the FanOut written by (a)'s kind of change: the "
        "rule's delivery summary (target and confirmed hosts) over the whole fleet.",
    ),
    (
        "fanout_tag",
        "g. fan-out job of a rule for one tag (worker)",
        "The same for a rule scoped to one tag: reads that tag's memberships.",
    ),
    (
        "retag",
        "h. tag rule re-tags the fleet (worker)",
        "`tag_rule_create` of `primary_user matches ^user1` (about 11% of hosts), then its "
        "fan-out job: every host's automatic tags re-evaluated in batches of 1,000 hosts, one "
        "transaction and one revision per batch that changes something (3 runs).",
    ),
]


def measure_fanout_jobs(fleet: Fleet, reps: int) -> dict[str, Series]:
    """What the Celery workers do after a change, run here directly (no broker)."""
    from hosts.fanout import fanout_execute
    from hosts.models import FanOut, FanOutKind
    from hosts.services import tag_rule_create, tag_rule_delete
    from rules.services import RuleInput, rule_create, rules_bulk_delete

    series = {key: Series() for key, _, _ in FANOUT_MEASUREMENTS}
    created = []
    for _ in range(reps):
        for key, tags in (
            ("fanout_everyone", ()),
            ("fanout_tag", (fleet.tag_names[fleet.rng.choice(fleet.tag_ids)],)),
        ):
            identifier = _identifier("BINARY", fleet.new_key())
            rule = rule_create(data=RuleInput("BINARY", identifier, "BLOCKLIST", tags=tags))
            created.append(rule.pk)
            start = time.perf_counter()
            with counting() as counter:
                fanout_execute(rule.fanout_id)
            series[key].add(time.perf_counter() - start, counter.count)
    rules_bulk_delete(rule_ids=created)
    for _ in range(3):
        tag_rule = tag_rule_create(
            tag_name="bench-auto", fact="primary_user", operator="matches", value="^user1"
        )
        fanout = FanOut.objects.filter(kind=FanOutKind.TAG_RULES).latest("id")
        start = time.perf_counter()
        with counting() as counter:
            fanout_execute(fanout.pk)
        series["retag"].add(time.perf_counter() - start, counter.count)
        tag_rule_delete(rule=tag_rule)
        fanout_execute(FanOut.objects.filter(kind=FanOutKind.TAG_RULES).latest("id").pk)
    for fanout_id in FanOut.objects.filter(state="queued").values_list("id", flat=True):
        fanout_execute(fanout_id)  # the bulk delete's job, so the next size starts clean
    return series


# --- EXPLAIN ------------------------------------------------------------------------------------


def explain(fleet: Fleet, out: io.TextIOBase, size: int) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement of three operations, each replayed in a
    transaction that is rolled back (so the database is left as it was)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from hosts.selectors import revision_current
    from rules.models import Rule, RuleVersion
    from rules.services import RuleInput, rule_create, rule_delete

    agent = Agent(fleet.secret)
    host_id, machine_id = fleet.rng.choice(fleet.hosts)
    # Fixed identifiers, so that the replay of each operation is the run that was captured.
    new_for_download = _identifier("BINARY", fleet.new_key())
    new_for_create = _identifier("BINARY", fleet.new_key())
    everyone_rule = (
        RuleVersion.objects.filter(rev_to__isnull=True, scope_all=True, excluded_tag_ids=[])
        .values_list("rule_id", flat=True)
        .first()
    )

    def one_change_behind():
        rule_create(data=RuleInput("BINARY", new_for_download, "BLOCKLIST"))
        position(host_id, revision_current() - 1)
        return lambda: agent.ruledownload(machine_id)

    operations: list[tuple[str, Callable]] = [
        ("incremental ruledownload (one change behind)", one_change_behind),
        (
            "rule_create for everyone",
            lambda: lambda: rule_create(data=RuleInput("BINARY", new_for_create, "BLOCKLIST")),
        ),
        (
            "rule_delete of a rule for everyone",
            lambda: lambda: rule_delete(rule=Rule.objects.get(pk=everyone_rule)),
        ),
    ]
    for title, prepare in operations:
        with transaction.atomic():
            run = prepare()
            with CaptureQueriesContext(connection) as captured:
                run()
            statements = [q["sql"] for q in captured.captured_queries]
            transaction.set_rollback(True)
        out.write(f"\n## {size:,} hosts: {title}\n")
        with transaction.atomic(), connection.cursor() as cursor:
            prepare()
            for sql in statements:
                if not re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", sql, re.I):
                    continue
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                out.write(f"\n{sql}\n{plan}\n")
            transaction.set_rollback(True)
    out.flush()


# --- report -------------------------------------------------------------------------------------

MEASUREMENTS = [
    ("a", "a. create a rule for everyone", "`rule_create` of one BINARY rule scoped to everyone."),
    (
        "b",
        "b. creation → a host has it",
        "From the start of (a) until a random host's RuleDownload answer (in-process POST "
        "through the whole sync stack) is back and holds the rule.",
    ),
    (
        "c",
        "c. incremental RuleDownload, one change behind",
        "`POST /sync/ruledownload/<machine id>` for a host that confirmed the revision just "
        "before (a): one page with the new rule.",
    ),
    (
        "d",
        "d. steady-state RuleDownload",
        "The same POST for a host already at the current revision: answered `{}`.",
    ),
    (
        "e_tag",
        "e. create a rule for one tag",
        "`rule_create` of one BINARY rule scoped to one tag.",
    ),
    (
        "e_delete",
        "e. delete a rule for everyone",
        "`rule_delete` of one of the rules created in (a).",
    ),
]
TABLES = [
    ("hosts", "Host"),
    ("host_tags", "HostTag"),
    ("rules", "Rule"),
    ("rule_versions", "RuleVersion"),
    ("rule_targets", "RuleTarget"),
]


def table_stats() -> dict[str, int]:
    from django.db import connection

    from hosts.models import Host, HostTag
    from rules.models import Rule, RuleTarget, RuleVersion

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        (size,) = cursor.fetchone()
    return {
        "hosts": Host.objects.count(),
        "host_tags": HostTag.objects.count(),
        "rules": Rule.objects.count(),
        "rule_versions": RuleVersion.objects.count(),
        "rule_targets": RuleTarget.objects.count(),
        "database_bytes": size,
    }


def machine_facts() -> dict[str, str]:
    from django.db import connection

    from benchmarks.docs import cpu_model

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (version,) = cursor.fetchone()
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "postgres": version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": sys.version.split()[0],
    }


def source_description() -> str:
    try:
        head = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown source revision"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def render(
    results: list[SizeResult], facts: dict, reps: int, rules: int, rules_load: tuple, source: str
) -> str:
    sizes = [f"{r.hosts:,} hosts" for r in results]
    lines = [
        "## Rule fan-out and incremental rule download",
        "",
        f"`python benchmarks/fanout.py` on {facts['date']}: {facts['cores']} cores "
        f"({facts['cpu']}), "
        f"PostgreSQL {facts['postgres']}, Python {facts['python']}, {source}. One database "
        f"grown step by step; at every size: {TAGS} tags (each host in 0 to 3 of them, "
        "Zipf-sized), "
        f"{rules:,} rules written by `rules_bulk_create` (~70% for everyone, 5% of those "
        "excluding a tag; ~25% for one or two tags; ~5% for one to three hosts), every host "
        "marked as synced to the current revision, then `VACUUM (ANALYZE)`.",
        "",
        f"Each cell: median / p95 over {reps} runs (wall clock in the benchmark process, Django "
        "and PostgreSQL on the same machine, other work running) · SQL statements Django sent "
        "(BEGIN/COMMIT not counted).",
        "",
        "| Measurement | " + " | ".join(sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for key, title, _ in MEASUREMENTS:
        lines.append(f"| {title} | " + " | ".join(r.series[key].cell() for r in results) + " |")
    for key, title, _ in FANOUT_MEASUREMENTS:
        lines.append(f"| {title} | " + " | ".join(r.series[key].cell() for r in results) + " |")
    lines += [""]
    for _, title, description in MEASUREMENTS + FANOUT_MEASUREMENTS:
        lines.append(f"* **{title.split('.')[0]}.** {description}")
    lines += [
        "",
        "| Data after loading | " + " | ".join(sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for key, label in TABLES:
        lines.append(
            f"| {label} rows | " + " | ".join(f"{r.tables[key]:,}" for r in results) + " |"
        )
    lines.append(
        "| Database size | "
        + " | ".join(f"{r.tables['database_bytes'] / 2**20:,.0f} MiB" for r in results)
        + " |"
    )
    for key, label in (
        ("hosts", "COPY new hosts and their tags"),
        ("synced", "Mark every host synced (one UPDATE)"),
        ("vacuum", "VACUUM (ANALYZE)"),
    ):
        lines.append(f"| {label} | " + " | ".join(f"{r.load[key]:.1f} s" for r in results) + " |")
    seconds, statements = rules_load
    lines += [
        "",
        f"Loading the rules: `rules_bulk_create` of {rules:,} rules took {seconds:.1f} s and "
        f"{statements:,} statements (one transaction, one revision), at {results[0].hosts:,} "
        "hosts.",
    ]
    return "\n".join(lines)


def write_doc(path: Path, section: str, facts: dict) -> None:
    block = f"{START}\n{section}\n{END}"
    if path.exists():
        text = path.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = (
            "# Benchmarks\n\n"
            "Figures from `python benchmarks/fanout.py --write` on this machine "
            f"({facts['cores']} cores as reported by `os.cpu_count()`, PostgreSQL "
            f"{facts['postgres']}, {facts['date']}). The script's docstring gives the full "
            "command; each section is replaced when it is run again.\n\n" + block + "\n"
        )
    path.write_text(text)


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes, grown")
    parser.add_argument("--reps", type=int, default=50, help="runs per measurement (>= 30)")
    parser.add_argument("--rules", type=int, default=RULES, help="rules loaded")
    parser.add_argument("--seed", type=int, default=20260801)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--explain", type=Path, help="write EXPLAIN ANALYZE plans to this file")
    parser.add_argument("--source", help="what code is measured (default: git HEAD of the tree)")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))

    setup_django()
    name = bench_database_name()
    prepare_database(name)
    facts = machine_facts()
    source = args.source or source_description()
    explain_out = args.explain.open("w") if args.explain else None
    log = sys.stderr
    try:
        fleet = create_fleet(args.seed)
        results: list[SizeResult] = []
        rules_load = (0.0, 0)
        for size in sizes:
            result = SizeResult(size)
            result.load["hosts"] = grow_hosts(fleet, size)
            print(f"[{size:,}] hosts loaded in {result.load['hosts']:.1f} s", file=log)
            if not results:
                rules_load = load_rules(fleet, args.rules)
                print(f"[{size:,}] {args.rules:,} rules in {rules_load[0]:.1f} s", file=log)
            result.load["synced"], _ = mark_all_synced()
            start = time.perf_counter()
            vacuum_analyze()
            result.load["vacuum"] = time.perf_counter() - start
            checked = verify_counts(fleet)
            print(f"[{size:,}] expected counts verified for hosts {checked}", file=log)
            result.tables = table_stats()
            result.series = measure_size(fleet, args.reps)
            result.series.update(measure_fanout_jobs(fleet, args.reps))
            if explain_out:
                explain(fleet, explain_out, size)
            results.append(result)
            for key, title, _ in MEASUREMENTS + FANOUT_MEASUREMENTS:
                print(f"[{size:,}] {title}: {result.series[key].cell()}", file=log)
        section = render(results, facts, args.reps, args.rules, rules_load, source)
        print(section)
        if args.write:
            write_doc(args.doc, section, facts)
            print(f"wrote {args.doc}", file=log)
    finally:
        from santaadmin.celery import app

        app.control.purge()  # the messages the web side published; no worker ran them
        if explain_out:
            explain_out.close()
        if args.drop:
            drop_database(name)


if __name__ == "__main__":
    main()
