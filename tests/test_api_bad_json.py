"""JSON bodies every API write refuses with a 400 before any serializer sees them (found by
tests/test_fuzz_forms.py): unpaired surrogate escapes, and nesting deeper than Python parses."""

import json

import pytest

from rules.models import Rule
from tests.api import assert_error

SURROGATE_BODIES = [
    '{"rule_type": "BINARY", "identifier": "%s", "policy": "\\ud800"}' % ("a" * 64),
    '{"rule_type": "BINARY", "identifier": "%s", "policy": "BLOCKLIST", "comment": "x\\udfffy"}'
    % ("a" * 64),
    '{"rule_type": "BINARY", "identifier": "%s", "policy": "BLOCKLIST", "\\ud800": 1}' % ("a" * 64),
]


@pytest.mark.parametrize("body", SURROGATE_BODIES, ids=["choice", "text", "key"])
def test_unpaired_surrogate_escape_is_a_400(analyst_api, body):
    """'"\\ud800" is not a valid choice' could not be encoded as UTF-8: the 400 became a 500."""
    response = analyst_api.generic("POST", "/api/v1/rules/", body, content_type="application/json")
    body = assert_error(response, 400)
    assert "surrogate" in body["detail"]
    assert not Rule.objects.exists()


def test_surrogate_pair_escape_is_fine(analyst_api):
    """Control: a proper pair (an emoji) is valid Unicode."""
    body = json.dumps(
        {
            "rule_type": "BINARY",
            "identifier": "a" * 64,
            "policy": "BLOCKLIST",
            "comment": "\U0001f600",
        }
    )
    assert "\\ud83d\\ude00" in body  # json.dumps writes the pair as two escapes
    response = analyst_api.generic("POST", "/api/v1/rules/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Rule.objects.get().comment == "\U0001f600"


@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_deeply_nested_body_is_a_400(analyst_api, depth):
    body = '{"rules": ' + "[" * depth + "]" * depth + "}"
    response = analyst_api.generic(
        "POST", "/api/v1/rules/bulk/", body, content_type="application/json"
    )
    assert_error(response, 400)
    assert not Rule.objects.exists()
