import django_filters

from .models import Policy, Rule, RuleType


class RuleFilterSet(django_filters.FilterSet):
    rule_type = django_filters.MultipleChoiceFilter(choices=RuleType.choices)
    policy = django_filters.MultipleChoiceFilter(choices=Policy.choices)
    identifier = django_filters.CharFilter(lookup_expr="iexact")
    identifier_contains = django_filters.CharFilter(
        field_name="identifier", lookup_expr="icontains"
    )
    tag = django_filters.CharFilter(method="filter_tag")
    machine_id = django_filters.CharFilter(field_name="hosts__machine_id", distinct=True)
    created_by = django_filters.CharFilter(field_name="created_by__username")
    scope = django_filters.ChoiceFilter(
        choices=[("everyone", "everyone"), ("tags", "tags"), ("hosts", "hosts")],
        method="filter_scope",
    )

    class Meta:
        model = Rule
        fields = ["rule_type", "policy", "identifier", "tag", "machine_id", "created_by"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__name=value.strip().lower()).distinct()

    def filter_scope(self, queryset, name, value):
        if value == "everyone":
            return queryset.filter(tags__isnull=True, hosts__isnull=True)
        if value == "tags":
            return queryset.filter(tags__isnull=False).distinct()
        return queryset.filter(hosts__isnull=False).distinct()
