"""The console's report forms, derived from each kind's parameters (reports.params), so the
console and the API take the same parameters. The form only renders and re-displays them:
validation is `reports.params`, whose messages are shown on the fields (`show_errors`)."""

from __future__ import annotations

import datetime

from django import forms
from django.forms.utils import ErrorDict
from django.utils import timezone

from .kinds import Kind
from .models import ReportFormat
from .params import BoolParam, ChoiceParam, IntParam, MultiChoiceParam, TimeParam

ANY = ("", "Any")
EMPTY_LABELS = {"group_by": "No: one row per execution"}
DEFAULT_DAYS = 30  # the period a form proposes


class ReportForm(forms.Form):
    def show_errors(self, fields: dict[str, list[str]]) -> None:
        """Show the messages of a refused submission on its fields (others on the form)."""
        self.cleaned_data = {}
        self._errors = ErrorDict()
        for name, messages in fields.items():
            self.add_error(name if name in self.fields else None, messages)


def _field(name: str, param) -> forms.Field:
    common = {"required": False, "label": param.label or name, "help_text": param.help_text or ""}
    if isinstance(param, TimeParam):
        return forms.CharField(
            widget=forms.TextInput(attrs={"type": "datetime-local", "step": "1"}), **common
        )
    if isinstance(param, BoolParam):
        return forms.ChoiceField(choices=[ANY, ("true", "Yes"), ("false", "No")], **common)
    if isinstance(param, MultiChoiceParam):
        return forms.MultipleChoiceField(choices=list(param.choices.items()), **common)
    if isinstance(param, ChoiceParam):
        empty = ("", EMPTY_LABELS.get(name, "Any"))
        return forms.ChoiceField(choices=[empty, *param.choices.items()], **common)
    if isinstance(param, IntParam):
        return forms.IntegerField(min_value=param.min_value, max_value=param.max_value, **common)
    return forms.CharField(widget=forms.TextInput(attrs={"type": "search"}), **common)


def _initial(kind: Kind) -> dict:
    fields = kind.parameters().fields
    if "since" not in fields:
        return {}
    since = timezone.now().astimezone(datetime.UTC) - datetime.timedelta(days=DEFAULT_DAYS)
    return {"since": since.strftime("%Y-%m-%dT%H:%M")}


def report_form(kind: Kind, data=None) -> ReportForm:
    """The form of one kind; field ids carry the kind (four forms share the page)."""
    fields = {name: _field(name, param) for name, param in kind.parameters().fields.items()}
    fields["format"] = forms.ChoiceField(
        choices=ReportFormat.choices, initial=ReportFormat.CSV, widget=forms.RadioSelect
    )
    form_class = type(f"{kind.name.title()}ReportForm", (ReportForm,), fields)
    return form_class(data, initial=_initial(kind), auto_id=f"id_{kind.name}_%s")
