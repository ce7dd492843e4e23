"""Chain the entries written before the hash chain existed, in id order, and create the head."""

from django.db import migrations

from audit import chain

BATCH = 2000


def backfill(apps, schema_editor):
    AuditEntry = apps.get_model("audit", "AuditEntry")
    AuditChain = apps.get_model("audit", "AuditChain")
    entries = AuditEntry.objects.using(schema_editor.connection.alias)
    seq, prev_hash, last_id = 0, chain.GENESIS, 0
    while True:
        batch = list(entries.filter(id__gt=last_id).order_by("id")[:BATCH])
        if not batch:
            break
        seq, prev_hash = chain.chain(batch, seq, prev_hash)
        entries.bulk_update(batch, ["seq", "hash"])
        last_id = batch[-1].id
    AuditChain.objects.using(schema_editor.connection.alias).update_or_create(
        pk=1, defaults={"seq": seq, "hash": prev_hash}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_chain_fields"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
