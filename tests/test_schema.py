"""The declared v1 schema against the protocol reference's own tables (protocol.md §4), and the
codec's decoding rules (§3.2). The reference lives in ../shared, which a user's clone lacks."""

import re
from pathlib import Path

import pytest

from syncapi import codec
from syncapi.schema import CLASSES, ENUMS, MESSAGES, SPECS

PROTOCOL = Path(__file__).resolve().parents[2] / "shared" / "protocol.md"
_ROW = re.compile(r"^\| (\d+) \| `(\w+)` \| [^|]+ \| ([^|]+) \|")
_MESSAGE = re.compile(r"^(?:### 4\.\d+ |\*\*)(\w+)")


def documented_fields() -> dict[str, dict[str, tuple[int, str]]]:
    """message -> field -> (number, first JSON key in the table's JSON column)."""
    tables: dict = {}
    current = None
    for line in PROTOCOL.read_text().splitlines():
        heading = _MESSAGE.match(line)
        if heading:
            current = heading.group(1)
            continue
        row = _ROW.match(line)
        if row and current:
            keys = re.findall(r"`([^`]+)`", row.group(3))
            tables.setdefault(current, {})[row.group(2)] = (int(row.group(1)), keys[0])
    return tables


@pytest.mark.skipif(not PROTOCOL.is_file(), reason="../shared/protocol.md not present")
def test_fields_match_the_protocol_reference():
    tables = documented_fields()
    compared = 0
    for message in (
        "PreflightRequest",
        "PreflightResponse",
        "EventUploadRequest",
        "EventUploadResponse",
        "Event",
        "Rule",
        "PostflightRequest",
    ):
        for spec in MESSAGES[message]:
            number, json_key = tables[message][spec.name]
            assert spec.number == number, (message, spec.name)
            assert (spec.json_name or spec.camel_name) == json_key, (message, spec.name)
            compared += 1
    assert compared > 90


@pytest.mark.skipif(not PROTOCOL.is_file(), reason="../shared/protocol.md not present")
def test_enum_values_match_the_protocol_reference():
    text = PROTOCOL.read_text()
    for enum, values in ENUMS.items():
        for name, number in values:
            assert re.search(rf"{number}\b[^\n]*`{name}`", text), (enum, name, number)


def test_descriptors_are_real_protobuf():
    message = CLASSES["PreflightRequest"](serial_number="X", sip_status=111, client_mode="LOCKDOWN")
    parsed = CLASSES["PreflightRequest"].FromString(message.SerializeToString())
    assert (parsed.serial_number, parsed.sip_status, parsed.client_mode) == ("X", 111, 2)
    assert CLASSES["PreflightRequest"].DESCRIPTOR.fields_by_name["sip_status"].json_name == (
        "sipStatus"
    )


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("serial_num", "serial_number"),
        ("serial_number", "serial_number"),
        ("serialNumber", "serial_number"),
        ("sipStatus", "sip_status"),
        ("sip_status", "sip_status"),
        ("rulesHash", "rules_hash"),
    ],
)
def test_every_spelling_of_a_field_is_read(key, field):
    assert SPECS["PreflightRequest"].by_key[key].name == field


def test_json_decoding_follows_the_agent_parser(settings):
    decoded = codec.decode(
        "PreflightRequest",
        b'{"binary_rule_count": "7", "sipStatus": 111.0,'
        b' "client_mode": 2, "hostname": null, "unknown_key": [1, {}]}',
        codec.JSON,
    )
    assert decoded == {"binary_rule_count": 7, "sip_status": 111, "client_mode": "LOCKDOWN"}
    aliases = codec.decode("PostflightRequest", b'{"syncType": "clean_all"}', codec.JSON)
    assert aliases == {"sync_type": "CLEAN_ALL"}  # canonical names for aliases


@pytest.mark.parametrize(
    "body",
    [
        b'{"request_clean_sync": "true"}',
        b'{"binary_rule_count": 1.5}',
        b'{"binary_rule_count": -1}',
        b'{"binary_rule_count": 4294967296}',
        b'{"client_mode": "lockdown"}',
        b'{"client_mode": 9}',
        b'{"primary_user_groups": ["a", null]}',
        b'{"serial_num": "a", "serial_number": "b"}',
        b'{"hostname": 5}',
        b"[]",
        b'{"primary_user_groups": "staff"}',
        b'{"hostname": "a\\u0000b"}',
    ],
)
def test_json_decoding_rejects(body):
    with pytest.raises(codec.ProtocolError) as error:
        codec.decode("PreflightRequest", body, codec.JSON)
    assert error.value.status == 400


def test_oneof_members_are_exclusive():
    with pytest.raises(codec.ProtocolError):
        codec.decode("RemovableMediaPolicy", b'{"allow": true, "block": true}', codec.JSON)


def test_response_keys_are_what_every_agent_reads():
    body = codec.encode(
        "PreflightResponse",
        {
            "client_mode": "LOCKDOWN",
            "sync_type": "CLEAN",
            "full_sync_interval_seconds": 600,
            "removable_media_policy": {"block": True},
        },
        codec.JSON,
    )
    assert body == (
        b'{"client_mode":"LOCKDOWN","sync_type":"CLEAN","full_sync_interval":600,'
        b'"removable_media_policy":{"block":true}}'
    )


def test_decompression_is_capped(settings):
    import zlib

    settings.SYNC_MAX_DECOMPRESSED_BYTES = 10_000
    bomb = zlib.compress(b"\0" * 5_000_000)
    with pytest.raises(codec.ProtocolError) as error:
        codec.decompress(bomb, "deflate")
    assert error.value.status == 413
    assert "SYNC_MAX_DECOMPRESSED_BYTES" in error.value.detail
    assert codec.decompress(zlib.compress(b"{}"), "deflate") == b"{}"
    raw = zlib.compressobj(wbits=-15)
    assert codec.decompress(raw.compress(b"{}") + raw.flush(), "deflate") == b"{}"


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
def test_data_after_the_compressed_stream_is_refused(encoding):
    import gzip
    import zlib

    body = (zlib.compress if encoding == "deflate" else gzip.compress)(b"{}") + b"garbage"
    with pytest.raises(codec.ProtocolError) as error:
        codec.decompress(body, encoding)
    assert error.value.status == 400
