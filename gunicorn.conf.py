"""gunicorn's settings for production: `gunicorn santaadmin.wsgi` reads this file from the
working directory (the repository root). Every value can be overridden from the environment.

Sync workers, two per core: each is a single request slot that waits on PostgreSQL now and
then, so twice the cores keeps them busy; the measurements in docs/benchmarks.md compare the
shapes on a 2-core machine.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# A clean rule-download page of 1,000 rules takes milliseconds; 30 s is only a backstop.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then, so a slow leak in any library cannot grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "100000"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def worker_exit(server, worker):
    """Write the last-seen times this worker collected but has not written yet."""
    from hosts import liveness

    liveness.flush()
