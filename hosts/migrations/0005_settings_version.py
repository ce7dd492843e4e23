"""The settings version token and the triggers that change it (hosts.models.SettingsVersion)."""

from django.db import migrations, models

WATCHED = (
    "hosts_configurationprofile",
    "hosts_configurationprofile_tags",
    "hosts_configurationprofile_hosts",
    "hosts_tagrule",
)

POSTGRESQL_FUNCTION = """
CREATE OR REPLACE FUNCTION hosts_settings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hosts_settingsversion
    SET token = md5(random()::text || clock_timestamp()::text) WHERE id = 1;
    RETURN NULL;
END
$$;
"""
POSTGRESQL_TRIGGER = """
CREATE TRIGGER {table}_settings_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION hosts_settings_changed();
"""
SQLITE_TRIGGER = """
CREATE TRIGGER {table}_settings_{operation} AFTER {operation} ON {table}
BEGIN
    UPDATE hosts_settingsversion SET token = lower(hex(randomblob(16))) WHERE id = 1;
END;
"""
OPERATIONS = ("INSERT", "UPDATE", "DELETE")


def create_triggers(apps, schema_editor):
    apps.get_model("hosts", "SettingsVersion").objects.using(
        schema_editor.connection.alias
    ).update_or_create(pk=1, defaults={"token": "initial"})
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_FUNCTION)
        for table in WATCHED:
            schema_editor.execute(POSTGRESQL_TRIGGER.format(table=table))
    elif vendor == "sqlite":
        for table in WATCHED:
            for operation in OPERATIONS:
                schema_editor.execute(SQLITE_TRIGGER.format(table=table, operation=operation))
    else:
        raise RuntimeError(f"No settings-version triggers for {vendor}.")


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in WATCHED:
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_settings_changed ON {table}")
        else:
            for operation in OPERATIONS:
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_settings_{operation}")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS hosts_settings_changed()")


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0004_host_sync_history_console_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="SettingsVersion",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                ("token", models.CharField(default="", max_length=32)),
            ],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
