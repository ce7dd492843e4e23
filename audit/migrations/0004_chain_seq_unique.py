from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_chain_backfill"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditentry",
            name="seq",
            field=models.BigIntegerField(unique=True),
        ),
    ]
