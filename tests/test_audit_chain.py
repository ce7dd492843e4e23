"""The audit trail is hash-chained: `audit verify` finds an edited, deleted, forged or
truncated entry and names the first broken one."""

import importlib
import io
import itertools

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from audit import chain
from audit.models import AuditChain, AuditEntry
from audit.services import audit_record, audit_record_many
from hosts.services import enrollment_create
from rules.services import RuleInput, rule_create, rule_update, rules_bulk_create

SHA = "c" * 64


def verify(batch_size=None):
    """The command's output; raises CommandError when the chain is broken."""
    out = io.StringIO()
    args = ["audit", "verify"] + ([f"--batch-size={batch_size}"] if batch_size else [])
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def by_seq():
    return list(AuditEntry.objects.order_by("seq"))


@pytest.fixture
def trail(db):
    """Entries written by real service calls."""
    rule = rule_create(data=RuleInput("BINARY", SHA, "BLOCKLIST", comment="malware"))
    rule_update(rule=rule, data=RuleInput("BINARY", SHA, "ALLOWLIST", comment="vetted"))
    enrollment_create(name="laptops", tag_names=["eng"])
    rules_bulk_create(
        items=[RuleInput("BINARY", f"{n:064x}", "BLOCKLIST") for n in range(5)],
        justification="import",
    )
    entries = by_seq()
    assert len(entries) >= 8
    return entries


def test_a_chain_built_by_services_verifies(trail):
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    assert trail[0].hash == chain.entry_hash(chain.GENESIS, 1, trail[0])
    for before, entry in itertools.pairwise(trail):
        assert entry.hash == chain.entry_hash(before.hash, entry.seq, entry)
    head = AuditChain.objects.get()
    assert (head.seq, head.hash) == (trail[-1].seq, trail[-1].hash)
    assert verify() == f"audit chain intact: {len(trail)} entries"
    # Small batches walk the same chain.
    assert verify(batch_size=3) == f"audit chain intact: {len(trail)} entries"


def test_an_empty_trail_verifies(db):
    assert verify() == "audit chain intact: 0 entries"


def test_editing_a_row_is_caught_and_named(trail):
    victim = trail[3]
    sql("UPDATE audit_auditentry SET justification = %s WHERE id = %s", ["nothing", victim.pk])
    with pytest.raises(CommandError) as caught:
        verify(batch_size=2)
    message = str(caught.value)
    assert f"seq {victim.seq} (id {victim.pk})" in message
    assert "does not match its contents" in message


def test_editing_json_values_is_caught(trail):
    victim = next(e for e in trail if e.after)
    sql("UPDATE audit_auditentry SET after = NULL WHERE id = %s", [victim.pk])
    with pytest.raises(CommandError, match=f"seq {victim.seq} "):
        verify()


def test_deleting_a_middle_row_is_caught(trail):
    victim = trail[2]
    sql("DELETE FROM audit_auditentry WHERE id = %s", [victim.pk])
    with pytest.raises(CommandError) as caught:
        verify()
    following = trail[3]
    assert f"seq {following.seq} (id {following.pk})" in str(caught.value)
    assert f"seq {victim.seq} to {victim.seq} missing" in str(caught.value)


def test_deleting_the_first_row_is_caught(trail):
    sql("DELETE FROM audit_auditentry WHERE id = %s", [trail[0].pk])
    with pytest.raises(CommandError, match="seq 1 to 1 missing"):
        verify()


def test_deleting_the_last_row_is_caught(trail):
    sql("DELETE FROM audit_auditentry WHERE id = %s", [trail[-1].pk])
    with pytest.raises(CommandError) as caught:
        verify()
    message = str(caught.value)
    assert f"after entry seq {trail[-2].seq} (id {trail[-2].pk})" in message
    assert f"chain head is at seq {trail[-1].seq}" in message


def test_rehashing_a_forged_row_without_fixing_the_rest_is_caught(trail):
    victim, following = trail[4], trail[5]
    victim.justification = "forged"
    forged = chain.entry_hash(trail[3].hash, victim.seq, victim)
    sql(
        "UPDATE audit_auditentry SET justification = %s, hash = %s WHERE id = %s",
        ["forged", forged, victim.pk],
    )
    with pytest.raises(CommandError) as caught:
        verify()
    assert f"seq {following.seq} (id {following.pk})" in str(caught.value)


def test_rewriting_the_tail_without_the_head_is_caught(trail):
    last = trail[-1]
    last.justification = "forged"
    forged = chain.entry_hash(trail[-2].hash, last.seq, last)
    sql(
        "UPDATE audit_auditentry SET justification = %s, hash = %s WHERE id = %s",
        ["forged", forged, last.pk],
    )
    with pytest.raises(CommandError, match="chain head is at seq"):
        verify()


def test_a_row_inserted_beyond_the_head_is_caught(trail):
    sql(
        "INSERT INTO audit_auditentry (at, actor_name, action, object_type, object_id,"
        " object_repr, justification, seq, hash) VALUES (%s, 'x', 'x', 'x', '', '', '', %s, %s)",
        [trail[-1].at, trail[-1].seq + 1, "f" * 64],
    )
    with pytest.raises(CommandError, match="beyond the chain head"):
        verify()


def test_a_missing_head_is_caught(trail):
    sql("DELETE FROM audit_auditchain")
    with pytest.raises(CommandError, match=r"head .* is missing"):
        verify()


def test_bulk_writes_chain_one_entry_after_another(db):
    with transaction.atomic():
        audit_record(action="x.one", object_type="thing", object_id=1)
        audit_record_many(
            action="x.many",
            object_type="thing",
            objects=[(n, f"thing {n}", None, {"n": n, "at": (n, n)}) for n in range(25)],
            justification="bulk",
        )
        audit_record(action="x.last", object_type="thing", object_id=2)
    entries = by_seq()
    assert [e.seq for e in entries] == list(range(1, 28))
    assert [e.action for e in entries] == ["x.one"] + ["x.many"] * 25 + ["x.last"]
    assert verify() == "audit chain intact: 27 entries"


def test_entries_made_directly_are_chained_too(db):
    AuditEntry.objects.create(actor_name="x", action="a", object_type="t", object_id=7)
    AuditEntry.objects.bulk_create(
        [AuditEntry(actor_name="y", action="b", object_type="t", object_id=n) for n in range(3)]
    )
    AuditEntry.objects.create(
        actor_name="z", action="c", object_type="t", source_ip="::ffff:10.0.0.1"
    )
    assert verify() == "audit chain intact: 5 entries"
    with pytest.raises(RuntimeError):
        AuditEntry.objects.get(action="a").save()


def test_a_rolled_back_write_leaves_the_chain_intact(db):
    with transaction.atomic():
        audit_record(action="kept", object_type="t")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        audit_record(action="rolled-back", object_type="t")
        1 / 0  # noqa: B018
    with transaction.atomic():
        audit_record(action="after", object_type="t")
    assert [e.action for e in by_seq()] == ["kept", "after"]
    assert verify() == "audit chain intact: 2 entries"


def test_the_migration_backfill_chains_existing_entries(trail, monkeypatch):
    # As before the chain existed: no seq, no hash, no head.
    sql("UPDATE audit_auditentry SET seq = -id, hash = ''")
    sql("DELETE FROM audit_auditchain")
    backfill = importlib.import_module("audit.migrations.0003_chain_backfill")
    monkeypatch.setattr(backfill, "BATCH", 3)  # several batches

    class SchemaEditor:
        connection = connection

    backfill.backfill(apps, SchemaEditor())
    assert [e.pk for e in by_seq()] == sorted(e.pk for e in trail)
    assert verify() == f"audit chain intact: {len(trail)} entries"
    with transaction.atomic():
        audit_record(action="later", object_type="t")
    assert verify() == f"audit chain intact: {len(trail) + 1} entries"
