"""ASGI entry point. Production runs WSGI under granian (manage.py serve); see the README."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")

application = get_asgi_application()

from santaadmin.startup import log_mode  # noqa: E402

log_mode()
