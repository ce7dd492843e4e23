"""The audit trail: one append-only entry for every change anyone (or anything) made."""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from . import chain


class AuditChain(models.Model):
    """The head of the hash chain: one row (id=1) with the last entry's seq and hash.

    Every write locks it (select_for_update) for the rest of its transaction, so entries get
    consecutive seqs and each chains from the one before, whatever runs concurrently.
    """

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=chain.GENESIS)

    def __str__(self) -> str:
        return f"audit chain head: {self.seq} {self.hash}"


def _append(entries: list) -> None:
    """Chain `entries` after the head and move the head; the caller's transaction commits
    both together. A missing head (a flushed test database) is rebuilt from the last entry."""
    head = AuditChain.objects.select_for_update().filter(pk=1).first()
    if head is None:
        last = AuditEntry.objects.order_by("-seq").only("seq", "hash").first()
        head = AuditChain.objects.create(
            pk=1, seq=last.seq if last else 0, hash=last.hash if last else chain.GENESIS
        )
    head.seq, head.hash = chain.chain(entries, head.seq, head.hash)
    head.save(update_fields=["seq", "hash"])


class AuditEntryQuerySet(models.QuerySet):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        with transaction.atomic(using=self.db):
            _append([obj for obj in objs if obj.seq is None])
            return super().bulk_create(objs, *args, **kwargs)


class AuditEntry(models.Model):
    """Who changed what, when, from where and why, with the values before and after.

    Written by the services in the same transaction as the change it records (audit.services).
    Nothing edits or deletes an entry: the admin is read-only and there is no write API.
    """

    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Kept as text so the entry still names its actor after the account is deleted;
    # "system" for periodic work, "requester:<user>@<machine>" for approval requests.
    actor_name = models.CharField(max_length=150)
    # The prefix of the API token the actor used (accounts.ApiToken.prefix); blank for a
    # browser session, a command or periodic work.
    actor_token = models.CharField(max_length=16, blank=True, default="", db_default="")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=128, blank=True)
    object_repr = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    justification = models.TextField(blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    # The hash chain (audit.chain): position in the chain and SHA-256 over the previous
    # entry's hash and this entry's contents.
    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
            models.Index(fields=["actor_name", "id"], name="audit_actor"),
            models.Index(fields=["action", "id"], name="audit_action"),
            models.Index(fields=["at"], name="audit_at"),
            # "What did this token do?" after a key leaked; most entries have none.
            models.Index(
                fields=["actor_token", "id"],
                name="audit_actor_token",
                condition=~models.Q(actor_token=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise RuntimeError("audit entries are never changed")
        with transaction.atomic(using=kwargs.get("using")):
            _append([self])
            super().save(*args, **kwargs)
