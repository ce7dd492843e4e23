"""What the property-based tests share: a rolled-back transaction per example, row counts and
snapshots, and the strategies for hostile values (tests/test_fuzz_sync.py,
tests/test_fuzz_forms.py)."""

from __future__ import annotations

import contextlib
import json

from django.db import transaction
from hypothesis import strategies as st


@contextlib.contextmanager
def rolled_back():
    """Each example starts from the fixtures' database: its writes are undone (a savepoint
    inside the test's transaction), so one example's rows never make the next one pass or
    fail."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def row_counts(models) -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in models}


def json_error(response) -> dict:
    """The body of a 4xx: JSON with a non-empty `error` code and `detail` text."""
    assert response["Content-Type"].split(";")[0] == "application/json", response
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


# Text that has broken parsers, databases and templates: NUL and other controls, lone
# surrogates (JSON escapes a Python str can carry), right-to-left and zero-width marks, the
# byte-order mark, non-characters, combining marks, astral characters, SQL and markup.
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\r\n\t",
    "\ud800",
    "x\udfffy",
    "\u202eevil.app",
    "\u200b\u200d\ufeff",
    "\uffff\ufffe",
    "e\u0301\u0301\u0301",
    "\U0001f600\U0010ffff",
    "\u0130\u0131\u00df",
    "../../../etc/passwd",
    "%00%ff",
    "<script>alert(1)</script>",
    "' OR '1'='1' --",
    "${jndi:ldap://x}",
    "NaN",
    "-0",
    "9" * 40,
]

odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=24),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=24),
)

# Integers around the edges of 32 and 64 bits, and of what databases store.
EDGE_INTEGERS = [0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**53 + 1, 2**63, -(2**63) - 1]
edge_integers = st.one_of(st.sampled_from(EDGE_INTEGERS), st.integers())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    edge_integers,
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)

# Any JSON value, nested a few levels: what arrives where a scalar was expected.
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
