import django_filters
from django.db.models import Q

from .models import ClientMode, Host


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
