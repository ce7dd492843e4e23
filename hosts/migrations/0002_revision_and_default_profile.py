from django.db import migrations


def create(apps, schema_editor):
    apps.get_model("hosts", "Revision").objects.get_or_create(pk=1, defaults={"value": 0})
    Profile = apps.get_model("hosts", "ConfigurationProfile")
    if not Profile.objects.filter(is_default=True).exists():
        # Santa's own defaults, made explicit: a new fleet starts in MONITOR mode.
        Profile.objects.create(
            name="default",
            description="Applies to every host; tag and host profiles override it.",
            is_default=True,
            client_mode="MONITOR",
            batch_size=50,
            full_sync_interval=600,
            enable_bundles=False,
            enable_transitive_rules=False,
            enable_all_event_upload=False,
            disable_unknown_event_upload=False,
            clean_sync_on_drift=False,
        )


class Migration(migrations.Migration):
    dependencies = [("hosts", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
