"""Filters of the audit log page. Every one but the text search is an equality or a range on
an indexed column (action, actor_name, actor_token, (object_type, object_id), at)."""

from __future__ import annotations

import datetime

import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone

from .models import AuditEntry


def _start_of(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


class AuditEntryFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(
        field_name="actor_name",
        label="Who",
        method="filter_exact",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "user name or system"}),
    )
    token = django_filters.CharFilter(
        field_name="actor_token",
        label="API token",
        method="filter_exact",
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "prefix, e.g. sat_1a2b3c4d"}
        ),
    )
    action = django_filters.CharFilter(
        label="Action",
        method="filter_exact",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "e.g. host.set_tags"}),
    )
    object_type = django_filters.CharFilter(
        label="Object type",
        method="filter_exact",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "rule, host, profile…"}),
    )
    object_id = django_filters.CharFilter(
        label="Object ID",
        method="filter_exact",
        widget=forms.TextInput(attrs={"type": "search"}),
    )
    q = django_filters.CharFilter(
        label="Search",
        method="filter_q",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "object or justification"}),
    )
    since = django_filters.DateFilter(
        label="Since",
        method="filter_since",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    until = django_filters.DateFilter(
        label="Until (inclusive)",
        method="filter_until",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_exact(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(**{name: value}) if value else queryset

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(object_repr__icontains=value) | Q(justification__icontains=value))

    def filter_since(self, queryset, name, value):
        return queryset.filter(at__gte=_start_of(value))

    def filter_until(self, queryset, name, value):
        return queryset.filter(at__lt=_start_of(value + datetime.timedelta(days=1)))
