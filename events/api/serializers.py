from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from rules.api.serializers import RuleSerializer
from rules.models import Policy, RuleType
from santaadmin.api import StrictCharField, StrictSerializer

from ..models import ApprovalRequest, ApprovalState, Binary, Certificate, Event
from ..selectors import binary_signing_chain, rules_matching


class EventSerializer(serializers.ModelSerializer):
    machine_id = serializers.CharField(source="host.machine_id", read_only=True)
    file_sha256 = serializers.CharField(source="binary_id", read_only=True)

    class Meta:
        model = Event
        exclude = ["host", "binary", "dedupe_key"]
        read_only_fields = [f.name for f in Event._meta.fields]


class CertificateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Certificate
        fields = ["sha256", "cn", "org", "ou", "valid_from", "valid_until"]
        fields += ["first_seen_at", "last_seen_at"]
        read_only_fields = fields


class BinarySerializer(serializers.ModelSerializer):
    """A binary with its execution statistics (kept at ingestion, events.stats)."""

    leaf_certificate = CertificateSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Binary
        fields = [
            "sha256",
            "file_name",
            "file_path",
            "team_id",
            "signing_id",
            "cdhash",
            "signing_status",
            "leaf_certificate",
            "file_bundle_id",
            "file_bundle_name",
            "file_bundle_version_string",
            "first_seen_at",
            "last_seen_at",
            "executions",
            "blocked",
            "would_block",
            "host_count",
            "user_count",
            "first_executed_at",
            "last_executed_at",
            "last_decision",
        ]
        read_only_fields = fields


class BinaryDetailSerializer(BinarySerializer):
    """One binary: its signing chain, entitlements and the rules whose identifier matches it
    (most specific type first, as Santa evaluates them)."""

    signing_chain = serializers.SerializerMethodField()
    rules = serializers.SerializerMethodField()

    class Meta(BinarySerializer.Meta):
        fields = [*BinarySerializer.Meta.fields, "signing_chain", "entitlements", "rules"]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "SigningChainCertificate",
            {
                "sha256": serializers.CharField(),
                "cn": serializers.CharField(required=False),
                "org": serializers.CharField(required=False),
                "ou": serializers.CharField(required=False),
                "valid_from": serializers.DateTimeField(required=False, allow_null=True),
                "valid_until": serializers.DateTimeField(required=False, allow_null=True),
                "first_seen_at": serializers.DateTimeField(required=False),
                "last_seen_at": serializers.DateTimeField(required=False),
            },
            many=True,
        )
    )
    def get_signing_chain(self, binary: Binary) -> list[dict]:
        """Leaf first; a certificate missing from the catalogue is given by its SHA-256 only."""
        return [
            {"sha256": entry} if isinstance(entry, str) else CertificateSerializer(entry).data
            for entry in binary_signing_chain(binary)
        ]

    @extend_schema_field(RuleSerializer(many=True))
    def get_rules(self, binary: Binary) -> list[dict]:
        return RuleSerializer(rules_matching(binary), many=True).data


class ApprovalRequestSerializer(serializers.ModelSerializer):
    sha256 = serializers.CharField(source="binary_id", read_only=True)
    file_name = serializers.CharField(source="binary.file_name", read_only=True)
    machine_id = serializers.CharField(source="host.machine_id", read_only=True)
    hostname = serializers.CharField(source="host.hostname", read_only=True)
    decided_by = serializers.SlugRelatedField(read_only=True, slug_field="username")
    rule = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    state = serializers.ChoiceField(choices=ApprovalState.choices, read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = ["id", "state", "sha256", "file_name", "machine_id", "hostname", "requester"]
        fields += ["reason", "response", "decided_by", "decided_at", "rule"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


# The decisions an approval makes: allow (the request is approved) or block (it is closed as
# denied, with the rule attached), as in the console.
DECISION_POLICIES = [
    Policy.ALLOWLIST,
    Policy.ALLOWLIST_COMPILER,
    Policy.BLOCKLIST,
    Policy.SILENT_BLOCKLIST,
    Policy.SILENT_GUI_BLOCKLIST,
    Policy.SILENT_TTY_BLOCKLIST,
]


class ApprovalApproveSerializer(StrictSerializer):
    """Decide a waiting request with a rule for its binary."""

    rule_type = serializers.ChoiceField(choices=RuleType.values)
    policy = serializers.ChoiceField(
        choices=[str(p) for p in DECISION_POLICIES], required=False, default=Policy.ALLOWLIST
    )
    tags = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, max_length=100
    )
    machine_ids = serializers.ListField(
        child=StrictCharField(max_length=128), required=False, max_length=1000
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    custom_msg = StrictCharField(
        required=False, allow_blank=True, max_length=2048, trim_whitespace=False
    )
    justification = StrictCharField(max_length=8192)
    response = StrictCharField(required=False, allow_blank=True, max_length=2000)


class ApprovalDenySerializer(StrictSerializer):
    response = StrictCharField(max_length=2000, help_text="What the requester reads.")
