"""manage.py host list | show MACHINE_ID | clean-sync MACHINE_ID [--all|--cancel] |
tags MACHINE_ID [TAG ...]"""

from django.core.management.base import BaseCommand, CommandError

from hosts.errors import HostsError
from hosts.models import CleanSync, Host
from hosts.selectors import host_tag_ids
from hosts.services import host_request_clean_sync, host_set_tags


class Command(BaseCommand):
    help = "Inspect hosts and act on them (force a clean sync, set tags)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="One line per host.")
        show = sub.add_parser("show", help="A host's facts and sync state.")
        show.add_argument("machine_id")
        clean = sub.add_parser("clean-sync", help="Answer the host's next preflight with CLEAN.")
        clean.add_argument("machine_id")
        group = clean.add_mutually_exclusive_group()
        group.add_argument("--all", action="store_true", help="CLEAN_ALL (transitive too).")
        group.add_argument("--cancel", action="store_true", help="Withdraw the request.")
        tags = sub.add_parser("tags", help="Replace the host's tags.")
        tags.add_argument("machine_id")
        tags.add_argument("tags", nargs="*")

    def handle(self, *args, action, **options):
        try:
            getattr(self, "_" + action.replace("-", "_"))(**options)
        except HostsError as exc:
            raise CommandError(exc.detail) from None

    @staticmethod
    def _host(machine_id) -> Host:
        host = Host.objects.select_related("enrollment").filter(machine_id=machine_id).first()
        if host is None:
            raise CommandError(f"No host with machine id {machine_id!r}.")
        return host

    def _list(self, **_):
        for host in Host.objects.order_by("machine_id"):
            self.stdout.write(
                f"{host.machine_id}\t{host.hostname or '-'}\t{host.reported_client_mode or '-'}"
                f"\tlast sync {host.last_postflight_at or 'never'}"
            )

    def _show(self, machine_id, **_):
        host = self._host(machine_id)
        from hosts.models import Tag

        tags = Tag.objects.filter(pk__in=host_tag_ids(host)).values_list("name", flat=True)
        for label, value in [
            ("machine id", host.machine_id),
            ("hostname", host.hostname),
            ("serial", host.serial_number),
            ("enrollment", host.enrollment.name),
            ("tags", ", ".join(tags) or "-"),
            ("santa", host.santa_version),
            ("mode", host.reported_client_mode),
            ("clean sync", host.clean_sync_requested or "-"),
            ("rules revision", host.rules_synced_rev),
            ("drift", "; ".join(host.drift_reasons) or "none"),
            ("last postflight", host.last_postflight_at),
        ]:
            self.stdout.write(f"{label:16} {value}")

    def _clean_sync(self, machine_id, all, cancel, **_):
        host = self._host(machine_id)
        kind = "" if cancel else (CleanSync.CLEAN_ALL if all else CleanSync.CLEAN)
        host_request_clean_sync(host=host, kind=kind)
        self.stdout.write(
            f"{host.machine_id}: clean sync request withdrawn."
            if cancel
            else f"{host.machine_id}: next sync will be {kind}."
        )

    def _tags(self, machine_id, tags, **_):
        host = self._host(machine_id)
        result = host_set_tags(host=host, tag_names=tags)
        self.stdout.write(f"{host.machine_id}: tags {', '.join(t.name for t in result) or '-'}")
