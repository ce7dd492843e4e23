from rest_framework import serializers

from ..models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor_name",
        read_only=True,
        help_text='User name, "system", or "requester:<user>@<machine id>".',
    )

    class Meta:
        model = AuditEntry
        fields = ["id", "seq", "at", "actor", "action", "object_type", "object_id"]
        fields += ["object_repr", "before", "after", "justification", "source_ip", "hash"]
        read_only_fields = fields
