"""santaadmin: the Santa sync server and analyst console (Django project package)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
