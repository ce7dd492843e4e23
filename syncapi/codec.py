"""Bytes on the wire <-> plain Python values, for the four sync stages.

Decoding produces the same shape from JSON and from binary protobuf: a dict keyed by proto field
name holding only the fields that are set, with enums as their canonical names, nested messages
as dicts and repeated fields as lists. Anything a client can get wrong raises `ProtocolError`,
which the views turn into a 4xx JSON answer.

JSON is read the way the agent's own protobuf parser reads it (protocol.md §3.2): every field
under its json_name, proto name or lowerCamelCase name; unknown keys skipped; `null` = unset;
the same field under two names is an error; at most one member of a oneof. Two deliberate
differences, because a server must not guess: an unknown enum name is rejected (the agent would
silently read it as 0), and so is a string that PostgreSQL cannot store (NUL).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass

import orjson
from django.conf import settings
from google.protobuf.message import DecodeError

from .schema import (
    BOOL,
    CLASSES,
    DOUBLE,
    ENUM,
    ENUM_NAME,
    ENUM_NUMBER,
    INT32,
    MESSAGE,
    SPECS,
    STRING,
    UINT32,
    Field,
)

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
_PROTOBUF_TYPES = {PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"}
_INT_STRING = re.compile(r"-?[0-9]+")
_RANGES = {UINT32: (0, 2**32 - 1), INT32: (-(2**31), 2**31 - 1)}
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Batches have their own limit (SYNC_MAX_EVENTS_PER_REQUEST); every other list is capped by
# SYNC_MAX_LIST_LENGTH.
_BATCH_FIELDS = {"events", "file_access_events", "rules"}


@dataclass
class ProtocolError(Exception):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    status: int
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def bad_request(detail: str, code: str = "invalid_request") -> ProtocolError:
    return ProtocolError(400, code, detail)


# --- transport ----------------------------------------------------------------------------------


def body_format(content_type: str | None) -> str:
    """JSON or PROTOBUF from a Content-Type header; the agent sends one or the other (§2.1)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("", JSON, "text/json"):
        return JSON
    if media in _PROTOBUF_TYPES:
        return PROTOBUF
    raise ProtocolError(
        415,
        "unsupported_media_type",
        f"Content-Type {media!r} is not supported; send {JSON} or {PROTOBUF}.",
    )


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    """Undo `Content-Encoding` (deflate = zlib, the agent's default; gzip; §2.2) under a cap.

    Output is produced in bounded steps, so a deflate bomb costs at most the cap in memory.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("deflate", "zlib"):
        # zlib-wrapped (RFC 1950) is what Santa sends; raw DEFLATE (RFC 1951) from other
        # clients is tolerated (§2.2).
        wbits_options = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    elif encoding in ("gzip", "x-gzip"):
        wbits_options = (16 + zlib.MAX_WBITS,)
    else:
        raise ProtocolError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding!r} is not supported; use deflate, gzip or none.",
        )
    if not body:
        raise bad_request(f"Empty body with Content-Encoding {encoding}.", "invalid_compression")
    last_error = None
    for wbits in wbits_options:
        try:
            return _inflate(body, wbits, settings.SYNC_MAX_DECOMPRESSED_BYTES)
        except zlib.error as exc:
            last_error = exc
    raise bad_request(f"Body is not valid {encoding} data ({last_error}).", "invalid_compression")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    chunks: list[bytes] = []
    size = 0
    pending = data
    while True:
        chunk = inflater.decompress(pending, 256 * 1024)
        size += len(chunk)
        if size > limit:
            raise ProtocolError(
                413,
                "body_too_large",
                f"Decompressed body exceeds SYNC_MAX_DECOMPRESSED_BYTES ({limit} bytes).",
            )
        chunks.append(chunk)
        pending = inflater.unconsumed_tail
        if inflater.eof or (not pending and not chunk):
            break
    if not inflater.eof:
        raise zlib.error("truncated stream")
    if inflater.unused_data:
        raise zlib.error("data after the end of the compressed stream")
    return b"".join(chunks)


# --- decoding -----------------------------------------------------------------------------------


def decode(message: str, data: bytes, fmt: str) -> dict:
    """Decode a request body of the given message type into the common dict shape."""
    if fmt == PROTOBUF:
        try:
            parsed = CLASSES[message].FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise bad_request(f"Body is not a valid {message} protobuf ({exc}).") from None
        return _from_proto(message, parsed)
    if not data.strip():
        raise bad_request("Empty body; expected a JSON object.", "invalid_json")
    try:
        value = _JSON.decode(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad_request("Body is not valid UTF-8.", "invalid_json") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise bad_request(f"Body is not valid JSON ({exc}).", "invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request("The JSON body must be an object.", "invalid_json")
    return _from_json(message, value, message)


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {duplicate!r} appears twice in one object")
    return obj


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# The standard library's parser, because it can refuse a key repeated in one object (as the
# agent's own parser does, §3.2); orjson keeps the last one silently. It costs microseconds on a
# preflight. NaN/Infinity literals are refused (only the strings "NaN" etc. are protobuf JSON).
_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _from_json(message: str, obj: dict, path: str) -> dict:
    spec = SPECS[message]
    out: dict = {}
    oneofs: dict[str, str] = {}
    for key, value in obj.items():
        field = spec.by_key.get(key)
        if field is None:
            continue  # unknown keys are tolerated (newer agents add fields)
        if value is None:
            continue  # null = not set, also when repeated under another name (§3.2)
        where = f"{path}.{key}"
        if field.name in out:
            raise bad_request(f"Field {where} is given more than once (under two names).")
        if field.oneof:
            if field.oneof in oneofs:
                raise bad_request(
                    f"{path}: only one of the '{field.oneof}' fields may be set "
                    f"(got {oneofs[field.oneof]!r} and {field.name!r})."
                )
            oneofs[field.oneof] = field.name
        if field.repeated:
            if not isinstance(value, list):
                raise bad_request(f"Field {where} must be a list.")
            if len(value) > settings.SYNC_MAX_LIST_LENGTH and field.name not in _BATCH_FIELDS:
                raise bad_request(
                    f"Field {where} has more than SYNC_MAX_LIST_LENGTH "
                    f"({settings.SYNC_MAX_LIST_LENGTH}) items.",
                    "limit_exceeded",
                )
            items = []
            for index, item in enumerate(value):
                if item is None:
                    raise bad_request(f"Field {where}[{index}] is null.")
                items.append(_json_value(field, item, f"{where}[{index}]"))
            out[field.name] = items
        else:
            out[field.name] = _json_value(field, value, where)
    return out


def _json_value(field: Field, value, where: str):
    kind = field.type
    if kind == STRING:
        if not isinstance(value, str):
            raise bad_request(f"Field {where} must be a string.")
        return _check_string(value, where)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise bad_request(f"Field {where} must be true or false.")
        return value
    if kind in _RANGES:
        return _json_integer(value, where, *_RANGES[kind])
    if kind == DOUBLE:
        if isinstance(value, bool):
            raise bad_request(f"Field {where} must be a number.")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            if value in _SPECIAL_DOUBLES:
                return _SPECIAL_DOUBLES[value]
            try:
                return float(value)
            except ValueError:
                pass
        raise bad_request(f"Field {where} must be a number.")
    if kind == ENUM:
        return _enum_name(field.ref, value, where)
    if kind == MESSAGE:
        if not isinstance(value, dict):
            raise bad_request(f"Field {where} must be an object.")
        return _from_json(field.ref, value, where)
    raise AssertionError(f"unhandled field type {kind}")  # pragma: no cover


def _json_integer(value, where: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise bad_request(f"Field {where} must be an integer.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise bad_request(f"Field {where} must be an integer.")
        value = int(value)
    elif isinstance(value, str):
        if not _INT_STRING.fullmatch(value):
            raise bad_request(f"Field {where} must be an integer.")
        value = int(value)
    elif not isinstance(value, int):
        raise bad_request(f"Field {where} must be an integer.")
    if not low <= value <= high:
        raise bad_request(f"Field {where} is out of range ({low}..{high}).")
    return value


def _enum_name(enum: str, value, where: str) -> str:
    if isinstance(value, str):
        number = ENUM_NUMBER[enum].get(value)
        if number is None and _INT_STRING.fullmatch(value):
            number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise bad_request(f"Field {where} must be a {enum} name.", "invalid_enum")
    name = ENUM_NAME[enum].get(number) if number is not None else None
    if name is None:
        raise bad_request(f"Field {where}: {value!r} is not a valid {enum} value.", "invalid_enum")
    return name


def _check_string(value: str, where: str) -> str:
    limit = settings.SYNC_MAX_STRING_LENGTH
    if len(value) > limit:
        raise bad_request(
            f"Field {where} is longer than SYNC_MAX_STRING_LENGTH ({limit} characters).",
            "limit_exceeded",
        )
    if "\x00" in value:
        raise bad_request(f"Field {where} contains a NUL character.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. from "\ud800"
            raise bad_request(f"Field {where} is not valid Unicode.") from None
    return value


def _from_proto(message: str, parsed, path: str | None = None) -> dict:
    path = path or message
    by_number = {spec.number: spec for spec in SPECS[message].fields}
    out: dict = {}
    for descriptor, value in parsed.ListFields():
        field = by_number[descriptor.number]
        where = f"{path}.{field.name}"
        if field.repeated:
            if len(value) > settings.SYNC_MAX_LIST_LENGTH and field.name not in _BATCH_FIELDS:
                raise bad_request(
                    f"Field {where} has more than SYNC_MAX_LIST_LENGTH "
                    f"({settings.SYNC_MAX_LIST_LENGTH}) items.",
                    "limit_exceeded",
                )
            out[field.name] = [_proto_value(field, item, where) for item in value]
        else:
            out[field.name] = _proto_value(field, value, where)
    return out


def _proto_value(field: Field, value, where: str):
    if field.type == STRING:
        return _check_string(value, where)
    if field.type == ENUM:
        return _enum_name(field.ref, value, where)
    if field.type == MESSAGE:
        return _from_proto(field.ref, value, where)
    return value


# --- encoding -----------------------------------------------------------------------------------


def encode(message: str, values: dict, fmt: str) -> bytes:
    """Encode a response (a dict keyed by proto field names) as JSON or binary protobuf."""
    if fmt == PROTOBUF:
        return CLASSES[message](**values).SerializeToString()
    return orjson.dumps(_to_json(message, values))


def _to_json(message: str, values: dict) -> dict:
    fields = {spec.name: spec for spec in SPECS[message].fields}
    out = {}
    for name, value in values.items():
        spec = fields[name]
        if spec.type == MESSAGE:
            value = (
                [_to_json(spec.ref, item) for item in value]
                if spec.repeated
                else _to_json(spec.ref, value)
            )
        out[spec.wire_name] = value
    return out
