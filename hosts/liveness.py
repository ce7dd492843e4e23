"""Last-seen times and sync history, written behind the request.

A steady-state preflight changes nothing about a host but when it was last seen (and so when it
would turn stale), and a steady-state postflight nothing but when it finished plus one row of
sync history. Those writes are bookkeeping, not sync state: each web process collects them and
writes them every SYNC_WRITE_BEHIND_SECONDS in one transaction — one UPDATE per host, sorted by
id so that two processes never lock rows in opposite orders, and one INSERT of the history rows.
A preflight or postflight that changes anything else (facts, drift, a clean sync, the rule
position) writes synchronously, as before. What a crash can lose is bounded by the interval:
at most that many seconds of last-seen times and history rows, never a rule position, an event
or a setting.

With SYNC_WRITE_BEHIND_SECONDS = 0 (the embedded default) the same statements run at once, in
the request.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from santaadmin.db import prepared_cursor

from .models import Host, HostSync

logger = logging.getLogger("santaadmin.sync")

# Beyond this many hosts waiting (the database has been away for a while), the oldest are
# dropped with a warning: they are last-seen times, and the next sync of each host brings its
# own again.
MAX_PENDING = 200_000


@dataclass
class _Seen:
    preflight_at: object = None
    stale_after: object = None
    postflight_at: object = None


class LivenessWriter:
    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[int, _Seen] = {}
        self._syncs: list[HostSync] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._stopping = False

    # --- recording (request threads) -------------------------------------------------------

    def preflight(self, host_id: int, at, stale_after) -> None:
        with self._lock:
            seen = self._seen.setdefault(host_id, _Seen())
            seen.preflight_at = _later(seen.preflight_at, at)
            seen.stale_after = _later(seen.stale_after, stale_after)
        self._after_record()

    def postflight(self, host_id: int, at, sync: HostSync) -> None:
        with self._lock:
            seen = self._seen.setdefault(host_id, _Seen())
            seen.postflight_at = _later(seen.postflight_at, at)
            self._syncs.append(sync)
        self._after_record()

    def _after_record(self) -> None:
        interval = settings.SYNC_WRITE_BEHIND_SECONDS
        if interval <= 0:
            self.flush()
            return
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self._start()
        if len(self._seen) > MAX_PENDING:
            self._wake.set()

    def _start(self) -> None:
        # After a fork (gunicorn workers), the parent's thread does not exist in the child.
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="santaadmin-liveness", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Flush, end the thread and close its database connection (tests; process exit)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._stopping = True
            self._wake.set()
            thread.join(30)
        self._thread = None
        self.flush()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopping:
            # Wake at least twice a second, so a changed interval applies without a restart.
            interval = settings.SYNC_WRITE_BEHIND_SECONDS
            self._wake.wait(max(0.01, min(interval - (time.monotonic() - last), 0.5)))
            if not self._wake.is_set() and time.monotonic() - last < interval:
                continue
            self._wake.clear()
            last = time.monotonic()
            try:
                self.flush()
            except Exception:
                logger.exception("Writing last-seen times failed; retrying")
                connection.close()
        try:
            self.flush()
        finally:
            connection.close()

    # --- writing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what was collected (in the calling thread); returns the hosts written."""
        with self._lock:
            seen, syncs = self._seen, self._syncs
            self._seen, self._syncs = {}, []
        if not seen and not syncs:
            return 0
        try:
            _write(seen, syncs)
        except DatabaseError:
            with self._lock:  # keep them for the next attempt, newest values winning
                for host_id, values in seen.items():
                    mine = self._seen.setdefault(host_id, _Seen())
                    for name in ("preflight_at", "stale_after", "postflight_at"):
                        setattr(mine, name, _later(getattr(mine, name), getattr(values, name)))
                self._syncs[:0] = syncs
                while len(self._seen) > MAX_PENDING:
                    dropped = next(iter(self._seen))
                    del self._seen[dropped]
                    logger.warning("Dropped the last-seen time of host %s (backlog)", dropped)
                del self._syncs[: max(0, len(self._syncs) - MAX_PENDING)]
            raise
        return len(seen)


def _later(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _write(seen: dict[int, _Seen], syncs: list[HostSync]) -> None:
    table = Host._meta.db_table
    preflights = [
        (v.preflight_at, v.preflight_at, v.stale_after, v.stale_after, host_id)
        for host_id, v in sorted(seen.items())
        if v.preflight_at is not None
    ]
    postflights = [
        (v.postflight_at, v.postflight_at, host_id)
        for host_id, v in sorted(seen.items())
        if v.postflight_at is not None
    ]
    with transaction.atomic():
        with prepared_cursor() as cursor:
            # Later times only: a slower process's older value never overwrites a newer one.
            # A host that preflighted is not stale, whatever the periodic task marked meanwhile.
            if preflights:
                cursor.executemany(
                    f"UPDATE {table} SET "  # noqa: S608 - the model's table name
                    "last_preflight_at = CASE WHEN last_preflight_at IS NULL "
                    "OR last_preflight_at < %s THEN %s ELSE last_preflight_at END, "
                    "stale_after = CASE WHEN stale_after IS NULL OR stale_after < %s "
                    "THEN %s ELSE stale_after END, stale_since = NULL WHERE id = %s",
                    preflights,
                )
            if postflights:
                cursor.executemany(
                    f"UPDATE {table} SET "  # noqa: S608 - the model's table name
                    "last_postflight_at = CASE WHEN last_postflight_at IS NULL "
                    "OR last_postflight_at < %s THEN %s ELSE last_postflight_at END "
                    "WHERE id = %s",
                    postflights,
                )
        if syncs:
            # A host deleted meanwhile takes its history with it: skip rows whose host is gone.
            existing = set(
                Host.objects.filter(pk__in={s.host_id for s in syncs}).values_list("pk", flat=True)
            )
            HostSync.objects.bulk_create([s for s in syncs if s.host_id in existing])


writer = LivenessWriter()


def flush() -> None:
    """Write what this process collected (at exit: gunicorn's worker_exit hook, atexit)."""
    try:
        writer.stop()
    except Exception:
        logger.exception("Could not write last-seen times at exit")


atexit.register(flush)
