"""The Celery application. Without a broker (embedded mode) tasks run in-process, eagerly."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")

app = Celery("santaadmin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _log_mode(**_):
    from santaadmin.startup import log_mode

    log_mode()
