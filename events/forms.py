"""Console forms of the events app: deciding on a binary, and a user's approval request."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings

from hosts.models import Tag
from rules.models import Policy

from .approvals import MAX_REQUESTER, MAX_RESPONSE
from .selectors import Coverage

SCOPES = [
    ("everyone", "Everyone"),
    ("tags", "Hosts with these tags"),
    ("hosts", "These hosts"),
]
DECISIONS = {"allow": Policy.ALLOWLIST, "block": Policy.BLOCKLIST}
_SPLIT = re.compile(r"[\s,]+")


def expiry_field() -> forms.DateTimeField:
    """An optional expiry (a browser date-time picker; interpreted in TIME_ZONE)."""
    return forms.DateTimeField(
        label="Expires",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=f"Optional: the rule is removed from every host after this time "
        f"({settings.TIME_ZONE}).",
    )


class ScopeFields(forms.Form):
    """Who a rule applies to: everyone, hosts with some tags, or listed hosts."""

    scope = forms.ChoiceField(
        label="Scope", choices=SCOPES, initial="everyone", widget=forms.RadioSelect
    )
    tags = forms.ModelMultipleChoiceField(
        label="Tags",
        queryset=Tag.objects.all(),
        to_field_name="name",
        required=False,
        help_text="For the tag scope: hosts carrying any of these tags.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    machine_ids = forms.CharField(
        label="Machine IDs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For the host scope: one machine ID per line (or separated by commas).",
    )

    def clean_machine_ids(self):
        return [m for m in _SPLIT.split(self.cleaned_data.get("machine_ids", "")) if m]

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        if scope == "tags" and not data.get("tags"):
            self.add_error("tags", "Choose at least one tag for the tag scope.")
        if scope == "hosts" and not data.get("machine_ids"):
            self.add_error("machine_ids", "List at least one machine ID for the host scope.")
        return data

    def scope_kwargs(self) -> dict:
        data = self.cleaned_data
        if data["scope"] == "tags":
            return {"tags": [t.name for t in data["tags"]]}
        if data["scope"] == "hosts":
            return {"machine_ids": data["machine_ids"]}
        return {}


class BinaryDecisionForm(ScopeFields):
    """Approve or block a binary: the rule type, its scope, expiry, message and the reason."""

    rule_type = forms.ChoiceField(label="Rule type", widget=forms.RadioSelect)
    expires_at = expiry_field()
    custom_msg = forms.CharField(
        label="Message shown to users",
        required=False,
        max_length=2048,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional: replaces the default text of Santa's block dialog for this rule.",
    )
    justification = forms.CharField(
        label="Justification",
        max_length=8192,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required: why this decision; kept with the rule and in the audit log.",
    )
    decision = forms.ChoiceField(
        choices=[("allow", "Approve"), ("block", "Block")], widget=forms.HiddenInput
    )

    field_order = [
        "rule_type",
        "scope",
        "tags",
        "machine_ids",
        "expires_at",
        "custom_msg",
        "justification",
    ]

    def __init__(self, *args, coverage: list[Coverage], **kwargs):
        super().__init__(*args, **kwargs)
        self.coverage = coverage
        field = self.fields["rule_type"]
        # The radios and their coverage wording are rendered by events/_rule_type_choice.html.
        field.choices = [(c.rule_type, c.label) for c in coverage]
        self.available = {c.rule_type for c in coverage if c.identifier}
        self.initial.setdefault("rule_type", "BINARY")

    def clean_rule_type(self):
        value = self.cleaned_data["rule_type"]
        if value not in self.available:
            raise forms.ValidationError("This binary has no identifier of that type.")
        return value

    @property
    def policy(self) -> str:
        return DECISIONS[self.cleaned_data["decision"]]


class ApprovalRequestForm(forms.Form):
    """What a blocked user tells the analysts."""

    reason = forms.CharField(
        label="Why do you need this program?",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Say what it is for and what you were doing when it was blocked.",
    )


REQUEST_STATES = [
    ("pending", "Waiting"),
    ("approved", "Approved"),
    ("denied", "Denied"),
    ("all", "All"),
]


class RequestStateFilter(forms.Form):
    state = forms.ChoiceField(label="State", choices=REQUEST_STATES, initial="pending")


class RequestDecisionForm(BinaryDecisionForm):
    """The binary page's decision, plus an optional word to the requester."""

    response = forms.CharField(
        label="Message to the requester",
        required=False,
        max_length=MAX_RESPONSE,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional: shown on the requester's page with the decision.",
    )


class RequestDenyForm(forms.Form):
    prefix = "deny"  # the decision form on the same page has a `response` field too

    response = forms.CharField(
        label="Message to the requester",
        max_length=MAX_RESPONSE,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required: why not, or what to do instead. The requester reads it on their page.",
    )


class NamedApprovalRequestForm(ApprovalRequestForm):
    """For a link without a user name (%username% was empty): ask for one."""

    name = forms.CharField(
        label="Your user name on this Mac",
        max_length=MAX_REQUESTER,
        help_text="So that the analysts know who asks, and you can come back to this page.",
    )
    field_order = ["name", "reason"]
