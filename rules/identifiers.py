"""Rule identifiers, validated and normalised exactly as the agent does (protocol.md §5.5.2),
so the server never stores or sends a rule the agent would silently drop."""

import re

from .errors import InvalidIdentifier
from .models import RuleType

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_TEAM_ID = re.compile(r"[A-Za-z0-9]{10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_IDENTIFIER_LENGTH = 255


def normalize_identifier(rule_type: str, identifier: str) -> str:
    if not isinstance(identifier, str) or not identifier:
        raise InvalidIdentifier("The identifier is required.", "identifier")
    if len(identifier) > MAX_IDENTIFIER_LENGTH or _CONTROL.search(identifier):
        raise InvalidIdentifier(
            f"Identifiers are at most {MAX_IDENTIFIER_LENGTH} printable characters.", "identifier"
        )
    if rule_type in (RuleType.BINARY, RuleType.CERTIFICATE):
        if not _HEX64.fullmatch(identifier):
            raise InvalidIdentifier(
                f"A {rule_type} identifier is a SHA-256: 64 hexadecimal characters.", "identifier"
            )
        return identifier.lower()
    if rule_type == RuleType.CDHASH:
        if not _HEX40.fullmatch(identifier):
            raise InvalidIdentifier(
                "A CDHASH identifier is 40 hexadecimal characters.", "identifier"
            )
        return identifier.lower()
    if rule_type == RuleType.TEAMID:
        if not _TEAM_ID.fullmatch(identifier):
            raise InvalidIdentifier(
                "A TEAMID identifier is 10 letters or digits (e.g. EQHXZ8M8AV).", "identifier"
            )
        return identifier.upper()
    if rule_type == RuleType.SIGNINGID:
        team, sep, signing_id = identifier.partition(":")
        if not sep or not signing_id or signing_id != signing_id.strip():
            raise InvalidIdentifier(
                "A SIGNINGID identifier is TEAMID:signing.id or platform:signing.id.", "identifier"
            )
        if team.lower() == "platform":
            return f"platform:{signing_id}"
        if not _TEAM_ID.fullmatch(team):
            raise InvalidIdentifier(
                f"The team part {team!r} of a SIGNINGID must be 10 letters or digits, "
                "or 'platform'.",
                "identifier",
            )
        return f"{team.upper()}:{signing_id}"
    raise InvalidIdentifier(f"Unknown rule type {rule_type!r}.", "rule_type")
