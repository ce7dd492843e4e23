"""Reads of the events app that are more than one line: the catalogue as analysts triage it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from rules.models import Rule, RuleType

from .models import Binary, BinaryHost, Certificate

# Santa's evaluation order: the most specific rule type that matches decides (protocol.md §5.5).
RULE_PRECEDENCE = [
    RuleType.CDHASH,
    RuleType.BINARY,
    RuleType.SIGNINGID,
    RuleType.CERTIFICATE,
    RuleType.TEAMID,
]


def identifier_for(binary: Binary, rule_type: str) -> str:
    """The identifier a rule of `rule_type` needs to match `binary` ("" when it has none)."""
    if rule_type == RuleType.BINARY:
        return binary.sha256
    if rule_type == RuleType.CERTIFICATE:
        return binary.leaf_certificate_id or ""
    if rule_type == RuleType.TEAMID:
        return binary.team_id
    if rule_type == RuleType.SIGNINGID:
        return binary.signing_id
    if rule_type == RuleType.CDHASH:
        return binary.cdhash
    return ""


_FIELD = {
    RuleType.BINARY: "sha256",
    RuleType.CERTIFICATE: "leaf_certificate_id",
    RuleType.TEAMID: "team_id",
    RuleType.SIGNINGID: "signing_id",
    RuleType.CDHASH: "cdhash",
}


@dataclass(frozen=True)
class Coverage:
    """What a rule of one type made from a binary would match, among binaries seen so far."""

    rule_type: str
    label: str
    identifier: str
    binaries: int  # including this one
    hosts: int  # hosts that executed any of them

    @property
    def other_binaries(self) -> int:
        return max(self.binaries - 1, 0)


def binary_coverage(binary: Binary) -> list[Coverage]:
    """For each rule type, the identifier it would use and what it would cover."""
    result = []
    for rule_type in (
        RuleType.BINARY,
        RuleType.CDHASH,
        RuleType.SIGNINGID,
        RuleType.CERTIFICATE,
        RuleType.TEAMID,
    ):
        identifier = identifier_for(binary, rule_type)
        if not identifier:
            result.append(Coverage(rule_type, RuleType(rule_type).label, "", 0, 0))
            continue
        if rule_type == RuleType.BINARY:
            result.append(
                Coverage(rule_type, RuleType(rule_type).label, identifier, 1, binary.host_count)
            )
            continue
        match = {_FIELD[rule_type]: identifier}
        binaries = Binary.objects.filter(**match).count()
        hosts = (
            BinaryHost.objects.filter(**{f"binary__{k}": v for k, v in match.items()})
            .values("host_id")
            .distinct()
            .count()
        )
        result.append(Coverage(rule_type, RuleType(rule_type).label, identifier, binaries, hosts))
    return result


def rules_matching(binary: Binary) -> list[Rule]:
    """Rules whose identifier matches the binary, most specific type first."""
    match = Q()
    for rule_type in RULE_PRECEDENCE:
        identifier = identifier_for(binary, rule_type)
        if identifier:
            match |= Q(rule_type=rule_type, identifier=identifier)
    if not match:
        return []
    rules = list(
        Rule.objects.filter(match)
        .select_related("created_by", "updated_by", "fanout")
        .prefetch_related("tags", "excluded_tags", "hosts")
    )
    order = {rule_type: n for n, rule_type in enumerate(RULE_PRECEDENCE)}
    return sorted(rules, key=lambda rule: (order[rule.rule_type], rule.pk))


def binary_signing_chain(binary: Binary) -> list[Certificate | str]:
    """The binary's signing chain, leaf first, as certificates (one query); a certificate the
    catalogue lacks stays its SHA-256."""
    chain_shas = [sha for sha in binary.signing_chain if isinstance(sha, str)]
    certificates = Certificate.objects.in_bulk(chain_shas)
    return [certificates.get(sha) or sha for sha in chain_shas]
