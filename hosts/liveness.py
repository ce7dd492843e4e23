"""Last-seen times and sync history, written behind the request.

A steady-state preflight changes nothing about a host but when it was last seen (and so when it
would turn stale), and a steady-state postflight nothing but when it finished plus one row of
sync history. Those writes are bookkeeping, not sync state: each web process collects them and
writes them every SYNC_WRITE_BEHIND_SECONDS in one transaction — one UPDATE per host, sorted by
id so that two processes never lock rows in opposite orders, and one INSERT of the history rows.
The same thread stores deferred event uploads (SYNC_DEFER_EVENTS, events.services.events_drain).
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
from contextlib import nullcontext
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
    eventupload_at: object = None


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

    def eventupload(self, host_id: int, at) -> None:
        with self._lock:
            seen = self._seen.setdefault(host_id, _Seen())
            seen.eventupload_at = _later(seen.eventupload_at, at)
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
        # After a fork (server workers), the parent's thread does not exist in the child.
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
        failing_since = None
        while not self._stopping:
            # Wake at least twice a second, so a changed interval applies without a restart.
            interval = settings.SYNC_WRITE_BEHIND_SECONDS
            if interval <= 0:
                break  # writes happen in the request now
            self._wake.wait(max(0.01, min(interval - (time.monotonic() - last), 0.5)))
            if not self._wake.is_set() and time.monotonic() - last < interval:
                continue
            self._wake.clear()
            last = time.monotonic()
            try:
                self.flush()
                if settings.SYNC_DEFER_EVENTS:
                    from events.services import events_drain_all

                    events_drain_all()
            except Exception:
                # Once per outage with the traceback, not at every tick while it lasts.
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.exception("Background sync writes failed; retrying")
                connection.close()
            else:
                if failing_since is not None:
                    logger.warning(
                        "Background sync writes resumed after %.0f s",
                        time.monotonic() - failing_since,
                    )
                    failing_since = None
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
                    for name in ("preflight_at", "stale_after", "postflight_at", "eventupload_at"):
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


def _latest(column: str, ts: str) -> str:
    """SQL: the column, moved to the parameter when that is given and later."""
    return (
        f"{column} = CASE WHEN {ts} IS NOT NULL AND ({column} IS NULL OR {column} < {ts}) "
        f"THEN {ts} ELSE {column} END"
    )


def _write(seen: dict[int, _Seen], syncs: list[HostSync]) -> None:
    table = Host._meta.db_table
    # Typed on PostgreSQL: a parameter that is NULL must still have a type to compare.
    ts = "CAST(%s AS timestamptz)" if connection.vendor == "postgresql" else "%s"
    adapt = connection.ops.adapt_datetimefield_value
    rows = []
    for host_id, v in sorted(seen.items()):  # one row each, in id order: no deadlock
        values = [adapt(v.preflight_at), adapt(v.stale_after), adapt(v.postflight_at)]
        values.append(adapt(v.eventupload_at))
        rows.append([value for value in values for _ in range(3)] + [values[0], host_id])
    # One transaction when history rows go with the times; one statement needs none.
    with transaction.atomic() if syncs else nullcontext():
        if rows:
            with prepared_cursor() as cursor:
                # Later times only: a slower process's older value never overwrites a newer
                # one. A host that preflighted is not stale, whatever the periodic task marked
                # meanwhile.
                cursor.executemany(
                    f"UPDATE {table} SET "  # noqa: S608 - the model's table name
                    + ", ".join(
                        _latest(column, ts)
                        for column in (
                            "last_preflight_at",
                            "stale_after",
                            "last_postflight_at",
                            "last_eventupload_at",
                        )
                    )
                    + f", stale_since = CASE WHEN {ts} IS NOT NULL THEN NULL ELSE stale_since END"
                    " WHERE id = %s",
                    rows,
                )
        if syncs:
            # A host deleted meanwhile takes its history with it: skip rows whose host is gone.
            existing = set(
                Host.objects.filter(pk__in={s.host_id for s in syncs}).values_list("pk", flat=True)
            )
            HostSync.objects.bulk_create([s for s in syncs if s.host_id in existing])


writer = LivenessWriter()


def flush() -> None:
    """Write what this process collected (at exit)."""
    try:
        writer.stop()
    except Exception:
        logger.exception("Could not write last-seen times at exit")


atexit.register(flush)
