"""Reports are streamed in constant memory, with a bounded number of queries per chunk of rows
(never per row). Timings are not measured here: benchmarks/reports.py does."""

from __future__ import annotations

import gc
import math
import tracemalloc

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.models import Binary, Event
from hosts.models import Host
from reports import jobs
from reports import kinds as kinds_module
from reports.models import Report
from rules.services import RuleInput, rules_bulk_create
from tests.reports_support import body_of, export_bytes, insert_events, jobs_inline  # noqa: F401

SHA = "4d" * 32
T0 = 1767225600
MIB = 1024 * 1024


# --- memory ---------------------------------------------------------------------------------------

N = 40_000
# What one chunk of rows and one piece of output take (about 5 MiB), with room. Holding the
# rows or the output would take more: 2N rows are 20 MiB of CSV, 51 MiB of JSON.
BOUND = 8 * MIB


def _peak_while_consuming(response) -> tuple[int, int, int]:
    """(peak traced bytes, bytes streamed, lines) while iterating the response's content,
    which is counted and dropped piece by piece, as a server writes it to the socket."""
    gc.collect()
    tracemalloc.start()
    try:
        size = lines = 0
        for piece in response.streaming_content:
            size += len(piece)
            lines += piece.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size, lines


@pytest.fixture
def host_and_binary(agent):
    agent.sync()
    agent.upload_events(
        [{"file_sha256": SHA, "decision": "BLOCK_BINARY", "execution_time": T0, "pid": 1}]
    )
    return Host.objects.get(machine_id=agent.machine_id), Binary.objects.get(pk=SHA)


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_export_memory_does_not_grow_with_the_rows(host_and_binary, auditor_api, file_format):
    host, binary = host_and_binary
    peaks = []
    for total in (N, 2 * N):
        insert_events(
            host_id=host.pk,
            binary_id=binary.pk,
            first=Event.objects.count() + 1,
            count=total - Event.objects.count() + 1,
        )
        assert Event.objects.count() == total + 1
        response = auditor_api.get("/api/v1/reports/executions/export/", {"format": file_format})
        assert response.status_code == 200
        peak, size, lines = _peak_while_consuming(response)
        assert lines >= total + 1
        peaks.append(peak)
    assert size > 2 * BOUND  # the content of 2N rows: holding it would exceed the bound
    assert max(peaks) < BOUND, peaks
    assert peaks[1] < 1.5 * peaks[0], peaks  # twice the rows, not twice the memory


MILLION = 1_000_000
# Holding a million rows or their output would take hundreds of MiB (the CSV alone is about
# 250 MiB on SQLite, 480 MiB on PostgreSQL); streaming them takes one chunk of rows and one
# piece of output at a time.
MILLION_BOUND = 64 * MIB


def _peak_rss_growth_while_consuming(response) -> tuple[int, int, int]:
    """(growth of the process's peak resident memory, bytes streamed, lines) while iterating the
    response's content, counted and dropped piece by piece. The kernel's high-water mark
    (VmHWM) is reset first through /proc/self/clear_refs, so the peak is this export's alone;
    unlike tracemalloc it costs nothing per allocation, which a million rows need."""

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    baseline = status("VmRSS")
    size = lines = 0
    for piece in response.streaming_content:
        size += len(piece)
        lines += piece.count(b"\n")
    return status("VmHWM") - baseline, size, lines


def test_a_million_events_are_exported_in_constant_memory(host_and_binary, auditor_api):
    """The issue's measure: one million events exported as CSV through the API, streamed
    without holding them (benchmarks/reports.py measures the same export's time and memory
    on PostgreSQL)."""
    host, binary = host_and_binary
    insert_events(host_id=host.pk, binary_id=binary.pk, first=2, count=MILLION - 1)
    assert Event.objects.count() == MILLION
    response = auditor_api.get("/api/v1/reports/executions/export/", {"format": "csv"})
    assert response.status_code == 200 and response.streaming
    growth, size, lines = _peak_rss_growth_while_consuming(response)
    assert lines == MILLION + 1  # the header and every event
    assert size > 3 * MILLION_BOUND  # holding the output would exceed the bound three times over
    assert growth < MILLION_BOUND, f"peak resident memory grew by {growth / MIB:.1f} MiB"


def test_stored_report_download_is_read_a_chunk_at_a_time(
    host_and_binary,
    auditor_api,
    django_capture_on_commit_callbacks,
    monkeypatch,
    jobs_inline,  # noqa: F811
):
    host, binary = host_and_binary
    insert_events(host_id=host.pk, binary_id=binary.pk, first=2, count=N)
    monkeypatch.setattr(jobs, "CHUNK_BYTES", 256 * 1024)
    with django_capture_on_commit_callbacks(execute=True):
        report_id = auditor_api.post(
            "/api/v1/reports/", {"kind": "executions", "format": "json"}, format="json"
        ).json()["id"]
    report = Report.objects.get(pk=report_id)
    assert report.state == "done" and report.chunks.count() >= 3
    response = auditor_api.get(f"/api/v1/reports/{report_id}/download/")
    peak, size, lines = _peak_while_consuming(response)
    assert (size, lines) == (report.size, N + 3)
    assert size > 2 * BOUND  # 26 MiB
    assert peak < BOUND


# --- queries per chunk ----------------------------------------------------------------------------

ROWS = 12
SMALL_CHUNK = 3


@pytest.fixture
def fleet(make_agent, django_capture_on_commit_callbacks):
    """ROWS hosts (tagged), each with blocked executions by its own user; ROWS rules of two
    types with tags, excluded tags and listed hosts."""
    from hosts.services import host_set_tags, profile_create

    agents = [make_agent(hostname=f"mac-{n:02d}.example.com") for n in range(ROWS)]
    profile_create(name="lab", values={"client_mode": "LOCKDOWN"}, tag_names=["lab"])
    for n, agent in enumerate(agents):
        agent.sync()
        host_set_tags(
            host=Host.objects.get(machine_id=agent.machine_id), tag_names=["lab", f"t{n % 3}"]
        )
        agent.upload_events(
            [
                {
                    "file_sha256": f"{n:02d}" * 32,
                    "decision": "BLOCK_BINARY",
                    "execution_time": T0 + n,
                    "executing_user": f"user{n:02d}",
                    "team_id": f"TEAM{n:06d}",
                    "signing_chain": [{"sha256": f"{n + 50:02d}" * 32, "cn": f"cert {n}"}],
                    "pid": n,
                }
            ]
        )
    items = [
        RuleInput(
            "BINARY" if n % 2 else "TEAMID",
            f"{n:02d}" * 32 if n % 2 else f"TEAM{n:06d}",
            "BLOCKLIST",
            tags=("lab",) if n % 3 == 0 else (),
            excluded_tags=("t1",) if n % 3 == 1 else (),
            machine_ids=(agents[n].machine_id,) if n % 3 == 2 else (),
        )
        for n in range(ROWS)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        rules_bulk_create(items=items)
    return agents


def _queries(api, kind: str, **params) -> int:
    with CaptureQueriesContext(connection) as captured:
        export_bytes(api, kind, **params)
    return len(captured.captured_queries)


# Queries a chunk of rows may cost at most, by report: the rules' tags, excluded tags, hosts,
# approval requests, audit entries and one per rule type for the last executions; the hosts'
# tags and three for their configuration; one lookup for grouped executions and the audit log.
# Each case also names a filter keeping about a quarter of its rows.
FIRST_THREE = {"until": "2026-01-01T00:00:03Z"}
CASES = [
    ("rules", {}, {"tag": "lab"}, 8),
    ("hosts", {}, {"tag": "t1"}, 4),
    ("executions", {}, FIRST_THREE, 0),
    ("executions", {"group_by": "host"}, FIRST_THREE, 1),
    ("executions", {"group_by": "user"}, FIRST_THREE, 0),
    ("executions", {"group_by": "binary"}, FIRST_THREE, 1),
    ("executions", {"group_by": "signer"}, FIRST_THREE, 1),
    ("audit", {"object_type": "rule"}, {"q": "TEAM00001"}, 1),
]


@pytest.mark.parametrize(("kind", "params", "few", "per_chunk"), CASES)
def test_queries_depend_on_chunks_not_rows(
    fleet, auditor_api, monkeypatch, kind, params, few, per_chunk
):
    monkeypatch.setattr(kinds_module, "CHUNK_SIZE", 1000)
    one_chunk = _queries(auditor_api, kind, **params)
    monkeypatch.setattr(kinds_module, "CHUNK_SIZE", SMALL_CHUNK)
    chunks = math.ceil(ROWS / SMALL_CHUNK)  # the audit case: one rule.bulk_create entry a rule
    many_chunks = _queries(auditor_api, kind, **params)
    assert many_chunks <= one_chunk + (chunks - 1) * per_chunk, (one_chunk, many_chunks)


@pytest.mark.parametrize(("kind", "params", "few", "per_chunk"), CASES)
def test_queries_do_not_grow_with_rows_in_a_chunk(
    fleet, auditor_api, monkeypatch, kind, params, few, per_chunk
):
    monkeypatch.setattr(kinds_module, "CHUNK_SIZE", 1000)
    everything = _queries(auditor_api, kind, **params)
    rows = len(export_bytes(auditor_api, kind, **params, **few).splitlines()) - 1
    assert 0 < rows <= ROWS // 3, rows
    # The same statements for a quarter of the rows (the filter may add one, e.g. a tag).
    assert everything <= _queries(auditor_api, kind, **params, **few) + 1


def test_background_job_writes_progress_per_few_thousand_rows_not_per_row(
    host_and_binary,
    auditor_api,
    django_capture_on_commit_callbacks,
    jobs_inline,  # noqa: F811
):
    host, binary = host_and_binary
    insert_events(host_id=host.pk, binary_id=binary.pk, first=2, count=3 * jobs.PROGRESS_EVERY)
    with (
        CaptureQueriesContext(connection) as captured,
        django_capture_on_commit_callbacks(execute=True),
    ):
        auditor_api.post("/api/v1/reports/", {"kind": "executions"}, format="json")
    updates = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith('UPDATE "reports_report"') and "rows_written" in q["sql"]
    ]
    # Claiming, three progress updates, done: not one per row.
    assert 3 <= len(updates) <= 6, updates
    assert Report.objects.get().rows_written == 3 * jobs.PROGRESS_EVERY + 1
    assert body_of(auditor_api.get(f"/api/v1/reports/{Report.objects.get().pk}/download/"))
