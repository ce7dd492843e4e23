"""The one startup line that says which mode this process runs in."""

import logging

from django.conf import settings
from django.db import connection

logger = logging.getLogger("santaadmin")


def describe_mode() -> dict:
    database = connection.settings_dict
    return {
        "mode": "embedded" if settings.EMBEDDED else "production",
        "database": connection.vendor,
        "database_name": str(database["NAME"]) if connection.vendor == "sqlite" else None,
        "tasks": "in-process" if settings.CELERY_TASK_ALWAYS_EAGER else "celery-worker",
        "debug": settings.DEBUG,
    }


def log_mode() -> None:
    mode = describe_mode()
    if mode["mode"] == "embedded":
        logger.warning(
            "EMBEDDED MODE: SQLite database %s, Celery tasks run in-process (no broker). "
            "For production set DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and ALLOWED_HOSTS.",
            mode["database_name"],
        )
    else:
        logger.info("Production mode: %s database, tasks: %s.", mode["database"], mode["tasks"])
        if mode["tasks"] == "in-process":
            logger.warning("CELERY_TASK_ALWAYS_EAGER is on: tasks run inside web requests.")
