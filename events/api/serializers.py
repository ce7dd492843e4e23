from rest_framework import serializers

from ..models import Event


class EventSerializer(serializers.ModelSerializer):
    machine_id = serializers.CharField(source="host.machine_id", read_only=True)
    file_sha256 = serializers.CharField(source="binary_id", read_only=True)

    class Meta:
        model = Event
        exclude = ["host", "binary", "dedupe_key"]
        read_only_fields = [f.name for f in Event._meta.fields]
