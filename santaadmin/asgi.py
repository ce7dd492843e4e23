"""ASGI entry point. Production is documented with gunicorn (WSGI); see docs/architecture.md."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")

application = get_asgi_application()

from santaadmin.startup import log_mode  # noqa: E402

log_mode()
