"""Rule files: reading santactl's rule export (JSON) and CSV for a bulk import, and writing the
same two formats for an export.

santactl's format (`santactl rule --export` / `--import`) is one JSON object with one key,
"rules", holding rule objects whose keys are identifier (or the legacy sha256), policy,
rule_type, custom_msg, custom_url, event_detail_button_label, comment and cel_expr. santactl
matches keys case-insensitively and upper-cases the policy and rule_type values, and it still
accepts the old policy names (WHITELIST, BLACKLIST, ...); so does this reader. Everything else
is refused with a message naming the item and the field: this server never guesses.

CSV: a header row naming the columns (rule_type, identifier, policy required; custom_msg,
custom_url, cel_expr, comment optional), one rule per row. A cell an export starts with a
spreadsheet formula character (= + - @ tab CR) is written with a leading apostrophe, which an
import removes again (see `santaadmin.spreadsheet`): opening an export in a spreadsheet runs
nothing, and an export imports back unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils import timezone

from santaadmin.spreadsheet import csv_escape as _csv_escape
from santaadmin.spreadsheet import csv_unescape as _csv_unescape

from .errors import RulesError
from .identifiers import normalize_identifier
from .models import Policy, Rule, RuleType

MAX_IMPORT_BYTES = 5 * 1024 * 1024

TEXT_KEYS = ("custom_msg", "custom_url", "cel_expr", "comment")
# santactl's keys, in the order of its dictionaryRepresentation.
JSON_KEYS = (
    "identifier",
    "policy",
    "rule_type",
    "custom_msg",
    "custom_url",
    "event_detail_button_label",
    "comment",
    "cel_expr",
)
JSON_ACCEPTED = frozenset({*JSON_KEYS, "sha256"})
CSV_COLUMNS = (
    "rule_type",
    "identifier",
    "policy",
    "custom_msg",
    "custom_url",
    "cel_expr",
    "comment",
)
CSV_REQUIRED = ("rule_type", "identifier", "policy")

LEGACY_POLICIES = {
    "WHITELIST": Policy.ALLOWLIST,
    "WHITELIST_COMPILER": Policy.ALLOWLIST_COMPILER,
    "BLACKLIST": Policy.BLOCKLIST,
    "SILENT_BLACKLIST": Policy.SILENT_BLOCKLIST,
}
LOCAL_POLICIES = frozenset({"ALLOWLIST_LOCAL_BINARY", "ALLOWLIST_LOCAL_SIGNINGID"})


class ImportProblem(Exception):
    """A file that cannot be imported, with a message for the person importing it."""

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


@dataclass
class ImportedRule:
    label: str  # "item 3" (JSON, 1-based) or "row 4" (CSV, the header is row 1)
    rule_type: str
    identifier: str
    policy: str
    custom_msg: str = ""
    custom_url: str = ""
    cel_expr: str = ""
    comment: str = ""


@dataclass
class ParsedFile:
    rules: list[ImportedRule]
    notes: list[str] = field(default_factory=list)


def guess_format(name: str, text: str) -> str:
    lowered = (name or "").lower()
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith(".csv"):
        return "csv"
    return "json" if text.lstrip()[:1] in ("{", "[") else "csv"


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportProblem(
            f"The file is not UTF-8 text (invalid byte at position {exc.start}). "
            "Save it as UTF-8 and try again."
        ) from None
    return text.removeprefix("\ufeff")


def parse_rules(data: bytes, file_format: str, name: str = "") -> ParsedFile:
    """The rules in an uploaded file, checked for shape and types (values are checked by
    rules.services when they are created); ImportProblem for anything else."""
    text = decode(data)
    if not text.strip():
        raise ImportProblem("The file is empty.")
    if file_format == "auto":
        file_format = guess_format(name, text)
    parsed = _parse_json(text) if file_format == "json" else _parse_csv(text)
    if not parsed.rules:
        raise ImportProblem("The file holds no rules.")
    _check_repeats(parsed.rules)
    return parsed


# --- values ---------------------------------------------------------------------------------------


def _policy(label: str, value: str) -> str:
    policy = value.strip().upper()
    policy = LEGACY_POLICIES.get(policy, policy)
    if policy in LOCAL_POLICIES:
        raise ImportProblem(
            f"{label}, field policy: {policy} is a policy santactl sets on one Mac; "
            "a sync server cannot send it.",
            "policy",
        )
    if policy not in Policy.values:
        raise ImportProblem(
            f"{label}, field policy: {value!r} is not a policy; use one of "
            f"{', '.join(Policy.values)}.",
            "policy",
        )
    return policy


def _rule_type(label: str, value: str) -> str:
    rule_type = value.strip().upper()
    if rule_type not in RuleType.values:
        raise ImportProblem(
            f"{label}, field rule_type: {value!r} is not a rule type; use one of "
            f"{', '.join(RuleType.values)}.",
            "rule_type",
        )
    return rule_type


def _check_repeats(rules: list[ImportedRule]) -> None:
    """One scope holds one rule per identifier: a file naming one twice cannot be imported."""
    seen: dict[tuple[str, str], str] = {}
    for rule in rules:
        try:
            identifier = normalize_identifier(rule.rule_type, rule.identifier)
        except RulesError:
            continue  # reported with its item by the service
        key = (rule.rule_type, identifier)
        if key in seen:
            raise ImportProblem(
                f"{rule.label}, field identifier: {rule.rule_type} {identifier} is already in "
                f"{seen[key]}; one scope holds one rule per identifier.",
                "identifier",
            )
        seen[key] = rule.label


# --- JSON -----------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ImportProblem(f"The key {key!r} appears twice in one JSON object.")
        result[key] = value
    return result


def _no_constants(name):
    raise ImportProblem(f"{name} is not valid JSON.")


def _parse_json(text: str) -> ParsedFile:
    try:
        document = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants
        )
    except json.JSONDecodeError as exc:
        raise ImportProblem(
            f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise ImportProblem("Not valid JSON: nested too deeply.") from None
    if not isinstance(document, dict) or "rules" not in document:
        raise ImportProblem('Expected santactl\'s rule export: a JSON object {"rules": [...]}.')
    extra = sorted(set(document) - {"rules"})
    if extra:
        raise ImportProblem(
            f"Unknown top-level key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}; "
            'santactl\'s export has only "rules".'
        )
    items = document["rules"]
    if not isinstance(items, list):
        raise ImportProblem('"rules" must be a list of rule objects.')
    limit = settings.API_MAX_BULK_RULES
    if len(items) > limit:
        raise ImportProblem(
            f"The file holds {len(items):,} rules; one import takes at most "
            f"API_MAX_BULK_RULES ({limit:,}). Split it into several files."
        )
    rules, labelled = [], 0
    for number, item in enumerate(items, start=1):
        label = f"Item {number}"
        rule, had_label = _json_rule(label, item)
        rules.append(rule)
        labelled += had_label
    notes = []
    if labelled:
        notes.append(
            f"{labelled} rule{'s' if labelled > 1 else ''} had an event_detail_button_label, "
            "which this server does not store or send: it was left out."
        )
    return ParsedFile(rules, notes)


def _json_rule(label: str, item) -> tuple[ImportedRule, bool]:
    if not isinstance(item, dict):
        raise ImportProblem(f"{label}: expected a rule object, got {_type_name(item)}.")
    values: dict[str, object] = {}
    for key, value in item.items():
        lowered = key.lower()
        if lowered in values:
            raise ImportProblem(f"{label}: the key {lowered!r} appears twice (keys ignore case).")
        if lowered not in JSON_ACCEPTED:
            raise ImportProblem(
                f"{label}: unknown key {key!r}; a rule has {', '.join(JSON_KEYS)} "
                "(or the legacy sha256).",
                None,
            )
        values[lowered] = value
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise ImportProblem(
                f"{label}, field {key}: expected a string, got {_type_name(value)}.", key
            )
    identifier = values.get("identifier") or ""
    legacy = values.get("sha256") or ""
    if identifier and legacy and identifier.lower() != legacy.lower():
        raise ImportProblem(
            f"{label}, field identifier: identifier and sha256 differ; give one of them.",
            "identifier",
        )
    identifier = identifier or legacy
    if not identifier:
        raise ImportProblem(f"{label}, field identifier: the identifier is missing.", "identifier")
    for key in ("policy", "rule_type"):
        if not values.get(key):
            raise ImportProblem(f"{label}, field {key}: {key} is missing.", key)
    rule = ImportedRule(
        label=label,
        rule_type=_rule_type(label, values["rule_type"]),
        identifier=identifier,
        policy=_policy(label, values["policy"]),
        **{key: values.get(key) or "" for key in TEXT_KEYS},
    )
    return rule, bool(values.get("event_detail_button_label"))


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# --- CSV ------------------------------------------------------------------------------------------


def _parse_csv(text: str) -> ParsedFile:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rules: list[ImportedRule] = []
    row_number = 0
    try:
        for row in reader:
            row_number += 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _csv_header(row, row_number)
                continue
            label = f"Row {row_number}"
            if len(row) != len(header):
                raise ImportProblem(
                    f"{label} has {len(row)} field{'s' if len(row) != 1 else ''}; "
                    f"the header has {len(header)}."
                )
            if len(rules) >= settings.API_MAX_BULK_RULES:
                raise ImportProblem(
                    f"The file holds more than API_MAX_BULK_RULES "
                    f"({settings.API_MAX_BULK_RULES:,}) rules, the most one import takes. "
                    "Split it into several files."
                )
            values = {name: _csv_unescape(cell) for name, cell in zip(header, row, strict=True)}
            for key in CSV_REQUIRED:
                if not values[key].strip():
                    raise ImportProblem(f"{label}, field {key}: {key} is missing.", key)
            rules.append(
                ImportedRule(
                    label=label,
                    rule_type=_rule_type(label, values["rule_type"]),
                    identifier=values["identifier"].strip(),
                    policy=_policy(label, values["policy"]),
                    **{key: values.get(key, "") for key in TEXT_KEYS},
                )
            )
    except csv.Error as exc:
        raise ImportProblem(f"Not valid CSV at row {row_number + 1}: {exc}.") from None
    if header is None:
        raise ImportProblem("The file is empty.")
    return ParsedFile(rules)


def _csv_header(row: list[str], row_number: int) -> list[str]:
    names = [cell.strip().lower() for cell in row]
    unknown = [name for name in names if name not in CSV_COLUMNS]
    if unknown:
        raise ImportProblem(
            f"Row {row_number} (the header): unknown column{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; the columns are {', '.join(CSV_COLUMNS)}."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ImportProblem(
            f"Row {row_number} (the header): column {', '.join(map(repr, repeated))} appears twice."
        )
    missing = [name for name in CSV_REQUIRED if name not in names]
    if missing:
        raise ImportProblem(
            f"Row {row_number} (the header): missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}."
        )
    return names


# --- export ---------------------------------------------------------------------------------------


def _santactl_dict(rule: Rule) -> dict:
    return {
        "identifier": rule.identifier,
        "policy": rule.policy,
        "rule_type": rule.rule_type,
        "custom_msg": rule.custom_msg,
        "custom_url": rule.custom_url,
        "event_detail_button_label": "",
        "comment": rule.comment,
        "cel_expr": rule.cel_expr,
    }


def export_json(rules: Iterable[Rule]) -> Iterator[str]:
    """santactl's export format, one rule per line, produced as it is read."""
    yield '{\n  "rules": ['
    separator = "\n    "
    for rule in rules:
        yield separator + json.dumps(_santactl_dict(rule), ensure_ascii=False)
        separator = ",\n    "
    yield "\n  ]\n}\n"


class _Line:
    """A file-like object whose write() returns what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


def export_csv(rules: Iterable[Rule]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    for rule in rules:
        yield writer.writerow([_csv_escape(getattr(rule, name)) for name in CSV_COLUMNS])


EXPORTS = {
    "json": (export_json, "application/json", "json"),
    "csv": (export_csv, "text/csv; charset=utf-8", "csv"),
}


def export_response(rules, file_format: str) -> StreamingHttpResponse:
    """A download of these rules (a queryset, filtered as the caller likes) in santactl's JSON
    ("json") or CSV, streamed as the rows are read (2,000 at a time), so an export of the
    whole rule set never sits in memory. Used by the console's list and the API."""
    produce, content_type, extension = EXPORTS[file_format]
    rows = (
        rules.select_related(None)
        .prefetch_related(None)
        .only(*TEXT_KEYS, "rule_type", "identifier", "policy")
        .iterator(chunk_size=2000)
    )
    response = StreamingHttpResponse(produce(rows), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="santa-rules-{stamp}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
