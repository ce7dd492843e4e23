"""Tag rules: automatic tags computed from the facts a host reports at preflight.

Pure functions, shared by the preflight (one host) and the fleet-wide worker task
(hosts.services.tag_rules_apply_batch). A condition that cannot be evaluated (a version that
does not parse) is false, never an error: facts come from agents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidTagRule
from .models import TagFact, TagOperator, TagRule

_VERSION_RE = re.compile(r"\d+(?:\.\d+)*")
MAX_REGEX_LENGTH = 255


def parse_version(text: str) -> tuple[int, ...] | None:
    """The leading dotted number of a version string ("2025.11 (build 12)" → (2025, 11))."""
    match = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    parts = [int(p) for p in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 14.0 == 14
        parts.pop()
    return tuple(parts)


def validate_condition(fact: str, operator: str, value: str) -> None:
    """Raise InvalidTagRule unless the condition is well formed."""
    if fact not in TagFact.values:
        raise InvalidTagRule(f"Unknown fact {fact!r}; one of: {', '.join(TagFact.values)}.")
    if operator not in TagOperator.values:
        raise InvalidTagRule(
            f"Unknown operator {operator!r}; one of: {', '.join(TagOperator.values)}."
        )
    if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
        raise InvalidTagRule("The value is a non-empty string of at most 255 characters.")
    if operator in (TagOperator.VERSION_BELOW, TagOperator.VERSION_AT_LEAST):
        if fact not in (TagFact.OS_VERSION, TagFact.SANTA_VERSION):
            raise InvalidTagRule("Version comparisons apply to os_version or santa_version.")
        if not _VERSION_RE.fullmatch(value.strip()):
            raise InvalidTagRule(f"{value!r} is not a dotted version number such as 2025.11.")
    if operator == TagOperator.MATCHES:
        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidTagRule(f"Invalid regular expression: {exc}.") from exc


@dataclass(frozen=True)
class Condition:
    tag_id: int
    fact: str
    operator: str
    value: str
    pattern: re.Pattern | None = None
    version: tuple[int, ...] | None = None

    @classmethod
    def of(cls, rule: TagRule) -> Condition:
        pattern = version = None
        if rule.operator == TagOperator.MATCHES:
            try:
                pattern = re.compile(rule.value)
            except re.error:
                pattern = re.compile(r"(?!)")  # stored before validation existed: never matches
        if rule.operator in (TagOperator.VERSION_BELOW, TagOperator.VERSION_AT_LEAST):
            version = parse_version(rule.value)
        return cls(rule.tag_id, rule.fact, rule.operator, rule.value, pattern, version)

    def _test(self, text: str) -> bool:
        op = self.operator
        if op == TagOperator.EQUALS:
            return text == self.value
        if op == TagOperator.CONTAINS:
            return self.value in text
        if op == TagOperator.STARTS_WITH:
            return text.startswith(self.value)
        if op == TagOperator.MATCHES:
            return self.pattern.search(text) is not None
        have = parse_version(text)
        if have is None or self.version is None:
            return False
        return have < self.version if op == TagOperator.VERSION_BELOW else have >= self.version

    def matches(self, facts: dict) -> bool:
        value = facts.get(self.fact)
        if self.fact == TagFact.PRIMARY_USER_GROUPS:
            groups = [g for g in (value or []) if isinstance(g, str)]
            if self.operator == TagOperator.CONTAINS:
                return self.value in groups  # group membership, not a substring of a name
            return any(self._test(group) for group in groups)
        return isinstance(value, str) and bool(value) and self._test(value)


def conditions() -> list[Condition]:
    return [Condition.of(rule) for rule in TagRule.objects.all()]


def auto_tag_ids(conds: list[Condition], facts: dict) -> set[int]:
    """The tags a host with these facts gets from tag rules."""
    return {c.tag_id for c in conds if c.matches(facts)}


FACT_FIELDS = tuple(f for f in TagFact.values if f != TagFact.ENROLLMENT)


def host_facts(host, enrollment_name: str) -> dict:
    facts = {name: getattr(host, name) for name in FACT_FIELDS}
    facts[TagFact.ENROLLMENT] = enrollment_name
    return facts
