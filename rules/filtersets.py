"""Filters of the rule lists: the REST API (rules.api.views) and the console (rules.views)."""

import datetime

import django_filters
from django import forms
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .models import Policy, Rule, RuleType

SCOPE_CHOICES = [("everyone", "everyone"), ("tags", "tags"), ("hosts", "hosts")]
MAX_STALE_DAYS = 36500

# The Binary column a rule of each type matches (events.selectors.identifier_for).
BINARY_FIELD = {
    RuleType.BINARY: "sha256",
    RuleType.CERTIFICATE: "leaf_certificate_id",
    RuleType.TEAMID: "team_id",
    RuleType.SIGNINGID: "signing_id",
    RuleType.CDHASH: "cdhash",
}


class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def executed_since(cutoff: datetime.datetime) -> Q:
    """Rules matched (by their type's identifier) by a binary executed at or after `cutoff`."""
    from events.models import Binary

    match = Q()
    for rule_type, field in BINARY_FIELD.items():
        recent = Binary.objects.filter(
            **{field: OuterRef("identifier")}, last_executed_at__gte=cutoff
        )
        match |= Q(rule_type=rule_type) & Q(Exists(recent))
    return match


class RuleFilterSet(django_filters.FilterSet):
    rule_type = django_filters.MultipleChoiceFilter(choices=RuleType.choices, label="Type")
    policy = django_filters.MultipleChoiceFilter(choices=Policy.choices, label="Policy")
    identifier = django_filters.CharFilter(lookup_expr="iexact", label="Identifier (exact)")
    identifier_contains = django_filters.CharFilter(
        field_name="identifier", lookup_expr="icontains", label="Identifier contains"
    )
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")
    machine_id = django_filters.CharFilter(
        field_name="hosts__machine_id", distinct=True, label="Machine ID"
    )
    created_by = django_filters.CharFilter(field_name="created_by__username", label="Created by")
    scope = django_filters.ChoiceFilter(
        choices=SCOPE_CHOICES, method="filter_scope", label="Scope", empty_label="any"
    )
    stale_days = IntegerFilter(
        method="filter_stale",
        label="Stale: no execution in (days)",
        min_value=1,
        max_value=MAX_STALE_DAYS,
    )

    class Meta:
        model = Rule
        # Also the order of the console's filter form.
        fields = [
            "rule_type",
            "policy",
            "scope",
            "tag",
            "identifier_contains",
            "identifier",
            "machine_id",
            "created_by",
            "stale_days",
        ]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__name=value.strip().lower()).distinct()

    def filter_scope(self, queryset, name, value):
        if value == "everyone":
            return queryset.filter(tags__isnull=True, hosts__isnull=True)
        if value == "tags":
            return queryset.filter(tags__isnull=False).distinct()
        return queryset.filter(hosts__isnull=False).distinct()

    def filter_stale(self, queryset, name, value):
        """Stale: no binary the rule matches was executed in the last `value` days."""
        cutoff = timezone.now() - datetime.timedelta(days=value)
        return queryset.exclude(executed_since(cutoff))
