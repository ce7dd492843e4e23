"""manage.py signin locked | unlock [USERNAME] [--address IP]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.errors import AccountsError
from accounts.selectors import signin_lockouts
from accounts.services import signin_unlock


class Command(BaseCommand):
    help = "List failed sign-ins and lockouts, or unlock a user name or address."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("locked", help="Failed sign-ins within the cool-off, and which are locked.")
        unlock = sub.add_parser(
            "unlock", help="Forget the failed sign-ins of a user name and/or an address."
        )
        unlock.add_argument("username", nargs="?", default="")
        unlock.add_argument("--address", default="", help="Only from (or every name from) it.")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except AccountsError as exc:
            raise CommandError(exc.detail) from None

    def _locked(self, **_):
        rows = signin_lockouts()
        if not rows:
            self.stdout.write("No failed sign-ins within the cool-off.")
            return
        now = timezone.now()
        for row in rows:
            state = "locked" if row["locked"] else "counting"
            minutes = max(0, round((row["until"] - now).total_seconds() / 60))
            self.stdout.write(
                f"{row['username'] or '-'}\t{row['ip_address'] or '-'}\t{row['failures']} "
                f"failures\t{state}\tuntil +{minutes} min"
            )

    def _unlock(self, username, address, **_):
        removed = signin_unlock(username=username, address=address, actor_name="command:signin")
        self.stdout.write(f"Unlocked: {removed} failure counter(s) removed.")
