"""Rules, their scope, and the versioned history that rule delivery is computed from.

`Rule` is the current state an analyst edits. Every change closes the rule's current
`RuleVersion` and opens a new one at the new fleet revision (hosts.models.Revision); a delete
only closes it. `RuleTarget` indexes each version by what it targets (everyone, a tag, a host,
an excluded tag) so that a rule download finds, with index range scans, exactly the keys that
changed for one host between two revisions. See docs/architecture.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from hosts.models import FanOut, Host, Tag


class RuleType(models.TextChoices):
    BINARY = "BINARY", "Binary (SHA-256)"
    CERTIFICATE = "CERTIFICATE", "Certificate (SHA-256)"
    TEAMID = "TEAMID", "Team ID"
    SIGNINGID = "SIGNINGID", "Signing ID"
    CDHASH = "CDHASH", "CDHash"


class Policy(models.TextChoices):
    ALLOWLIST = "ALLOWLIST", "Allow"
    ALLOWLIST_COMPILER = "ALLOWLIST_COMPILER", "Allow (compiler)"
    BLOCKLIST = "BLOCKLIST", "Block"
    SILENT_BLOCKLIST = "SILENT_BLOCKLIST", "Block silently"
    SILENT_GUI_BLOCKLIST = "SILENT_GUI_BLOCKLIST", "Block, no GUI notification"
    SILENT_TTY_BLOCKLIST = "SILENT_TTY_BLOCKLIST", "Block, no TTY message"
    REMOVE = "REMOVE", "Remove from hosts"
    CEL = "CEL", "Decide with a CEL expression"


BLOCK_POLICIES = frozenset(
    {
        Policy.BLOCKLIST,
        Policy.SILENT_BLOCKLIST,
        Policy.SILENT_GUI_BLOCKLIST,
        Policy.SILENT_TTY_BLOCKLIST,
    }
)


class Rule(models.Model):
    """A rule as analysts see it: one (rule_type, identifier), a policy, and a scope.

    Scope: `hosts` lists machines the rule targets by name; otherwise it applies to hosts
    carrying any of `tags`, or to every host when it has no tags; `excluded_tags` removes hosts
    from the tag / everyone part (never from an explicit host listing).
    """

    rule_type = models.CharField(max_length=16, choices=RuleType.choices)
    identifier = models.CharField(max_length=255)
    policy = models.CharField(max_length=32, choices=Policy.choices)
    custom_msg = models.TextField(blank=True)
    custom_url = models.TextField(blank=True)
    cel_expr = models.TextField(blank=True)
    comment = models.TextField(blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="rules")
    excluded_tags = models.ManyToManyField(Tag, blank=True, related_name="excluding_rules")
    hosts = models.ManyToManyField(Host, blank=True, related_name="rules")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    revision = models.BigIntegerField(help_text="Fleet revision of the rule's last change.")
    # When set, the periodic task rules.expire deletes the rule after this time (hosts then
    # get REMOVE like for any deletion).
    expires_at = models.DateTimeField(null=True, blank=True)
    # The fan-out of the rule's last change, and the delivery summary the workers keep for
    # lists and reports (detail views compute it live: rules.tracking.rule_delivery).
    fanout = models.ForeignKey(
        FanOut, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_hosts = models.PositiveIntegerField(null=True, blank=True)
    confirmed_hosts = models.PositiveIntegerField(null=True, blank=True)
    delivery_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rule_type", "identifier", "id"]
        indexes = [
            models.Index(fields=["rule_type", "identifier"], name="rule_key"),
            models.Index(fields=["expires_at"], name="rule_expires_at"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_type} {self.identifier} {self.policy}"


class RuleVersion(models.Model):
    """One state of a rule, valid for fleet revisions rev_from <= r < rev_to (null: open)."""

    rule_id = models.BigIntegerField(db_index=True)  # plain id: history outlives deleted rules
    rev_from = models.BigIntegerField()
    rev_to = models.BigIntegerField(null=True, blank=True)
    rule_type = models.CharField(max_length=16, choices=RuleType.choices)
    identifier = models.CharField(max_length=255)
    policy = models.CharField(max_length=32, choices=Policy.choices)
    custom_msg = models.TextField(blank=True)
    custom_url = models.TextField(blank=True)
    cel_expr = models.TextField(blank=True)
    # The scope of this version, as ids, so delivery can evaluate it without joins.
    scope_all = models.BooleanField()
    tag_ids = models.JSONField(default=list)
    excluded_tag_ids = models.JSONField(default=list)
    host_ids = models.JSONField(default=list)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    changed_at = models.DateTimeField(auto_now_add=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["rule_id", "rev_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule_id"], condition=Q(rev_to__isnull=True), name="ruleversion_one_open"
            )
        ]
        indexes = [
            models.Index(fields=["identifier", "rule_type", "rev_from"], name="ruleversion_key"),
        ]

    def __str__(self) -> str:
        return f"rule {self.rule_id} [{self.rev_from}, {self.rev_to or ''}) {self.policy}"

    @property
    def payload(self) -> tuple:
        """What the agent receives; two versions with equal payloads need no re-delivery."""
        return (self.policy, self.custom_msg, self.custom_url, self.cel_expr)


class TargetKind(models.IntegerChoices):
    ALL = 0, "everyone"
    TAG = 1, "tag"
    HOST = 2, "host"
    EXCLUDED_TAG = 3, "excluded tag"


class RuleTarget(models.Model):
    """Index row: version `version` targets (kind, target_id) during [rev_from, rev_to)."""

    version = models.ForeignKey(RuleVersion, on_delete=models.CASCADE, related_name="targets")
    kind = models.PositiveSmallIntegerField(choices=TargetKind.choices)
    target_id = models.BigIntegerField()  # tag or host id; 0 for ALL
    rule_type = models.CharField(max_length=16)
    identifier = models.CharField(max_length=255)
    rev_from = models.BigIntegerField()
    rev_to = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["kind", "target_id", "rev_from"], name="ruletarget_from"),
            models.Index(fields=["kind", "target_id", "rev_to"], name="ruletarget_to"),
            models.Index(
                fields=["kind", "target_id", "rule_type", "identifier"], name="ruletarget_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.target_id}: {self.rule_type} {self.identifier}"
