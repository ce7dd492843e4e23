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


@register(Tags.caches, deploy=True)
def production_cache(app_configs, **kwargs):
    backend = settings.CACHES["default"]["BACKEND"]
    if not settings.EMBEDDED and backend.endswith("LocMemCache"):
        return [
            Warning(
                "The cache is local memory: each web process keeps its own API rate-limit "
                "counters, so the limits are multiplied by the number of processes.",
                hint="Set CACHE_URL=redis://host:6379/1 (a database apart from the broker's).",
                id="santaadmin.W003",
            )
        ]
    return []


@register(deploy=True)
def production_client_address(app_configs, **kwargs):
    """Behind the TLS proxy of a production install, the connection's address is the proxy's:
    with no trusted proxy every Mac would share one sync budget per address, and a few failed
    sign-ins from anywhere would lock everyone out of a user name (santaadmin.clientaddr)."""
    counts_by_address = (
        settings.SYNC_RATE_LIMIT_PER_ADDRESS
        or settings.SIGNIN_LOCKOUT_FAILURES
        or settings.SIGNIN_LOCKOUT_ADDRESS_FAILURES
    )
    if not settings.EMBEDDED and not settings.NUM_PROXIES and counts_by_address:
        return [
            Warning(
                "TRUSTED_PROXY_COUNT is 0: sync rate limits and sign-in lockouts count "
                "clients by the connection's address, which behind a reverse proxy is the "
                "proxy's, shared by every Mac and every person.",
                hint="Behind the TLS proxy set TRUSTED_PROXY_COUNT=1 and have the proxy "
                "set X-Forwarded-For (README, Production).",
                id="santaadmin.W004",
            )
        ]
    return []
