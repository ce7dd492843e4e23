from django.conf import settings
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from hosts.models import FanOutState
from santaadmin.api import StrictCharField, StrictIntegerField, StrictSerializer

from ..models import Policy, Rule, RuleType
from ..services import RuleInput, rule_snapshot
from ..tracking import rule_delivery


class RuleSerializer(serializers.ModelSerializer):
    """A rule as the API shows it, with the protocol's field names and enum strings."""

    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    excluded_tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    machine_ids = serializers.SlugRelatedField(
        source="hosts", many=True, read_only=True, slug_field="machine_id"
    )
    created_by = serializers.SlugRelatedField(read_only=True, slug_field="username")
    updated_by = serializers.SlugRelatedField(read_only=True, slug_field="username")

    class Meta:
        model = Rule
        fields = [
            "id",
            "rule_type",
            "identifier",
            "policy",
            "custom_msg",
            "custom_url",
            "cel_expr",
            "comment",
            "expires_at",
            "tags",
            "excluded_tags",
            "machine_ids",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
            "revision",
            "delivery_summary",
        ]
        read_only_fields = fields

    delivery_summary = serializers.SerializerMethodField()

    @extend_schema_field(
        inline_serializer(
            "RuleDeliverySummary",
            {
                "target_hosts": serializers.IntegerField(allow_null=True),
                "confirmed_hosts": serializers.IntegerField(allow_null=True),
                "checked_at": serializers.DateTimeField(allow_null=True),
            },
        )
    )
    def get_delivery_summary(self, rule: Rule) -> dict:
        """Counts kept by the workers (refreshed after each change and every few minutes)."""
        return {
            "target_hosts": rule.target_hosts,
            "confirmed_hosts": rule.confirmed_hosts,
            "checked_at": rule.delivery_checked_at,
        }


class RuleDetailSerializer(RuleSerializer):
    """One rule with its live delivery tracking and the state of its last fan-out."""

    delivery = serializers.SerializerMethodField()
    fanout = serializers.SerializerMethodField()

    class Meta(RuleSerializer.Meta):
        fields = [*RuleSerializer.Meta.fields, "delivery", "fanout"]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "RuleDelivery",
            {
                "revision": serializers.IntegerField(),
                "target_hosts": serializers.IntegerField(),
                "confirmed_hosts": serializers.IntegerField(),
                "pending_hosts": serializers.IntegerField(),
                "pending_sample": serializers.ListField(
                    child=serializers.CharField(), help_text="Machine ids, at most 50."
                ),
            },
            allow_null=True,
        )
    )
    def get_delivery(self, rule: Rule) -> dict | None:
        delivery = rule_delivery(rule)
        if delivery is None:
            return None
        return {
            "revision": delivery.revision,
            "target_hosts": delivery.target_hosts,
            "confirmed_hosts": delivery.confirmed_hosts,
            "pending_hosts": delivery.pending_hosts,
            "pending_sample": delivery.pending_sample,
        }

    @extend_schema_field(
        inline_serializer(
            "RuleFanOut",
            {
                "id": serializers.IntegerField(),
                "state": serializers.ChoiceField(choices=FanOutState.choices),
                "created_at": serializers.DateTimeField(),
                "finished_at": serializers.DateTimeField(allow_null=True),
            },
            allow_null=True,
        )
    )
    def get_fanout(self, rule: Rule) -> dict | None:
        fanout = rule.fanout
        if fanout is None:
            return None
        return {
            "id": fanout.pk,
            "state": fanout.state,
            "created_at": fanout.created_at,
            "finished_at": fanout.finished_at,
        }


def _names(max_items: int, max_length: int):
    return serializers.ListField(
        child=StrictCharField(max_length=max_length),
        required=False,
        max_length=max_items,
    )


class RuleInputSerializer(StrictSerializer):
    """What a client may send to create or change a rule."""

    rule_type = serializers.ChoiceField(choices=RuleType.values)
    identifier = StrictCharField(max_length=255)
    policy = serializers.ChoiceField(choices=Policy.values)
    custom_msg = StrictCharField(
        required=False, allow_blank=True, max_length=2048, trim_whitespace=False
    )
    custom_url = StrictCharField(required=False, allow_blank=True, max_length=2048)
    cel_expr = StrictCharField(
        required=False, allow_blank=True, max_length=8192, trim_whitespace=False
    )
    comment = StrictCharField(
        required=False, allow_blank=True, max_length=8192, trim_whitespace=False
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    tags = _names(100, 64)
    excluded_tags = _names(100, 64)
    machine_ids = _names(1000, 128)

    def to_input(self) -> RuleInput:
        data = self.validated_data
        return RuleInput(
            rule_type=data["rule_type"],
            identifier=data["identifier"],
            policy=data["policy"],
            custom_msg=data.get("custom_msg", ""),
            custom_url=data.get("custom_url", ""),
            cel_expr=data.get("cel_expr", ""),
            comment=data.get("comment", ""),
            tags=tuple(data.get("tags", ())),
            excluded_tags=tuple(data.get("excluded_tags", ())),
            machine_ids=tuple(data.get("machine_ids", ())),
            expires_at=data.get("expires_at"),
        )

    @staticmethod
    def initial_from(rule: Rule) -> dict:
        """A rule's current values in input form, for PATCH to start from."""
        return rule_snapshot(rule)


MAX_ID = 2**63 - 1


def _at_most_bulk_rules(items: list) -> list:
    """A request creates or deletes at most API_MAX_BULK_RULES rules (one transaction)."""
    limit = settings.API_MAX_BULK_RULES
    if len(items) > limit:
        raise serializers.ValidationError(
            f"At most API_MAX_BULK_RULES ({limit:,}) rules per request; {len(items):,} given. "
            "Split them into several requests."
        )
    return items


class RuleBulkSerializer(StrictSerializer):
    rules = serializers.ListField(child=serializers.DictField(), min_length=1)

    def validate_rules(self, items: list) -> list:
        return _at_most_bulk_rules(items)


class RuleBulkDeleteSerializer(StrictSerializer):
    # Ids are BigAutoField keys: a larger number names no rule, and a database cannot even
    # compare it (SQLite overflows, PostgreSQL refuses it), so it is a 400 like any unknown id.
    ids = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=MAX_ID), min_length=1
    )
    justification = StrictCharField(
        required=False, allow_blank=True, max_length=8192, trim_whitespace=False
    )

    def validate_ids(self, ids: list) -> list:
        return _at_most_bulk_rules(ids)


class RuleImportOptionsSerializer(StrictSerializer):
    """The import's options, from the query string (or the fields of a multipart form)."""

    tags = _names(100, 64)
    machine_ids = _names(1000, 128)
    justification = StrictCharField(required=False, allow_blank=True, max_length=8192)
    dry_run = serializers.BooleanField(required=False, default=False)
    format = serializers.ChoiceField(
        choices=["auto", "santactl", "csv"],
        required=False,
        default="auto",
        help_text="Multipart uploads only: the file's format (auto: from its name or content).",
    )


class RuleImportItemSerializer(serializers.Serializer):
    """One rule an import created (or, in a dry run, would create: id null)."""

    id = serializers.IntegerField(allow_null=True)
    rule_type = serializers.ChoiceField(choices=RuleType.choices)
    identifier = serializers.CharField()
    policy = serializers.ChoiceField(choices=Policy.choices)
    custom_msg = serializers.CharField()
    custom_url = serializers.CharField()
    cel_expr = serializers.CharField()
    comment = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    machine_ids = serializers.ListField(child=serializers.CharField())


class RuleImportResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    count = serializers.IntegerField()
    results = RuleImportItemSerializer(many=True)
    notes = serializers.ListField(
        child=serializers.CharField(), help_text="What the file held that was left out."
    )
