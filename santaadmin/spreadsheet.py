"""CSV cells that are safe to open in a spreadsheet (rule exports, reports).

A cell starting with a formula character (= + - @ tab CR) is written with a leading apostrophe,
so a spreadsheet shows it as text instead of evaluating it; `csv_unescape` removes it again, so
an export imports back unchanged.
"""

from __future__ import annotations

import re

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")


def csv_escape(value: str) -> str:
    """Neutralise a spreadsheet formula with a leading apostrophe; `csv_unescape` inverts it
    exactly (a value that already starts with apostrophes before such a character gets one
    more, so a value never loses an apostrophe it had)."""
    return f"'{value}" if _FORMULA.match(value) else value


def csv_unescape(value: str) -> str:
    return value[1:] if _ESCAPED.match(value) else value
