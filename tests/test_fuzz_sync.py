"""Property-based fuzzing of the four sync stages (protocol.md §2 transport, §3 JSON, §4).

Requests are generated from the protobuf descriptors of syncapi/schema.py, so every field of
every request message is covered: first a well-typed message (any of a field's accepted names:
json_name, proto name, lowerCamelCase), then broken on purpose (a value of another type, an
enum name or number v1 lacks, a string over SYNC_MAX_STRING_LENGTH, odd Unicode, a field under
two names, unknown keys), encoded as JSON or binary protobuf, compressed or not, and broken
again as bytes (truncated, bit-flipped, deeply nested, overlong UTF-8, garbage, wrong headers).

Whatever arrives, the server answers 200 (and the body parses as the stage's response, the
way the agent parses it) or a 4xx with a JSON `{"error", "detail"}` that changed no row the
sync path can write; never a 5xx. Each example runs in a transaction that is rolled back, for a
registered host or for a machine id the server has never seen.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from hosts.models import Host
from rules.services import RuleInput, rule_create
from syncapi.codec import body_format
from syncapi.schema import CLASSES, ENUMS, SPECS
from tests.agent import parse_response
from tests.fuzzing import json_error, json_values, odd_text, rolled_back
from tests.sync_requests import JSON, PROTOBUF, REQUEST, SHA_C, STAGES, T0, event, snapshot

RESPONSE = {stage: name.replace("Request", "Response") for stage, name in REQUEST.items()}
REGISTERED = "0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0"
# Small, so that strings over it are cheap to generate; the check is the same at any value.
STRING_LIMIT = 300
LIST_LIMIT = 8

_FD = FieldDescriptor
_SHA_FIELDS = {"file_sha256", "sha256", "file_bundle_hash"}
_TIME_FIELDS = {"execution_time", "access_time"}

hex64 = st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)
plain_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20
)


def _name_choices(message: str, field: str) -> list[str]:
    spec = next(f for f in SPECS[message].fields if f.name == field)
    return list(spec.accepted_names)


def _enum_values(enum_name: str) -> st.SearchStrategy:
    """A declared name (aliases included) or number: what a v1 agent may send."""
    values = ENUMS[enum_name]
    return st.one_of(
        st.sampled_from([name for name, _ in values]),
        st.sampled_from([number for _, number in values]),
    )


def _scalar(fd: FieldDescriptor, machine_id: str) -> st.SearchStrategy:
    """A well-typed value for one field (proto/JSON-compatible), mostly one the stage accepts."""
    name = fd.name
    if fd.type == _FD.TYPE_STRING:
        if name == "machine_id":
            return st.just(machine_id)
        if name in _SHA_FIELDS:
            return st.one_of(hex64, hex64, plain_text)
        if name == "cursor":
            return st.one_of(st.just(""), plain_text)
        return st.one_of(
            plain_text,
            plain_text,
            plain_text,
            odd_text,
            st.text(min_size=STRING_LIMIT - 2, max_size=STRING_LIMIT + 2),
        )
    if fd.type == _FD.TYPE_BOOL:
        return st.booleans()
    if fd.type == _FD.TYPE_UINT32:
        return st.one_of(st.integers(0, 1000), st.integers(0, 2**32 - 1))
    if fd.type == _FD.TYPE_INT32:
        return st.integers(-(2**31), 2**31 - 1)
    if fd.type == _FD.TYPE_DOUBLE:
        if name in _TIME_FIELDS:
            return st.one_of(
                st.floats(T0 - 10**8, T0 + 10**8),
                st.floats(allow_nan=False, allow_infinity=False),
            )
        return st.floats(allow_nan=False, allow_infinity=False)
    if fd.type == _FD.TYPE_ENUM:
        return _enum_values(fd.enum_type.name)
    raise AssertionError(fd.type)  # pragma: no cover


@st.composite
def messages(draw, message: str, machine_id: str, depth: int = 0) -> dict:
    """A message as {proto field name: value}: a random subset of its fields, each well typed;
    nested messages likewise (two levels at most)."""
    descriptor = CLASSES[message].DESCRIPTOR
    out: dict = {}
    oneofs_used: set[str] = set()
    for fd in descriptor.fields:
        if fd.name == "machine_id":
            if draw(st.integers(0, 4)):
                out[fd.name] = machine_id
            continue
        if not draw(st.booleans()):
            continue
        oneof = fd.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):
            if oneof.name in oneofs_used:
                continue
            oneofs_used.add(oneof.name)
        if fd.type == _FD.TYPE_MESSAGE:
            if depth >= 2:
                continue
            item = messages(fd.message_type.name, machine_id, depth + 1)
            if fd.message_type.name == "Event":
                item = item.map(lambda e: {"file_sha256": "a" * 64, "execution_time": T0, **e})
        else:
            item = _scalar(fd, machine_id)
        is_repeated = fd.is_repeated
        out[fd.name] = draw(st.lists(item, max_size=3)) if is_repeated else draw(item)
    return out


def _paths(value, path=()):
    """Every place in a JSON value that a mutation can replace."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _paths(item, (*path, index))


def _set(value, path, new):
    target = value
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new


def _wire_names(message: str, values: dict, draw) -> dict:
    """Proto names -> the keys an agent may use, chosen per field (§3.2: all are accepted)."""
    descriptor = CLASSES[message].DESCRIPTOR
    out = {}
    for key_in, value in values.items():
        name = SPECS[message].by_key[key_in].name
        fd = descriptor.fields_by_name[name]
        key = draw(st.sampled_from(_name_choices(message, name)))
        if fd.type == _FD.TYPE_MESSAGE:
            sub = fd.message_type.name
            value = (
                [_wire_names(sub, item, draw) for item in value]
                if isinstance(value, list)
                else _wire_names(sub, value, draw)
            )
        out[key] = value
    return out


MUTATIONS = ["none", "retype", "huge", "odd", "bad-enum", "twice", "unknown", "drop"]


def _mutate_json(message: str, wire: dict, draw) -> dict:
    kind = draw(st.sampled_from(MUTATIONS))
    note(f"json mutation: {kind}")
    paths = list(_paths(wire))
    if kind == "none":
        return wire
    if kind == "twice":
        # One field under two of its names (at the top level, where names are known).
        spec = SPECS[message].fields
        field = draw(st.sampled_from(spec))
        names = field.accepted_names
        if len(names) > 1:
            wire[names[0]] = draw(json_values)
            wire[names[1]] = draw(json_values)
        return wire
    if kind == "unknown":
        wire[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        return wire
    if not paths:
        return wire
    path = draw(st.sampled_from(paths))
    if kind == "retype":
        _set(wire, path, draw(json_values))
    elif kind == "huge":
        _set(wire, path, draw(st.sampled_from(["x", "\u00e9", "\U0001f600"])) * (STRING_LIMIT + 1))
    elif kind == "odd":
        _set(wire, path, draw(odd_text))
    elif kind == "bad-enum":
        _set(
            wire,
            path,
            draw(st.one_of(st.integers(-5, 100), st.sampled_from(["lockdown", "BLOCK", "7", ""]))),
        )
    elif kind == "drop":
        target = wire
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
    return wire


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@st.composite
def proto_junk(draw) -> bytes:
    """A field protobuf may or may not accept: any number, any wire type, any payload."""
    number = draw(st.integers(1, 40) | st.integers(1, 2**29 - 1))
    wire_type = draw(st.sampled_from([0, 1, 2, 5, 3, 4, 6, 7]))
    tag = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + _varint(draw(st.integers(0, 2**64 - 1)))
    if wire_type == 1:
        return tag + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return tag + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        payload = draw(st.binary(max_size=40) | st.just(b"\xff\xfe\xc0\xaf"))
        declared = draw(st.sampled_from([len(payload), len(payload) + 5, 2**31]))
        return tag + _varint(declared) + payload
    return tag + draw(st.binary(max_size=8))


def _compress(data: bytes, how: str) -> bytes:
    if how == "deflate":
        return zlib.compress(data)
    if how == "gzip":
        return gzip.compress(data)
    if how == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    return data


# (how the body is compressed, the Content-Encoding header sent): honest pairs, and liars.
ENCODINGS = [
    ("identity", None),
    ("identity", "identity"),
    ("deflate", "deflate"),
    ("gzip", "gzip"),
    ("gzip", "x-gzip"),
    ("raw-deflate", "deflate"),
    ("deflate", "DEFLATE "),
    ("gzip", "deflate"),
    ("deflate", "gzip"),
    ("identity", "deflate"),
    ("deflate", "br"),
    ("gzip", "deflate, gzip"),
    ("identity", "\u00e9"),
]
CONTENT_TYPES = {
    "json": [JSON, "application/json; charset=utf-8", "text/json", ""],
    "proto": [PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"],
    "other": ["text/plain", "application/x-www-form-urlencoded", "application/json\x00", "*/*"],
}


@st.composite
def requests(draw, stage: str, machine_id: str) -> tuple[bytes, str, str | None, str]:
    """(body, Content-Type, Content-Encoding, format sent) for one stage."""
    message = REQUEST[stage]
    values = draw(messages(message, machine_id))
    fmt = draw(st.sampled_from(["json", "json", "proto"]))
    if fmt == "proto":
        try:
            data = json_format.ParseDict(values, CLASSES[message]()).SerializeToString()
        except (json_format.ParseError, ValueError, TypeError):
            fmt = "json"  # e.g. a lone surrogate protobuf cannot hold: send it as JSON
    if fmt == "proto":
        byte_kind = draw(st.sampled_from(["none", "none", "junk", "truncate", "flip"]))
        note(f"proto mutation: {byte_kind}")
        if byte_kind == "junk":
            data += draw(proto_junk())
        elif byte_kind == "truncate" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif byte_kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    else:
        wire = _mutate_json(message, _wire_names(message, values, draw), draw)
        data = json.dumps(wire, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        byte_kind = draw(
            st.sampled_from(["none", "none", "none", "truncate", "nest", "overlong", "garbage"])
        )
        note(f"json bytes mutation: {byte_kind}")
        if byte_kind == "truncate":
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif byte_kind == "nest":
            depth = draw(st.sampled_from([50, 1000, 100_000]))
            key = draw(st.sampled_from(["events", "hostname", "serial_num", "x", "rules"]))
            data = b'{"%s": %s%s}' % (key.encode(), b"[" * depth, b"]" * depth)
        elif byte_kind == "overlong":
            data = data.replace(b'"', b'"\xc0\xaf', 1) if b'"' in data else b"\xc0\xaf"
        elif byte_kind == "garbage":
            data = draw(st.binary(max_size=64))
    honest = ENCODINGS[:4]
    how, header = draw(st.sampled_from(honest if draw(st.integers(0, 3)) else ENCODINGS))
    body = _compress(data, how)
    content_type = draw(
        st.one_of(
            st.sampled_from(CONTENT_TYPES[fmt]),
            st.sampled_from(CONTENT_TYPES["proto" if fmt == "json" else "json"]),
            st.sampled_from(CONTENT_TYPES["other"]),
        )
        if draw(st.integers(0, 9)) == 0
        else st.just(CONTENT_TYPES[fmt][0])
    )
    return body, content_type, header, fmt


def _machine_ids():
    return st.one_of(st.just(REGISTERED), st.uuids().map(lambda u: str(u).upper()))


@pytest.fixture
def fuzz_limits(settings):
    settings.SYNC_MAX_STRING_LENGTH = STRING_LIMIT
    settings.SYNC_MAX_LIST_LENGTH = LIST_LIMIT
    # conftest's liveness_in_request: every write of a stage happens in its request (no
    # write-behind thread, no deferred event inbox), so the snapshot after it sees them all.
    assert settings.SYNC_WRITE_BEHIND_SECONDS == 0 and not settings.SYNC_DEFER_EVENTS


@pytest.fixture
def secret(enrollment):
    return enrollment[1]


@pytest.fixture
def registered(make_agent, fuzz_limits):
    """A host with a completed sync and an event, and a rule for it to download."""
    rule_create(data=RuleInput("BINARY", SHA_C, "BLOCKLIST"))
    agent = make_agent(machine_id=REGISTERED)
    agent.add_event(**event())
    agent.sync()
    assert Host.objects.filter(machine_id=REGISTERED).exists()
    return agent


def send(client, stage, machine_id, secret, body, content_type, encoding):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    if encoding is not None:
        extra["HTTP_CONTENT_ENCODING"] = encoding
    return client.generic(
        "POST", f"/sync/{stage}/{machine_id}", data=body, content_type=content_type, **extra
    )


def check(client, stage, machine_id, secret, request) -> int:
    """Send one request; 200 that parses, or a refusal that changed nothing; never a 5xx."""
    body, content_type, encoding, _sent_format = request
    note(f"{stage} {machine_id} {content_type!r} {encoding!r} {len(body)} bytes: {body[:300]!r}")
    with rolled_back():
        before = snapshot()
        response = send(client, stage, machine_id, secret, body, content_type, encoding)
        note(f"-> {response.status_code} {response.content[:300]!r}")
        tally(f"status {response.status_code}")  # --hypothesis-show-statistics
        assert response.status_code < 500, response.content
        if response.status_code == 200:
            answered = "proto" if response["Content-Type"] == PROTOBUF else "json"
            expected = "proto" if body_format(content_type) == PROTOBUF else "json"
            assert answered == expected, "the answer is not in the format of the request"
            parse_response(RESPONSE[stage], response.content, answered)
        else:
            assert 400 <= response.status_code < 500, response.status_code
            json_error(response)
            assert snapshot() == before, "a refused request changed the database"
    return response.status_code


FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("stage", STAGES)
@settings(FUZZ, max_examples=2 * settings.default.max_examples)  # the widest net: twice as long
@given(data=st.data())
def test_fuzzed_request(client, secret, registered, stage, data):
    machine_id = data.draw(_machine_ids(), label="machine_id")
    request = data.draw(requests(stage, machine_id), label="request")
    check(client, stage, machine_id, secret, request)


@pytest.mark.parametrize("stage", STAGES)
@FUZZ
@given(body=st.binary(max_size=256), encoding=st.sampled_from([None, "deflate", "gzip"]))
def test_garbage_body(client, secret, registered, stage, body, encoding):
    content_type = PROTOBUF if body[:1] in (b"\x08", b"\x0a", b"\x12") else JSON
    check(client, stage, REGISTERED, secret, (body, content_type, encoding, "json"))


@FUZZ
@given(data=st.data())
def test_valid_requests_are_accepted(client, secret, registered, data):
    """Control: unmutated, honestly encoded requests for a new machine get 200, so the
    properties above are not met by refusing everything."""
    stage = data.draw(st.sampled_from(STAGES), label="stage")
    machine_id = str(uuid.UUID(int=data.draw(st.integers(1, 2**64)))).upper()
    message = REQUEST[stage]
    values = {"machine_id": machine_id}
    if stage == "preflight":
        values["client_mode"] = data.draw(st.sampled_from(["MONITOR", "LOCKDOWN", 1, 2]))
        values["hostname"] = data.draw(plain_text)
    if stage == "eventupload":
        values["events"] = [event(data.draw(hex64))]
    fmt = data.draw(st.sampled_from(["json", "proto"]))
    how = data.draw(st.sampled_from(["identity", "deflate", "gzip"]))
    if fmt == "proto":
        raw = json_format.ParseDict(values, CLASSES[message]()).SerializeToString()
    else:
        raw = json.dumps(_wire_names(message, values, data.draw)).encode()
    request = (_compress(raw, how), CONTENT_TYPES[fmt][0], None if how == "identity" else how, fmt)
    assert check(client, stage, machine_id, secret, request) == 200
