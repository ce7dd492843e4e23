import operator
import re
from functools import reduce

import django_filters
from django.db.models import Exists, OuterRef, Q

from rules.models import Rule

from .models import ApprovalRequest, ApprovalState, Binary, Certificate, Decision, Event


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


class BinaryFilterSet(django_filters.FilterSet):
    """Blocked binaries as analysts triage them: one row per executed binary (SHA-256)."""

    q = django_filters.CharFilter(
        method="filter_q",
        label="Search",
        help_text="File name, bundle, Team ID, signing ID, certificate or SHA-256 prefix",
    )
    outcome = django_filters.ChoiceFilter(
        method="filter_outcome",
        label="Outcome",
        empty_label="Blocked or would be blocked",
        choices=[
            ("blocked", "Blocked"),
            ("would_block", "Would be blocked (monitor mode)"),
            ("any", "Any execution"),
        ],
    )
    rule = django_filters.ChoiceFilter(
        method="filter_rule",
        label="Rules",
        empty_label="With or without a rule",
        choices=[("none", "No matching rule"), ("some", "A rule matches")],
    )
    team_id = django_filters.CharFilter(label="Team ID", method="filter_team_id")
    machine_id = django_filters.CharFilter(label="Machine ID", method="filter_machine_id")
    user = django_filters.CharFilter(label="User", method="filter_user")
    since = django_filters.DateFilter(
        field_name="last_executed_at",
        lookup_expr="date__gte",
        label="Last seen since",
        widget=django_filters.widgets.forms.DateInput(attrs={"type": "date"}),
    )
    ordering = django_filters.ChoiceFilter(
        label="Sort by",
        empty_label=None,
        choices=[
            ("impact", "Impact (hosts, then events)"),
            ("recent", "Most recently seen"),
            ("events", "Most events"),
            ("name", "File name"),
        ],
        method="order",
    )

    class Meta:
        model = Binary
        fields: list[str] = []

    def __init__(self, data=None, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        for name in ("q", "team_id", "machine_id", "user"):
            self.filters[name].field.widget.attrs.setdefault("type", "search")

    @property
    def qs(self):
        queryset = super().qs
        if not (self.form.is_valid() and self.form.cleaned_data.get("outcome")):
            queryset = queryset.filter(Q(blocked__gt=0) | Q(would_block__gt=0))
        if not (self.form.is_valid() and self.form.cleaned_data.get("ordering")):
            queryset = queryset.order_by(*ORDERINGS["impact"])
        return queryset

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        match = (
            Q(file_name__icontains=value)
            | Q(file_bundle_name__icontains=value)
            | Q(file_bundle_id__icontains=value)
            | Q(signing_id__icontains=value)
            | Q(team_id__iexact=value)
            | Q(leaf_certificate__cn__icontains=value)
        )
        if HEX.fullmatch(value):
            match |= Q(sha256__startswith=value.lower())
        return queryset.filter(match)

    def filter_outcome(self, queryset, name, value):
        if value == "blocked":
            return queryset.filter(blocked__gt=0)
        if value == "would_block":
            return queryset.filter(would_block__gt=0)
        return queryset.filter(executions__gt=0)

    def filter_rule(self, queryset, name, value):
        # One EXISTS per rule type rather than one over five OR-ed pairs: each becomes a hash
        # (anti-)join on the rule key index instead of five probes per binary.
        matches = [
            Exists(Rule.objects.filter(rule_type=rule_type, identifier=OuterRef(field)))
            for rule_type, field in (
                ("BINARY", "sha256"),
                ("CDHASH", "cdhash"),
                ("SIGNINGID", "signing_id"),
                ("CERTIFICATE", "leaf_certificate_id"),
                ("TEAMID", "team_id"),
            )
        ]
        if value == "some":
            return queryset.filter(reduce(operator.or_, matches))
        return queryset.filter(*[~match for match in matches])

    def filter_team_id(self, queryset, name, value):
        return queryset.filter(team_id=value.strip().upper())

    def filter_machine_id(self, queryset, name, value):
        return queryset.filter(host_stats__host__machine_id=value.strip())

    def filter_user(self, queryset, name, value):
        return queryset.filter(user_stats__user=value.strip())

    def order(self, queryset, name, value):
        return queryset.order_by(*ORDERINGS.get(value, ORDERINGS["impact"]))


class CertificateFilterSet(django_filters.FilterSet):
    """Signing certificates seen in binaries' chains."""

    cn = django_filters.CharFilter(lookup_expr="icontains", label="Common name contains")
    org = django_filters.CharFilter(lookup_expr="icontains", label="Organisation contains")
    ou = django_filters.CharFilter(
        lookup_expr="icontains", label="Organisational unit contains (the Team ID, for Apple's)"
    )
    valid_until_before = django_filters.IsoDateTimeFilter(
        field_name="valid_until", lookup_expr="lt", label="Expires before"
    )
    valid_until_after = django_filters.IsoDateTimeFilter(
        field_name="valid_until", lookup_expr="gte", label="Expires at or after"
    )

    class Meta:
        model = Certificate
        fields = ["cn", "org", "ou", "valid_until_before", "valid_until_after"]


class ApprovalRequestFilterSet(django_filters.FilterSet):
    """Approval requests: by state, binary, Mac, requester and age."""

    state = django_filters.ChoiceFilter(choices=ApprovalState.choices)
    sha256 = django_filters.CharFilter(method="filter_sha256", label="Binary SHA-256")
    machine_id = django_filters.CharFilter(field_name="host__machine_id")
    requester = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = ApprovalRequest
        fields = ["state", "sha256", "machine_id", "requester", "since", "until"]

    def filter_sha256(self, queryset, name, value):
        return queryset.filter(binary_id=value.strip().lower())


HEX = re.compile(r"[0-9a-fA-F]{6,64}")
ORDERINGS = {
    "impact": ("-host_count", "-executions", "sha256"),
    "recent": ("-last_executed_at", "sha256"),
    "events": ("-executions", "sha256"),
    "name": ("file_name", "sha256"),
}
