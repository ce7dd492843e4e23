"""Background report jobs: sending, running, storing the content in chunks, reading it back,
and reconciling jobs whose message or worker was lost.

A job is claimed with one UPDATE (queued, or running with a heartbeat older than STALE_AFTER),
which also takes the next attempt number: two deliveries of one message never both run, and a
job restarted after its worker died writes its chunks under its own attempt, so a late writer
of an earlier attempt cannot mix its chunks in (it stops at its next progress update, which no
longer matches). The content goes through a gzip compressor into `ReportChunk` rows of about
CHUNK_BYTES; progress (rows written, heartbeat) is saved every PROGRESS_EVERY rows.

Without a broker (embedded mode, tasks in-process) a job runs in a thread of the web process,
started when the report's transaction commits, so the request that asked for it returns at
once; the reconciler (beat, or `manage.py periodic`) runs anything a restart interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import connections
from django.db.models import F, Q
from django.utils import timezone

from .formats import ReportStream
from .kinds import KINDS
from .models import Report, ReportChunk, ReportState

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 5000  # rows between two progress updates
CHUNK_BYTES = 1024 * 1024  # compressed size at which a chunk is stored
CHUNK_MAX_RAW = 32 * 1024 * 1024  # ...or uncompressed, for content that compresses very well
STALE_AFTER = timedelta(minutes=15)  # a running job without a heartbeat this long is restarted
# In-process mode runs jobs in a thread; tests switch this off to run them where they are sent.
IN_PROCESS_THREAD = True


class Superseded(Exception):
    """The job was restarted elsewhere, or its report deleted: stop quietly."""


class ChunkWriter:
    """Writes content as gzip members of about CHUNK_BYTES, each one `ReportChunk` row; keeps
    the SHA-256 and size of the uncompressed content."""

    def __init__(self, report_id: int, attempt: int):
        self.report_id, self.attempt = report_id, attempt
        self.seq = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self._start()

    def _start(self) -> None:
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing
        self.parts: list[bytes] = []
        self.compressed = 0
        self.raw = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.raw += len(data)
        out = self.compressor.compress(data)
        if out:
            self.parts.append(out)
            self.compressed += len(out)
        if self.compressed >= CHUNK_BYTES or self.raw >= CHUNK_MAX_RAW:
            self.flush()

    def flush(self) -> None:
        if not self.raw:
            return
        self.parts.append(self.compressor.flush())
        ReportChunk.objects.create(
            report_id=self.report_id, attempt=self.attempt, seq=self.seq, data=b"".join(self.parts)
        )
        self.seq += 1
        self._start()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def stored_content(report: Report, piece: int = 1024 * 1024) -> Iterator[bytes]:
    """A done report's content, decompressed a chunk at a time (one query per chunk, so no
    cursor stays open between pieces of a slow download)."""
    seqs = list(
        ReportChunk.objects.filter(report_id=report.pk, attempt=report.attempts)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    for seq in seqs:
        data = (
            ReportChunk.objects.filter(report_id=report.pk, attempt=report.attempts, seq=seq)
            .values_list("data", flat=True)
            .get()
        )
        decompressor = zlib.decompressobj(31)
        pending = bytes(data)
        while pending:
            out = decompressor.decompress(pending, piece)
            if out:
                yield out
            pending = decompressor.unconsumed_tail
        tail = decompressor.flush()
        if tail:
            yield tail


def _claim(report_id: int) -> int | None:
    """Take the job (the attempt number), or None when it is done, failed or running."""
    now = timezone.now()
    claimable = Q(state=ReportState.QUEUED) | Q(
        state=ReportState.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    )
    taken = Report.objects.filter(claimable, pk=report_id).update(
        state=ReportState.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        rows_written=0,
        error="",
    )
    if not taken:
        return None
    return Report.objects.values_list("attempts", flat=True).get(pk=report_id)


def _mine(report_id: int, attempt: int):
    return Report.objects.filter(pk=report_id, attempts=attempt, state=ReportState.RUNNING)


def report_execute(report_id: int) -> str:
    """Run one report job unless it is finished or running elsewhere; its final state."""
    attempt = _claim(report_id)
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        return "missing"
    if attempt is None:
        return report.state
    # Leftovers of an attempt that died: only the last attempt's chunks are ever read.
    ReportChunk.objects.filter(report_id=report_id).exclude(attempt=attempt).delete()
    try:
        kind = KINDS[report.kind]
        values = kind.parse(report.parameters)
        _mine(report_id, attempt).update(rows_expected=kind.count(values))
        stream = ReportStream(
            kind,
            report.format,
            values,
            parameters=report.parameters,
            generated_at=report.started_at or timezone.now(),
        )
        writer = ChunkWriter(report_id, attempt)
        saved = 0
        for piece in stream:
            writer.write(piece)
            if stream.rows_written - saved >= PROGRESS_EVERY:
                saved = stream.rows_written
                updated = _mine(report_id, attempt).update(
                    rows_written=saved, heartbeat_at=timezone.now()
                )
                if not updated:
                    raise Superseded
        writer.flush()
    except Superseded:
        logger.info("report %s attempt %s superseded; stopping", report_id, attempt)
        ReportChunk.objects.filter(report_id=report_id, attempt=attempt).delete()
        return "superseded"
    except Exception as exc:
        logger.exception("report %s failed", report_id)
        ReportChunk.objects.filter(report_id=report_id, attempt=attempt).delete()
        _mine(report_id, attempt).update(
            state=ReportState.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
        return ReportState.FAILED
    now = timezone.now()
    finished = _mine(report_id, attempt).update(
        state=ReportState.DONE,
        rows_written=stream.rows_written,
        size=writer.size,
        sha256=writer.sha256,
        finished_at=now,
        heartbeat_at=now,
    )
    if not finished:
        ReportChunk.objects.filter(report_id=report_id, attempt=attempt).delete()
        return "superseded"
    return ReportState.DONE


def _run_in_thread(report_id: int) -> None:
    try:
        report_execute(report_id)
    finally:
        connections.close_all()  # this thread's connections only


def report_send(report_id: int) -> bool:
    """Hand the job to a worker; in-process mode, to a thread of this process. Never raises:
    a report still queued is run by the reconciler."""
    from santaadmin.celery import app

    from .tasks import generate_report

    try:
        if app.conf.task_always_eager:
            if IN_PROCESS_THREAD:
                # A daemon: stopping the server does not wait for it (the reconciler reruns it).
                threading.Thread(
                    target=_run_in_thread,
                    args=(report_id,),
                    name=f"report-{report_id}",
                    daemon=True,
                ).start()
            else:
                report_execute(report_id)
        else:
            generate_report.apply_async(args=[report_id], retry=False)
    except Exception:  # broker down: the reconciler runs it
        logger.warning("report %s not sent; the reconciler will run it", report_id, exc_info=True)
        return False
    return True


def report_overdue(now=None):
    """Reports whose job should have started by now, or whose worker stopped beating."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.FANOUT_GRACE_SECONDS)
    return Report.objects.filter(
        Q(state=ReportState.QUEUED, created_at__lte=now - grace)
        | Q(state=ReportState.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    ).order_by("id")


def reports_reconcile(limit: int = 10) -> dict:
    """Run overdue report jobs here, oldest first (lost messages and killed workers only
    delay a report)."""
    ran = {}
    for report_id in report_overdue().values_list("id", flat=True)[:limit]:
        ran[report_id] = report_execute(report_id)
    return ran
