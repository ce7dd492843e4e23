from django.db import models
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from santaadmin.api import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
)

from ..errors import InvalidTag
from ..models import (
    CleanSync,
    ClientMode,
    ConfigurationProfile,
    Enrollment,
    FanOut,
    Host,
    Tag,
    TagFact,
    TagOperator,
    TagRule,
    TagSource,
)
from ..selectors import SETTING_FIELDS, configuration_for_host, tag_references
from ..services import normalize_tag_name


class HostSerializer(serializers.ModelSerializer):
    enrollment = serializers.SlugRelatedField(read_only=True, slug_field="name")
    tags = serializers.SerializerMethodField()
    client_mode = serializers.CharField(source="reported_client_mode", read_only=True)
    automatic_tags = serializers.SerializerMethodField()
    drifted = serializers.BooleanField(read_only=True)
    stale = serializers.SerializerMethodField()
    rules_synced_revision = serializers.IntegerField(source="rules_synced_rev", read_only=True)

    class Meta:
        model = Host
        fields = [
            "machine_id",
            "serial_number",
            "hostname",
            "os_version",
            "os_build",
            "model_identifier",
            "santa_version",
            "primary_user",
            "primary_user_groups",
            "enrollment",
            "tags",
            "automatic_tags",
            "client_mode",
            "client_mode_override",
            "clean_sync_requested",
            "sip_status",
            "request_clean_sync",
            "reported_counts",
            "expected_counts",
            "rules_synced_revision",
            "drifted",
            "drift_reasons",
            "drift_detected_at",
            "rules_received",
            "rules_processed",
            "rules_dropped",
            "last_sync_type",
            "first_seen_at",
            "last_preflight_at",
            "last_eventupload_at",
            "last_ruledownload_at",
            "last_postflight_at",
            "stale",
            "stale_since",
        ]
        read_only_fields = fields

    def get_tags(self, host: Host) -> list[str]:
        """Every tag the host is in (assigned or automatic)."""
        return sorted({span.tag.name for span in host.current_tag_spans})

    def get_automatic_tags(self, host: Host) -> list[str]:
        """Tags the host is in because a tag rule matches its facts."""
        return sorted(
            {span.tag.name for span in host.current_tag_spans if span.source == TagSource.AUTO}
        )

    def get_stale(self, host: Host) -> bool:
        return host.stale_since is not None


class HostDetailSerializer(HostSerializer):
    configuration = serializers.SerializerMethodField()
    delivery = serializers.SerializerMethodField()

    class Meta(HostSerializer.Meta):
        fields = [*HostSerializer.Meta.fields, "configuration", "delivery"]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "HostDelivery",
            {
                "revision": serializers.IntegerField(),
                "confirmed_revision": serializers.IntegerField(allow_null=True),
                "unconfirmed_download_revision": serializers.IntegerField(allow_null=True),
                "confirmed_rules": serializers.IntegerField(),
                "in_sync": serializers.BooleanField(),
                "pending_count": serializers.IntegerField(),
                "pending_count_exact": serializers.BooleanField(),
                "pending": inline_serializer(
                    "HostPendingRule",
                    {
                        "rule_id": serializers.IntegerField(allow_null=True),
                        "rule_type": serializers.CharField(),
                        "identifier": serializers.CharField(),
                        "policy": serializers.CharField(),
                    },
                    many=True,
                ),
            },
        )
    )
    def get_delivery(self, host: Host) -> dict:
        """What the host confirmed and what its next sync will send (rules.tracking)."""
        from rules.tracking import host_delivery

        delivery = host_delivery(host)
        return {
            "revision": delivery.revision,
            "confirmed_revision": delivery.confirmed_revision,
            "unconfirmed_download_revision": delivery.unconfirmed_download_revision,
            "confirmed_rules": delivery.confirmed_rules,
            "in_sync": delivery.in_sync,
            "pending_count": delivery.pending_count,
            "pending_count_exact": delivery.pending_count_exact,
            "pending": [
                {
                    "rule_id": rule.rule_id,
                    "rule_type": rule.rule_type,
                    "identifier": rule.identifier,
                    "policy": rule.policy,
                }
                for rule in delivery.pending
            ],
        }

    @extend_schema_field(
        inline_serializer(
            "HostConfiguration",
            {
                "settings": serializers.DictField(
                    help_text="The effective value of each setting the host receives."
                ),
                "sources": serializers.DictField(
                    child=serializers.CharField(),
                    help_text="Where each setting's value came from.",
                ),
            },
        )
    )
    def get_configuration(self, host: Host) -> dict:
        config = configuration_for_host(host, {s.tag_id for s in host.current_tag_spans})
        values = {
            name: getattr(config, name) for name in config.__dataclass_fields__ if name != "sources"
        }
        return {"settings": values, "sources": config.sources}


class HostUpdateSerializer(StrictSerializer):
    """PATCH: tags (names, replacing the current set), mode override, forced clean sync."""

    tags = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, max_length=100
    )
    client_mode_override = serializers.ChoiceField(
        choices=[*ClientMode.values, ""], required=False, allow_null=True, allow_blank=True
    )
    clean_sync_requested = serializers.ChoiceField(
        choices=[*CleanSync.values, ""], required=False, allow_null=True, allow_blank=True
    )

    def validate_tags(self, names: list[str]) -> list[str]:
        try:
            return sorted({normalize_tag_name(name) for name in names})
        except InvalidTag as exc:
            raise serializers.ValidationError(exc.detail) from None


class TagRuleSerializer(serializers.ModelSerializer):
    tag = serializers.SlugRelatedField(read_only=True, slug_field="name")

    class Meta:
        model = TagRule
        fields = ["id", "tag", "fact", "operator", "value", "description"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


class TagRuleInputSerializer(StrictSerializer):
    tag = StrictCharField(max_length=64)
    fact = serializers.ChoiceField(choices=TagFact.values)
    operator = serializers.ChoiceField(choices=TagOperator.values)
    value = StrictCharField(max_length=255, trim_whitespace=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=2048)

    def validate_tag(self, name: str) -> str:
        try:
            return normalize_tag_name(name)
        except InvalidTag as exc:
            raise serializers.ValidationError(exc.detail) from None


class FanOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = FanOut
        fields = ["id", "kind", "revision", "rule_ids", "state", "attempts", "result", "error"]
        fields += ["created_at", "started_at", "finished_at"]
        read_only_fields = fields


class ProfileSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    machine_ids = serializers.SlugRelatedField(
        source="hosts", many=True, read_only=True, slug_field="machine_id"
    )

    class Meta:
        model = ConfigurationProfile
        fields = ["id", "name", "description", "is_default", "priority", "tags", "machine_ids"]
        fields += [*SETTING_FIELDS, "created_at", "updated_at"]
        read_only_fields = fields


CHOICE_SETTINGS = (
    "client_mode",
    "removable_media_action",
    "encrypted_removable_media_action",
    "override_file_access_action",
)


class ProfileInputSerializer(serializers.ModelSerializer):
    """Writes: every setting may be null (inherit), never "" for a choice; values keep their
    JSON type (no "7" for 7, no 1 for true); unknown keys are refused."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.BooleanField: StrictBooleanField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
    }

    tags = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, max_length=100
    )
    machine_ids = serializers.ListField(
        child=StrictCharField(max_length=128), required=False, max_length=1000
    )
    removable_media_remount_flags = serializers.ListField(
        child=StrictCharField(max_length=32), required=False, allow_null=True, max_length=16
    )
    encrypted_removable_media_remount_flags = serializers.ListField(
        child=StrictCharField(max_length=32), required=False, allow_null=True, max_length=16
    )

    class Meta:
        model = ConfigurationProfile
        fields = ["name", "description", "priority", *SETTING_FIELDS, "tags", "machine_ids"]
        extra_kwargs = {
            "name": {"validators": []},  # uniqueness: a 409 from the service
            **{name: {"allow_blank": False} for name in CHOICE_SETTINGS},
        }

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)

    def validate_tags(self, names: list[str]) -> list[str]:
        try:
            return sorted({normalize_tag_name(name) for name in names})
        except InvalidTag as exc:
            raise serializers.ValidationError(exc.detail) from None


def _tag_name(name: str) -> str:
    try:
        return normalize_tag_name(name)
    except InvalidTag as exc:
        raise serializers.ValidationError(exc.detail) from None


class TagSerializer(serializers.ModelSerializer):
    """A tag and its current members (from tags_with_host_counts: counted, not loaded)."""

    host_count = serializers.IntegerField(read_only=True, help_text="Hosts in the tag now.")
    assigned_host_count = serializers.IntegerField(
        read_only=True, help_text="Hosts in it by hand, API or enrollment."
    )
    automatic_host_count = serializers.IntegerField(
        read_only=True, help_text="Hosts in it because a tag rule matches their facts."
    )

    class Meta:
        model = Tag
        fields = ["id", "name", "description", "created_at"]
        fields += ["host_count", "assigned_host_count", "automatic_host_count"]
        read_only_fields = fields


class TagDetailSerializer(TagSerializer):
    references = serializers.SerializerMethodField()

    class Meta(TagSerializer.Meta):
        fields = [*TagSerializer.Meta.fields, "references"]
        read_only_fields = fields

    def get_references(self, tag: Tag) -> list[str]:
        """What uses the tag, now or in the past; a tag can be deleted only when empty."""
        return tag_references(tag)


class TagInputSerializer(StrictSerializer):
    name = StrictCharField(max_length=64)
    description = StrictCharField(
        required=False, allow_blank=True, max_length=2048, trim_whitespace=False
    )

    def validate_name(self, name: str) -> str:
        return _tag_name(name)


class EnrollmentSerializer(serializers.ModelSerializer):
    """An enrollment; never its secret or the secret's hash (only the first characters)."""

    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    revoked = serializers.SerializerMethodField()
    host_count = serializers.IntegerField(read_only=True, help_text="Hosts it registered.")

    class Meta:
        model = Enrollment
        fields = ["id", "name", "secret_prefix", "tags", "client_mode", "client_cert_issuer"]
        fields += ["created_at", "revoked", "revoked_at", "host_count"]
        read_only_fields = fields

    def get_revoked(self, enrollment: Enrollment) -> bool:
        return enrollment.revoked_at is not None


class EnrollmentCreatedSerializer(EnrollmentSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The bearer secret agents send; shown in this response only, never again.",
    )

    class Meta(EnrollmentSerializer.Meta):
        fields = [*EnrollmentSerializer.Meta.fields, "secret"]
        read_only_fields = fields


def _enrollment_mode():
    return serializers.ChoiceField(
        choices=[*ClientMode.values, ""], required=False, allow_blank=True
    )


class EnrollmentInputSerializer(StrictSerializer):
    """Create (name required) or PATCH (tags, client_mode, client_cert_issuer)."""

    name = StrictCharField(max_length=64)
    tags = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, max_length=100
    )
    client_mode = _enrollment_mode()
    client_cert_issuer = StrictCharField(required=False, allow_blank=True, max_length=512)

    def validate_name(self, name: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise serializers.ValidationError("The name contains control characters.")
        return name

    def validate_tags(self, names: list[str]) -> list[str]:
        return sorted({_tag_name(name) for name in names})


class EnrollmentUpdateSerializer(EnrollmentInputSerializer):
    """PATCH: the name identifies the enrollment to people and tag rules; it stays."""

    def get_fields(self):
        fields = super().get_fields()
        del fields["name"]
        return fields
