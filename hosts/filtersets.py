import django_filters
from django.db.models import Q

from .models import ClientMode, FanOut, FanOutKind, FanOutState, Host, TagFact, TagRule


class HostFilterSet(django_filters.FilterSet):
    machine_id = django_filters.CharFilter()
    hostname = django_filters.CharFilter(lookup_expr="icontains")
    serial_number = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag")
    client_mode = django_filters.ChoiceFilter(
        field_name="reported_client_mode", choices=ClientMode.choices
    )
    santa_version = django_filters.CharFilter()
    enrollment = django_filters.CharFilter(field_name="enrollment__name")
    drifted = django_filters.BooleanFilter(method="filter_drifted")
    stale = django_filters.BooleanFilter(
        field_name="stale_since", lookup_expr="isnull", exclude=True
    )
    rules_dropped = django_filters.BooleanFilter()

    class Meta:
        model = Host
        fields = ["machine_id", "serial_number", "santa_version", "rules_dropped"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(
            tag_spans__tag__name=value.lower(), tag_spans__rev_to__isnull=True
        ).distinct()

    def filter_drifted(self, queryset, name, value):
        drifted = Q(drift_detected_at__isnull=False)
        return queryset.filter(drifted) if value else queryset.exclude(drifted)


class TagRuleFilterSet(django_filters.FilterSet):
    tag = django_filters.CharFilter(field_name="tag__name")
    fact = django_filters.ChoiceFilter(choices=TagFact.choices)

    class Meta:
        model = TagRule
        fields = ["tag", "fact"]


class FanOutFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=FanOutKind.choices)
    state = django_filters.ChoiceFilter(choices=FanOutState.choices)

    class Meta:
        model = FanOut
        fields = ["kind", "state"]
