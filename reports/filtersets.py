"""Filters of the report lists: the API (reports.api.views) and the console (reports.views)."""

import django_filters

from .models import Report, ReportFormat, ReportKind, ReportState


class ReportFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=ReportKind.choices, empty_label="Any report")
    state = django_filters.ChoiceFilter(choices=ReportState.choices, empty_label="Any state")
    format = django_filters.ChoiceFilter(choices=ReportFormat.choices, empty_label="Any format")
    created_by = django_filters.CharFilter(field_name="created_by__username", label="Asked by")

    class Meta:
        model = Report
        fields = ["kind", "state", "format", "created_by"]
