"""Forms of the host console actions: assigned tags, the mode override, clean syncs."""

from django import forms

from .errors import InvalidTag
from .models import CleanSync, ClientMode
from .services import normalize_tag_name

JUSTIFICATION_MAX = 1000


class _JustifiedForm(forms.Form):
    justification = forms.CharField(
        required=False,
        max_length=JUSTIFICATION_MAX,
        label="Justification",
        help_text="Why (optional; kept in the audit log).",
        widget=forms.TextInput,
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("prefix", self.form_prefix)
        super().__init__(*args, **kwargs)

    @property
    def justification_text(self) -> str:
        return self.cleaned_data.get("justification", "").strip()


class HostTagsForm(_JustifiedForm):
    form_prefix = "tags"

    tags = forms.CharField(
        required=False,
        max_length=4000,
        label="Assigned tags",
        help_text="Comma-separated tag names: lower-case letters, digits, '.', '_' or '-'. "
        "Leave empty to remove every assigned tag.",
    )

    def clean_tags(self) -> list[str]:
        names = [part.strip() for part in self.cleaned_data["tags"].split(",")]
        cleaned, errors = [], []
        for name in names:
            if not name:
                continue
            try:
                cleaned.append(normalize_tag_name(name))
            except InvalidTag as exc:
                errors.append(exc.detail)
        if errors:
            raise forms.ValidationError(errors)
        return sorted(set(cleaned))


class HostModeForm(_JustifiedForm):
    form_prefix = "mode"

    client_mode = forms.ChoiceField(
        required=False,
        label="Mode",
        choices=[("", "Follow configuration"), *ClientMode.choices],
        help_text="Applies at the host's next preflight.",
    )


class HostCleanSyncForm(_JustifiedForm):
    form_prefix = "clean"

    kind = forms.ChoiceField(
        required=False,
        label="Clean sync",
        choices=[*CleanSync.choices, ("", "Cancel a requested clean sync")],
        help_text="The host's next preflight answers with this sync type; it deletes the "
        "rules the host holds and downloads them again.",
    )
