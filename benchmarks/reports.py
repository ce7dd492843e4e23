"""Reports on large data, on PostgreSQL: memory and speed of the streamed exports and of the
background jobs.

Loads the console benchmark's data set (benchmarks/console.py: 100,000 hosts, 1,000,000
execution events, 5,000 rules, 100,000 audit entries) into a dedicated database, turns every
allowed execution into a would-be-blocked one (so that the executions report holds all
1,000,000 events: its worst case), then measures, each in a fresh process:

* a full export of the executions report, CSV and JSON, streamed through the whole Django
  stack (test client: middleware, token, the API view, the streaming response; the content is
  counted and dropped as a server would send it), and the same report as a background job
  writing its gzip chunks to the database, then downloaded: peak RSS above the process's
  baseline, rows/s; and in separate runs the tracemalloc peak of the Python heap;
* every report kind on the large data (CSV, streamed): rows, seconds, rows/s, statements;
* how PostgreSQL plans the executions report (EXPLAIN), to show the partial index at work.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/santaadmin_reports_bench SECRET_KEY=x \\
    ALLOWED_HOSTS=127.0.0.1 CELERY_TASK_ALWAYS_EAGER=1 \\
    .venv/bin/python benchmarks/reports.py [--write] [--reuse] [--drop] [--scale 0.01]

The variables above are the defaults when unset. The database must be named `*_bench`; it is
created when missing and its `public` schema emptied before loading (`--reuse` keeps one this
script loaded completely before). `--write` replaces the section between
`<!-- reports:start -->` and `<!-- reports:end -->` in docs/benchmarks.md.
"""

# The SQL here is written from constants of this file: S608 is noise.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import console, fanout  # noqa: E402 (needs ROOT on the path)
from benchmarks.docs import write_section  # noqa: E402

DEFAULT_ENV = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/santaadmin_reports_bench",
    "SECRET_KEY": "x",
    "ALLOWED_HOSTS": "127.0.0.1",
    "CELERY_BROKER_URL": "",
    "CELERY_TASK_ALWAYS_EAGER": "1",
}
START, END = "<!-- reports:start -->", "<!-- reports:end -->"
META_TABLE = "bench_reports_meta"
USER = "auditor01"


def setup_django(trial: bool = False) -> None:
    for name, value in DEFAULT_ENV.items():
        if trial and name == "DATABASE_URL":
            value = value.replace("_reports_bench", "_reports_trial_bench")
        os.environ.setdefault(name, value)
    fanout.setup_django()


# --- the data -----------------------------------------------------------------------------------


def load_data(seed: int) -> dict:
    """The console benchmark's data, every execution blocked or would-be-blocked, an auditor."""
    from django.contrib.auth.models import Group, User

    from santaadmin.roles import AUDITOR

    timings = console.load_all(seed)
    start = time.perf_counter()
    console.execute(
        "UPDATE events_event SET decision = 'ALLOW_UNKNOWN' "
        "WHERE decision NOT LIKE 'BLOCK\\_%%' AND decision <> 'ALLOW_UNKNOWN'"
    )
    console.execute("VACUUM (ANALYZE) events_event")
    timings["all reported"] = time.perf_counter() - start
    user = User.objects.create(username=USER)
    user.groups.add(Group.objects.get(name=AUDITOR))
    return timings


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
    console.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
    console.execute(
        f"INSERT INTO {META_TABLE} VALUES ('load', %s::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [json.dumps(value)],
    )


# --- one measurement, in its own process --------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _client():
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    api = APIClient(SERVER_NAME="127.0.0.1")
    token, _ = Token.objects.get_or_create(user=User.objects.get(username=USER))
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api


def _consume(pieces) -> tuple[int, int]:
    size = lines = 0
    for piece in pieces:
        size += len(piece)
        lines += piece.count(b"\n")
    return size, lines


def child(spec: dict) -> dict:
    """Run one measurement here; the parent reads the JSON this prints."""
    import tracemalloc

    from django.db import connection
    from django.db.models import F, Func, Sum

    from reports import jobs, services
    from reports.models import Report

    api = _client()
    api.get("/api/v1/reports/", secure=True)  # warm: imports, a connection, the session
    statements = []
    baseline = _rss_kib()
    if spec["trace"]:
        tracemalloc.start()
    start = time.perf_counter()
    with connection.execute_wrapper(lambda call, sql, *a: statements.append(sql) or call(sql, *a)):
        if spec["mode"] == "direct":
            response = api.get(
                f"/api/v1/reports/{spec['kind']}/export/",
                {"format": spec["format"], **spec["params"]},
                secure=True,
            )
            assert response.status_code == 200, response.content
            size, lines = _consume(response.streaming_content)
            rows = lines - 1 if spec["format"] == "csv" else lines - 2
        else:
            original = services.report_send
            services.report_send = lambda report_id: True  # this process is the worker
            try:
                report = services.report_create(
                    kind=spec["kind"],
                    file_format=spec["format"],
                    parameters=spec["params"],
                    actor=None,
                )
            finally:
                services.report_send = original
            state = jobs.report_execute(report.pk)
            report = Report.objects.get(pk=report.pk)
            assert state == "done", report.error
            job_seconds = time.perf_counter() - start
            response = api.get(f"/api/v1/reports/{report.pk}/download/", secure=True)
            size, lines = _consume(response.streaming_content)
            assert size == report.size
            rows = report.rows_written
            spec["job_seconds"] = job_seconds
            spec["chunks"] = report.chunks.count()
            # Summed by the database: loading the chunks here would be the memory measured.
            spec["stored_bytes"] = report.chunks.aggregate(
                n=Sum(Func(F("data"), function="octet_length"))
            )["n"]
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] if spec["trace"] else None
    if spec["trace"]:
        tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        **spec,
        "rows": rows,
        "bytes": size,
        "seconds": seconds,
        "statements": len(statements),
        "baseline_mib": baseline / 1024,
        "peak_rss_mib": peak / 1024,
        "rss_growth_mib": (peak - baseline) / 1024,
        "traced_peak_mib": traced / 2**20 if traced is not None else None,
    }


def measure(spec: dict) -> dict:
    label = f"{spec['mode']} {spec['kind']} {spec['format']} {spec['params'] or ''}"
    print(f"measuring: {label}{' (tracemalloc)' if spec['trace'] else ''} ...", file=sys.stderr)
    completed = subprocess.run(  # noqa: S603 (this script, with a spec it wrote)
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ,
    )
    if completed.returncode != 0:
        sys.exit(f"{label} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(
        f"    {result['rows']:,} rows, {result['bytes'] / 2**20:,.0f} MiB in "
        f"{result['seconds']:.1f} s; RSS +{result['rss_growth_mib']:.1f} MiB"
        + (f", traced {result['traced_peak_mib']:.1f} MiB" if result["traced_peak_mib"] else ""),
        file=sys.stderr,
    )
    return result


def spec(mode: str, kind: str, file_format: str, trace: bool = False, **params) -> dict:
    return {"mode": mode, "kind": kind, "format": file_format, "params": params, "trace": trace}


def _middle() -> str:
    """The time that splits the events in two halves (for a half-size export)."""
    from django.db import connection

    from reports.params import iso

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY execution_time) FROM events_event"
        )
        return iso(cursor.fetchone()[0])


# --- the query plans ----------------------------------------------------------------------------


def plans() -> list[tuple[str, str]]:
    """(what, the plan's node lines) for the executions report's queries."""
    import datetime

    from django.db import connection, transaction
    from django.utils import timezone

    from reports.kinds import executions

    week = (timezone.now() - datetime.timedelta(days=7)).isoformat()
    cases = [
        ("executions, all", {}),
        ("executions, last 7 days", {"since": week}),
        ("executions, last 7 days, by host", {"since": week, "group_by": "host"}),
    ]
    result = []
    for label, params in cases:
        values = executions.Parameters(data=params)
        assert values.is_valid(), values.errors
        data = values.validated_data
        if data.get("group_by"):
            queryset = executions._grouped(
                executions._queryset(data),
                ["host_id"],
                {"binaries": "binary_id", "users": "executing_user"},
            )
        else:
            queryset = (
                executions._queryset(data)
                .order_by("execution_time", "id")
                .values_list(*executions.DETAIL_FIELDS)
            )
        sql, sql_params = queryset.query.sql_with_params()
        # As the report runs it: a cursor (a direct download: inside a transaction; a job:
        # WITH HOLD, in autocommit), which PostgreSQL plans for its first rows.
        found = {}
        for how in ("CURSOR", "CURSOR WITH HOLD"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN DECLARE bench_plan {how} FOR {sql}", sql_params)
                lines = [row[0] for row in cursor.fetchall()]
            nodes = [
                line.strip().removeprefix("->").strip().split("  (")[0]
                for line in lines
                if "cost=" in line
            ]
            found[how] = " → ".join(nodes)
        if found["CURSOR"] == found["CURSOR WITH HOLD"]:
            result.append((f"{label} (with or without HOLD)", found["CURSOR"]))
        else:
            result += [(f"{label} ({how})", plan) for how, plan in found.items()]
    return result


# --- report -------------------------------------------------------------------------------------


def render(memory: list[dict], kinds: list[dict], query_plans, facts, stats, load, source) -> str:
    events = stats["events_event"]
    lines = [
        "## Reports on large data",
        "",
        f"`python benchmarks/reports.py` on {facts['date']}: {facts['cores']} cores "
        f"({facts['cpu']}), "
        f"PostgreSQL {facts['postgres']}, Python {facts['python']}, {source}. The console "
        f"benchmark's data ({stats['hosts_host']:,} hosts, {events:,} execution events, "
        f"{stats['rules_rule']:,} rules, {stats['audit_auditentry']:,} audit entries) with every "
        "allowed execution turned into a would-be-blocked one, so that the executions report "
        f"holds all {events:,} events. Each figure comes from a fresh process: the report is "
        "requested from the API through the whole Django stack (test client) and its content "
        "counted and dropped as a server sends it; a background job is run by the process "
        "itself, as a worker would, then its stored content downloaded.",
        "",
        "Memory: peak RSS of the process above its baseline (Django loaded, one request "
        "served), and, in a separate run, the peak of the Python heap (tracemalloc). Neither "
        "grows with the rows: half the rows take the same memory as all of them.",
        "",
        "| Export of all executions | Rows | Size | Time | Rows/s | Peak RSS above baseline "
        "| tracemalloc peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_key = {}
    for result in memory:
        key = (result["mode"], result["format"], json.dumps(result["params"]))
        by_key.setdefault(key, {}).update(
            {"traced": result} if result["trace"] else {"plain": result}
        )
    for (mode, file_format, params), pair in by_key.items():
        plain, traced = pair.get("plain"), pair.get("traced")
        label = (
            f"direct stream, {file_format.upper()}"
            if mode == "direct"
            else f"background job + download, {file_format.upper()}"
        )
        if json.loads(params):
            label += ", the first half of the period"
        if mode == "job" and plain:
            label += (
                f" (job {plain['job_seconds']:.0f} s, {plain['chunks']} chunks, "
                f"{plain['stored_bytes'] / 2**20:.0f} MiB stored)"
            )
        traced_cell = f"{traced['traced_peak_mib']:.1f} MiB" if traced else "—"
        lines.append(
            f"| {label} | {plain['rows']:,} | {plain['bytes'] / 2**20:,.0f} MiB "
            f"| {plain['seconds']:.0f} s | {plain['rows'] / plain['seconds']:,.0f} "
            f"| {plain['rss_growth_mib']:.1f} MiB | {traced_cell} |"
        )
    lines += [
        "",
        "Every report on the same data, CSV, streamed (statements: SQL statements Django sent, "
        "the request's own included; a chunk is 2,000 rows):",
        "",
        "| Report | Rows | Size | Time | Rows/s | Statements | Peak RSS above baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in kinds:
        params = ", ".join(f"{k}={v}" for k, v in result["params"].items())
        label = f"{result['kind']}" + (f" ({params})" if params else "")
        rate = result["rows"] / result["seconds"] if result["seconds"] else 0
        lines.append(
            f"| {label} | {result['rows']:,} | {result['bytes'] / 2**20:,.1f} MiB "
            f"| {result['seconds']:.1f} s | {rate:,.0f} | {result['statements']} "
            f"| {result['rss_growth_mib']:.1f} MiB |"
        )
    lines += ["", "How PostgreSQL plans the executions report (EXPLAIN DECLARE):", ""]
    lines += [f"* {label}: `{plan}`" for label, plan in query_plans]
    if load:
        steps = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in load.items())
        lines += ["", f"Loading took {sum(load.values()):.0f} s ({steps})."]
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    write_section(path, START, END, section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--reuse", action="store_true", help="keep a completely loaded database")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--source", help="what code is measured (default: git HEAD of the tree)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every data size (a quick trial: 0.01)"
    )
    args = parser.parse_args(argv)
    trial = args.scale != 1.0
    if trial:
        console.scale(args.scale)
    setup_django(trial=trial)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    name = fanout.bench_database_name()
    try:
        load = meta_read() if args.reuse else None
        if load is not None:
            print(f"reusing {name} (loaded before)", file=sys.stderr)
            console.migrate_only()
        else:
            fanout.prepare_database(name)
            load = load_data(args.seed)
            meta_write(load)
        facts = fanout.machine_facts()
        source = args.source or fanout.source_description()
        stats = console.table_stats()
        memory = [measure(spec("direct", "executions", "csv", until=_middle()))]
        for file_format in ("csv", "json"):
            memory.append(measure(spec("direct", "executions", file_format)))
            if not args.no_trace:
                memory.append(measure(spec("direct", "executions", file_format, trace=True)))
            memory.append(measure(spec("job", "executions", file_format)))
        kinds = [
            measure(spec("direct", "rules", "csv")),
            measure(spec("direct", "hosts", "csv")),
            measure(spec("direct", "hosts", "csv", noncompliant="true")),
            measure(spec("direct", "audit", "csv")),
            *(
                measure(spec("direct", "executions", "csv", group_by=group))
                for group in ("host", "user", "binary", "signer")
            ),
        ]
        section = render(memory, kinds, plans(), facts, stats, load, source)
        print(section)
        if args.write:
            write_doc(args.doc, section)
            print(f"wrote {args.doc}", file=sys.stderr)
    finally:
        if args.drop:
            fanout.drop_database(name)


if __name__ == "__main__":
    main()
