"""manage.py enrollment create NAME [--tag TAG ...] [--mode MONITOR|LOCKDOWN]
| list | revoke NAME"""

from django.core.management.base import BaseCommand, CommandError

from hosts.errors import HostsError
from hosts.models import ClientMode, Enrollment
from hosts.services import enrollment_create, enrollment_revoke


class Command(BaseCommand):
    help = "Create, list and revoke the enrollment secrets agents authenticate with."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create an enrollment; prints its secret last.")
        create.add_argument("name")
        create.add_argument(
            "--tag",
            action="append",
            default=[],
            dest="tags",
            help="Tag given to hosts that enroll with it (repeatable).",
        )
        create.add_argument(
            "--mode",
            choices=[ClientMode.MONITOR, ClientMode.LOCKDOWN, ClientMode.STANDALONE],
            default="",
        )
        sub.add_parser("list", help="List enrollments (secrets are never shown again).")
        revoke = sub.add_parser("revoke", help="Revoke an enrollment: its agents are refused.")
        revoke.add_argument("name")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except HostsError as exc:
            raise CommandError(exc.detail) from None

    def _create(self, name, tags, mode, **_):
        enrollment, secret = enrollment_create(name=name, tag_names=tags, client_mode=mode)
        tag_list = ", ".join(t.name for t in enrollment.tags.all()) or "none"
        self.stdout.write(
            f"Enrollment {enrollment.name!r} created (tags: {tag_list}; "
            f"mode: {mode or 'from configuration'})."
        )
        self.stdout.write("Store this secret now; it cannot be shown again. Agents send it as")
        self.stdout.write("SyncExtraHeaders = {Authorization: 'Bearer <secret>'}:")
        self.stdout.write(secret)

    def _list(self, **_):
        rows = Enrollment.objects.prefetch_related("tags").order_by("name")
        for e in rows:
            state = f"revoked {e.revoked_at:%Y-%m-%d %H:%M}" if e.revoked_at else "active"
            tags = ",".join(t.name for t in e.tags.all()) or "-"
            self.stdout.write(
                f"{e.name}\t{state}\tsecret {e.secret_prefix}…\ttags {tags}\t"
                f"mode {e.client_mode or '-'}\thosts {e.hosts.count()}"
            )
        if not rows:
            self.stdout.write("No enrollments. Create one with: enrollment create NAME")

    def _revoke(self, name, **_):
        enrollment = enrollment_revoke(name=name)
        self.stdout.write(f"Enrollment {enrollment.name!r} revoked; its agents are refused now.")
