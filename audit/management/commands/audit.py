"""`audit verify`: walk the hash chain and name the first broken entry."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Subquery

from audit import chain
from audit.models import AuditChain, AuditEntry

BATCH = 2000
FIELDS = ("id", "seq", "hash", *chain.HASHED_FIELDS, *chain.OPTIONAL_FIELDS)


def verify(batch_size: int = BATCH) -> int:
    """The number of entries checked; raises CommandError naming the first broken one.

    Reads the head first and checks the entries up to it in seq order, a batch at a time
    (constant memory), so entries appended meanwhile are left for the next run."""
    head = AuditChain.objects.filter(pk=1).values("seq", "hash").first()
    if head is None:
        if AuditEntry.objects.exists():
            raise CommandError("audit chain broken: the chain head (audit_auditchain) is missing")
        return 0
    expected_seq, prev_hash, last = 1, chain.GENESIS, None
    while True:
        rows = list(
            AuditEntry.objects.filter(seq__gte=expected_seq, seq__lte=head["seq"])
            .order_by("seq")
            .values(*FIELDS)[:batch_size]
        )
        for row in rows:
            where = f"entry seq {row['seq']} (id {row['id']})"
            if row["seq"] != expected_seq:
                raise CommandError(
                    f"audit chain broken at {where}: seq {expected_seq} to {row['seq'] - 1} "
                    "missing (entries deleted)"
                )
            if chain.entry_hash(prev_hash, row["seq"], row) != row["hash"]:
                raise CommandError(
                    f"audit chain broken at {where}: its hash does not match its contents and "
                    "the previous entry's hash (the entry was edited or forged, or the one "
                    "before it was)"
                )
            prev_hash, expected_seq, last = row["hash"], row["seq"] + 1, row
        if len(rows) < batch_size:
            break
    checked = expected_seq - 1
    if checked != head["seq"] or prev_hash != head["hash"]:
        after = f"entry seq {last['seq']} (id {last['id']})" if last else "the start"
        raise CommandError(
            f"audit chain broken after {after}: the chain head is at seq {head['seq']} with "
            f"hash {head['hash']}, the last entry at seq {checked} with hash {prev_hash} "
            "(entries removed from the end, or the head was altered)"
        )
    head_seq = AuditChain.objects.filter(pk=1).values("seq")
    beyond = (
        AuditEntry.objects.filter(seq__gt=Subquery(head_seq[:1]))
        .order_by("seq")
        .values("seq", "id")
        .first()
    )
    if beyond is not None:
        raise CommandError(
            f"audit chain broken at entry seq {beyond['seq']} (id {beyond['id']}): it lies "
            "beyond the chain head (inserted without moving the head)"
        )
    return checked


class Command(BaseCommand):
    help = "Audit trail tools. `audit verify` checks the hash chain."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        check = sub.add_parser("verify", help="check the hash chain; name the first broken entry")
        check.add_argument("--batch-size", type=int, default=BATCH)

    def handle(self, *args, action, batch_size=BATCH, **options):
        if action == "verify":
            count = verify(batch_size=batch_size)
            self.stdout.write(f"audit chain intact: {count} entries")
