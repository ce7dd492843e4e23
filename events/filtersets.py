import django_filters

from .models import Decision, Event


class EventFilterSet(django_filters.FilterSet):
    machine_id = django_filters.CharFilter(field_name="host__machine_id")
    file_sha256 = django_filters.CharFilter(method="filter_sha256")
    decision = django_filters.MultipleChoiceFilter(choices=Decision.choices)
    since = django_filters.IsoDateTimeFilter(field_name="execution_time", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="execution_time", lookup_expr="lt")
    executing_user = django_filters.CharFilter()
    team_id = django_filters.CharFilter()
    signing_id = django_filters.CharFilter()

    class Meta:
        model = Event
        fields = ["machine_id", "file_sha256", "decision", "since", "until"]

    def filter_sha256(self, queryset, name, value):
        return queryset.filter(binary_id=value.strip().lower())
