"""Event ingestion: the only code that writes events and the binary/certificate catalogue.

A batch is validated whole before anything is written, then stored in one transaction with a
constant number of statements. Agents re-send batches (retries after a lost response, and the
same event both out of band and in the next sync, protocol.md §5.4.3), so every event carries a
dedupe key derived from its natural identity and duplicates are dropped by the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Mod
from django.utils import timezone

from hosts.models import Host
from santaadmin.db import prepared_cursor, upsert

from .models import (
    Binary,
    Bundle,
    BundleBinary,
    Certificate,
    Decision,
    Event,
    EventUpload,
    FileAccessDecision,
    FileAccessEvent,
)
from .stats import stats_count, stats_record_binaries, stats_record_pairs

logger = logging.getLogger("santaadmin.events")
# Django builds a choices' .values list on every access: once here, for every event.
_DECISIONS = frozenset(Decision.values)
_FILE_ACCESS_DECISIONS = frozenset(FileAccessDecision.values)
_SHA256 = re.compile(r"[0-9a-f]{64}")
BUNDLE_BINARY = "BUNDLE_BINARY"


class InvalidEvent(Exception):
    status = 400
    code = "invalid_event"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class CertificateIn:
    sha256: str
    cn: str = ""
    org: str = ""
    ou: str = ""
    valid_from: int = 0  # epoch seconds
    valid_until: int = 0


@dataclass(frozen=True)
class EventIn:
    """One execution event as reported (domain names; times in epoch seconds)."""

    file_sha256: str
    decision: str
    execution_time: float | None = None
    file_path: str = ""
    file_name: str = ""
    executing_user: str = ""
    logged_in_users: tuple[str, ...] = ()
    current_sessions: tuple[str, ...] = ()
    pid: int | None = None
    ppid: int | None = None
    parent_name: str = ""
    team_id: str = ""
    signing_id: str = ""
    cdhash: str = ""
    cs_flags: int | None = None
    signing_status: str = ""
    secure_signing_time: int = 0
    signing_time: int = 0
    static_rule: bool = False
    signing_chain: tuple[CertificateIn, ...] = ()
    entitlements: tuple[tuple[str | None, str | None], ...] = ()
    entitlements_filtered: bool | None = None
    file_bundle_id: str = ""
    file_bundle_path: str = ""
    file_bundle_executable_rel_path: str = ""
    file_bundle_name: str = ""
    file_bundle_version: str = ""
    file_bundle_version_string: str = ""
    file_bundle_hash: str = ""
    file_bundle_hash_millis: int | None = None
    file_bundle_binary_count: int | None = None
    quarantine_data_url: str = ""
    quarantine_referer_url: str = ""
    quarantine_timestamp: int = 0
    quarantine_agent_bundle_id: str = ""


@dataclass(frozen=True)
class FileAccessEventIn:
    rule_name: str = ""
    rule_version: str = ""
    target: str = ""
    decision: str = "FILE_ACCESS_DECISION_UNKNOWN"
    access_time: float | None = None
    process_chain: tuple[dict, ...] = ()


@dataclass
class IngestResult:
    events: int = 0
    file_access_events: int = 0
    bundle_binaries_wanted: list[str] = field(default_factory=list)


# --- validation ---------------------------------------------------------------------------------


def _timestamp(value: float | int | None, what: str, *, required: bool = False):
    """Epoch seconds -> aware datetime; 0/absent -> None."""
    if value in (None, 0):
        if required:
            raise InvalidEvent(f"{what} is required.")
        return None
    try:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError
        return datetime.fromtimestamp(value, tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidEvent(f"{what} {value!r} is not a valid time.") from None


def _check_sha256(value: str, what: str) -> str:
    if not _SHA256.fullmatch(value.lower()):
        raise InvalidEvent(f"{what} must be a SHA-256 (64 hex characters), got {value[:80]!r}.")
    return value.lower()


def _validate_event(index: int, event: EventIn) -> dict:
    where = f"events[{index}]"
    sha = _check_sha256(event.file_sha256, f"{where}.file_sha256")
    if event.decision not in _DECISIONS:
        raise InvalidEvent(f"{where}.decision {event.decision!r} is not a decision.")
    is_bundle_binary = event.decision == BUNDLE_BINARY
    execution_time = _timestamp(
        event.execution_time, f"{where}.execution_time", required=not is_bundle_binary
    )
    bundle_hash = event.file_bundle_hash.lower()
    if bundle_hash:
        _check_sha256(bundle_hash, f"{where}.file_bundle_hash")
    elif is_bundle_binary:
        raise InvalidEvent(f"{where}: a BUNDLE_BINARY event needs file_bundle_hash.")
    chain = [
        {
            "sha256": _check_sha256(cert.sha256, f"{where}.signing_chain[{n}].sha256"),
            "cn": cert.cn,
            "org": cert.org,
            "ou": cert.ou,
            "valid_from": cert.valid_from,
            "valid_until": cert.valid_until,
        }
        for n, cert in enumerate(event.signing_chain)
    ]
    for cert in event.signing_chain:
        _timestamp(cert.valid_from, "valid_from")
        _timestamp(cert.valid_until, "valid_until")
    return {
        "sha": sha,
        "execution_time": execution_time,
        "bundle_hash": bundle_hash,
        "chain": chain,
        "quarantine_timestamp": _timestamp(event.quarantine_timestamp, "quarantine_timestamp"),
        "secure_signing_time": _timestamp(event.secure_signing_time, "secure_signing_time"),
        "signing_time": _timestamp(event.signing_time, "signing_time"),
    }


def _dedupe_key(*parts) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


# --- ingestion ----------------------------------------------------------------------------------


@dataclass
class EventBatch:
    """A validated batch, ready to store: what the catalogue rows are built from (the batch's
    last mention of each hash), and event rows without their host."""

    cert_sources: dict[str, dict]
    binary_sources: dict[str, tuple[EventIn, dict]]
    bundle_sources: dict[str, EventIn]
    received_at: datetime
    bundle_members: set[tuple[str, str]]
    event_rows: dict[str, dict]  # dedupe key -> the event's columns (attnames), host unset
    faa_rows: list[FileAccessEvent]
    blocked_bundles: set[str]  # bundle hashes of non-BUNDLE_BINARY events


def events_check(*, events: list[EventIn], file_access_events: list[FileAccessEventIn]) -> set[str]:
    """Validate a batch as events_prepare does (InvalidEvent for the first fault), without
    building its rows; returns the bundle hashes of its blocking events (§5.4.4)."""
    blocked = set()
    for n, event in enumerate(events):
        bundle_hash = _validate_event(n, event)["bundle_hash"]
        if bundle_hash and event.decision != BUNDLE_BINARY:
            blocked.add(bundle_hash)
    for n, event in enumerate(file_access_events):
        _check_file_access(n, event)
    return blocked


def events_prepare(
    *,
    machine_id: str,
    events: list[EventIn],
    file_access_events: list[FileAccessEventIn],
    received_at: datetime | None = None,
) -> EventBatch:
    """Validate a whole batch before anything is written (InvalidEvent for the first fault)."""
    now = received_at or timezone.now()
    checked = [_validate_event(n, event) for n, event in enumerate(events)]
    faa_rows = [
        _file_access_row(machine_id, n, event, now) for n, event in enumerate(file_access_events)
    ]

    # Catalogue rows are built once per hash, from the batch's last event that names it
    # (later facts win, as they would one upload after another).
    cert_sources: dict[str, dict] = {}
    binary_sources: dict[str, tuple[EventIn, dict]] = {}
    bundle_sources: dict[str, EventIn] = {}
    bundle_members: set[tuple[str, str]] = set()
    blocked_bundles: set[str] = set()
    event_rows: dict[str, dict] = {}
    for event, facts in zip(events, checked, strict=True):
        sha = facts["sha"]
        for cert in facts["chain"]:
            cert_sources[cert["sha256"]] = cert
        binary_sources[sha] = (event, facts)
        if facts["bundle_hash"]:
            bundle_sources[facts["bundle_hash"]] = event
            if event.decision == BUNDLE_BINARY:
                bundle_members.add((facts["bundle_hash"], sha))
            else:
                blocked_bundles.add(facts["bundle_hash"])
        if event.decision == BUNDLE_BINARY:
            key = _dedupe_key(machine_id, BUNDLE_BINARY, facts["bundle_hash"], sha)
        else:
            key = _dedupe_key(machine_id, sha, event.execution_time, event.decision, event.pid)
        event_rows[key] = _event_row(key, event, facts, now)
    return EventBatch(
        cert_sources,
        binary_sources,
        bundle_sources,
        now,
        bundle_members,
        event_rows,
        faa_rows,
        blocked_bundles,
    )


def _catalogue_rows(batches: list[EventBatch]):
    """Certificate, Binary and Bundle rows of several batches, each built once, from the last
    batch that names it (later uploads' facts win, as they would one after another)."""
    certs: dict[str, tuple[dict, datetime]] = {}
    binaries: dict[str, tuple[EventIn, dict, datetime]] = {}
    bundles: dict[str, tuple[EventIn, datetime]] = {}
    for batch in batches:
        now = batch.received_at
        certs.update((sha, (cert, now)) for sha, cert in batch.cert_sources.items())
        binaries.update((sha, (*source, now)) for sha, source in batch.binary_sources.items())
        bundles.update((h, (event, now)) for h, event in batch.bundle_sources.items())
    certificates = {
        sha: Certificate(
            sha256=sha,
            cn=cert["cn"],
            org=cert["org"],
            ou=cert["ou"],
            valid_from=_timestamp(cert["valid_from"], "valid_from"),
            valid_until=_timestamp(cert["valid_until"], "valid_until"),
            first_seen_at=now,
            last_seen_at=now,
        )
        for sha, (cert, now) in certs.items()
    }
    binary_rows = {
        sha: _binary_row(event, facts, now) for sha, (event, facts, now) in binaries.items()
    }
    bundle_rows = {h: _bundle_row(event, h, now) for h, (event, now) in bundles.items()}
    return certificates, binary_rows, bundle_rows


@dataclass
class IngestItem:
    host: Host
    batch: EventBatch
    bundles_enabled: bool = False


def events_ingest(*, host: Host, batch: EventBatch, bundles_enabled: bool) -> IngestResult:
    """Store a validated batch (all or nothing) and update the catalogue."""
    [result] = events_ingest_many([IngestItem(host, batch, bundles_enabled)])
    return result


def events_ingest_many(items: list[IngestItem]) -> list[IngestResult]:
    """Store validated batches of any hosts (all or nothing) and update the catalogue, with the
    statements of one batch: what is uploaded together is written together."""
    certificates, binaries, bundles = _catalogue_rows([item.batch for item in items])
    bundle_members: set[tuple[str, str]] = set()
    event_rows: dict[str, dict] = {}
    faa_rows: list[FileAccessEvent] = []
    for item in items:
        batch = item.batch
        bundle_members |= batch.bundle_members
        for key, row in batch.event_rows.items():
            row["host_id"] = item.host.pk
            event_rows[key] = row
        for row in batch.faa_rows:
            row.host = item.host
            faa_rows.append(row)
    with transaction.atomic():
        if event_rows:
            # One upload per host at a time: event keys are per host, so under these locks
            # the "already stored" check below is exact and a replay is never counted twice.
            # Taken in id order, the order of the write-behind's host updates (Host's default
            # ordering, by machine id, let a drain and a flush deadlock), and as NO KEY
            # UPDATE: a plain FOR UPDATE also blocks the key-share lock of every foreign-key
            # check on the host, so each upload accepted meanwhile (an EventUpload row points
            # at its host) waited for the whole drain.
            host_ids = sorted({row["host_id"] for row in event_rows.values()})
            list(
                Host.objects.select_for_update(no_key=True)
                .filter(pk__in=host_ids)
                .order_by("pk")
                .values_list("pk")
            )
        # What is the batch's own comes first: its events and per-host counts. The rows that
        # concurrent drains may share (per-user counts, certificates, bundles, binaries, daily
        # counts) come after, each table in key order, so that every drain locks them in the
        # same order, and the most shared (binaries, daily counts) for the shortest time; the
        # foreign keys to them are checked at commit (PostgreSQL's are deferred).
        new: list[dict] = []
        if event_rows:
            # Replays (the agent retries; events are uploaded out of band too) are stored
            # once and counted once: only keys not yet stored feed the statistics.
            stored = _stored_keys(list(event_rows))
            new = [event_rows[k] for k in sorted(event_rows) if k not in stored]
            _insert_events(new)
        if faa_rows:
            FileAccessEvent.objects.bulk_create(faa_rows, ignore_conflicts=True, batch_size=500)
        counts = stats_count(new)
        stats_record_pairs(counts)
        upsert(
            Certificate,
            [certificates[k] for k in sorted(certificates)],
            unique_fields=["sha256"],
            update_fields=["cn", "org", "ou", "valid_from", "valid_until", "last_seen_at"],
        )
        upsert(
            Bundle,
            [bundles[k] for k in sorted(bundles)],
            unique_fields=["bundle_hash"],
            update_fields=[
                "bundle_id",
                "name",
                "path",
                "version",
                "version_string",
                "binary_count",
                "last_seen_at",
            ],
        )
        stats_record_binaries(counts, [binaries[k] for k in sorted(binaries)])
        if bundle_members:
            BundleBinary.objects.bulk_create(
                [BundleBinary(bundle_id=b, binary_id=s) for b, s in sorted(bundle_members)],
                ignore_conflicts=True,
            )
            Bundle.objects.filter(pk__in={b for b, _ in bundle_members}).update(
                uploaded_binary_count=Subquery(
                    BundleBinary.objects.filter(bundle_id=OuterRef("pk"))
                    .values("bundle_id")
                    .annotate(n=Count("binary_id"))
                    .values("n")
                )
            )

    results = []
    for item in items:
        wanted = []
        if item.bundles_enabled and item.batch.blocked_bundles:
            # Ask for every binary of bundles whose blocking event arrived here and whose
            # binaries are not all known yet (§5.4.4: bundle hashes, not binary hashes).
            asked = item.batch.blocked_bundles
            complete = {
                bundle.bundle_hash
                for bundle in Bundle.objects.filter(pk__in=asked)
                if bundle.complete
            }
            wanted = sorted(asked - complete)
        results.append(IngestResult(len(item.batch.event_rows), len(item.batch.faa_rows), wanted))
    return results


def _binary_row(event: EventIn, facts: dict, now) -> Binary:
    chain = facts["chain"]
    return Binary(
        sha256=facts["sha"],
        file_name=event.file_name,
        file_path=event.file_path,
        team_id=event.team_id,
        signing_id=event.signing_id,
        cdhash=event.cdhash,
        signing_status=event.signing_status,
        leaf_certificate_id=chain[0]["sha256"] if chain else None,
        signing_chain=[cert["sha256"] for cert in chain],
        entitlements=[{"key": k, "value": v} for k, v in event.entitlements],
        file_bundle_id=event.file_bundle_id,
        file_bundle_name=event.file_bundle_name,
        file_bundle_version_string=event.file_bundle_version_string,
        first_seen_at=now,
        last_seen_at=now,
    )


def _bundle_row(event: EventIn, bundle_hash: str, now) -> Bundle:
    return Bundle(
        bundle_hash=bundle_hash,
        bundle_id=event.file_bundle_id,
        name=event.file_bundle_name,
        path=event.file_bundle_path,
        version=event.file_bundle_version,
        version_string=event.file_bundle_version_string,
        binary_count=event.file_bundle_binary_count or 0,
        first_seen_at=now,
        last_seen_at=now,
    )


def _event_row(key: str, event: EventIn, facts: dict, now) -> dict:
    """An event's columns (attnames), as Event would hold them."""
    return dict(
        dedupe_key=key,
        binary_id=facts["sha"],
        decision=event.decision,
        execution_time=facts["execution_time"],
        received_at=now,
        file_path=event.file_path,
        file_name=event.file_name,
        executing_user=event.executing_user,
        logged_in_users=list(event.logged_in_users),
        current_sessions=list(event.current_sessions),
        pid=event.pid,
        ppid=event.ppid,
        parent_name=event.parent_name,
        team_id=event.team_id,
        signing_id=event.signing_id,
        cdhash=event.cdhash,
        cs_flags=event.cs_flags,
        signing_status=event.signing_status,
        secure_signing_time=facts["secure_signing_time"],
        signing_time=facts["signing_time"],
        static_rule=event.static_rule,
        signing_chain=facts["chain"],
        entitlements=[{"key": k, "value": v} for k, v in event.entitlements],
        entitlements_filtered=event.entitlements_filtered,
        file_bundle_id=event.file_bundle_id,
        file_bundle_path=event.file_bundle_path,
        file_bundle_executable_rel_path=event.file_bundle_executable_rel_path,
        file_bundle_name=event.file_bundle_name,
        file_bundle_version=event.file_bundle_version,
        file_bundle_version_string=event.file_bundle_version_string,
        file_bundle_hash=facts["bundle_hash"],
        file_bundle_hash_millis=event.file_bundle_hash_millis,
        file_bundle_binary_count=event.file_bundle_binary_count,
        quarantine_data_url=event.quarantine_data_url,
        quarantine_referer_url=event.quarantine_referer_url,
        quarantine_timestamp=facts["quarantine_timestamp"],
        quarantine_agent_bundle_id=event.quarantine_agent_bundle_id,
    )


def _stored_keys(keys: list[str]) -> set[str]:
    """Which of these dedupe keys are stored already. On PostgreSQL one array parameter (a
    statement of 10,000 placeholders cost more to build and parse than to run)."""
    if connection.vendor == "postgresql":
        with prepared_cursor() as cursor:
            cursor.execute(
                f"SELECT dedupe_key FROM {Event._meta.db_table} "  # noqa: S608
                "WHERE dedupe_key = ANY(%s)",
                [keys],
            )
            return {key for (key,) in cursor.fetchall()}
    return set(Event.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))


EVENT_COLUMNS = tuple(f.attname for f in Event._meta.concrete_fields if not f.primary_key)
_EVENT_JSON = frozenset(
    f.attname for f in Event._meta.concrete_fields if f.get_internal_type() == "JSONField"
)


def _insert_events(rows: list[dict]) -> None:
    """Insert new events (the caller holds their hosts' locks and left out stored keys). On
    PostgreSQL with COPY: no statement to parse and plan per batch, no model instances; a
    drain of 10,000 events spent most of its time building and binding an INSERT."""
    if not rows:
        return
    table = Event._meta.db_table
    quote = connection.ops.quote_name
    columns = ", ".join(quote(Event._meta.get_field(name).column) for name in EVENT_COLUMNS)
    json_columns = [name in _EVENT_JSON for name in EVENT_COLUMNS]
    if connection.vendor == "postgresql":
        sql = f"COPY {quote(table)} ({columns}) FROM STDIN"
        start = time.monotonic()
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        orjson.dumps(row[name]).decode() if is_json else row[name]
                        for name, is_json in zip(EVENT_COLUMNS, json_columns, strict=True)
                    ]
                )
        if connection.queries_logged:  # counted like any statement (tests, debug)
            connection.queries_log.append(
                {"sql": f"{sql} -- {len(rows)} rows", "time": f"{time.monotonic() - start:.3f}"}
            )
        return
    adapt = connection.ops.adapt_datetimefield_value
    values = []
    for row in rows:
        line = []
        for name, is_json in zip(EVENT_COLUMNS, json_columns, strict=True):
            value = row[name]
            if is_json:
                value = orjson.dumps(value).decode()
            elif isinstance(value, datetime):
                value = adapt(value)
            line.append(value)
        values.append(line)
    placeholders = ", ".join(["%s"] * len(EVENT_COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {quote(table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
            "ON CONFLICT (dedupe_key) DO NOTHING",
            values,
        )


def _check_file_access(index: int, event: FileAccessEventIn) -> datetime:
    """The event's access time, once the event is known to be valid."""
    where = f"file_access_events[{index}]"
    if event.decision not in _FILE_ACCESS_DECISIONS:
        raise InvalidEvent(f"{where}.decision {event.decision!r} is not a file-access decision.")
    return _timestamp(event.access_time, f"{where}.access_time", required=True)


def _file_access_row(machine_id: str, index: int, event: FileAccessEventIn, now) -> FileAccessEvent:
    access_time = _check_file_access(index, event)
    first = event.process_chain[0] if event.process_chain else {}
    key = _dedupe_key(
        machine_id,
        "faa",
        event.rule_name,
        event.rule_version,
        event.target,
        event.access_time,
        event.decision,
        first.get("pid"),
        first.get("file_sha256"),
    )
    return FileAccessEvent(
        dedupe_key=key,
        rule_name=event.rule_name,
        rule_version=event.rule_version,
        target=event.target,
        decision=event.decision,
        access_time=access_time,
        process_chain=list(event.process_chain),
        received_at=now,
    )


# --- deferred ingestion ---------------------------------------------------------------------------

# PostgreSQL advisory locks DRAIN_LOCK + k: one drainer per share of the hosts at a time.
DRAIN_LOCK = 0x5A17A_E7E
MAX_DRAIN_ATTEMPTS = 5
# What an upload itself can cause. Anything else (the database unreachable, a lock timeout, a
# deadlock) rolls the whole drain back and the next one retries it, counting no attempt.
_DATA_ERRORS = (InvalidEvent, ValueError, TypeError, KeyError, DataError, IntegrityError)


def _payload(events: list[EventIn], file_access_events: list[FileAccessEventIn]) -> bytes:
    return orjson.dumps({"events": events, "file_access_events": file_access_events})


def _from_payload(payload: bytes) -> tuple[list[EventIn], list[FileAccessEventIn]]:
    document = orjson.loads(payload)
    events = [
        EventIn(
            **{
                **item,
                "logged_in_users": tuple(item["logged_in_users"]),
                "current_sessions": tuple(item["current_sessions"]),
                "signing_chain": tuple(CertificateIn(**c) for c in item["signing_chain"]),
                "entitlements": tuple(tuple(pair) for pair in item["entitlements"]),
            }
        )
        for item in document["events"]
    ]
    faa = [
        FileAccessEventIn(**{**item, "process_chain": tuple(item["process_chain"])})
        for item in document["file_access_events"]
    ]
    return events, faa


def events_defer(
    *,
    host: Host,
    events: list[EventIn],
    file_access_events: list[FileAccessEventIn],
    received_at: datetime,
) -> None:
    """Accept a batch already validated by events_prepare: one INSERT, committed before the
    agent is answered; events_drain stores it."""
    table = EventUpload._meta.db_table
    with prepared_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (host_id, received_at, payload, attempts, error) "  # noqa: S608
            "VALUES (%s, %s, %s, 0, '')",
            [
                host.pk,
                connection.ops.adapt_datetimefield_value(received_at),
                _payload(events, file_access_events),
            ],
        )


@dataclass
class _Waiting:
    pk: int
    host: Host
    received_at: datetime
    payload: bytes


def _claim(limit: int, share: int, shares: int) -> list[_Waiting]:
    """The oldest waiting uploads of one share of the hosts (host id modulo `shares`) not
    claimed by another drain, locked (their hosts are not: ingestion locks those itself, in
    order). Values, not model instances: building 500 EventUploads with their hosts cost a
    fifth of a drain."""
    waiting_uploads = EventUpload.objects.select_for_update(skip_locked=True, of=("self",)).filter(
        attempts__lt=MAX_DRAIN_ATTEMPTS
    )
    if shares > 1:
        waiting_uploads = waiting_uploads.alias(share=Mod("host_id", shares)).filter(share=share)
    rows = waiting_uploads.order_by("id").values_list(
        "id", "host_id", "host__machine_id", "received_at", "payload"
    )[:limit]
    hosts: dict[int, Host] = {}
    waiting = []
    for pk, host_id, machine_id, received_at, payload in rows:
        host = hosts.get(host_id)
        if host is None:
            host = hosts[host_id] = Host(pk=host_id, machine_id=machine_id)
        waiting.append(_Waiting(pk, host, received_at, bytes(payload)))
    return waiting


def _prepared(upload: _Waiting) -> IngestItem:
    events, faa = _from_payload(upload.payload)
    batch = events_prepare(
        machine_id=upload.host.machine_id,
        events=events,
        file_access_events=faa,
        received_at=upload.received_at,
    )
    return IngestItem(upload.host, batch)


def _shares() -> int:
    """How many drains may run at once, each on its own share of the hosts (PostgreSQL; SQLite
    has one writer)."""
    if connection.vendor != "postgresql":
        return 1
    return max(1, settings.SYNC_EVENT_DRAINERS)


def _share_order(shares: int) -> list[int]:
    """Every share once, starting at one of this process's own: two processes that drain at
    the same moment start on different shares."""
    first = os.getpid() % shares
    return [(first + n) % shares for n in range(shares)]


def events_drain(*, limit: int = 500) -> int:
    """Store up to `limit` waiting uploads of each share of the hosts (SYNC_EVENT_DRAINERS),
    each share in one transaction, and delete them; returns how many were stored."""
    shares = _shares()
    return sum(_drain_share(share, shares, limit) or 0 for share in _share_order(shares))


def _drain_share(share: int, shares: int, limit: int) -> int | None:
    """Store up to `limit` waiting uploads of one share of the hosts in one transaction and
    delete them; returns how many, or None when another process is draining that share (on
    PostgreSQL one process drains a share at a time, and uploads are claimed with SKIP
    LOCKED). Drains of different shares run side by side: they lock different hosts, and the
    catalogue rows they share in the same order (events_ingest_many). An upload that cannot
    be stored (which validation at upload time should make impossible) is set aside after
    MAX_DRAIN_ATTEMPTS with its error, instead of blocking the others; a failure of the
    database itself leaves every upload waiting, its attempts untouched."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [DRAIN_LOCK + share])
                if not cursor.fetchone()[0]:
                    return None
        uploads = _claim(limit, share, shares)
        if not uploads:
            return 0
        try:
            with transaction.atomic():
                events_ingest_many([_prepared(upload) for upload in uploads])
        except _DATA_ERRORS:
            logger.exception(
                "Storing %d waiting uploads failed; storing them one by one", len(uploads)
            )
        else:
            EventUpload.objects.filter(pk__in=[u.pk for u in uploads]).delete()
            return len(uploads)
        stored = 0
        for upload in uploads:
            try:
                with transaction.atomic():
                    events_ingest_many([_prepared(upload)])
            except _DATA_ERRORS as exc:
                EventUpload.objects.filter(pk=upload.pk).update(
                    attempts=F("attempts") + 1, error=f"{type(exc).__name__}: {exc}"[:2000]
                )
                continue
            EventUpload.objects.filter(pk=upload.pk).delete()
            stored += 1
        return stored


def events_drain_all(*, limit: int = 500) -> int:
    """Drain until nothing is waiting, share by share (a share another process is draining is
    left to it)."""
    shares = _shares()
    total = 0
    for share in _share_order(shares):
        while True:
            done = _drain_share(share, shares, limit)
            total += done or 0
            if done is None or done < limit:
                break
    return total


# --- retention ----------------------------------------------------------------------------------


def events_prune(*, now=None, batch: int = 10_000) -> dict:
    """Delete execution and file-access events received more than EVENT_RETENTION_DAYS ago.

    Deletes in batches of primary keys, each its own short transaction, so a large backlog
    never holds long locks or one huge transaction. The catalogue (binaries, certificates,
    bundles) is kept: rules and approvals refer to it.
    """
    days = settings.EVENT_RETENTION_DAYS
    if days <= 0:
        return {"events": 0, "file_access_events": 0, "retention_days": days}
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = {}
    for model, label in ((Event, "events"), (FileAccessEvent, "file_access_events")):
        total = 0
        while True:
            ids = list(
                model.objects.filter(received_at__lt=cutoff)
                .order_by("id")
                .values_list("id", flat=True)[:batch]
            )
            if not ids:
                break
            total += model.objects.filter(id__in=ids).delete()[0]
        deleted[label] = total
    deleted["retention_days"] = days
    return deleted
