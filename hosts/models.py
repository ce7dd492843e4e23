"""Hosts (the Macs), their tags, the enrollments that admit them and configuration profiles."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

MACHINE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}"
TAG_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"


class ClientMode(models.TextChoices):
    MONITOR = "MONITOR", "Monitor"
    LOCKDOWN = "LOCKDOWN", "Lockdown"
    STANDALONE = "STANDALONE", "Standalone"


class SyncType(models.TextChoices):
    NORMAL = "NORMAL", "Normal"
    CLEAN = "CLEAN", "Clean"
    CLEAN_ALL = "CLEAN_ALL", "Clean all"


class CleanSync(models.TextChoices):
    CLEAN = "CLEAN", "Clean (keep transitive rules)"
    CLEAN_ALL = "CLEAN_ALL", "Clean all"


class RemovableMediaAction(models.TextChoices):
    ALLOW = "allow", "Allow"
    BLOCK = "block", "Block"
    REMOUNT = "remount", "Remount with flags"


class FileAccessAction(models.TextChoices):
    NONE = "NONE", "Apply file-access policy as written"
    AUDIT_ONLY = "AUDIT_ONLY", "Audit only"
    DISABLE = "DISABLE", "Disable"


class Revision(models.Model):
    """The fleet revision: one counter bumped by every change to what a host should hold.

    Rule changes and host tag changes take this row's lock for their whole transaction, so
    revisions are handed out in commit order and a host that has applied revision R has seen
    every change numbered R or lower. Each host's sync position is a revision.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"revision {self.value}"


class SettingsVersion(models.Model):
    """A token that database triggers change whenever configuration profiles (or their tags and
    hosts) or tag rules change, in the transaction of the change.

    The sync path reads it in the statement it runs anyway and keeps profiles and tag rules in
    memory under it (hosts.settings_cache), so a preflight reads no profile. Triggers rather
    than service code, so that every path that writes those tables (services, the admin, a
    shell, migrations) invalidates the cache; a random token rather than a counter, so that a
    rolled-back change can never leave another state under a token already cached.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    token = models.CharField(max_length=32, default="")

    def __str__(self) -> str:
        return f"settings version {self.token}"


class Tag(models.Model):
    """A named group of hosts ("eng", "finance") that rules and profiles can target."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(f"^{TAG_NAME_PATTERN}$", "Lower-case letters, digits, . _ -")],
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Enrollment(models.Model):
    """A secret that admits agents; hosts it registers get its tags (and mode, if set)."""

    name = models.CharField(max_length=64, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_prefix = models.CharField(max_length=8, editable=False)
    client_cert_issuer = models.CharField(
        max_length=512,
        blank=True,
        help_text="Verified client-certificate issuer DN forwarded by the TLS proxy "
        "(SYNC_CLIENT_CERT_HEADER) that also admits agents to this enrollment.",
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="enrollments")
    client_mode = models.CharField(max_length=16, choices=ClientMode.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["client_cert_issuer"],
                condition=~Q(client_cert_issuer=""),
                name="enrollment_unique_cert_issuer",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Host(models.Model):
    """A Mac running Santa, identified by the machine id in its sync URLs."""

    machine_id = models.CharField(max_length=128, unique=True)
    enrollment = models.ForeignKey(Enrollment, on_delete=models.PROTECT, related_name="hosts")

    # Facts reported at preflight (agent input: unbounded text, limits enforced on decode).
    serial_number = models.TextField(blank=True)
    hostname = models.TextField(blank=True)
    os_version = models.TextField(blank=True)
    os_build = models.TextField(blank=True)
    model_identifier = models.TextField(blank=True)
    santa_version = models.TextField(blank=True)
    primary_user = models.TextField(blank=True)
    primary_user_groups = models.JSONField(default=list, blank=True)
    push_notification_token = models.TextField(blank=True)
    reported_client_mode = models.CharField(max_length=32, blank=True)
    sip_status = models.BigIntegerField(null=True, blank=True)
    request_clean_sync = models.BooleanField(default=False)
    reported_counts = models.JSONField(default=dict, blank=True)
    preflight_rules_hash = models.TextField(blank=True)

    # Operator decisions.
    client_mode_override = models.CharField(max_length=16, choices=ClientMode.choices, blank=True)
    clean_sync_requested = models.CharField(max_length=16, choices=CleanSync.choices, blank=True)

    # Sync state. `rules_synced_rev` is the revision whose rule set the host confirmed at its
    # last postflight (null: never); `pending_*` is what the last complete rule download served,
    # promoted by the next postflight.
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_preflight_at = models.DateTimeField(null=True, blank=True)
    last_eventupload_at = models.DateTimeField(null=True, blank=True)
    last_ruledownload_at = models.DateTimeField(null=True, blank=True)
    last_postflight_at = models.DateTimeField(null=True, blank=True)
    last_sync_type = models.CharField(max_length=16, choices=SyncType.choices, blank=True)
    rules_synced_rev = models.BigIntegerField(null=True, blank=True)
    expected_counts = models.JSONField(default=dict, blank=True)
    pending_sync_type = models.CharField(max_length=16, choices=SyncType.choices, blank=True)
    pending_rev = models.BigIntegerField(null=True, blank=True)
    pending_clean = models.BooleanField(default=False)
    pending_counts = models.JSONField(null=True, blank=True)
    postflight_rules_hash = models.TextField(blank=True)
    rules_received = models.BigIntegerField(null=True, blank=True)
    rules_processed = models.BigIntegerField(null=True, blank=True)
    rules_dropped = models.BooleanField(
        default=False, help_text="The last postflight processed fewer rules than it received."
    )
    drift_detected_at = models.DateTimeField(null=True, blank=True)
    drift_reasons = models.JSONField(default=list, blank=True)
    drift_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="Last server-side audit of the delivered rule counts."
    )
    # Liveness: each preflight sets `stale_after` to now + HOST_STALE_MISSED_SYNCS full-sync
    # intervals (the host's own interval) and clears `stale_since`; the periodic task marks
    # hosts whose `stale_after` has passed.
    stale_after = models.DateTimeField(null=True, blank=True)
    stale_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["machine_id"]
        indexes = [
            models.Index(fields=["last_postflight_at"], name="host_last_postflight"),
            models.Index(fields=["stale_after"], name="host_stale_after"),
            models.Index(fields=["rules_synced_rev"], name="host_rules_synced_rev"),
            # Console and API filters over large fleets: drifted, stale, Santa version.
            models.Index(
                fields=["drift_detected_at"],
                name="host_drifted",
                condition=Q(drift_detected_at__isnull=False),
            ),
            models.Index(
                fields=["stale_since"], name="host_stale", condition=Q(stale_since__isnull=False)
            ),
            models.Index(fields=["santa_version"], name="host_santa_version"),
        ]

    def __str__(self) -> str:
        return self.machine_id

    @property
    def drifted(self) -> bool:
        return bool(self.drift_reasons)


class HostSync(models.Model):
    """One completed sync of a host (written at its postflight), kept SYNC_HISTORY_RETENTION_DAYS.

    The console shows a host's last syncs from it; `revision` is the fleet revision whose rule
    set the host holds after the sync (null: unknown, its next sync is clean).
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="syncs")
    finished_at = models.DateTimeField()
    sync_type = models.CharField(max_length=16, choices=SyncType.choices)
    rules_received = models.BigIntegerField(default=0)
    rules_processed = models.BigIntegerField(default=0)
    revision = models.BigIntegerField(null=True, blank=True)
    rules_dropped = models.BooleanField(default=False)

    class Meta:
        ordering = ["-finished_at", "-id"]
        indexes = [
            models.Index(fields=["host", "-finished_at"], name="hostsync_host_finished"),
            # Retention (hosts_prune_syncs) deletes by age across all hosts.
            models.Index(fields=["finished_at"], name="hostsync_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.host_id} {self.sync_type} sync at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class TagSource(models.TextChoices):
    MANUAL = "manual", "Assigned (by hand, API or enrollment)"
    AUTO = "auto", "Automatic (tag rule on host facts)"


class HostTag(models.Model):
    """A host's membership of a tag during [rev_from, rev_to); rev_to null = current.

    Keeping the history lets a rule download compute what a host should have held at its last
    sync position, without a per-host copy of its rules. A host is in a tag when it has an open
    span of either source: assigned memberships and those tag rules compute are kept apart, so
    editing one never undoes the other.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="tag_spans")
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="host_spans")
    source = models.CharField(max_length=8, choices=TagSource.choices, default=TagSource.MANUAL)
    rev_from = models.BigIntegerField()
    rev_to = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["host", "tag", "source"],
                condition=Q(rev_to__isnull=True),
                name="hosttag_one_open",
            )
        ]
        indexes = [
            models.Index(fields=["host", "rev_to"], name="hosttag_host_rev_to"),
            models.Index(fields=["tag", "rev_to"], name="hosttag_tag_rev_to"),
        ]

    def __str__(self) -> str:
        return f"{self.host_id} in tag {self.tag_id} [{self.rev_from}, {self.rev_to or ''})"


class TagFact(models.TextChoices):
    PRIMARY_USER = "primary_user", "Primary user"
    PRIMARY_USER_GROUPS = "primary_user_groups", "Primary user's groups"
    HOSTNAME = "hostname", "Hostname"
    SERIAL_NUMBER = "serial_number", "Serial number"
    MODEL_IDENTIFIER = "model_identifier", "Model identifier"
    OS_VERSION = "os_version", "macOS version"
    OS_BUILD = "os_build", "macOS build"
    SANTA_VERSION = "santa_version", "Santa version"
    ENROLLMENT = "enrollment", "Enrollment name"


class TagOperator(models.TextChoices):
    EQUALS = "equals", "equals"
    CONTAINS = "contains", "contains (text) / has member (groups)"
    STARTS_WITH = "starts_with", "starts with"
    MATCHES = "matches", "matches the regular expression"
    VERSION_BELOW = "version_below", "version below"
    VERSION_AT_LEAST = "version_at_least", "version at least"


class TagRule(models.Model):
    """Puts every host whose reported fact satisfies a condition into `tag`.

    Several tag rules for one tag are alternatives (a host matching any of them is in the
    tag). They are evaluated for a host at each preflight, and for the whole fleet by a worker
    whenever a tag rule is created, changed or deleted.
    """

    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="tag_rules")
    fact = models.CharField(max_length=32, choices=TagFact.choices)
    operator = models.CharField(max_length=24, choices=TagOperator.choices)
    value = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tag__name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tag", "fact", "operator", "value"], name="tagrule_unique_condition"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tag} if {self.fact} {self.operator} {self.value!r}"


class ConfigurationProfile(models.Model):
    """Settings sent to agents at preflight; a null setting inherits from the level below.

    Resolution for a host, later levels winning: the default profile, the enrollment's mode,
    profiles of the host's tags (by priority, then name), profiles attached to the host, and
    finally the host's own mode override.
    """

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False)
    priority = models.IntegerField(default=100, help_text="Higher wins among tag profiles.")
    tags = models.ManyToManyField(Tag, blank=True, related_name="profiles")
    hosts = models.ManyToManyField(Host, blank=True, related_name="profiles")

    client_mode = models.CharField(max_length=16, choices=ClientMode.choices, null=True, blank=True)
    batch_size = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    full_sync_interval = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(60), MaxValueValidator(86400 * 7)],
        help_text="Seconds between full syncs (the agent raises values below 60 to 60).",
    )
    enable_bundles = models.BooleanField(null=True, blank=True)
    enable_transitive_rules = models.BooleanField(null=True, blank=True)
    enable_all_event_upload = models.BooleanField(null=True, blank=True)
    disable_unknown_event_upload = models.BooleanField(null=True, blank=True)
    allowed_path_regex = models.TextField(
        null=True, blank=True, help_text="Empty string clears the agent's value; null inherits."
    )
    blocked_path_regex = models.TextField(null=True, blank=True)
    removable_media_action = models.CharField(
        max_length=16, choices=RemovableMediaAction.choices, null=True, blank=True
    )
    removable_media_remount_flags = models.JSONField(null=True, blank=True)
    encrypted_removable_media_action = models.CharField(
        max_length=16, choices=RemovableMediaAction.choices, null=True, blank=True
    )
    encrypted_removable_media_remount_flags = models.JSONField(null=True, blank=True)
    override_file_access_action = models.CharField(
        max_length=16, choices=FileAccessAction.choices, null=True, blank=True
    )
    event_detail_url = models.TextField(null=True, blank=True)
    event_detail_text = models.CharField(max_length=48, null=True, blank=True)
    clean_sync_on_drift = models.BooleanField(
        null=True,
        blank=True,
        help_text="Answer a drifted host's next preflight with a CLEAN sync.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "-priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_profile"
            )
        ]

    def __str__(self) -> str:
        return self.name


class FanOutKind(models.TextChoices):
    RULES = "rules", "Rule change"
    TAG_RULES = "tag_rules", "Tag rule change"


class FanOutState(models.TextChoices):
    QUEUED = "queued", "Queued"
    DONE = "done", "Done"
    FAILED = "failed", "Failed (retried by the reconciler)"


class FanOut(models.Model):
    """Work for the Celery workers that follows a committed change, proportional to hosts.

    The row is written in the change's own transaction and the task is sent on commit, so a
    change never exists without its fan-out record; if the message is lost (broker down,
    worker crash) the periodic reconciler finds the row still queued and runs it. The work
    itself is recomputed from the database each time: running it twice, late or out of order
    gives the same result. Rule delivery never waits for it: agents read the revisioned rule
    tables directly (docs/architecture.md).
    """

    kind = models.CharField(max_length=16, choices=FanOutKind.choices)
    revision = models.BigIntegerField(help_text="Fleet revision of the change.")
    rule_ids = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=8, choices=FanOutState.choices, default=FanOutState.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state", "created_at"], name="fanout_state_created")]

    def __str__(self) -> str:
        return f"fan-out {self.pk} ({self.kind} @{self.revision}): {self.state}"
