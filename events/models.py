"""What agents report: execution and file-access events, and the catalogue of binaries,
certificates and bundles seen in them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hosts.models import Host

DECISIONS = [
    "DECISION_UNKNOWN",
    "ALLOW_UNKNOWN",
    "ALLOW_BINARY",
    "ALLOW_CERTIFICATE",
    "ALLOW_SCOPE",
    "ALLOW_TEAMID",
    "ALLOW_SIGNINGID",
    "ALLOW_CDHASH",
    "BLOCK_UNKNOWN",
    "BLOCK_BINARY",
    "BLOCK_CERTIFICATE",
    "BLOCK_SCOPE",
    "BLOCK_TEAMID",
    "BLOCK_SIGNINGID",
    "BLOCK_CDHASH",
    "BUNDLE_BINARY",
    "BLOCK_BINARY_MISMATCH",
    "ALLOW_PLATFORM",
]
Decision = models.TextChoices("Decision", [(d, d) for d in DECISIONS])
# Executions Santa blocked, and those it would have blocked in lockdown (ALLOW_UNKNOWN: an
# unknown binary allowed because the host is in monitor mode); events.stats counts the same.
BLOCKED_DECISIONS = tuple(d for d in DECISIONS if d.startswith("BLOCK_"))
WOULD_BLOCK_DECISIONS = ("ALLOW_UNKNOWN",)
REPORTED_DECISIONS = BLOCKED_DECISIONS + WOULD_BLOCK_DECISIONS

FILE_ACCESS_DECISIONS = [
    "FILE_ACCESS_DECISION_UNKNOWN",
    "FILE_ACCESS_DECISION_DENIED",
    "FILE_ACCESS_DECISION_DENIED_INVALID_SIGNATURE",
    "FILE_ACCESS_DECISION_AUDIT_ONLY",
]
FileAccessDecision = models.TextChoices(
    "FileAccessDecision", [(d, d) for d in FILE_ACCESS_DECISIONS]
)


class Certificate(models.Model):
    """A signing certificate seen in a signing chain, by its SHA-256."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    cn = models.TextField(blank=True)
    org = models.TextField(blank=True)
    ou = models.TextField(blank=True)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.cn or self.sha256


class Binary(models.Model):
    """An executable seen in events, by SHA-256, with the latest metadata reported for it."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    file_name = models.TextField(blank=True)
    file_path = models.TextField(blank=True)
    team_id = models.TextField(blank=True)
    signing_id = models.TextField(blank=True)
    cdhash = models.TextField(blank=True)
    signing_status = models.CharField(max_length=40, blank=True)
    leaf_certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="binaries"
    )
    signing_chain = models.JSONField(default=list, blank=True)  # certificate sha256s, leaf first
    entitlements = models.JSONField(default=list, blank=True)
    file_bundle_id = models.TextField(blank=True)
    file_bundle_name = models.TextField(blank=True)
    file_bundle_version_string = models.TextField(blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # Execution statistics, kept by event ingestion (events.stats) so that the console can
    # list and sort binaries by impact without aggregating the events table. They count every
    # execution event ever received (BUNDLE_BINARY scans are not executions) and survive
    # event retention.
    executions = models.PositiveBigIntegerField(default=0)
    blocked = models.PositiveBigIntegerField(default=0)
    would_block = models.PositiveBigIntegerField(default=0)  # ALLOW_UNKNOWN: monitor mode
    host_count = models.PositiveIntegerField(default=0)
    user_count = models.PositiveIntegerField(default=0)
    first_executed_at = models.DateTimeField(null=True, blank=True)
    last_executed_at = models.DateTimeField(null=True, blank=True)
    last_decision = models.CharField(max_length=40, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["team_id"], name="binary_team_id"),
            models.Index(fields=["signing_id"], name="binary_signing_id"),
            models.Index(fields=["cdhash"], name="binary_cdhash"),
            models.Index(fields=["last_seen_at"], name="binary_last_seen"),
            models.Index(
                models.F("host_count").desc(),
                models.F("executions").desc(),
                "sha256",
                name="binary_impact",
            ),
            models.Index(fields=["last_executed_at"], name="binary_last_executed"),
        ]

    def __str__(self) -> str:
        return self.file_name or self.sha256


class Bundle(models.Model):
    """An app bundle by its bundle hash (protocol.md §5.4.4)."""

    bundle_hash = models.CharField(max_length=64, primary_key=True)
    bundle_id = models.TextField(blank=True)
    name = models.TextField(blank=True)
    path = models.TextField(blank=True)
    version = models.TextField(blank=True)
    version_string = models.TextField(blank=True)
    binary_count = models.PositiveIntegerField(default=0)
    uploaded_binary_count = models.PositiveIntegerField(default=0)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name or self.bundle_hash

    @property
    def complete(self) -> bool:
        return self.binary_count > 0 and self.uploaded_binary_count >= self.binary_count


class BundleBinary(models.Model):
    bundle = models.ForeignKey(Bundle, on_delete=models.CASCADE, related_name="members")
    binary = models.ForeignKey(Binary, on_delete=models.CASCADE, related_name="bundles")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bundle", "binary"], name="bundlebinary_unique")
        ]

    def __str__(self) -> str:
        return f"{self.binary_id} in {self.bundle_id}"


class BinaryHost(models.Model):
    """A host that executed a binary: how often, when first and last, and by whom last."""

    # No index of their own: binaryhost_unique and binaryhost_host_last lead with them.
    binary = models.ForeignKey(
        Binary, on_delete=models.CASCADE, related_name="host_stats", db_index=False
    )
    host = models.ForeignKey(
        Host, on_delete=models.CASCADE, related_name="binary_stats", db_index=False
    )
    executions = models.PositiveBigIntegerField(default=0)
    blocked = models.PositiveBigIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    last_user = models.TextField(blank=True)
    last_decision = models.CharField(max_length=40, blank=True)
    # Set by the insert, cleared by every update of the same upsert: RETURNING it tells
    # ingestion which rows are new, on PostgreSQL and SQLite alike (events.stats).
    fresh = models.BooleanField(default=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["binary", "host"], name="binaryhost_unique")]
        indexes = [
            models.Index(fields=["binary", "last_at"], name="binaryhost_binary_last"),
            models.Index(fields=["host", "last_at"], name="binaryhost_host_last"),
        ]

    def __str__(self) -> str:
        return f"{self.binary_id} on {self.host_id}"


class BinaryUser(models.Model):
    """A user (executing user as the agent reported it) who ran a binary."""

    # No index of its own: binaryuser_unique leads with it.
    binary = models.ForeignKey(
        Binary, on_delete=models.CASCADE, related_name="user_stats", db_index=False
    )
    user = models.CharField(max_length=255)
    executions = models.PositiveBigIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    fresh = models.BooleanField(default=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["binary", "user"], name="binaryuser_unique")]
        indexes = [models.Index(fields=["binary", "last_at"], name="binaryuser_binary_last")]

    def __str__(self) -> str:
        return f"{self.binary_id} by {self.user}"


class EventDay(models.Model):
    """Execution events per day and outcome, for the dashboard's chart."""

    class Outcome(models.TextChoices):
        BLOCKED = "blocked", "Blocked"
        WOULD_BLOCK = "would_block", "Would be blocked (monitor mode)"
        ALLOWED = "allowed", "Allowed"

    day = models.DateField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["day", "outcome"]
        constraints = [models.UniqueConstraint(fields=["day", "outcome"], name="eventday_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.outcome} {self.count}"


class ApprovalState(models.TextChoices):
    PENDING = "pending", "Waiting for an analyst"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"


class ApprovalRequest(models.Model):
    """A blocked user's request to run a binary, made from Santa's block dialog.

    The dialog's "Open" button leads to the console's request page (the `event_detail_url`
    sent at preflight); analysts approve it into a rule or deny it with a message, and the
    requester sees the outcome on the same page.
    """

    binary = models.ForeignKey(Binary, on_delete=models.PROTECT, related_name="requests")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="approval_requests")
    requester = models.CharField(max_length=255)
    reason = models.TextField()
    state = models.CharField(
        max_length=16, choices=ApprovalState.choices, default=ApprovalState.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    response = models.TextField(blank=True, help_text="The analyst's message to the requester.")
    rule = models.ForeignKey(
        "rules.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["binary", "host", "requester"],
                condition=models.Q(state="pending"),
                name="approvalrequest_one_pending",
            )
        ]
        indexes = [
            models.Index(fields=["state", "created_at"], name="approvalrequest_state"),
            models.Index(fields=["binary", "host"], name="approvalrequest_binary_host"),
        ]

    def __str__(self) -> str:
        return f"{self.requester}@{self.host_id} for {self.binary_id}: {self.state}"


class Event(models.Model):
    """One execution event, every field the agent sent (protocol.md §4.4)."""

    # Every index is paid on every stored event, so none is redundant: the two foreign keys
    # are served by event_host_time and event_binary_time (which lead with them), and the
    # dedupe key is unique by a constraint, which on PostgreSQL makes no second
    # (varchar_pattern_ops) index the way unique=True does for LIKE queries nobody runs.
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="events", db_index=False)
    dedupe_key = models.CharField(max_length=64, editable=False)
    binary = models.ForeignKey(
        Binary, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    decision = models.CharField(max_length=40, choices=Decision.choices)
    execution_time = models.DateTimeField(null=True, blank=True)  # absent for BUNDLE_BINARY
    received_at = models.DateTimeField()
    file_path = models.TextField(blank=True)
    file_name = models.TextField(blank=True)
    executing_user = models.TextField(blank=True)
    logged_in_users = models.JSONField(default=list, blank=True)
    current_sessions = models.JSONField(default=list, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    ppid = models.IntegerField(null=True, blank=True)
    parent_name = models.TextField(blank=True)
    team_id = models.TextField(blank=True)
    signing_id = models.TextField(blank=True)
    cdhash = models.TextField(blank=True)
    cs_flags = models.BigIntegerField(null=True, blank=True)
    signing_status = models.CharField(max_length=40, blank=True)
    secure_signing_time = models.DateTimeField(null=True, blank=True)
    signing_time = models.DateTimeField(null=True, blank=True)
    static_rule = models.BooleanField(default=False)
    signing_chain = models.JSONField(default=list, blank=True)  # full certificate dicts
    entitlements = models.JSONField(default=list, blank=True)  # [{"key", "value"}]
    entitlements_filtered = models.BooleanField(null=True, blank=True)
    file_bundle_id = models.TextField(blank=True)
    file_bundle_path = models.TextField(blank=True)
    file_bundle_executable_rel_path = models.TextField(blank=True)
    file_bundle_name = models.TextField(blank=True)
    file_bundle_version = models.TextField(blank=True)
    file_bundle_version_string = models.TextField(blank=True)
    file_bundle_hash = models.TextField(blank=True)
    file_bundle_hash_millis = models.BigIntegerField(null=True, blank=True)
    file_bundle_binary_count = models.BigIntegerField(null=True, blank=True)
    quarantine_data_url = models.TextField(blank=True)
    quarantine_referer_url = models.TextField(blank=True)
    quarantine_timestamp = models.DateTimeField(null=True, blank=True)
    quarantine_agent_bundle_id = models.TextField(blank=True)

    class Meta:
        ordering = ["-execution_time", "-id"]
        constraints = [models.UniqueConstraint(fields=["dedupe_key"], name="event_dedupe_key")]
        indexes = [
            models.Index(fields=["host", "execution_time"], name="event_host_time"),
            models.Index(fields=["binary", "execution_time"], name="event_binary_time"),
            models.Index(fields=["decision", "execution_time"], name="event_decision_time"),
            models.Index(fields=["execution_time"], name="event_time"),
            models.Index(fields=["received_at"], name="event_received"),
            # A binary's execution timeline (console), counted by an index-only scan: bundle
            # scans are left out of the index as they are out of the page.
            models.Index(
                "binary",
                models.F("execution_time").desc(),
                models.F("id").desc(),
                name="event_binary_executions",
                condition=~models.Q(decision="BUNDLE_BINARY"),
            ),
            # The executions report: blocked and would-be-blocked executions of a period, in
            # time order, streamed without a sort. With all-event upload most events are
            # allowed ones, which event_time would read and discard; event_decision_time gives
            # each decision's range apart, to be sorted before the first row. The report
            # filters with this exact condition, so both databases match the partial index.
            models.Index(
                fields=["execution_time", "id"],
                name="event_reported_time",
                condition=models.Q(decision__in=REPORTED_DECISIONS),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.decision} {self.file_name} on {self.host_id}"


class FileAccessEvent(models.Model):
    """A file-access authorization violation or audit (protocol.md §4.4)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="file_access_events")
    dedupe_key = models.CharField(max_length=64, unique=True, editable=False)
    rule_name = models.TextField(blank=True)
    rule_version = models.TextField(blank=True)
    target = models.TextField(blank=True)
    decision = models.CharField(max_length=60, choices=FileAccessDecision.choices)
    access_time = models.DateTimeField(null=True, blank=True)
    process_chain = models.JSONField(default=list, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-access_time", "-id"]
        indexes = [
            models.Index(fields=["host", "access_time"], name="faaevent_host_time"),
            models.Index(fields=["received_at"], name="faaevent_received"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} {self.target} on {self.host_id}"


class EventUpload(models.Model):
    """An accepted event upload waiting to be stored (SYNC_DEFER_EVENTS).

    The event-upload stage validates the whole batch, writes it here in one INSERT and answers;
    events.services.events_drain stores waiting uploads many at a time, with the same
    statements as one upload, and deletes them in the same transaction. Committed before the
    agent hears 200, so an accepted event is never lost; stored with its dedupe key, so a
    retried upload is stored once.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField()
    payload = models.BinaryField()  # the decoded request message, as JSON
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"upload {self.pk} of host {self.host_id} at {self.received_at:%Y-%m-%d %H:%M:%S}"
