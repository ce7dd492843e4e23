import django_filters
from django import forms
from django.db.models import Exists, F, OuterRef, Q

from .models import (
    ClientMode,
    ConfigurationProfile,
    Enrollment,
    FanOut,
    FanOutKind,
    FanOutState,
    Host,
    HostTag,
    Tag,
    TagFact,
    TagRule,
)


class HostFilterSet(django_filters.FilterSet):
    """Host filters of the API and the console. Each is a predicate on the host row or an
    EXISTS probe of the (tag, rev_to) index: no join multiplies rows, no DISTINCT is needed."""

    q = django_filters.CharFilter(method="filter_q", label="Search")  # id, name, serial, user
    machine_id = django_filters.CharFilter()
    hostname = django_filters.CharFilter(lookup_expr="icontains")
    serial_number = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag")
    client_mode = django_filters.ChoiceFilter(
        field_name="reported_client_mode", choices=ClientMode.choices
    )
    mode = django_filters.ChoiceFilter(
        method="filter_mode",
        choices=ClientMode.choices,
        label="Mode",
        empty_label="Any mode",
    )  # effective: the override if set, else the mode the host reported
    santa_version = django_filters.CharFilter(label="Santa version")
    enrollment = django_filters.CharFilter(field_name="enrollment__name")
    drifted = django_filters.BooleanFilter(method="filter_drifted")
    stale = django_filters.BooleanFilter(
        field_name="stale_since", lookup_expr="isnull", exclude=True
    )
    rules_dropped = django_filters.BooleanFilter()

    class Meta:
        model = Host
        fields = ["machine_id", "serial_number", "santa_version", "rules_dropped"]

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(machine_id__icontains=value)
            | Q(hostname__icontains=value)
            | Q(serial_number__icontains=value)
            | Q(primary_user__icontains=value)
        )

    def filter_tag(self, queryset, name, value):
        value = value.strip().lower()
        if not value:
            return queryset
        return queryset.filter(
            Exists(
                HostTag.objects.filter(host_id=OuterRef("pk"), tag__name=value, rev_to__isnull=True)
            )
        )

    def filter_mode(self, queryset, name, value):
        return queryset.filter(
            Q(client_mode_override=value) | Q(client_mode_override="", reported_client_mode=value)
        )

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


class TagFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(method="filter_name", label="Name (exact)")
    name_contains = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", label="Name contains"
    )

    class Meta:
        model = Tag
        fields = ["name", "name_contains"]

    def filter_name(self, queryset, name, value):
        # Names are stored normalised (hosts.services.normalize_tag_name).
        return queryset.filter(name=value.strip().lower())


class EnrollmentFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(label="Name (exact)")
    name_contains = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", label="Name contains"
    )
    revoked = django_filters.BooleanFilter(
        field_name="revoked_at", lookup_expr="isnull", exclude=True, label="Revoked"
    )
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")

    class Meta:
        model = Enrollment
        fields = ["name", "name_contains", "revoked", "tag"]

    def filter_tag(self, queryset, name, value):
        tags = Tag.objects.filter(name=value.strip().lower(), enrollments=OuterRef("pk"))
        return queryset.filter(Exists(tags))


class ProfileFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(label="Name (exact)")
    name_contains = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", label="Name contains"
    )
    tag = django_filters.CharFilter(method="filter_tag", label="Attached to this tag")
    machine_id = django_filters.CharFilter(method="filter_machine_id", label="Attached to host")
    is_default = django_filters.BooleanFilter()

    class Meta:
        model = ConfigurationProfile
        fields = ["name", "name_contains", "tag", "machine_id", "is_default"]

    def filter_tag(self, queryset, name, value):
        tags = Tag.objects.filter(name=value.strip().lower(), profiles=OuterRef("pk"))
        return queryset.filter(Exists(tags))

    def filter_machine_id(self, queryset, name, value):
        hosts = Host.objects.filter(machine_id=value.strip(), profiles=OuterRef("pk"))
        return queryset.filter(Exists(hosts))


class _AnyYesNo(forms.NullBooleanSelect):
    """Yes / No / any (the default widget's third choice reads "Unknown")."""

    def __init__(self, attrs=None):
        super().__init__(attrs)
        self.choices = [("", "Any"), ("true", "Yes"), ("false", "No")]

    def format_value(self, value):
        # A list: a plain string would make "" (Any) match as a substring of any value.
        return [{True: "true", False: "false", "true": "true", "false": "false"}.get(value, "")]


class HostConsoleFilterSet(HostFilterSet):
    """The hosts list in the console: the filters an analyst triages with."""

    CONSOLE_FILTERS = ("q", "tag", "mode", "santa_version", "stale", "drifted", "ordering")
    ORDERINGS = {
        "machine_id": ("machine_id",),
        # Never-synced hosts first when looking for the oldest, last when for the newest, on
        # SQLite and PostgreSQL alike (they sort NULL differently by default).
        "last_sync": (F("last_postflight_at").asc(nulls_first=True), "id"),
        "-last_sync": (F("last_postflight_at").desc(nulls_last=True), "-id"),
    }

    ordering = django_filters.ChoiceFilter(
        label="Sort by",
        empty_label=None,
        choices=[
            ("machine_id", "Machine ID"),
            ("last_sync", "Last sync, oldest first"),
            ("-last_sync", "Last sync, newest first"),
        ],
        method="order",
    )

    def __init__(self, data=None, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        self.filters = {name: self.filters[name] for name in self.CONSOLE_FILTERS}
        labels = {"tag": "Tag", "stale": "Stale", "drifted": "Drifted"}
        for name, label in labels.items():
            self.filters[name].label = label
        for name in ("stale", "drifted"):
            self.filters[name].extra["widget"] = _AnyYesNo
        for name in ("q", "tag", "santa_version"):
            self.filters[name].extra["widget"] = forms.TextInput(attrs={"type": "search"})
        self.filters["q"].extra["widget"] = forms.TextInput(
            attrs={"type": "search", "placeholder": "Machine ID, hostname, serial, user"}
        )

    def order(self, queryset, name, value):
        return queryset.order_by(*self.ORDERINGS.get(value, self.ORDERINGS["machine_id"]))
