"""Report parameters: one strict input serializer per kind, shared by the API and the console.

Parameters arrive as JSON (POST /api/v1/reports/), as a query string (the API's direct export
and the console's download link) or as a console form, so each field takes its JSON type or
the text a query string carries ("true", "7", "2026-01-01T00:00"). `validate_parameters` is
the only validation: it refuses unknown keys and bad values with a message per parameter, and
returns the parameters normalised to JSON (what a `Report` stores and its content repeats).
Filters are also checked by the kind's django-filter FilterSet, which builds the queryset, so
a stored report can never hold a filter its FilterSet would silently ignore.

Times are ISO 8601; a time without an offset, or a date alone (midnight), is UTC.
"""

from __future__ import annotations

import datetime

from django.utils import dateparse
from rest_framework import serializers

from santaadmin.api import StrictSerializer

from .errors import InvalidParameters

MAX_TEXT = 255


class TextParam(serializers.CharField):
    """Text, stripped; at most 255 characters (NUL and lone surrogates are refused)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", MAX_TEXT)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChoiceParam(serializers.ChoiceField):
    def __init__(self, choices, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(choices, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class MultiChoiceParam(serializers.MultipleChoiceField):
    """A list of choices (or one choice as a string, as a query string sends it); kept in the
    order of the choices."""

    def __init__(self, choices, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(choices=choices, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            self.fail("not_a_list", input_type=type(data).__name__)
        chosen = super().to_internal_value(data)
        return [value for value in self.choices if value in chosen]


class BoolParam(serializers.Field):
    """true or false, as JSON or as the text "true" / "false"."""

    default_error_messages = {"invalid": 'Must be true or false ("true" or "false").'}

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        if isinstance(data, str) and data.lower() in ("true", "false"):
            return data.lower() == "true"
        self.fail("invalid")

    def to_representation(self, value):
        return value


class IntParam(serializers.IntegerField):
    """An integer, as JSON or as decimal digits (not 7.0, "7.5" or true)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and data.strip().isdigit() and data.strip().isascii():
            data = int(data.strip())
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class TimeParam(serializers.Field):
    """A time: ISO 8601 date and time, or a date alone (midnight); UTC unless it says."""

    default_error_messages = {
        "invalid": "Not a time: use ISO 8601, e.g. 2026-01-31T12:00:00Z or 2026-01-31 (UTC)."
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or len(data) > 64:
            self.fail("invalid")
        text = data.strip()
        try:
            value = dateparse.parse_datetime(text)
            if value is None:
                day = dateparse.parse_date(text)
                if day is None:
                    self.fail("invalid")
                value = datetime.datetime.combine(day, datetime.time.min)
        except ValueError:  # well-formed but impossible: 2026-02-30, hour 25
            self.fail("invalid")
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)

    def to_representation(self, value):
        return iso(value)


def iso(value: datetime.datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: every time in every report looks alike."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PeriodMixin:
    """since (inclusive) and until (exclusive); since must come before until."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": ["Must be later than since."]})
        return attrs


class ReportParameters(StrictSerializer):
    """Base of each kind's parameters: refuses unknown keys, checks the FilterSet's form."""

    filterset_class = None  # the kind's django-filter FilterSet
    filter_names: tuple[str, ...] = ()  # the parameters that are its filters

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.filterset_class is not None:
            filterset = self.filterset_class(filter_data(attrs, self.filter_names))
            if not filterset.is_valid():
                errors = filterset.errors
                raise serializers.ValidationError(
                    {name: [str(m) for m in messages] for name, messages in errors.items()}
                )
        return attrs


def filter_data(values: dict, names) -> dict:
    """A FilterSet's data (the text a query string would hold) from validated parameters."""
    data = {}
    for name in names:
        value = values.get(name)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, bool):
            data[name] = "true" if value else "false"
        elif isinstance(value, datetime.datetime):
            data[name] = value.isoformat()
        elif isinstance(value, list):
            data[name] = [str(v) for v in value]
        else:
            data[name] = str(value)
    return data


def _flatten(errors, prefix: str = "") -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = f"{prefix}{key}" if key != "non_field_errors" or not prefix else prefix[:-1]
            for inner, messages in _flatten(value, f"{name}.").items():
                fields.setdefault(inner, []).extend(messages)
    else:
        messages = errors if isinstance(errors, list) else [errors]
        fields[prefix[:-1] or "parameters"] = [str(m) for m in messages]
    return fields


def parse_parameters(serializer_class, data) -> dict:
    """The validated values (Python types) of `data`, or InvalidParameters."""
    if not isinstance(data, dict):
        raise InvalidParameters(
            "Parameters must be an object.", {"parameters": ["Expected an object."]}
        )
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise InvalidParameters("Invalid parameters.", _flatten(serializer.errors))
    return {
        name: value
        for name, value in serializer.validated_data.items()
        if value is not None and value != "" and value != []
    }


def normalize(serializer_class, values: dict) -> dict:
    """Validated values as JSON: what a report stores, shows and repeats in its content."""
    fields = serializer_class().fields
    return {name: fields[name].to_representation(value) for name, value in values.items()}


def from_query(serializer_class, query, *, strict: bool) -> dict:
    """Parameters from a query string or a form (a QueryDict): lists for the multiple
    choices, text for the rest, empty values left out. `strict` refuses keys that are not
    parameters (the API); the console's form also sends its CSRF token and buttons."""
    fields = serializer_class().fields
    data: dict = {}
    unknown = sorted(set(query) - set(fields))
    if strict and unknown:
        raise InvalidParameters(
            "Unknown parameters.", {name: ["Unknown parameter."] for name in unknown}
        )
    for name, field in fields.items():
        if name not in query:
            continue
        if isinstance(field, MultiChoiceParam):
            values = [v for v in query.getlist(name) if v.strip()]
            if values:
                data[name] = values
        else:
            value = query.get(name, "").strip()
            if value:
                data[name] = value
    return data
