"""manage.py serve: the production web server (agents' sync, console, API) with granian.

    python manage.py serve [--bind 127.0.0.1:8000] [--workers N] [--threads N] [-- granian args]

granian (a Rust HTTP server running the WSGI application in Python threads) measured about 40%
less CPU per sync request than gunicorn's sync workers on the same machine, most of it in HTTP
handling (docs/benchmarks.md). Defaults: one worker process per core, four application threads
each (WEB_CONCURRENCY, WEB_THREADS, WEB_BIND override them), HTTP keep-alive, failed workers
restarted. Four threads, not two, keep the cores busy while event uploads wait for their
commit (+16% event uploads/s, preflight unchanged); eight gained little more and cost the
other stages a few percent. Put a TLS proxy in front (README, "Production").
"""

import os
import shutil
import sys

from django.core.management.base import BaseCommand, CommandError

DEFAULT_THREADS = 4


def server_command(*, bind: str, workers: int, threads: int, extra=()) -> list[str]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"--bind takes HOST:PORT, got {bind!r}.")
    granian = shutil.which("granian", path=os.path.dirname(sys.executable)) or shutil.which(
        "granian"
    )
    if granian is None:
        raise CommandError("granian is not installed (pip install -e . installs it).")
    return [
        granian,
        "--interface",
        "wsgi",
        "--host",
        host.strip("[]"),
        "--port",
        port,
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--respawn-failed-workers",
        *extra,
        "santaadmin.wsgi:application",
    ]


class Command(BaseCommand):
    help = "Run the production web server (granian) for the sync endpoints, console and API."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("WEB_BIND", "127.0.0.1:8000"))
        parser.add_argument(
            "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count()))
        )
        parser.add_argument(
            "--threads", type=int, default=int(os.environ.get("WEB_THREADS", DEFAULT_THREADS))
        )
        parser.add_argument("extra", nargs="*", help="More granian options, after --")

    def handle(self, *args, bind, workers, threads, extra, **options):
        if workers < 1 or threads < 1:
            raise CommandError("--workers and --threads must be at least 1.")
        command = server_command(bind=bind, workers=workers, threads=threads, extra=extra)
        self.stdout.write(" ".join(command))
        self.stdout.flush()
        os.execv(command[0], command)  # noqa: S606 - replaces this process with the server
