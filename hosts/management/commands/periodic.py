"""manage.py periodic [--loop] [--only NAME ...]: run the beat schedule's tasks in this process.

Production runs them with `celery beat` and workers. Embedded mode has neither, so this
command stands in for both: once (for cron) or in a loop that honours each task's interval.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from santaadmin.celery import app


class Command(BaseCommand):
    help = "Run the periodic tasks (fan-out reconciler, stale hosts, retention, drift audit)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="Keep running, each task at its interval."
        )
        parser.add_argument(
            "--only", nargs="+", metavar="NAME", help="Schedule entries to run (default: all)."
        )

    def handle(self, *args, loop=False, only=None, **options):
        app.loader.import_default_modules()
        schedule = settings.CELERY_BEAT_SCHEDULE
        unknown = sorted(set(only or ()) - set(schedule))
        if unknown:
            raise CommandError(
                f"Unknown entries: {', '.join(unknown)}; known: {', '.join(sorted(schedule))}."
            )
        entries = {name: schedule[name] for name in (only or schedule)}
        due = dict.fromkeys(entries, 0.0)
        while True:
            now = time.monotonic()
            for name, entry in entries.items():
                if due[name] > now:
                    continue
                task = app.tasks[entry["task"]]
                try:
                    result = task.apply(throw=True).get()
                except Exception as exc:  # keep the loop alive; the next run retries
                    self.stderr.write(f"{name}: failed: {type(exc).__name__}: {exc}")
                else:
                    self.stdout.write(f"{name}: {result}")
                due[name] = now + float(entry["schedule"])
            if not loop:
                return
            time.sleep(max(0.5, min(due.values()) - time.monotonic()))
