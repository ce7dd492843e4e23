"""Cross-setting rules as system checks; the deploy ones show in `manage.py check --deploy`."""

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.db import connections


@register(Tags.database, deploy=True)
def production_database(app_configs, **kwargs):
    if connections["default"].vendor == "sqlite":
        return [
            Warning(
                "The database is SQLite: fine for the embedded mode, not for a fleet.",
                hint="Set DATABASE_URL=postgresql://user:password@host:5432/santaadmin.",
                id="santaadmin.W001",
            )
        ]
    return []


@register(deploy=True)
def production_tasks(app_configs, **kwargs):
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return [
            Warning(
                "Celery tasks run in-process (CELERY_TASK_ALWAYS_EAGER): background work "
                "slows requests and nothing retries it.",
                hint="Set CELERY_BROKER_URL (or REDIS_URL) and run a Celery worker and beat.",
                id="santaadmin.W002",
            )
        ]
    return []
