"""The hash chain over the audit trail: each entry's hash covers its contents and the hash of
the entry before it, so editing, deleting or inserting a row breaks the chain from there on.

hash(n) = SHA-256(hash(n-1) + canonical JSON of entry n), the first entry chaining from
GENESIS. The canonical form is sorted-key compact JSON of `seq` and the content fields, times
as ISO 8601 in UTC. `AuditChain` (one row) holds the last seq and hash: writers lock it for the
length of their transaction, so two writers cannot fork the chain, and `audit verify` compares
it with the last entry to notice a truncated tail.

Optional fields (`actor_token`, added later) are in the canonical document only when they are
not empty, so entries written before they existed keep their hashes and verify unchanged,
while a value set on such an entry afterwards (or changed on a new one) breaks the chain.

The actor's user id is not hashed: the foreign key is set to NULL when an account is deleted
(the entry keeps the actor's name, which is hashed), and that must not break the chain.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json

GENESIS = "0" * 64

HASHED_FIELDS = (
    "at",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "before",
    "after",
    "justification",
    "source_ip",
)
# Hashed only when not empty (see above).
OPTIONAL_FIELDS = ("actor_token",)


def normalize_ip(value):
    """The text form the database gives back (PostgreSQL's inet normalizes addresses)."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return value
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _time(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def canonical(seq: int, fields) -> bytes:
    """`fields`: a mapping or an object with the HASHED_FIELDS (and, where set, the
    OPTIONAL_FIELDS) as keys or attributes."""
    if isinstance(fields, dict):
        document = {name: fields.get(name) for name in HASHED_FIELDS}
        optional = {name: fields.get(name) for name in OPTIONAL_FIELDS}
    else:
        document = {name: getattr(fields, name) for name in HASHED_FIELDS}
        # Historical models (the chain backfill migration) lack the later fields.
        optional = {name: getattr(fields, name, "") for name in OPTIONAL_FIELDS}
    document.update({name: value for name, value in optional.items() if value})
    document["seq"] = seq
    document["at"] = _time(document["at"])
    document["source_ip"] = normalize_ip(document["source_ip"])
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, seq: int, fields) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(seq, fields)).hexdigest()


TEXT_FIELDS = ("actor_name", "action", "object_type", "object_id", "object_repr", "justification")


def _normalize(entry) -> None:
    """Store what the database will give back, so the hash computed now verifies later."""
    for name in TEXT_FIELDS:
        value = getattr(entry, name)
        setattr(entry, name, "" if value is None else str(value))
    for name in OPTIONAL_FIELDS:
        if hasattr(entry, name):
            value = getattr(entry, name)
            setattr(entry, name, "" if value is None else str(value))
    for name in ("before", "after"):
        value = getattr(entry, name)
        if value is not None:
            setattr(entry, name, json.loads(json.dumps(value)))
    entry.source_ip = normalize_ip(entry.source_ip)


def chain(entries, seq: int, prev_hash: str) -> tuple[int, str]:
    """Give each unsaved entry the next seq and its hash; returns the new (seq, hash) head."""
    for entry in entries:
        seq += 1
        _normalize(entry)
        entry.seq = seq
        entry.hash = entry_hash(prev_hash, seq, entry)
        prev_hash = entry.hash
    return seq, prev_hash
