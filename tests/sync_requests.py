"""Sync requests as the tests write them: encodings, bodies, and the rows the sync path can
write, to check that a refused request changed none of them (tests/test_bad_input.py,
tests/test_fuzz_sync.py)."""

from __future__ import annotations

import gzip
import json
import zlib

from django.apps import apps
from django.http import HttpResponse
from google.protobuf import json_format

from hosts.models import Host
from syncapi.schema import CLASSES

JSON = "application/json"
PROTOBUF = "application/x-protobuf"

REGISTERED = "8F3C1D2E-5B6A-4C7D-8E9F-0A1B2C3D4E5F"
NEW = "11111111-2222-4333-8444-555555555555"
OTHER = "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"

SHA_A = "a1" * 32
SHA_B = "b2" * 32
SHA_C = "c3" * 32
CERT = "d4" * 32
T0 = 1751111111

REQUEST = {
    "preflight": "PreflightRequest",
    "eventupload": "EventUploadRequest",
    "ruledownload": "RuleDownloadRequest",
    "postflight": "PostflightRequest",
}
STAGES = list(REQUEST)

# (format, Content-Encoding) pairs a real agent can produce (§2.2, §4.8).
FORMS = [
    ("json", None),
    ("json", "deflate"),
    ("json", "gzip"),
    ("proto", None),
    ("proto", "deflate"),
    ("proto", "gzip"),
]
JSON_FORMS = [f for f in FORMS if f[0] == "json"]
FORM_IDS = [f"{fmt}-{enc or 'identity'}" for fmt, enc in FORMS]
JSON_FORM_IDS = [f"{fmt}-{enc or 'identity'}" for fmt, enc in JSON_FORMS]
SOME_FORMS = [("json", None), ("json", "deflate"), ("proto", None), ("proto", "gzip")]
SOME_FORM_IDS = [f"{fmt}-{enc or 'identity'}" for fmt, enc in SOME_FORMS]

# Every model of the apps a sync can write to: hosts and their tags, sync history and
# settings, events, the binary and certificate catalogue and its statistics, approval requests,
# rules and their delivery, the audit trail. A refused request must leave all of them alone.
SYNC_WRITTEN_APPS = ("hosts", "events", "rules", "audit")
WRITTEN_MODELS = tuple(
    model for label in SYNC_WRITTEN_APPS for model in apps.get_app_config(label).get_models()
)


# --- helpers ------------------------------------------------------------------------------------


def compress(data: bytes, encoding: str | None) -> bytes:
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    assert encoding is None
    return data


def encode(stage: str, message, fmt: str = "json", encoding: str | None = None):
    """(body, content type) for a request message given in its JSON wire form."""
    if fmt == "proto":
        data = json_format.ParseDict(message, CLASSES[REQUEST[stage]]()).SerializeToString()
        return compress(data, encoding), PROTOBUF
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    return compress(data, encoding), JSON


def post(
    client,
    stage: str,
    machine_id: str,
    body: bytes,
    *,
    content_type: str | None = JSON,
    encoding: str | None = None,
    secret: str | None = None,
    path: str | None = None,
):
    extra = {}
    if encoding:
        extra["HTTP_CONTENT_ENCODING"] = "deflate" if encoding == "raw-deflate" else encoding
    if secret is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client.generic(
        "POST",
        path or f"/sync/{stage}/{machine_id}",
        data=body,
        content_type=content_type or "",
        **extra,
    )


def snapshot() -> dict:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in WRITTEN_MODELS}


def refused(send, status: int, *mentions: str) -> HttpResponse:
    """Send, check the answer is `status` with a JSON error naming `mentions`, and that the
    database is exactly as it was."""
    before = snapshot()
    response = send()
    hosts_after = set(Host.objects.values_list("machine_id", flat=True))
    created = hosts_after - {row["machine_id"] for row in before["Host"]}
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0] == JSON
    body = json.loads(response.content)
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    for text in mentions:
        assert text in body["detail"], body
    assert not created, f"the refused request registered host(s) {sorted(created)}"
    assert snapshot() == before
    return response


def event(sha: str = SHA_A, **extra) -> dict:
    value = {
        "file_sha256": sha,
        "file_path": "/usr/local/bin",
        "file_name": "tool",
        "executing_user": "alice",
        "execution_time": T0,
        "decision": "BLOCK_BINARY",
        "pid": 42,
        "ppid": 1,
        "signing_chain": [{"sha256": CERT, "cn": "Dev", "valid_from": 1, "valid_until": 2}],
        "entitlementInfo": {"entitlementsFiltered": False},
    }
    value.update(extra)
    return value


def file_access_event(**extra) -> dict:
    value = {
        "rule_version": "v1",
        "rule_name": "ProtectSecrets",
        "target": "/etc/secret",
        "process_chain": [{"file_path": "/bin/cat", "file_sha256": SHA_C, "pid": 7}],
        "access_time": T0,
        "decision": "FILE_ACCESS_DECISION_DENIED",
    }
    value.update(extra)
    return value


def valid_message(stage: str, machine_id: str) -> dict:
    """A request that the stage accepts; tests break one thing in it."""
    if stage == "preflight":
        return {
            "serial_num": "C02XYZ",
            "hostname": "mac.example.com",
            "client_mode": "MONITOR",
            "machine_id": machine_id,
            "sipStatus": 111,
            "rulesHash": "f" * 32,
        }
    if stage == "eventupload":
        return {"events": [event(SHA_B)], "machine_id": machine_id}
    if stage == "ruledownload":
        return {"machine_id": machine_id}
    return {
        "rules_received": 1,
        "rules_processed": 1,
        "machine_id": machine_id,
        "syncType": "NORMAL",
        "rulesHash": "e" * 32,
    }
