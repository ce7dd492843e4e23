"""The console's API token form."""

from __future__ import annotations

import datetime

from django import forms
from django.utils import timezone

from .scopes import SCOPE_CHOICES
from .services import NAME_MAX

MAX_EXPIRY_DAYS = 3650


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX,
        label="Name",
        help_text="What the token is for, e.g. siem-export. Unique among your active tokens.",
    )
    scopes = forms.MultipleChoiceField(
        choices=SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        label="Scopes",
        help_text="A token never allows more than your role does.",
    )
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        label="Expires after (days)",
        help_text="Empty: never expires (revoke it when it is no longer needed).",
    )

    @property
    def expires_at(self) -> datetime.datetime | None:
        days = self.cleaned_data.get("expires_days")
        return timezone.now() + datetime.timedelta(days=days) if days else None
