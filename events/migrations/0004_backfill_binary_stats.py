"""Compute the execution statistics (0003) from the events already stored."""

from django.db import migrations
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Coalesce, TruncDate

BLOCKED = Q(decision__startswith="BLOCK_")
WOULD_BLOCK = Q(decision="ALLOW_UNKNOWN")


def backfill(apps, schema_editor):
    Event = apps.get_model("events", "Event")
    Binary = apps.get_model("events", "Binary")
    BinaryHost = apps.get_model("events", "BinaryHost")
    BinaryUser = apps.get_model("events", "BinaryUser")
    EventDay = apps.get_model("events", "EventDay")
    executions = Event.objects.exclude(decision="BUNDLE_BINARY").annotate(
        when=Coalesce("execution_time", "received_at")
    )
    BinaryHost.objects.bulk_create(
        [
            BinaryHost(
                binary_id=row["binary_id"],
                host_id=row["host_id"],
                executions=row["n"],
                blocked=row["blocked"],
                first_at=row["first"],
                last_at=row["last"],
                fresh=False,
            )
            for row in executions.values("binary_id", "host_id").annotate(
                n=Count("id"),
                blocked=Count("id", filter=BLOCKED),
                first=Min("when"),
                last=Max("when"),
            )
        ],
        batch_size=2000,
    )
    BinaryUser.objects.bulk_create(
        [
            BinaryUser(
                binary_id=row["binary_id"],
                user=row["executing_user"][:255],
                executions=row["n"],
                first_at=row["first"],
                last_at=row["last"],
                fresh=False,
            )
            for row in executions.exclude(executing_user="")
            .values("binary_id", "executing_user")
            .annotate(n=Count("id"), first=Min("when"), last=Max("when"))
        ],
        batch_size=2000,
    )
    for row in executions.values("binary_id").annotate(
        n=Count("id"),
        blocked=Count("id", filter=BLOCKED),
        would_block=Count("id", filter=WOULD_BLOCK),
        hosts=Count("host_id", distinct=True),
        users=Count("executing_user", distinct=True, filter=~Q(executing_user="")),
        first=Min("when"),
        last=Max("when"),
    ):
        Binary.objects.filter(pk=row["binary_id"]).update(
            executions=row["n"],
            blocked=row["blocked"],
            would_block=row["would_block"],
            host_count=row["hosts"],
            user_count=row["users"],
            first_executed_at=row["first"],
            last_executed_at=row["last"],
        )
    days = {}
    for outcome, condition in (
        ("blocked", BLOCKED),
        ("would_block", WOULD_BLOCK),
        ("allowed", ~BLOCKED & ~WOULD_BLOCK),
    ):
        for row in (
            executions.filter(condition)
            .annotate(day=TruncDate("when"))
            .values("day")
            .annotate(n=Count("id"))
        ):
            days[(row["day"], outcome)] = row["n"]
    EventDay.objects.bulk_create(
        [EventDay(day=day, outcome=outcome, count=n) for (day, outcome), n in days.items()]
    )


class Migration(migrations.Migration):
    dependencies = [("events", "0003_binary_stats_approval_requests")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
