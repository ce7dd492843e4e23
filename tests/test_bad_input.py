"""Malformed sync requests: each gets a clear 4xx with a JSON body `{"error", "detail"}` and
changes nothing in the database (protocol.md §2 transport, §3 JSON mapping, §4 messages).

Every refusal is checked against a snapshot of every row the sync path can write, taken just
before the request, with both a host that is already registered (its row must not change) and
a machine id the server has never seen (no host may be created for it).
"""

from __future__ import annotations

import gzip
import json
import random
import zlib

import pytest

from events.models import Event, FileAccessEvent
from hosts.models import Enrollment, Host, HostTag
from hosts.services import enrollment_revoke, host_set_tags
from rules.services import RuleInput, rule_create
from syncapi.schema import CLASSES
from tests.sync_requests import (
    FORM_IDS,
    FORMS,
    JSON,
    NEW,
    OTHER,
    PROTOBUF,
    REGISTERED,
    REQUEST,
    SHA_B,
    SHA_C,
    SOME_FORM_IDS,
    SOME_FORMS,
    STAGES,
    T0,
    compress,
    encode,
    event,
    file_access_event,
    post,
    refused,
    valid_message,
)

# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def secret(enrollment):
    return enrollment[1]


@pytest.fixture
def registered(make_agent, secret):
    """A host with a completed sync, a tag, events and a file-access event in the database."""
    rule_create(data=RuleInput("BINARY", SHA_C, "BLOCKLIST"))
    agent = make_agent(machine_id=REGISTERED)
    agent.sync()
    host_set_tags(host=Host.objects.get(machine_id=REGISTERED), tag_names=["eng"])
    agent.add_event(**event())
    agent.sync()
    status, _ = agent.post(
        "eventupload",
        "EventUploadRequest",
        {"file_access_events": [file_access_event()], "machine_id": REGISTERED},
    )
    assert status == 200
    assert Event.objects.count() == 1 and FileAccessEvent.objects.count() == 1
    assert HostTag.objects.filter(host__machine_id=REGISTERED).exists()
    return agent


@pytest.fixture(params=["registered", "new"])
def machine(request, registered):
    """The machine id a bad request is sent for: a registered host, or one never seen."""
    return REGISTERED if request.param == "registered" else NEW


# --- the body -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("encoding", [None, "deflate", "gzip"])
@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{", b'{"machine_id": }', b'{"a": 1} trailing', b"\xff\xfe{}", b"{'a': 1}"],
    ids=["text", "unclosed", "no-value", "trailing", "bad-utf8", "single-quotes"],
)
def test_body_not_json(client, secret, machine, stage, encoding, raw):
    refused(
        lambda: post(
            client, stage, machine, compress(raw, encoding), encoding=encoding, secret=secret
        ),
        400,
    )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("encoding", [None, "deflate"])
@pytest.mark.parametrize(
    "raw",
    [b"[]", b'[{"machine_id": "x"}]', b'"preflight"', b"42", b"1.5", b"true", b"null"],
    ids=["empty-list", "list", "string", "integer", "float", "bool", "null"],
)
def test_json_that_is_not_an_object(client, secret, machine, stage, encoding, raw):
    refused(
        lambda: post(
            client, stage, machine, compress(raw, encoding), encoding=encoding, secret=secret
        ),
        400,
    )


def _undecodable_deflate_bodies(machine_id: str) -> list[bytes]:
    plain = json.dumps({"machine_id": machine_id}).encode()
    return [
        b"not compressed at all",
        plain,  # uncompressed JSON labelled deflate
        gzip.compress(plain),  # gzip labelled deflate
        b"\x78\x9c" + b"\xff" * 32,  # zlib header, garbage stream
    ]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("index", range(4), ids=["text", "plain-json", "gzip", "garbage"])
def test_undecodable_deflate_body(client, secret, machine, stage, fmt, index):
    body = _undecodable_deflate_bodies(machine)[index]
    ctype = PROTOBUF if fmt == "proto" else JSON
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding="deflate", secret=secret
        ),
        400,
    )


def _undecodable_gzip_bodies(machine_id: str) -> list[bytes]:
    plain = json.dumps({"machine_id": machine_id}).encode()
    return [
        b"not compressed at all",
        plain,
        zlib.compress(plain),  # zlib labelled gzip
        b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 32,  # gzip header, garbage stream
    ]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("index", range(4), ids=["text", "plain-json", "zlib", "garbage"])
def test_undecodable_gzip_body(client, secret, machine, stage, fmt, index):
    body = _undecodable_gzip_bodies(machine)[index]
    ctype = PROTOBUF if fmt == "proto" else JSON
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding="gzip", secret=secret
        ),
        400,
    )


def varint(value: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# An unknown length-delimited field (number 999, 400 bytes): protobuf parsers skip it.
PROTO_PADDING = varint(999 << 3 | 2) + varint(400) + b"x" * 400


def plain_body(stage: str, machine_id: str, fmt: str, *, padding: int = 1) -> tuple[bytes, str]:
    """A request the stage accepts, made longer by content every parser ignores."""
    message = valid_message(stage, machine_id)
    if fmt == "proto":
        data, ctype = encode(stage, message, "proto")
        return data + PROTO_PADDING * padding, ctype
    message["unknown_padding"] = "x" * (400 * padding)
    return json.dumps(message).encode(), JSON


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("encoding", ["deflate", "gzip", "raw-deflate"])
@pytest.mark.parametrize("cut", ["trailer", "half", "header-only"])
def test_truncated_compressed_stream(client, secret, machine, stage, fmt, encoding, cut):
    plain, ctype = plain_body(stage, machine, fmt)
    full = compress(plain, encoding)
    trailer = {"deflate": 4, "gzip": 8, "raw-deflate": 1}[encoding]
    body = {
        "trailer": full[:-trailer],
        "half": full[: len(full) // 2],
        "header-only": full[:2],
    }[cut]
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
    )


def test_the_untruncated_stream_is_accepted(client, secret, registered):
    """Control for the test above: the same bodies, whole, are fine."""
    for fmt in ("json", "proto"):
        for encoding in ("deflate", "gzip", "raw-deflate"):
            plain, ctype = plain_body("preflight", REGISTERED, fmt)
            response = post(
                client,
                "preflight",
                REGISTERED,
                compress(plain, encoding),
                content_type=ctype,
                encoding=encoding,
                secret=secret,
            )
            assert response.status_code == 200, (fmt, encoding, response.content)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("encoding", ["deflate", "gzip", "raw-deflate"])
def test_decompression_bomb_is_refused(client, secret, settings, machine, stage, fmt, encoding):
    settings.SYNC_MAX_DECOMPRESSED_BYTES = 64 * 1024
    plain, ctype = plain_body(stage, machine, fmt, padding=5000)  # about 2 MB
    body = compress(plain, encoding)
    assert len(body) < settings.SYNC_MAX_BODY_BYTES
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        413,
        "SYNC_MAX_DECOMPRESSED_BYTES",
        "65536",
    )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt,encoding", FORMS, ids=FORM_IDS)
def test_body_over_the_size_limit(client, secret, settings, machine, stage, fmt, encoding):
    settings.SYNC_MAX_BODY_BYTES = 2048
    noise = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=6000))
    message = valid_message(stage, machine)
    if stage == "preflight":
        message["hostname"] = noise
    elif stage == "eventupload":
        message["events"][0]["file_name"] = noise
    elif stage == "ruledownload":
        message["cursor"] = noise
    else:
        message["rulesHash"] = noise
    body, ctype = encode(stage, message, fmt, encoding)
    assert len(body) > 2048
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        413,
        "SYNC_MAX_BODY_BYTES",
        "2048",
    )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("encoding", [None, "deflate", "gzip"])
@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff",
        b"\x0a\x05ab",  # field 1, length 5, only 2 bytes follow
        b"BAD-UTF8",  # replaced below: machine_id holding invalid UTF-8
        b'{"machine_id": "x"}',  # JSON sent as protobuf
        b"\x08",  # a tag without its value
    ],
    ids=["garbage", "short-length", "bad-utf8", "json", "tag-only"],
)
def test_invalid_protobuf_bytes(client, secret, machine, stage, encoding, raw):
    if raw == b"BAD-UTF8":
        number = CLASSES[REQUEST[stage]].DESCRIPTOR.fields_by_name["machine_id"].number
        raw = varint(number << 3 | 2) + varint(2) + b"\xff\xfe"
    refused(
        lambda: post(
            client,
            stage,
            machine,
            compress(raw, encoding),
            content_type=PROTOBUF,
            encoding=encoding,
            secret=secret,
        ),
        400,
    )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/msgpack",
    ],
)
def test_unsupported_content_type(client, secret, machine, stage, content_type):
    body, _ = encode(stage, valid_message(stage, machine))
    refused(
        lambda: post(client, stage, machine, body, content_type=content_type, secret=secret),
        415,
        content_type.split(";")[0],
    )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("encoding", ["br", "compress", "zstd", "deflate, gzip", "x-unknown"])
def test_unsupported_content_encoding(client, secret, machine, stage, encoding):
    body, _ = encode(stage, valid_message(stage, machine), "json", "deflate")
    refused(
        lambda: client.generic(
            "POST",
            f"/sync/{stage}/{machine}",
            data=body,
            content_type=JSON,
            HTTP_CONTENT_ENCODING=encoding,
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        ),
        415,
        encoding,
    )


def test_decompressed_size_at_the_limit_is_accepted(client, secret, settings, registered):
    """Control: the cap refuses what is over it, not what reaches it."""
    plain, ctype = plain_body("preflight", REGISTERED, "json", padding=10)
    settings.SYNC_MAX_DECOMPRESSED_BYTES = len(plain)
    response = post(
        client,
        "preflight",
        REGISTERED,
        zlib.compress(plain),
        content_type=ctype,
        encoding="deflate",
        secret=secret,
    )
    assert response.status_code == 200, response.content
    settings.SYNC_MAX_DECOMPRESSED_BYTES = len(plain) - 1
    refused(
        lambda: post(
            client,
            "preflight",
            REGISTERED,
            zlib.compress(plain),
            content_type=ctype,
            encoding="deflate",
            secret=secret,
        ),
        413,
        "SYNC_MAX_DECOMPRESSED_BYTES",
    )


# --- values -------------------------------------------------------------------------------------

# (stage, where, a JSON value no v1 enum has); `where` is a path into valid_message().
UNKNOWN_ENUM_NAMES = [
    ("preflight", ("client_mode",), "lockdown"),
    ("preflight", ("client_mode",), "Monitor"),
    ("preflight", ("client_mode",), "LOCKDOWN "),
    ("preflight", ("client_mode",), "ENFORCE"),
    ("eventupload", ("events", 0, "decision"), "BLOCK_EVERYTHING"),
    ("eventupload", ("events", 0, "decision"), "block_binary"),
    ("eventupload", ("events", 0, "signingStatus"), "PRODUCTION"),
    ("postflight", ("syncType",), "Clean"),
    ("postflight", ("syncType",), "CLEANALL"),
    ("postflight", ("syncType",), "full"),
]
# The same for binary protobuf: an enum number v1 does not define.
UNKNOWN_ENUM_NUMBERS = [
    ("preflight", ("client_mode",), 9),
    ("eventupload", ("events", 0, "decision"), 16),  # reserved in v1 (v2 ALLOW_CEL_FALLBACK)
    ("eventupload", ("events", 0, "signingStatus"), 42),
    ("postflight", ("syncType",), 7),
]


def put(message: dict, where: tuple, value) -> dict:
    target = message
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    return message


def field_name(where: tuple) -> str:
    return next(step for step in reversed(where) if isinstance(step, str))


@pytest.mark.parametrize("stage,where,value", UNKNOWN_ENUM_NAMES)
@pytest.mark.parametrize("encoding", [None, "deflate", "gzip"])
def test_unknown_enum_name(client, secret, machine, stage, where, value, encoding):
    message = put(valid_message(stage, machine), where, value)
    body, ctype = encode(stage, message, "json", encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
        field_name(where),
    )


@pytest.mark.parametrize("stage,where,value", UNKNOWN_ENUM_NUMBERS)
@pytest.mark.parametrize("fmt,encoding", FORMS, ids=FORM_IDS)
def test_unknown_enum_number(client, secret, machine, stage, where, value, fmt, encoding):
    message = put(valid_message(stage, machine), where, value)
    body, ctype = encode(stage, message, fmt, encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
    )


@pytest.mark.parametrize("fmt,encoding", FORMS, ids=FORM_IDS)
def test_enum_alias_is_valid_but_case_matters(client, secret, registered, fmt, encoding):
    """`clean` is a declared alias of CLEAN (§4.1 SyncType, allow_alias); `Clean` is no name."""
    good = valid_message("postflight", REGISTERED) | {"syncType": "clean"}
    body, ctype = encode("postflight", good, fmt, encoding)
    response = post(
        client, "postflight", REGISTERED, body, content_type=ctype, encoding=encoding, secret=secret
    )
    assert response.status_code == 200, response.content
    assert Host.objects.get(machine_id=REGISTERED).last_sync_type == "CLEAN"

    bad = valid_message("postflight", REGISTERED) | {"syncType": "Clean"}
    body, _ = encode("postflight", bad, "json", None if fmt == "proto" else encoding)
    refused(
        lambda: post(
            client,
            "postflight",
            REGISTERED,
            body,
            encoding=None if fmt == "proto" else encoding,
            secret=secret,
        ),
        400,
        "syncType",
    )


WRONG_TYPES = [
    ("preflight", ("request_clean_sync",), "true"),
    ("preflight", ("request_clean_sync",), 1),
    ("preflight", ("sipStatus",), 111.5),
    ("preflight", ("sipStatus",), "111.5"),
    ("preflight", ("binary_rule_count",), -1),
    ("preflight", ("binary_rule_count",), 2**32),
    ("preflight", ("binary_rule_count",), "many"),
    ("preflight", ("binary_rule_count",), True),
    ("preflight", ("hostname",), ["mac.example.com"]),
    ("preflight", ("hostname",), 5),
    ("preflight", ("hostname",), {"name": "mac"}),
    ("preflight", ("primary_user_groups",), ["staff", None]),
    ("preflight", ("primary_user_groups",), "staff"),
    ("preflight", ("primary_user_groups",), [["staff"]]),
    ("preflight", ("client_mode",), True),
    ("eventupload", ("events",), [event(SHA_B), None]),
    ("eventupload", ("events",), {"file_sha256": SHA_B}),
    ("eventupload", ("events", 0, "pid"), 2**31),
    ("eventupload", ("events", 0, "pid"), 4.25),
    ("eventupload", ("events", 0, "csFlags"), -5),
    ("eventupload", ("events", 0, "execution_time"), "soon"),
    ("eventupload", ("events", 0, "execution_time"), True),
    ("eventupload", ("events", 0, "execution_time"), [T0]),
    ("eventupload", ("events", 0, "entitlementInfo"), "none"),
    ("eventupload", ("events", 0, "entitlementInfo", "entitlementsFiltered"), "false"),
    ("eventupload", ("events", 0, "signing_chain", 0, "valid_from"), 1.5),
    ("eventupload", ("events", 0, "logged_in_users"), ["alice", None]),
    ("eventupload", ("events", 0, "secureSigningTime"), -1),
    ("ruledownload", ("cursor",), 123),
    ("ruledownload", ("cursor",), ["page-2"]),
    ("postflight", ("rules_received",), "ten"),
    ("postflight", ("rules_processed",), 1.5),
    ("postflight", ("rules_processed",), 2**32),
    ("postflight", ("rulesHash",), 12),
]


@pytest.mark.parametrize("stage,where,value", WRONG_TYPES)
@pytest.mark.parametrize("encoding", [None, "deflate"])
def test_wrong_json_type(client, secret, machine, stage, where, value, encoding):
    message = put(valid_message(stage, machine), where, value)
    body, ctype = encode(stage, message, "json", encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
        field_name(where),
    )


# One field under two of its names (§3.2: the agent's parser rejects this; so do we).
SAME_FIELD_TWICE = [
    ("preflight", (), {"serial_num": "A", "serial_number": "B"}),
    ("preflight", (), {"serial_num": "A", "serialNumber": "A"}),
    ("preflight", (), {"client_mode": "MONITOR", "clientMode": "LOCKDOWN"}),
    ("preflight", (), {"sipStatus": 1, "sip_status": 1}),
    ("preflight", (), {"rulesHash": "a", "rules_hash": "b"}),
    ("eventupload", ("events", 0), {"csFlags": 1, "cs_flags": 2}),
    ("eventupload", ("events", 0), {"file_sha256": SHA_B, "fileSha256": SHA_B}),
    ("eventupload", ("events", 0), {"entitlementInfo": {}, "entitlement_info": {}}),
    (
        "eventupload",
        ("events", 0, "entitlementInfo"),
        {"entitlementsFiltered": True, "entitlements_filtered": True},
    ),
    ("postflight", (), {"syncType": "NORMAL", "sync_type": "CLEAN"}),
    ("postflight", (), {"rules_received": 1, "rulesReceived": 1}),
]


@pytest.mark.parametrize("stage,where,fields", SAME_FIELD_TWICE)
@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_same_field_under_two_names(client, secret, machine, stage, where, fields, encoding):
    message = valid_message(stage, machine)
    target = message
    for step in where:
        target = target[step]
    for key in fields:
        target.pop(key, None)
    target.update(fields)
    body, ctype = encode(stage, message, "json", encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
    )


@pytest.mark.parametrize(
    "stage,text",
    [
        ("preflight", '{{"machine_id": "{m}", "hostname": "a", "hostname": "b"}}'),
        (
            "preflight",
            '{{"machine_id": "{m}", "client_mode": "MONITOR", "client_mode": "LOCKDOWN"}}',
        ),
        ("postflight", '{{"machine_id": "{m}", "syncType": "NORMAL", "syncType": "CLEAN"}}'),
    ],
    ids=["hostname", "client_mode", "syncType"],
)
def test_same_key_twice(client, secret, machine, stage, text):
    """The same key twice is the same field twice (§3.2); a JSON reader that keeps the last
    one silently would let two values contradict each other."""
    body = text.format(m=machine).encode()
    refused(lambda: post(client, stage, machine, body, secret=secret), 400)


# A string field somewhere in each stage's message, as (stage, where).
STRING_FIELDS = [
    ("preflight", ("hostname",)),
    ("preflight", ("serial_num",)),
    ("preflight", ("rulesHash",)),
    ("preflight", ("primary_user_groups", 0)),
    ("eventupload", ("events", 0, "file_name")),
    ("eventupload", ("events", 0, "current_sessions", 0)),
    ("eventupload", ("events", 0, "signing_chain", 0, "cn")),
    ("eventupload", ("events", 0, "entitlementInfo", "entitlements", 0, "value")),
    ("eventupload", ("file_access_events", 0, "target")),
    ("eventupload", ("file_access_events", 0, "process_chain", 0, "file_path")),
    ("ruledownload", ("cursor",)),
    ("postflight", ("rulesHash",)),
]


def message_with_string(stage: str, machine_id: str, where: tuple, value: str) -> dict:
    message = valid_message(stage, machine_id)
    if stage == "preflight":
        message["primary_user_groups"] = ["staff"]
    if stage == "eventupload":
        message["events"][0]["current_sessions"] = ["alice@console"]
        message["events"][0]["entitlementInfo"]["entitlements"] = [
            {"key": "com.apple.security.get-task-allow", "value": "true"}
        ]
        message["file_access_events"] = [file_access_event()]
    return put(message, where, value)


@pytest.mark.parametrize("stage,where", STRING_FIELDS)
@pytest.mark.parametrize("fmt,encoding", SOME_FORMS, ids=SOME_FORM_IDS)
def test_string_longer_than_the_limit(
    client, secret, settings, machine, stage, where, fmt, encoding
):
    settings.SYNC_MAX_STRING_LENGTH = 64
    message = message_with_string(stage, machine, where, "x" * 65)
    body, ctype = encode(stage, message, fmt, encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
        "SYNC_MAX_STRING_LENGTH",
        "64",
    )


def test_string_at_the_limit_is_accepted(client, secret, settings, registered):
    settings.SYNC_MAX_STRING_LENGTH = 64
    message = valid_message("preflight", REGISTERED) | {"hostname": "h" * 64}
    body, _ = encode("preflight", message)
    response = post(client, "preflight", REGISTERED, body, secret=secret)
    assert response.status_code == 200, response.content
    assert Host.objects.get(machine_id=REGISTERED).hostname == "h" * 64


@pytest.mark.parametrize("stage,where", STRING_FIELDS)
@pytest.mark.parametrize("fmt,encoding", SOME_FORMS, ids=SOME_FORM_IDS)
def test_nul_character_in_a_string(client, secret, machine, stage, where, fmt, encoding):
    message = message_with_string(stage, machine, where, "before\x00after")
    body, ctype = encode(stage, message, fmt, encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
        "NUL",
    )


# Lists of values (not the event batch, which has its own limit) as (stage, where, item).
LIST_FIELDS = [
    ("preflight", ("primary_user_groups",), "staff"),
    ("eventupload", ("events", 0, "logged_in_users"), "alice"),
    ("eventupload", ("events", 0, "signing_chain"), {"sha256": "d4" * 32, "cn": "x"}),
]


@pytest.mark.parametrize("stage,where,item", LIST_FIELDS)
@pytest.mark.parametrize("fmt,encoding", SOME_FORMS, ids=SOME_FORM_IDS)
def test_list_longer_than_the_limit(
    client, secret, settings, machine, stage, where, item, fmt, encoding
):
    settings.SYNC_MAX_LIST_LENGTH = 5
    message = put(valid_message(stage, machine), where, [item] * 6)
    body, ctype = encode(stage, message, fmt, encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        400,
        "SYNC_MAX_LIST_LENGTH",
        "5",
    )


# --- machine ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt,encoding", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("other", [OTHER, REGISTERED.lower(), REGISTERED + "X", "x"])
def test_body_machine_id_contradicts_the_url(
    client, secret, registered, stage, fmt, encoding, other
):
    for url_id in (REGISTERED, NEW):
        if other == url_id:
            continue
        message = valid_message(stage, other)
        body, ctype = encode(stage, message, fmt, encoding)
        refused(
            lambda url_id=url_id, body=body, ctype=ctype: post(
                client, stage, url_id, body, content_type=ctype, encoding=encoding, secret=secret
            ),
            400,
        )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("length", [129, 200, 1000])
def test_machine_id_too_long(client, secret, registered, stage, length):
    machine_id = "A" * length
    body, _ = encode(stage, valid_message(stage, machine_id))
    refused(lambda: post(client, stage, machine_id, body, secret=secret), 400, "128")


def test_machine_id_of_128_characters_is_accepted(client, secret, registered):
    machine_id = "A" * 128
    body, _ = encode("preflight", valid_message("preflight", machine_id))
    response = post(client, "preflight", machine_id, body, secret=secret)
    assert response.status_code == 200, response.content
    assert Host.objects.filter(machine_id=machine_id).exists()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    "quoted,decoded",
    [
        ("MAC%20ONE", "MAC ONE"),
        ("-ABCDEF", "-ABCDEF"),
        (".ABCDEF", ".ABCDEF"),
        ("%C3%A9t%C3%A9", "\u00e9t\u00e9"),
        ("MAC%09ONE", "MAC\tONE"),
        ("MAC;ONE", "MAC;ONE"),
        ("MAC*ONE", "MAC*ONE"),
        ("MAC%0A", "MAC\n"),
    ],
    ids=["space", "dash-first", "dot-first", "non-ascii", "tab", "semicolon", "star", "newline"],
)
def test_malformed_machine_id_in_the_url(client, secret, registered, stage, quoted, decoded):
    body, _ = encode(stage, valid_message(stage, decoded))
    refused(
        lambda: post(client, stage, "", body, secret=secret, path=f"/sync/{stage}/{quoted}"),
        400,
    )


# --- authentication and ownership ---------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer not-a-secret", "Basic dXNlcjpwYXNz", "Token {secret}"],
    ids=["absent", "empty", "scheme-only", "blank", "unknown", "basic", "other-scheme"],
)
def test_missing_or_unknown_secret(client, secret, machine, stage, authorization):
    body, _ = encode(stage, valid_message(stage, machine), "json", "deflate")
    extra = {}
    if authorization is not None:
        extra["HTTP_AUTHORIZATION"] = authorization.format(secret=secret)
    refused(
        lambda: client.generic(
            "POST",
            f"/sync/{stage}/{machine}",
            data=body,
            content_type=JSON,
            HTTP_CONTENT_ENCODING="deflate",
            **extra,
        ),
        401,
    )
    assert not Host.objects.filter(machine_id=NEW).exists()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt,encoding", [("json", "deflate"), ("proto", None)])
def test_revoked_secret(client, secret, machine, stage, fmt, encoding):
    enrollment_revoke(name=Enrollment.objects.get(hosts__machine_id=REGISTERED).name)
    body, ctype = encode(stage, valid_message(stage, machine), fmt, encoding)
    refused(
        lambda: post(
            client, stage, machine, body, content_type=ctype, encoding=encoding, secret=secret
        ),
        401,
    )
    assert not Host.objects.filter(machine_id=NEW).exists()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fmt,encoding", [("json", "deflate"), ("proto", "gzip")])
def test_machine_registered_by_another_enrollment(
    client, registered, make_enrollment, stage, fmt, encoding
):
    _, other_secret = make_enrollment(name="other", tags=["finance"])
    message = valid_message(stage, REGISTERED)
    if stage == "eventupload":
        message["events"].append(event(SHA_C, execution_time=T0 + 5))
        message["file_access_events"] = [file_access_event(access_time=T0 + 9)]
    body, ctype = encode(stage, message, fmt, encoding)
    refused(
        lambda: post(
            client,
            stage,
            REGISTERED,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=other_secret,
        ),
        403,
    )


# --- events -------------------------------------------------------------------------------------

BAD_EVENTS = {
    "sha-not-hex": event("g" * 64),
    "sha-too-short": event("a" * 63),
    "sha-empty": event(""),
    "block-without-execution-time": {
        k: v for k, v in event(SHA_C).items() if k != "execution_time"
    },
    "bundle-binary-without-bundle-hash": event(SHA_C, decision="BUNDLE_BINARY"),
    "bad-certificate-sha": event(
        SHA_C, signing_chain=[{"sha256": "not-a-hash", "cn": "x", "valid_from": 1}]
    ),
    "bad-bundle-hash": event(SHA_C, file_bundle_hash="xyz"),
    "execution-time-infinite": event(SHA_C, execution_time="Infinity"),
    "execution-time-nan": event(SHA_C, execution_time="NaN"),
}


@pytest.mark.parametrize("bad", list(BAD_EVENTS), ids=list(BAD_EVENTS))
@pytest.mark.parametrize("position", [0, 2], ids=["first", "last"])
@pytest.mark.parametrize("fmt,encoding", [("json", None), ("json", "deflate"), ("proto", "gzip")])
def test_one_bad_event_refuses_the_whole_batch(
    client, secret, machine, bad, position, fmt, encoding
):
    events = [event(SHA_B, execution_time=T0 + 1), event("f0" * 32, execution_time=T0 + 2)]
    events.insert(position, BAD_EVENTS[bad])
    message = {
        "events": events,
        "file_access_events": [file_access_event(access_time=T0 + 3)],
        "machine_id": machine,
    }
    body, ctype = encode("eventupload", message, fmt, encoding)
    refused(
        lambda: post(
            client,
            "eventupload",
            machine,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=secret,
        ),
        400,
    )


@pytest.mark.parametrize("fmt,encoding", [("json", None), ("json", "deflate"), ("proto", None)])
def test_one_bad_file_access_event_refuses_the_whole_batch(client, secret, machine, fmt, encoding):
    bad = {k: v for k, v in file_access_event().items() if k != "access_time"}
    message = {
        "events": [event(SHA_B, execution_time=T0 + 1)],
        "file_access_events": [file_access_event(access_time=T0 + 3), bad],
        "machine_id": machine,
    }
    body, ctype = encode("eventupload", message, fmt, encoding)
    refused(
        lambda: post(
            client,
            "eventupload",
            machine,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=secret,
        ),
        400,
    )


@pytest.mark.parametrize("fmt,encoding", FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("executions,file_accesses", [(4, 0), (0, 4), (2, 2), (3, 1)])
def test_more_events_than_the_limit(
    client, secret, settings, machine, fmt, encoding, executions, file_accesses
):
    settings.SYNC_MAX_EVENTS_PER_REQUEST = 3
    message = {
        "events": [event(f"{n:02x}" * 32, execution_time=T0 + n) for n in range(executions)],
        "file_access_events": [file_access_event(access_time=T0 + n) for n in range(file_accesses)],
        "machine_id": machine,
    }
    body, ctype = encode("eventupload", message, fmt, encoding)
    refused(
        lambda: post(
            client,
            "eventupload",
            machine,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=secret,
        ),
        413,
        "SYNC_MAX_EVENTS_PER_REQUEST",
        "3",
    )


def test_events_at_the_limit_are_accepted(client, secret, settings, registered):
    settings.SYNC_MAX_EVENTS_PER_REQUEST = 3
    message = {
        "events": [event(f"{n:02x}" * 32, execution_time=T0 + 100 + n) for n in range(2)],
        "file_access_events": [file_access_event(access_time=T0 + 100)],
        "machine_id": REGISTERED,
    }
    body, _ = encode("eventupload", message)
    response = post(client, "eventupload", REGISTERED, body, secret=secret)
    assert response.status_code == 200, response.content
    assert Event.objects.count() == 3
    assert FileAccessEvent.objects.count() == 2


# --- rule download cursors ----------------------------------------------------------------------


@pytest.fixture
def issued_cursor(client, secret, settings, registered):
    """A genuine cursor: the first page of OTHER's first (clean) rule download."""
    settings.SYNC_RULES_PER_PAGE = 1
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST"))
    body, _ = encode("ruledownload", {"machine_id": OTHER})
    response = post(client, "ruledownload", OTHER, body, secret=secret)
    assert response.status_code == 200, response.content
    cursor = json.loads(response.content)["cursor"]
    assert cursor
    return cursor


def forged_cursors(genuine: str) -> list[str]:
    flipped = genuine[:-3] + ("A" if genuine[-3] != "A" else "B") + genuine[-2:]
    return [
        "page-2",
        "0",
        flipped,
        genuine[: len(genuine) // 2],
        genuine + "x",
        genuine.split(":", 1)[0] + ":forged:signature",
    ]


@pytest.mark.parametrize("index", range(6), ids=lambda i: f"forged-{i}")
@pytest.mark.parametrize("fmt,encoding", [("json", "deflate"), ("proto", None)])
def test_forged_ruledownload_cursor(client, secret, machine, issued_cursor, index, fmt, encoding):
    cursor = forged_cursors(issued_cursor)[index]
    assert cursor != issued_cursor
    body, ctype = encode("ruledownload", {"machine_id": machine, "cursor": cursor}, fmt, encoding)
    refused(
        lambda: post(
            client,
            "ruledownload",
            machine,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=secret,
        ),
        400,
        "cursor",
    )


@pytest.mark.parametrize("fmt,encoding", [("json", "deflate"), ("proto", None)])
def test_cursor_issued_to_another_machine(client, secret, machine, issued_cursor, fmt, encoding):
    body, ctype = encode(
        "ruledownload", {"machine_id": machine, "cursor": issued_cursor}, fmt, encoding
    )
    refused(
        lambda: post(
            client,
            "ruledownload",
            machine,
            body,
            content_type=ctype,
            encoding=encoding,
            secret=secret,
        ),
        400,
        "cursor",
    )


def test_issued_cursor_works_for_its_own_machine(client, secret, issued_cursor):
    """Control for the two tests above."""
    body, _ = encode("ruledownload", {"machine_id": OTHER, "cursor": issued_cursor})
    response = post(client, "ruledownload", OTHER, body, secret=secret)
    assert response.status_code == 200, response.content


# --- URLs and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_than_post(client, secret, machine, stage, method):
    response = refused(
        lambda: client.generic(
            method, f"/sync/{stage}/{machine}", HTTP_AUTHORIZATION=f"Bearer {secret}"
        ),
        405,
    )
    assert response["Allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    [
        f"/sync/xsrf/{REGISTERED}",
        f"/sync/metrics/{REGISTERED}",
        f"/sync/commands/{REGISTERED}",
        f"/sync/unknown/{REGISTERED}",
        "/sync/preflight",
        "/sync/preflight/",
        "/sync/",
        f"/sync/preflight/{REGISTERED}/",
        f"/sync/preflight/{REGISTERED}/extra",
        f"/sync/PREFLIGHT/{REGISTERED}",
    ],
)
def test_unknown_sync_path(client, secret, registered, path):
    body, _ = encode("preflight", valid_message("preflight", REGISTERED), "json", "deflate")
    refused(
        lambda: client.generic(
            "POST",
            path,
            data=body,
            content_type=JSON,
            HTTP_CONTENT_ENCODING="deflate",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        ),
        404,
    )
