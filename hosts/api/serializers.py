from rest_framework import serializers

from santaadmin.api import StrictCharField, StrictSerializer

from ..errors import InvalidTag
from ..models import CleanSync, ClientMode, Host
from ..selectors import configuration_for_host
from ..services import normalize_tag_name


class HostSerializer(serializers.ModelSerializer):
    enrollment = serializers.SlugRelatedField(read_only=True, slug_field="name")
    tags = serializers.SerializerMethodField()
    client_mode = serializers.CharField(source="reported_client_mode", read_only=True)
    drifted = serializers.BooleanField(read_only=True)
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
        ]
        read_only_fields = fields

    def get_tags(self, host: Host) -> list[str]:
        return sorted(span.tag.name for span in host.current_tag_spans)


class HostDetailSerializer(HostSerializer):
    configuration = serializers.SerializerMethodField()

    class Meta(HostSerializer.Meta):
        fields = [*HostSerializer.Meta.fields, "configuration"]
        read_only_fields = fields

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
