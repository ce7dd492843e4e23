"""Console forms of the rules app: one rule (create, edit), deleting it, and bulk import."""

from __future__ import annotations

from django import forms

from events.forms import SCOPES, ScopeFields, expiry_field
from hosts.models import Tag

from .imports import MAX_IMPORT_BYTES
from .models import Policy, Rule, RuleType
from .services import MAX_TEXT, RuleInput

# A rule made through the API may target tags and listed hosts at once: its edit form offers
# that scope so saving it does not drop one of them.
BOTH = ("both", "Hosts with these tags, and these hosts")


MAX_MACHINE_IDS = 1000  # as the API's rule input


class _Scope(ScopeFields):
    def clean_machine_ids(self):
        machine_ids = super().clean_machine_ids()
        if len(machine_ids) > MAX_MACHINE_IDS:
            raise forms.ValidationError(
                f"At most {MAX_MACHINE_IDS} machine IDs per rule ({len(machine_ids)} given); "
                "tag the hosts and use the tag scope instead."
            )
        return list(dict.fromkeys(machine_ids))


def _justification_field(help_text: str) -> forms.CharField:
    return forms.CharField(
        label="Justification",
        max_length=MAX_TEXT["comment"],
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=help_text,
    )


class RuleForm(_Scope):
    """A rule: what it matches, its policy and texts, its scope and expiry, and why."""

    rule_type = forms.ChoiceField(label="Rule type", choices=RuleType.choices)
    identifier = forms.CharField(
        label="Identifier",
        max_length=255,
        help_text=(
            "SHA-256 for binary and certificate rules, 10-character Team ID, "
            "TEAMID:signing.id (or platform:signing.id), or a 40-character CDHash."
        ),
        widget=forms.TextInput(attrs={"size": 70, "autocomplete": "off", "spellcheck": "false"}),
    )
    policy = forms.ChoiceField(label="Policy", choices=Policy.choices)
    custom_msg = forms.CharField(
        label="Message shown to users",
        required=False,
        max_length=MAX_TEXT["custom_msg"],
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional: replaces the default text of Santa's block dialog for this rule.",
    )
    custom_url = forms.CharField(
        label="Custom URL",
        required=False,
        max_length=MAX_TEXT["custom_url"],
        widget=forms.TextInput(attrs={"size": 70}),
        help_text="Optional: the http(s) address the block dialog's button opens.",
    )
    cel_expr = forms.CharField(
        label="CEL expression",
        required=False,
        strip=False,
        max_length=MAX_TEXT["cel_expr"],
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="Only for the CEL policy (required there): the expression that decides.",
    )
    excluded_tags = forms.ModelMultipleChoiceField(
        label="Excluded tags",
        queryset=Tag.objects.all(),
        to_field_name="name",
        required=False,
        help_text="Optional: hosts with any of these tags are left out (tag and everyone scopes).",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    expires_at = expiry_field()
    justification = _justification_field(
        "Required: why this rule (or this change); kept with the rule and in the audit log."
    )

    field_order = [
        "rule_type",
        "identifier",
        "policy",
        "custom_msg",
        "custom_url",
        "cel_expr",
        "scope",
        "tags",
        "machine_ids",
        "excluded_tags",
        "expires_at",
        "justification",
    ]

    def __init__(self, *args, rule: Rule | None = None, **kwargs):
        if rule is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_from(rule)
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.fields["scope"].choices = [*SCOPES, BOTH]

    @staticmethod
    def initial_from(rule: Rule) -> dict:
        tags = [t.name for t in rule.tags.all()]
        machine_ids = [h.machine_id for h in rule.hosts.all()]
        if tags and machine_ids:
            scope = "both"
        elif machine_ids:
            scope = "hosts"
        elif tags:
            scope = "tags"
        else:
            scope = "everyone"
        return {
            "rule_type": rule.rule_type,
            "identifier": rule.identifier,
            "policy": rule.policy,
            "custom_msg": rule.custom_msg,
            "custom_url": rule.custom_url,
            "cel_expr": rule.cel_expr,
            "scope": scope,
            "tags": tags,
            "machine_ids": "\n".join(machine_ids),
            "excluded_tags": [t.name for t in rule.excluded_tags.all()],
            "expires_at": rule.expires_at,
        }

    def clean(self):
        data = super().clean()
        if data.get("scope") == "both":
            if not data.get("tags"):
                self.add_error("tags", "Choose at least one tag for this scope.")
            if not data.get("machine_ids"):
                self.add_error("machine_ids", "List at least one machine ID for this scope.")
        policy = data.get("policy")
        cel_expr = data.get("cel_expr") or ""
        if policy == Policy.CEL and not cel_expr.strip():
            self.add_error("cel_expr", "A CEL rule needs an expression.")
        if policy and policy != Policy.CEL and cel_expr.strip():
            self.add_error("cel_expr", "Only the CEL policy uses an expression; clear it.")
        justification = data.get("justification")
        if justification is not None and not justification.strip():
            self.add_error("justification", "A justification is required.")
        return data

    def scope_kwargs(self) -> dict:
        data = self.cleaned_data
        if data["scope"] == "both":
            return {"tags": [t.name for t in data["tags"]], "machine_ids": data["machine_ids"]}
        return super().scope_kwargs()

    def to_input(self) -> RuleInput:
        data = self.cleaned_data
        scope = self.scope_kwargs()
        return RuleInput(
            rule_type=data["rule_type"],
            identifier=data["identifier"],
            policy=data["policy"],
            custom_msg=data["custom_msg"],
            custom_url=data["custom_url"],
            cel_expr=data["cel_expr"] if data["policy"] == Policy.CEL else "",
            comment=data["justification"],
            tags=tuple(scope.get("tags", ())),
            excluded_tags=tuple(t.name for t in data["excluded_tags"]),
            machine_ids=tuple(scope.get("machine_ids", ())),
            expires_at=data["expires_at"],
        )

    # Service errors name these fields; anything else becomes a non-field error.
    SERVICE_FIELDS = {"comment": "justification"}

    def add_service_error(self, exc) -> None:
        field = getattr(exc, "field", None)
        field = self.SERVICE_FIELDS.get(field, field)
        self.add_error(field if field in self.fields else None, str(exc.detail))


class RuleDeleteForm(forms.Form):
    justification = _justification_field(
        "Required: why this rule goes; kept in the audit log. Hosts get REMOVE at their next sync."
    )

    def clean_justification(self):
        value = self.cleaned_data["justification"]
        if not value.strip():
            raise forms.ValidationError("A justification is required.")
        return value.strip()


class RuleImportForm(_Scope):
    """A santactl rule export (JSON) or a CSV file, one scope for all of it, and why."""

    file = forms.FileField(
        label="Rules file",
        help_text=(
            f'santactl\'s rule export (JSON, {{"rules": [...]}}) or CSV with a header row; '
            f"at most {MAX_IMPORT_BYTES // (1024 * 1024)} MB."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".json,.csv,application/json,text/csv"}),
    )
    file_format = forms.ChoiceField(
        label="Format",
        choices=[
            ("auto", "From the file name (.json or .csv)"),
            ("json", "santactl JSON"),
            ("csv", "CSV"),
        ],
        initial="auto",
        widget=forms.RadioSelect,
    )
    justification = _justification_field(
        "Required: why these rules; kept in the audit log (and as the comment of rules "
        "that bring none)."
    )

    field_order = ["file", "file_format", "scope", "tags", "machine_ids", "justification"]

    def clean_justification(self):
        value = self.cleaned_data["justification"]
        if not value.strip():
            raise forms.ValidationError("A justification is required.")
        return value.strip()

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {MAX_IMPORT_BYTES:,} bytes "
                f"({MAX_IMPORT_BYTES // (1024 * 1024)} MB). Split it into several imports."
            )
        return upload
