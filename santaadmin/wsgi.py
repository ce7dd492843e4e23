"""WSGI entry point (`manage.py serve` runs it with granian)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")

application = get_wsgi_application()

from santaadmin.startup import log_mode  # noqa: E402  (needs the apps loaded above)

log_mode()
