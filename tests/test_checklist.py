"""protocol.md §7 "Server checklist — things that are easy to miss", one test group per item.

Expected values come from the protocol (§2-§5), not from the server: the v1 key and enum tables
below are transcribed from §4, and whole syncs use the simulated agent (tests/agent.py), which
applies what it receives with the real client's semantics.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from google.protobuf import json_format, unknown_fields

from events.models import Event, FileAccessEvent
from hosts.models import ConfigurationProfile, Host
from rules.errors import InvalidIdentifier
from rules.models import Rule
from rules.services import RuleInput, rule_create, rule_delete
from syncapi.schema import CLASSES
from tests.agent import SyncFailed, django_transport

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
DOCTOR = "santactl-doctor-test"
T0 = 1751111111
DENIED = "FILE_ACCESS_DECISION_DENIED"

REQUEST = {
    "preflight": "PreflightRequest",
    "eventupload": "EventUploadRequest",
    "ruledownload": "RuleDownloadRequest",
    "postflight": "PostflightRequest",
}
RESPONSE = {
    "preflight": "PreflightResponse",
    "eventupload": "EventUploadResponse",
    "ruledownload": "RuleDownloadResponse",
    "postflight": "PostflightResponse",
}

# --- the v1 response messages, transcribed from protocol.md §4 ----------------------------------
# proto field name -> (explicit json_name or None, kind). Kinds: bool, uint32, string, strings,
# enum:<Enum>, media (RemovableMediaPolicy), object (a message we never expect), rules.

CANONICAL_ENUM_NAMES = {
    # The first-declared (canonical, upper-case) names (§4.1); aliases are accepted by the
    # agent but a server has no reason to send them.
    "ClientMode": {"MONITOR", "LOCKDOWN", "STANDALONE"},
    "SyncType": {"NORMAL", "CLEAN", "CLEAN_ALL"},
    "FileAccessAction": {"NONE", "AUDIT_ONLY", "DISABLE"},
    "Policy": {
        "ALLOWLIST",
        "ALLOWLIST_COMPILER",
        "BLOCKLIST",
        "SILENT_BLOCKLIST",
        "REMOVE",
        "CEL",
        "SILENT_GUI_BLOCKLIST",
        "SILENT_TTY_BLOCKLIST",
    },
    "RuleType": {"BINARY", "CERTIFICATE", "TEAMID", "SIGNINGID", "CDHASH"},
}

V1_RESPONSES = {
    "PreflightResponse": {
        "client_mode": (None, "enum:ClientMode"),
        "sync_type": (None, "enum:SyncType"),
        "batch_size": (None, "uint32"),
        "enable_bundles": (None, "bool"),
        "enable_transitive_rules": (None, "bool"),
        "enable_all_event_upload": (None, "bool"),
        "disable_unknown_event_upload": (None, "bool"),
        "full_sync_interval_seconds": ("full_sync_interval", "uint32"),
        "push_notification_full_sync_interval_seconds": (
            "push_notification_full_sync_interval",
            "uint32",
        ),
        "push_notification_global_rule_sync_deadline_seconds": (
            "push_notification_global_rule_sync_deadline",
            "uint32",
        ),
        "allowed_path_regex": (None, "string"),
        "blocked_path_regex": (None, "string"),
        "block_usb_mount": (None, "bool"),
        "remount_usb_mode": (None, "strings"),
        "override_file_access_action": (None, "enum:FileAccessAction"),
        "export_configuration": (None, "object"),
        "event_detail_url": (None, "string"),
        "event_detail_text": (None, "string"),
        "removable_media_policy": (None, "media"),
        "encrypted_removable_media_policy": (None, "media"),
        "deprecated_enabled_transitive_whitelisting": ("enabled_transitive_whitelisting", "bool"),
        "deprecated_transitive_whitelisting_enabled": ("transitive_whitelisting_enabled", "bool"),
        "deprecated_bundles_enabled": ("bundles_enabled", "bool"),
        "deprecated_fcm_full_sync_interval_seconds": ("fcm_full_sync_interval", "uint32"),
        "deprecated_fcm_global_rule_sync_deadline_seconds": (
            "fcm_global_rule_sync_deadline",
            "uint32",
        ),
        "deprecated_whitelist_regex": ("whitelist_regex", "string"),
        "deprecated_blacklist_regex": ("blacklist_regex", "string"),
        "deprecated_clean_sync": ("clean_sync", "bool"),
    },
    "EventUploadResponse": {"event_upload_bundle_binaries": (None, "strings")},
    "RuleDownloadResponse": {"rules": (None, "rules"), "cursor": (None, "string")},
    "Rule": {
        "identifier": (None, "string"),
        "policy": (None, "enum:Policy"),
        "rule_type": (None, "enum:RuleType"),
        "custom_msg": (None, "string"),
        "custom_url": (None, "string"),
        "file_bundle_hash": (None, "string"),
        "file_bundle_binary_count": (None, "uint32"),
        "notification_app_name": (None, "string"),
        "cel_expr": (None, "string"),
        "event_detail_button_label": (None, "string"),
        "deprecated_sha256": ("sha256", "string"),
    },
    "PostflightResponse": {},
}
# v2-only or upgrade-chain keys a v1 server must never send (§4.3, §4.9, §7 item 19).
FORBIDDEN_KEYS = {
    "push_token",
    "pushToken",
    "push_issuer_token",
    "pushIssuerToken",
    "file_access_rules",
    "fileAccessRules",
    "rule_id",
    "ruleId",
    "seatbelt_policy",
    "mode_transition",
    "push_server",
    "push_key",
    "cel_fallback_rules",
    "network_extension",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _key_table(message: str) -> dict[str, str]:
    """Every key the agent's parser reads for a field (§3.2) -> proto field name."""
    table = {}
    for name, (json_name, _) in V1_RESPONSES[message].items():
        for key in (name, _camel(name), json_name or _camel(name)):
            table[key] = name
    return table


def check_v1_json(message: str, obj, where: str = "") -> None:
    """What the agent's parser demands of a response (§3.2, §7 item 6), and nothing outside
    the v1 message (§7 item 19)."""
    assert isinstance(obj, dict), f"{where or message} is not a JSON object"
    table = _key_table(message)
    seen: dict[str, str] = {}
    for key, value in obj.items():
        here = f"{where}{key}"
        assert key not in FORBIDDEN_KEYS, f"{here}: v2/push field sent to a v1 agent"
        assert key in table, f"{here}: not a field of v1 {message}"
        name = table[key]
        assert name not in seen, f"{here}: field {name} already given as {seen[name]!r}"
        seen[name] = key
        assert value is not None, f"{here}: null"
        kind = V1_RESPONSES[message][name][1]
        if kind == "bool":
            assert type(value) is bool, f"{here}: {value!r} is not a JSON boolean"
        elif kind == "uint32":
            assert type(value) is int and 0 <= value < 2**32, f"{here}: {value!r} not a uint32"
        elif kind == "string":
            assert type(value) is str, f"{here}: {value!r} is not a string"
        elif kind == "strings":
            assert type(value) is list, f"{here}: not a list"
            for item in value:
                assert type(item) is str, f"{here}: {item!r} in a string list"
        elif kind.startswith("enum:"):
            enum = kind.split(":", 1)[1]
            assert value in CANONICAL_ENUM_NAMES[enum], f"{here}: {value!r} is not a v1 {enum}"
        elif kind == "media":
            check_media_policy(value, here)
        elif kind == "rules":
            assert type(value) is list, f"{here}: not a list"
            for index, rule in enumerate(value):
                assert rule is not None, f"{here}[{index}]: null in a list"
                check_v1_json("Rule", rule, f"{here}[{index}].")
        else:
            raise AssertionError(f"{here}: unexpected field {name}")


def check_media_policy(value, where: str) -> None:
    """RemovableMediaPolicy: a oneof `action`; exactly one of allow / block / remount."""
    assert isinstance(value, dict), where
    members = [k for k in value if k in ("allow", "block", "remount")]
    assert set(value) == set(members), f"{where}: unknown keys {set(value) - set(members)}"
    assert len(members) == 1, f"{where}: oneof with members {members}"
    if "remount" in value:
        remount = value["remount"]
        assert isinstance(remount, dict) and set(remount) <= {"flags"}, where
        assert all(type(flag) is str for flag in remount.get("flags", [])), where
    else:
        assert type(value[members[0]]) is bool, where


# --- helpers ------------------------------------------------------------------------------------


def compress(data: bytes, encoding: str | None) -> bytes:
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    return data


def send(
    client,
    stage: str,
    machine_id: str,
    message: dict | bytes,
    secret: str,
    *,
    fmt: str = "json",
    encoding: str | None = "deflate",
    path: str | None = None,
):
    if fmt == "proto":
        data = json_format.ParseDict(message, CLASSES[REQUEST[stage]]()).SerializeToString()
        content_type = PROTOBUF
    else:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        content_type = JSON
    extra = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    if encoding:
        extra["HTTP_CONTENT_ENCODING"] = "deflate" if encoding == "raw-deflate" else encoding
    return client.generic(
        "POST",
        path or f"/sync/{stage}/{machine_id}",
        data=compress(data, encoding),
        content_type=content_type,
        **extra,
    )


def ok_json(response) -> dict:
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def preflight_message(machine_id: str, **extra) -> dict:
    message = {
        "serial_num": "C02CHECK001",
        "hostname": "check.example.com",
        "os_version": "15.1",
        "os_build": "24B83",
        "model_identifier": "MacBookPro18,3",
        "santa_version": "2026.8.1",
        "client_mode": "MONITOR",
        "machine_id": machine_id,
        "sipStatus": 111,
        "rulesHash": "0" * 32,
    }
    message.update(extra)
    return message


def an_event(sha: str, **extra) -> dict:
    value = {
        "file_sha256": sha,
        "file_path": "/usr/bin",
        "file_name": "yes",
        "executing_user": "alice",
        "execution_time": T0,
        "logged_in_users": ["alice"],
        "current_sessions": ["alice@console"],
        "decision": "BLOCK_BINARY",
        "pid": 2222,
        "ppid": 1,
        "entitlementInfo": {"entitlementsFiltered": False},
    }
    value.update(extra)
    return value


def configure(**values) -> ConfigurationProfile:
    """Set settings on the default profile (created by migration hosts/0002)."""
    profile = ConfigurationProfile.objects.get(is_default=True)
    for name, value in values.items():
        setattr(profile, name, value)
    profile.full_clean()
    profile.save()
    return profile


EVERY_SETTING = {
    "client_mode": "LOCKDOWN",
    "batch_size": 100,
    "full_sync_interval": 900,
    "enable_bundles": True,
    "enable_transitive_rules": False,
    "enable_all_event_upload": True,
    "disable_unknown_event_upload": False,
    "allowed_path_regex": "^/opt/allowed/.*",
    "blocked_path_regex": "^/Users/Shared/Quarantine/.*",
    "removable_media_action": "remount",
    "removable_media_remount_flags": ["rdonly", "noexec"],
    "encrypted_removable_media_action": "allow",
    "encrypted_removable_media_remount_flags": None,
    "override_file_access_action": "AUDIT_ONLY",
    "event_detail_url": "https://santa.example.com/event/%machine_id%/%file_identifier%",
    "event_detail_text": "Details",
    "clean_sync_on_drift": False,
}

# What each configured setting must look like in a preflight response (§4.3, §4.7).
EVERY_SETTING_ON_THE_WIRE = {
    "client_mode": "LOCKDOWN",
    "batch_size": 100,
    "full_sync_interval_seconds": 900,
    "enable_bundles": True,
    "enable_transitive_rules": False,
    "enable_all_event_upload": True,
    "disable_unknown_event_upload": False,
    "allowed_path_regex": "^/opt/allowed/.*",
    "blocked_path_regex": "^/Users/Shared/Quarantine/.*",
    "override_file_access_action": "AUDIT_ONLY",
    "event_detail_url": "https://santa.example.com/event/%machine_id%/%file_identifier%",
    "event_detail_text": "Details",
    "removable_media_policy": {"remount": {"flags": ["rdonly", "noexec"]}},
    "encrypted_removable_media_policy": {"allow": True},
}


def by_field(message: str, obj: dict) -> dict:
    """A JSON response keyed by proto field name (whatever accepted spelling it used)."""
    table = _key_table(message)
    return {table[key]: value for key, value in obj.items()}


@pytest.fixture
def secret(enrollment):
    return enrollment[1]


def hexes(n: int) -> str:
    return f"{n:064x}"


# --- item 1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "proto"])
@pytest.mark.parametrize("encoding", ["deflate", "gzip", None])
def test_item_1_compressed_bodies_whole_sync(make_agent, fmt, encoding):
    """Item 1: "Decompress request bodies: Content-Encoding: deflate (zlib, the *default*) and
    gzip. Django does not do this for you.\""""
    rule_create(data=RuleInput("BINARY", hexes(1), "BLOCKLIST"))
    agent = make_agent(fmt=fmt, encoding=encoding or "none", hostname="zipped.example.com")
    agent.add_event(**an_event(hexes(2)))
    result = agent.sync()
    agent.add_event(**an_event(hexes(3)))
    again = agent.sync()
    assert result.rules_received == 1 and ("BINARY", hexes(1)) in agent.rules
    assert again.events_uploaded == 1
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.hostname == "zipped.example.com"  # the preflight body was read
    assert host.last_sync_type == "NORMAL"  # and the postflight's
    assert Event.objects.filter(host=host, binary_id=hexes(3)).exists()


@pytest.mark.parametrize("encoding", ["deflate", "gzip", "raw-deflate"])
@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_item_1_deflate_gzip_and_raw_deflate_accepted(client, secret, fmt, encoding):
    """Item 1 (and §2.2: "The server SHOULD also tolerate raw DEFLATE (RFC 1951) under
    Content-Encoding: deflate")."""
    machine_id = f"ITEM1-{fmt}-{encoding}"
    message = preflight_message(machine_id, hostname=f"{encoding}.example.com")
    response = send(client, "preflight", machine_id, message, secret, fmt=fmt, encoding=encoding)
    assert response.status_code == 200, response.content
    assert Host.objects.get(machine_id=machine_id).hostname == f"{encoding}.example.com"


# --- item 2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_item_2_exactly_200_for_every_stage(make_agent, fmt):
    """Item 2: "Answer exactly HTTP 200 on success — never 201/204\""""
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST"))
    agent = make_agent(fmt=fmt)
    agent.sync()
    agent.add_event(**an_event(hexes(5)))
    agent.sync()
    stages = {stage for stage, _ in agent.requests}
    assert stages == {"preflight", "eventupload", "ruledownload", "postflight"}
    assert {status for _, status in agent.requests} == {200}


def test_item_2_no_redirect_for_any_sync_url(client, secret):
    """Item 2: "never redirect (no APPEND_SLASH, no http→https, no login redirect). URL
    patterns have no trailing slash.\""""
    machine_id = "ITEM2-NO-REDIRECT"
    for stage in REQUEST:
        message = {"machine_id": machine_id}
        response = send(client, stage, machine_id, message, secret)
        assert response.status_code == 200, (stage, response.status_code)
        slash = send(
            client, stage, machine_id, message, secret, path=f"/sync/{stage}/{machine_id}/"
        )
        assert not 300 <= slash.status_code < 400, (stage, slash.status_code)
        assert "Location" not in slash
        no_id = send(client, stage, machine_id, message, secret, path=f"/sync/{stage}")
        assert not 300 <= no_id.status_code < 400, (stage, no_id.status_code)


def test_item_2_no_redirect_under_production_settings(settings, make_agent, client, secret):
    """Item 2 under production-like settings: SECURE_SSL_REDIRECT and APPEND_SLASH on, the
    agent's request arriving as plain http (TLS terminated in front)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.APPEND_SLASH = True
    # The settings are live: the rest of the site does redirect to https.
    control = client.get("/healthz")
    assert control.status_code == 301 and control["Location"].startswith("https://")

    agent = make_agent()
    agent.add_event(**an_event(hexes(6)))
    agent.sync()
    agent.add_event(**an_event(hexes(7)))
    agent.sync()
    assert {status for _, status in agent.requests} == {200}
    assert {stage for stage, _ in agent.requests} == set(REQUEST)
    for stage in REQUEST:
        for path in (f"/sync/{stage}/{agent.machine_id}/", f"/sync/{stage}"):
            response = send(client, stage, agent.machine_id, {}, secret, path=path)
            assert not 300 <= response.status_code < 400, (path, response.status_code)


# --- item 3 -------------------------------------------------------------------------------------


def test_item_3_no_csrf_on_sync_urls(make_agent, secret):
    """Item 3: "Disable Django CSRF for the sync views (or implement xsrf/<machine_id> …)\""""
    strict = Client(enforce_csrf_checks=True)
    # Control: this client does enforce CSRF on the rest of the site.
    assert strict.post("/admin/login/", {"username": "x", "password": "y"}).status_code == 403

    agent = make_agent()
    agent.transport = django_transport(strict)
    agent.sync()
    agent.add_event(**an_event(hexes(8)))
    agent.sync()
    assert {stage for stage, _ in agent.requests} == set(REQUEST)
    assert {status for _, status in agent.requests} == {200}


# --- item 4 -------------------------------------------------------------------------------------


def test_item_4_camel_case_keys_are_read(client, secret):
    """Item 4: "Parse request keys exactly as sent: snake_case json_names plus camelCase
    sipStatus, rulesHash, syncType, entitlementInfo, csFlags, signingStatus, secureSigningTime,
    signingTime, entitlementsFiltered.\""""
    machine_id = "ITEM4-CAMEL"
    ok_json(
        send(
            client,
            "preflight",
            machine_id,
            preflight_message(machine_id, sipStatus=127, rulesHash="preflight-hash"),
            secret,
        )
    )
    host = Host.objects.get(machine_id=machine_id)
    assert host.sip_status == 127
    assert host.preflight_rules_hash == "preflight-hash"
    assert host.serial_number == "C02CHECK001"  # serial_num, the json_name of serial_number

    entitlements = [
        {"key": "com.apple.security.cs.allow-jit", "value": "true"},
        {"key": "com.apple.security.application-groups", "value": '["a","b"]'},
    ]
    event = an_event(
        hexes(9),
        csFlags=570503953,
        signingStatus="SIGNING_STATUS_PRODUCTION",
        secureSigningTime=1700000000,
        signingTime=1690000000,
        entitlementInfo={"entitlementsFiltered": True, "entitlements": entitlements},
    )
    ok_json(send(client, "eventupload", machine_id, {"events": [event]}, secret))
    stored = Event.objects.get(host=host)
    assert stored.cs_flags == 570503953
    assert stored.signing_status == "SIGNING_STATUS_PRODUCTION"
    assert stored.secure_signing_time == datetime.fromtimestamp(1700000000, UTC)
    assert stored.signing_time == datetime.fromtimestamp(1690000000, UTC)
    assert stored.entitlements_filtered is True
    assert stored.entitlements == entitlements

    postflight = {
        "rules_received": 3,
        "rules_processed": 2,
        "machine_id": machine_id,
        "syncType": "CLEAN_ALL",
        "rulesHash": "postflight-hash",
    }
    assert ok_json(send(client, "postflight", machine_id, postflight, secret)) == {}
    host.refresh_from_db()
    assert host.last_sync_type == "CLEAN_ALL"
    assert host.postflight_rules_hash == "postflight-hash"
    assert (host.rules_received, host.rules_processed, host.rules_dropped) == (3, 2, True)


def test_item_4_unknown_keys_are_tolerated(client, secret):
    """Item 4: "Tolerate unknown keys." (newer or v2 agents add fields, §3.2, §4.9)."""
    machine_id = "ITEM4-UNKNOWN"
    preflight = preflight_message(
        machine_id,
        fileAccessRulesHash="abc",
        network_flow_rules_hash="def",
        santanetd_version="1.0",
        file_access_rule_count=4,
        some_future_object={"nested": [1, None, {"x": True}]},
    )
    ok_json(send(client, "preflight", machine_id, preflight, secret))
    event = an_event(hexes(10), rule_id="12345", audit_return={"x": 1}, futureKey=None)
    event["entitlementInfo"]["futureFlag"] = True
    faa = {
        "rule_version": "v1",
        "rule_name": "R",
        "target": "/t",
        "process_chain": [{"file_path": "/bin/ls", "pid": 1, "future": "x"}],
        "access_time": T0,
        "decision": "FILE_ACCESS_DECISION_DENIED",
        "rule_id": "99",
    }
    upload = {
        "events": [event],
        "file_access_events": [faa],
        "network_flow_events": [{"a": 1}],
        "audit_events": [],
        "machine_id": machine_id,
    }
    ok_json(send(client, "eventupload", machine_id, upload, secret))
    ok_json(send(client, "ruledownload", machine_id, {"machine_id": machine_id, "x": 1}, secret))
    postflight = {"machine_id": machine_id, "syncType": "NORMAL", "file_access_rules_hash": "x"}
    ok_json(send(client, "postflight", machine_id, postflight, secret))
    host = Host.objects.get(machine_id=machine_id)
    assert host.hostname == "check.example.com"
    assert Event.objects.filter(host=host).count() == 1
    assert FileAccessEvent.objects.filter(host=host).count() == 1


def test_item_4_missing_keys_are_defaults(client, secret):
    """Item 4: "Treat missing keys as zero/false/empty (the client omits defaults).\""""
    machine_id = "ITEM4-MISSING"
    answer = ok_json(send(client, "preflight", machine_id, {}, secret))
    assert answer  # a configuration and a sync type
    host = Host.objects.get(machine_id=machine_id)
    assert host.hostname == "" and host.serial_number == "" and host.primary_user == ""
    assert host.request_clean_sync is False
    assert host.sip_status is None
    minimal = {"file_sha256": hexes(11), "decision": "ALLOW_UNKNOWN", "execution_time": T0}
    ok_json(send(client, "eventupload", machine_id, {"events": [minimal]}, secret))
    stored = Event.objects.get(host=host)
    assert stored.file_path == "" and stored.pid is None and stored.entitlements == []
    assert stored.static_rule is False
    ok_json(send(client, "ruledownload", machine_id, {}, secret))
    assert ok_json(send(client, "postflight", machine_id, {}, secret)) == {}
    host.refresh_from_db()
    assert host.rules_received == 0 and host.rules_processed == 0
    # SyncType 0 / absent is treated as NORMAL by the agent (§4.1).
    assert host.last_sync_type == "NORMAL"


# --- item 5 -------------------------------------------------------------------------------------


def test_item_5_protobuf_request_gets_protobuf_response(client, secret):
    """Item 5: "Accept both JSON (application/json) and binary protobuf
    (application/x-protobuf), and reply in the same format as the request.\""""
    configure(enable_bundles=True)
    rule_create(data=RuleInput("CDHASH", "ab" * 20, "BLOCKLIST"))
    machine_id = "ITEM5-PROTO"
    bundle = hexes(0xB0)
    answers = {}
    messages = {
        "preflight": preflight_message(machine_id),
        "eventupload": {
            "events": [an_event(hexes(12), file_bundle_hash=bundle, file_bundle_binary_count=3)],
            "machine_id": machine_id,
        },
        "ruledownload": {"machine_id": machine_id},
        "postflight": {"machine_id": machine_id, "syncType": "CLEAN", "rules_received": 1},
    }
    for stage, message in messages.items():
        response = send(client, stage, machine_id, message, secret, fmt="proto")
        assert response.status_code == 200, (stage, response.content)
        assert response["Content-Type"].split(";")[0] == PROTOBUF
        assert not response.content.lstrip().startswith(b"{"), (stage, response.content)
        answers[stage] = CLASSES[RESPONSE[stage]].FromString(response.content)
    assert answers["preflight"].HasField("sync_type")
    pre = json_format.MessageToDict(answers["preflight"], preserving_proto_field_name=True)
    assert pre["sync_type"] == "CLEAN" and pre["client_mode"] == "MONITOR"
    assert list(answers["eventupload"].event_upload_bundle_binaries) == [bundle]
    assert [rule.identifier for rule in answers["ruledownload"].rules] == ["ab" * 20]
    assert answers["postflight"].ListFields() == []


def test_item_5_json_request_gets_json_response(client, secret):
    """Item 5, the other half: JSON in, JSON out, for every stage."""
    machine_id = "ITEM5-JSON"
    rule_create(data=RuleInput("CDHASH", "cd" * 20, "BLOCKLIST"))
    messages = {
        "preflight": preflight_message(machine_id),
        "eventupload": {"events": [an_event(hexes(13))], "machine_id": machine_id},
        "ruledownload": {"machine_id": machine_id},
        "postflight": {"machine_id": machine_id, "syncType": "CLEAN"},
    }
    answers = {}
    for stage, message in messages.items():
        response = send(client, stage, machine_id, message, secret, fmt="json")
        answers[stage] = ok_json(response)
        assert response["Content-Type"].split(";")[0] == JSON
        assert isinstance(answers[stage], dict)
    assert answers["preflight"]["client_mode"] == "MONITOR"
    assert [rule["identifier"] for rule in answers["ruledownload"]["rules"]] == ["cd" * 20]


# --- item 6 -------------------------------------------------------------------------------------


def test_item_6_full_preflight_response_is_well_formed(client, secret):
    """Item 6: "never emit a field twice under two names, never emit two members of a oneof,
    never emit null inside arrays, booleans as real JSON booleans, integers as integers, only
    valid case-sensitive v1 enum names (AUDIT_ONLY, not auditonly; LOCKDOWN, not lockdown).\""""
    configure(**EVERY_SETTING)
    machine_id = "ITEM6-FULL"
    for request_clean in (False, True):
        message = preflight_message(machine_id, request_clean_sync=request_clean)
        answer = ok_json(send(client, "preflight", machine_id, message, secret))
        check_v1_json("PreflightResponse", answer)
        fields = by_field("PreflightResponse", answer)
        for name, value in EVERY_SETTING_ON_THE_WIRE.items():
            assert fields.get(name) == value, (name, fields.get(name))
        # And the agent's own parser takes it (strictly: no unknown field either).
        json_format.Parse(json.dumps(answer), CLASSES["PreflightResponse"]())


def test_item_6_rule_download_response_is_well_formed(client, secret, settings):
    """Item 6 for rule pages: canonical upper-case Policy and RuleType names, no nulls."""
    settings.SYNC_RULES_PER_PAGE = 3
    created = [
        RuleInput("BINARY", hexes(20), "ALLOWLIST"),
        RuleInput("BINARY", hexes(21), "ALLOWLIST_COMPILER"),
        RuleInput("CERTIFICATE", hexes(22), "BLOCKLIST", custom_msg="Blocked"),
        RuleInput("TEAMID", "EQHXZ8M8AV", "SILENT_BLOCKLIST"),
        RuleInput("SIGNINGID", "platform:com.apple.yes", "SILENT_GUI_BLOCKLIST"),
        RuleInput("CDHASH", "ef" * 20, "SILENT_TTY_BLOCKLIST", custom_url="https://x.example/"),
        RuleInput("SIGNINGID", "EQHXZ8M8AV:com.example.app", "CEL", cel_expr="true"),
    ]
    for data in created:
        rule_create(data=data)
    machine_id = "ITEM6-RULES"
    ok_json(send(client, "preflight", machine_id, preflight_message(machine_id), secret))
    received, cursor = [], None
    for _ in range(10):
        message = {"machine_id": machine_id} | ({"cursor": cursor} if cursor else {})
        page = ok_json(send(client, "ruledownload", machine_id, message, secret))
        check_v1_json("RuleDownloadResponse", page)
        received += page.get("rules", [])
        cursor = page.get("cursor")
        if not cursor:
            break
    delivered = {
        (rule["rule_type"], rule["identifier"]): rule["policy"]
        for rule in (by_field("Rule", r) for r in received)
    }
    assert delivered == {(d.rule_type, d.identifier): d.policy for d in created}


def test_item_6_event_upload_response_is_well_formed(client, secret):
    """Item 6 for event upload answers (the bundle list: strings, no null)."""
    configure(enable_bundles=True)
    machine_id = "ITEM6-EVENTS"
    event = an_event(hexes(30), file_bundle_hash=hexes(31), file_bundle_binary_count=2)
    answer = ok_json(send(client, "eventupload", machine_id, {"events": [event]}, secret))
    check_v1_json("EventUploadResponse", answer)


# --- item 7 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_item_7_postflight_answers_empty(client, secret, fmt):
    """Item 7: "postflight: reply 200 {}; the client ignores the body.\""""
    machine_id = f"ITEM7-{fmt}"
    send(client, "preflight", machine_id, preflight_message(machine_id), secret, fmt=fmt)
    send(client, "ruledownload", machine_id, {"machine_id": machine_id}, secret, fmt=fmt)
    message = {"machine_id": machine_id, "syncType": "CLEAN", "rulesHash": "h"}
    response = send(client, "postflight", machine_id, message, secret, fmt=fmt)
    assert response.status_code == 200
    if fmt == "json":
        assert json.loads(response.content) == {}
    else:
        assert CLASSES["PostflightResponse"].FromString(response.content).ByteSize() == 0


# --- item 8 -------------------------------------------------------------------------------------


def test_item_8_full_configuration_on_normal_and_clean(make_agent, client, secret):
    """Item 8: "a clean sync wipes all previously synced settings, so always send the full
    desired configuration.\""""
    configure(
        **(EVERY_SETTING | {"allowed_path_regex": ""})
    )  # "" = clear the agent's value (§5.3.1)
    agent = make_agent()
    agent.sync()
    answers = {}
    for request_clean in (False, True):
        message = preflight_message(agent.machine_id, request_clean_sync=request_clean)
        answers[request_clean] = ok_json(
            send(client, "preflight", agent.machine_id, message, secret)
        )
    normal = by_field("PreflightResponse", answers[False])
    clean = by_field("PreflightResponse", answers[True])
    assert normal.pop("sync_type") == "NORMAL"
    assert clean.pop("sync_type") in ("CLEAN", "CLEAN_ALL")
    assert normal == clean
    expected = EVERY_SETTING_ON_THE_WIRE | {"allowed_path_regex": ""}
    for name, value in expected.items():
        assert normal.get(name) == value, name


def test_item_8_agent_keeps_every_setting_across_a_clean_sync(make_agent):
    """Item 8 with the agent's semantics: after a clean sync (which resets its synced settings
    first) it holds exactly what it held after a normal one."""
    configure(**EVERY_SETTING)
    agent = make_agent()
    agent.sync()  # first sync: clean
    agent.sync()  # normal
    assert agent.client_mode == "LOCKDOWN"
    after_normal = dict(agent.settings)
    agent.request_clean_sync("CLEAN")
    assert agent.sync().sync_type == "CLEAN"
    assert agent.settings == after_normal
    assert agent.settings["enable_bundles"] is True
    assert agent.settings["enable_transitive_rules"] is False


# --- item 9 -------------------------------------------------------------------------------------


def test_item_9_request_clean_sync_is_honoured(make_agent):
    """Item 9: "request_clean_sync: true repeats on every sync until you answer sync_type CLEAN
    or CLEAN_ALL; honour it.\""""
    agent = make_agent()
    agent.sync()
    assert agent.sync().sync_type == "NORMAL"
    for _ in range(2):  # repeated requests are each honoured
        assert agent.preflight(request_clean_sync=True).sync_type in (2, 3)  # CLEAN, CLEAN_ALL
    agent.request_clean_sync("CLEAN")
    assert agent.sync().sync_type == "CLEAN"
    agent.request_clean_sync("CLEAN_ALL")
    assert agent.sync().sync_type == "CLEAN_ALL"
    assert agent.sync().sync_type == "NORMAL"


def test_item_9_clean_sync_of_an_empty_rule_set_still_wipes(make_agent):
    """Item 9: "A clean sync with an empty rule set deletes nothing" — so the server must send
    something that makes the agent wipe its rules anyway."""
    rule = rule_create(data=RuleInput("BINARY", hexes(40), "ALLOWLIST"))
    agent = make_agent()
    agent.sync()
    assert set(agent.rules) == {("BINARY", hexes(40))}
    rule_delete(rule=rule)
    agent.rules[("TEAMID", "ABCDEFGHIJ")] = {"policy": "ALLOWLIST"}  # e.g. added locally
    agent.request_clean_sync("CLEAN")
    result = agent.sync()
    assert result.sync_type == "CLEAN"
    assert result.rules_processed >= 1  # otherwise the agent's daemon is not even called
    assert agent.rules == {}


def test_item_9_first_clean_sync_with_no_rules_wipes_stale_rules(make_agent):
    """Item 9 on a Mac that arrives with rules from elsewhere and a server with none."""
    agent = make_agent()
    agent.rules[("BINARY", hexes(41))] = {"policy": "ALLOWLIST"}
    result = agent.sync()
    assert result.sync_type == "CLEAN_ALL"
    assert agent.rules == {}


# --- item 10 ------------------------------------------------------------------------------------


def test_item_10_pagination_terminates(make_agent, client, secret, settings):
    """Item 10: "Cursor semantics: opaque, non-empty = "more pages" … make cursors
    resumable/stateless and terminate (empty cursor) reliably.\""""
    settings.SYNC_RULES_PER_PAGE = 2
    for n in range(5):
        rule_create(data=RuleInput("BINARY", hexes(50 + n), "BLOCKLIST"))
    agent = make_agent()
    result = agent.sync()
    assert result.rules_received == 5
    assert 3 <= result.pages <= 4
    assert set(agent.rules) == {("BINARY", hexes(50 + n)) for n in range(5)}
    assert agent.sync().rules_received == 0


def test_item_10_rules_changed_mid_download(make_agent, settings):
    """Item 10: pages of one download describe one state; a change made meanwhile arrives at
    the next sync, and the download still terminates."""
    settings.SYNC_RULES_PER_PAGE = 2
    for n in range(5):
        rule_create(data=RuleInput("BINARY", hexes(60 + n), "BLOCKLIST"))
    agent = make_agent()
    plain = agent.transport
    created = []

    def transport(path, body, headers):
        answer = plain(path, body, headers)
        if "/ruledownload/" in path and not created:
            created.append(rule_create(data=RuleInput("BINARY", hexes(70), "BLOCKLIST")))
        return answer

    agent.transport = transport
    first = agent.sync()
    assert first.pages <= 4
    assert created
    agent.sync()
    assert set(agent.rules) == {("BINARY", hexes(n)) for n in [*range(60, 65), 70]}


def test_item_10_interrupted_download_is_not_taken_as_delivered(make_agent, settings):
    """Item 10: "all pages are applied atomically at the end" — a download cut after some
    pages, even one whose last page was served but never arrived, applied nothing on the
    agent, so the server must send those rules again."""
    settings.SYNC_RULES_PER_PAGE = 2
    agent = make_agent()
    agent.sync()
    for n in range(5):
        rule_create(data=RuleInput("BINARY", hexes(80 + n), "BLOCKLIST"))
    host = Host.objects.get(machine_id=agent.machine_id)
    position = host.rules_synced_rev
    with pytest.raises(SyncFailed):
        agent.sync(stop_after_pages=2)
    plain = agent.transport

    def lose_last_page(path, body, headers):
        status, answer = plain(path, body, headers)
        if "/ruledownload/" in path and status == 200 and b"cursor" not in answer:
            return 0, b""  # the connection dropped while the last page came back
        return status, answer

    agent.transport = lose_last_page
    with pytest.raises(SyncFailed):
        agent.sync()
    assert agent.rules == {}
    host.refresh_from_db()
    assert host.rules_synced_rev == position
    agent.transport = plain
    result = agent.sync()
    assert result.rules_received == 5
    assert set(agent.rules) == {("BINARY", hexes(80 + n)) for n in range(5)}


# --- item 11 ------------------------------------------------------------------------------------


def test_item_11_ruledownload_without_preflight(make_agent):
    """Item 11: "ruledownload may arrive without a preceding preflight (push-triggered rule
    sync) and is then applied as NORMAL\""""
    keep = rule_create(data=RuleInput("BINARY", hexes(90), "BLOCKLIST"))
    gone = rule_create(data=RuleInput("BINARY", hexes(91), "ALLOWLIST"))
    fresh = make_agent()
    accepted, _, _ = fresh.download_rules()  # never preflighted at all
    fresh.apply_rules(accepted, "NORMAL")
    assert set(fresh.rules) == {("BINARY", hexes(90)), ("BINARY", hexes(91))}

    agent = make_agent()
    agent.sync()
    rule_delete(rule=gone)
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "BLOCKLIST"))
    accepted, _, _ = agent.download_rules()  # push-triggered: no preflight/postflight
    agent.apply_rules(accepted, "NORMAL")
    assert set(agent.rules) == {("BINARY", keep.identifier), ("TEAMID", "EQHXZ8M8AV")}
    result = agent.sync()  # and the next full sync is still right
    assert result.sync_type == "NORMAL"
    assert set(agent.rules) == {("BINARY", keep.identifier), ("TEAMID", "EQHXZ8M8AV")}


def test_item_11_eventupload_without_preflight(client, secret, make_agent):
    """Item 11: "eventupload may arrive at any time outside a sync\""""
    machine_id = "ITEM11-EVENTS"
    upload = {"events": [an_event(hexes(92))], "machine_id": machine_id}
    ok_json(send(client, "eventupload", machine_id, upload, secret))
    assert Event.objects.filter(host__machine_id=machine_id).count() == 1

    agent = make_agent()
    agent.sync()
    agent.upload_events([an_event(hexes(93))])  # out of band, between syncs
    agent.sync()
    assert Event.objects.filter(host__machine_id=agent.machine_id).count() == 1


def test_item_11_preflight_alone(make_agent):
    """Item 11: "preflight may arrive without the other stages (FCM token registration). Do not
    tie these to a server-side "session".\""""
    rule_create(data=RuleInput("BINARY", hexes(94), "BLOCKLIST"))
    agent = make_agent()
    agent.preflight(push_notification_token="fcm-token-1")
    agent.preflight(push_notification_token="fcm-token-2")
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.push_notification_token == "fcm-token-2"
    agent.sync()
    assert set(agent.rules) == {("BINARY", hexes(94))}
    agent.preflight()  # preflight-only between full syncs
    assert agent.sync().sync_type == "NORMAL"
    assert set(agent.rules) == {("BINARY", hexes(94))}


# --- item 12 ------------------------------------------------------------------------------------


def test_item_12_reuploaded_events_are_stored_once(client, secret):
    """Item 12: "Events can be uploaded more than once (out-of-band + sync, retries after a lost
    response); de-duplicate\""""
    machine_id = "ITEM12-DEDUPE"
    first = an_event(hexes(100))
    second = an_event(hexes(100), execution_time=T0 + 60)  # same binary, another execution
    third = an_event(hexes(101))
    for _ in range(2):  # a retry after a lost response
        ok_json(send(client, "eventupload", machine_id, {"events": [first]}, secret))
    ok_json(send(client, "eventupload", machine_id, {"events": [first, second]}, secret))
    proto = {"events": [first, third], "machine_id": machine_id}
    response = send(client, "eventupload", machine_id, proto, secret, fmt="proto")
    assert response.status_code == 200
    times = sorted(
        Event.objects.filter(host__machine_id=machine_id).values_list("binary_id", "execution_time")
    )
    assert times == sorted(
        [
            (hexes(100), datetime.fromtimestamp(T0, UTC)),
            (hexes(100), datetime.fromtimestamp(T0 + 60, UTC)),
            (hexes(101), datetime.fromtimestamp(T0, UTC)),
        ]
    )


def test_item_12_bundle_binary_events_have_no_execution_time(client, secret):
    """Item 12: "BUNDLE_BINARY events have no execution_time.\""""
    machine_id = "ITEM12-BUNDLE"
    bundle = hexes(0xB1)
    events = [
        {
            "file_sha256": hexes(110 + n),
            "file_path": "/Applications/Acme.app/Contents/MacOS",
            "file_name": f"bin{n}",
            "decision": "BUNDLE_BINARY",
            "file_bundle_hash": bundle,
            "file_bundle_binary_count": 2,
            "file_bundle_hash_millis": 12,
            "file_bundle_path": "/Applications/Acme.app",
        }
        for n in range(2)
    ]
    for _ in range(2):
        ok_json(send(client, "eventupload", machine_id, {"events": events}, secret))
    stored = Event.objects.filter(host__machine_id=machine_id)
    assert stored.count() == 2
    assert {e.execution_time for e in stored} == {None}
    assert {e.decision for e in stored} == {"BUNDLE_BINARY"}


# --- item 13 ------------------------------------------------------------------------------------


def test_item_13_bundle_binaries_are_asked_for_by_bundle_hash(client, secret):
    """Item 13: "event_upload_bundle_binaries takes bundle hashes, not binary hashes.\""""
    configure(enable_bundles=True)
    machine_id = "ITEM13-BUNDLES"
    bundle, binary = hexes(0xB2), hexes(120)
    blocked = an_event(
        binary,
        file_bundle_hash=bundle,
        file_bundle_binary_count=3,
        file_bundle_hash_millis=40,
        file_bundle_path="/Applications/Acme.app",
        file_bundle_id="com.acme.app",
    )
    answer = ok_json(send(client, "eventupload", machine_id, {"events": [blocked]}, secret))
    assert answer.get("event_upload_bundle_binaries") == [bundle]


# --- item 14 ------------------------------------------------------------------------------------

DROPPED_BY_THE_AGENT = [
    ("BINARY", "a" * 63),
    ("BINARY", "a" * 65),
    ("BINARY", "g" * 64),
    ("BINARY", ""),
    ("CERTIFICATE", "z" * 64),
    ("CERTIFICATE", "a" * 40),
    ("CDHASH", "a" * 39),
    ("CDHASH", "a" * 64),
    ("CDHASH", "x" * 40),
    ("TEAMID", "ABCDEFGHI"),
    ("TEAMID", "ABCDEFGHIJK"),
    ("TEAMID", "ABCDE-GHIJ"),
    ("SIGNINGID", "com.apple.yes"),
    ("SIGNINGID", "EQHXZ8M8AV:"),
    ("SIGNINGID", ":com.apple.yes"),
    ("SIGNINGID", "ABC:com.apple.yes"),
    ("SIGNINGID", "platforms:com.apple.yes"),
]


@pytest.mark.parametrize("rule_type,identifier", DROPPED_BY_THE_AGENT)
def test_item_14_identifiers_the_agent_would_drop_are_refused(db, rule_type, identifier):
    """Item 14: "Rule identifiers must be valid for their type (64/40 hex, 10-char team id,
    TEAMID: or platform: prefix for signing ids); invalid ones are silently dropped\""""
    with pytest.raises(InvalidIdentifier):
        rule_create(data=RuleInput(rule_type, identifier, "BLOCKLIST"))
    assert not Rule.objects.exists()


NORMALISED = [
    ("BINARY", "AB" * 32, "ab" * 32),
    ("CERTIFICATE", "Cd" * 32, "cd" * 32),
    ("CDHASH", "EF" * 20, "ef" * 20),
    ("TEAMID", "eqhxz8m8av", "EQHXZ8M8AV"),
    ("SIGNINGID", "PLATFORM:com.apple.yes", "platform:com.apple.yes"),
    ("SIGNINGID", "Platform:com.Apple.Yes", "platform:com.Apple.Yes"),
    ("SIGNINGID", "ekmlyy6r5w:com.Example.App:helper", "EKMLYY6R5W:com.Example.App:helper"),
]


def test_item_14_identifiers_are_normalised_like_the_agent(make_agent):
    """Item 14 (and §5.5.2 "Normalisation on accept": hashes lowercased, TEAMID uppercased,
    SIGNINGID team prefix uppercased, `platform` lowercased, signing-id part kept)."""
    for rule_type, given, _ in NORMALISED:
        rule_create(data=RuleInput(rule_type, given, "BLOCKLIST"))
    stored = set(Rule.objects.values_list("rule_type", "identifier"))
    assert stored == {(rule_type, wanted) for rule_type, _, wanted in NORMALISED}
    agent = make_agent()
    result = agent.sync()
    assert result.rules_received == result.rules_processed == len(NORMALISED)
    assert set(agent.rules) == stored
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.rules_dropped is False


# --- item 15 ------------------------------------------------------------------------------------


def test_item_15_paths_and_unknown_sha_stored_as_sent(client, secret):
    """Item 15: "Event.file_path is the directory, Process.file_path (file-access events) is the
    full path; a process file_sha256 can be the placeholder <unknown sha>.\""""
    machine_id = "ITEM15-PATHS"
    body = (
        '{"events":[{"file_sha256":"' + hexes(130) + '","file_path":"/usr/bin",'
        '"file_name":"yes","execution_time":1751111111,"decision":"ALLOW_SIGNINGID",'
        '"signing_id":"platform:com.apple.yes"}],'
        '"file_access_events":[{"rule_version":"MyRuleVersion","rule_name":"MyRule",'
        '"target":"/you/are/being/watched","process_chain":['
        '{"file_path":"/bin/mkdir","cdhash":"dda76477475094e82d21fd5e219e4b526a72661b",'
        '"file_sha256":"\\u003cunknown sha\\u003e","pid":123},'
        '{"file_path":"/bin/zsh","pid":456}],'
        '"access_time":1753333333,"decision":"FILE_ACCESS_DECISION_DENIED"}],'
        '"machine_id":"' + machine_id + '"}'
    ).encode()
    ok_json(send(client, "eventupload", machine_id, body, secret))
    event = Event.objects.get(host__machine_id=machine_id)
    assert (event.file_path, event.file_name) == ("/usr/bin", "yes")
    faa = FileAccessEvent.objects.get(host__machine_id=machine_id)
    assert faa.target == "/you/are/being/watched"
    offending, parent = faa.process_chain
    assert offending["file_path"] == "/bin/mkdir"
    assert offending["file_sha256"] == "<unknown sha>"
    assert parent["file_path"] == "/bin/zsh"


# --- item 16 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_item_16_integer_and_decimal_times(client, secret, fmt):
    """Item 16: "execution_time/access_time may be integers or decimals in JSON; certificate and
    signing times are integer seconds.\""""
    machine_id = f"ITEM16-{fmt}"
    upload = {
        "events": [
            an_event(hexes(140), execution_time=1751111111),
            an_event(
                hexes(141),
                execution_time=1751111111.123456,
                signing_chain=[
                    {
                        "sha256": hexes(142),
                        "cn": "C",
                        "valid_from": 1603996358,
                        "valid_until": 1792863581,
                    }
                ],
                signingTime=1690000000,
            ),
        ],
        "file_access_events": [
            {"rule_name": "a", "target": "/a", "access_time": 1753333333, "decision": DENIED},
            {"rule_name": "b", "target": "/b", "access_time": 1753333333.5, "decision": DENIED},
        ],
        "machine_id": machine_id,
    }
    response = send(client, "eventupload", machine_id, upload, secret, fmt=fmt)
    assert response.status_code == 200, response.content
    whole = Event.objects.get(host__machine_id=machine_id, binary_id=hexes(140))
    assert whole.execution_time == datetime.fromtimestamp(1751111111, UTC)
    part = Event.objects.get(host__machine_id=machine_id, binary_id=hexes(141))
    delta = part.execution_time - datetime.fromtimestamp(1751111111, UTC)
    assert math.isclose(delta.total_seconds(), 0.123456, abs_tol=1e-5)
    assert part.signing_time == datetime.fromtimestamp(1690000000, UTC)
    assert part.signing_chain[0]["valid_from"] == 1603996358
    accesses = dict(
        FileAccessEvent.objects.filter(host__machine_id=machine_id).values_list(
            "rule_name", "access_time"
        )
    )
    assert accesses["a"] == datetime.fromtimestamp(1753333333, UTC)
    assert accesses["b"] == datetime.fromtimestamp(1753333333.5, UTC)


# --- item 17 ------------------------------------------------------------------------------------


def test_item_17_batch_size_and_interval_sent_as_configured(client, secret):
    """Item 17: "batch_size 0/absent means 50; full_sync_interval < 60 becomes 60; global
    rule-sync deadline < 600 becomes 600." — so send them as meant, never below the clamps."""
    configure(batch_size=25, full_sync_interval=300)
    machine_id = "ITEM17"
    answer = ok_json(send(client, "preflight", machine_id, preflight_message(machine_id), secret))
    fields = by_field("PreflightResponse", answer)
    assert fields["batch_size"] == 25
    assert fields["full_sync_interval_seconds"] == 300
    deadline = fields.get("push_notification_global_rule_sync_deadline_seconds")
    assert deadline is None or deadline >= 600
    parsed = json_format.Parse(json.dumps(answer), CLASSES["PreflightResponse"]())
    assert (parsed.batch_size, parsed.full_sync_interval_seconds) == (25, 300)


@pytest.mark.parametrize("value,valid", [(59, False), (1, False), (60, True), (600, True)])
def test_item_17_full_sync_interval_below_60_cannot_be_configured(db, value, valid):
    """Item 17: the server never sends a full_sync_interval the agent would raise to 60."""
    profile = ConfigurationProfile(name=f"p{value}", full_sync_interval=value)
    if valid:
        profile.full_clean()
    else:
        with pytest.raises(ValidationError) as error:
            profile.full_clean()
        assert "full_sync_interval" in error.value.message_dict


def test_item_17_batch_size_zero_cannot_be_configured(db):
    """Item 17: batch_size 0 would silently mean 50 on the agent."""
    with pytest.raises(ValidationError) as error:
        ConfigurationProfile(name="zero", batch_size=0).full_clean()
    assert "batch_size" in error.value.message_dict


# --- item 18 ------------------------------------------------------------------------------------


def _old_client_usb_action(fields: dict) -> str | None:
    """How an agent without removable_media_policy reads the deprecated keys (§4.3 row 13)."""
    if "block_usb_mount" not in fields:
        return None
    if fields["block_usb_mount"] and fields.get("remount_usb_mode"):
        return "remount"
    return "block" if fields["block_usb_mount"] else "allow"


@pytest.mark.parametrize("action", ["allow", "block", "remount"])
@pytest.mark.parametrize("encrypted", ["allow", "block", "remount"])
def test_item_18_removable_media_policy(client, secret, action, encrypted):
    """Item 18: "block_usb_mount/remount_usb_mode are deprecated but still honoured;
    removable_media_policy wins; in RemovableMediaPolicy presence, not value, selects the
    action.\""""
    flags = ["rdonly", "noexec"] if action == "remount" else None
    encrypted_flags = ["nosuid"] if encrypted == "remount" else None
    configure(
        removable_media_action=action,
        removable_media_remount_flags=flags,
        encrypted_removable_media_action=encrypted,
        encrypted_removable_media_remount_flags=encrypted_flags,
    )
    machine_id = f"ITEM18-{action}-{encrypted}"
    answer = ok_json(send(client, "preflight", machine_id, preflight_message(machine_id), secret))
    check_v1_json("PreflightResponse", answer)
    fields = by_field("PreflightResponse", answer)
    policy = fields["removable_media_policy"]
    assert list(policy) == [action]
    assert policy[action] == ({"flags": flags} if flags else True)
    assert _old_client_usb_action(fields) == action
    if action == "remount":
        assert fields["remount_usb_mode"] == flags
    else:
        assert not fields.get("remount_usb_mode")
    assert list(fields["encrypted_removable_media_policy"]) == [encrypted]

    response = send(
        client, "preflight", machine_id, preflight_message(machine_id), secret, fmt="proto"
    )
    parsed = CLASSES["PreflightResponse"].FromString(response.content)
    assert parsed.removable_media_policy.WhichOneof("action") == action
    assert parsed.encrypted_removable_media_policy.WhichOneof("action") == encrypted


# --- item 19 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_item_19_no_push_token_or_v2_fields(client, secret, settings, fmt):
    """Item 19: "Do not send push_token/push_issuer_token (sync-v2 upgrade chain) or other v2
    fields\""""
    settings.SYNC_RULES_PER_PAGE = 1
    configure(**EVERY_SETTING)
    rule_create(data=RuleInput("BINARY", hexes(150), "BLOCKLIST", custom_msg="no"))
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST"))
    machine_id = f"ITEM19-{fmt}"
    preflight = preflight_message(machine_id, push_notification_token="fcm-token")
    upload = {
        "events": [an_event(hexes(151), file_bundle_hash=hexes(152), file_bundle_binary_count=2)],
        "machine_id": machine_id,
    }
    exchanges = [("preflight", preflight), ("eventupload", upload)]
    answers = []
    for stage, message in exchanges:
        answers.append((stage, send(client, stage, machine_id, message, secret, fmt=fmt)))
    cursor = None
    for _ in range(5):
        message = {"machine_id": machine_id} | ({"cursor": cursor} if cursor else {})
        response = send(client, "ruledownload", machine_id, message, secret, fmt=fmt)
        answers.append(("ruledownload", response))
        if fmt == "json":
            cursor = ok_json(response).get("cursor")
        else:
            cursor = CLASSES["RuleDownloadResponse"].FromString(response.content).cursor
        if not cursor:
            break
    postflight = {"machine_id": machine_id, "syncType": "CLEAN"}
    answers.append(
        ("postflight", send(client, "postflight", machine_id, postflight, secret, fmt=fmt))
    )
    for stage, response in answers:
        assert response.status_code == 200, (stage, response.content)
        if fmt == "json":
            check_v1_json(RESPONSE[stage], json.loads(response.content))
        else:
            parsed = CLASSES[RESPONSE[stage]].FromString(response.content)
            # Fields outside the v1 messages show up as unknown fields here, or as fields
            # missing from the protocol's table should the message classes ever grow them.
            assert len(unknown_fields.UnknownFieldSet(parsed)) == 0, stage
            for descriptor, _ in parsed.ListFields():
                assert descriptor.name in V1_RESPONSES[RESPONSE[stage]], descriptor.name
            for rule in getattr(parsed, "rules", []):
                assert len(unknown_fields.UnknownFieldSet(rule)) == 0, stage
                for descriptor, _ in rule.ListFields():
                    assert descriptor.name in V1_RESPONSES["Rule"], descriptor.name


# --- item 20 ------------------------------------------------------------------------------------


def test_item_20_repeated_preflight_same_answer(make_agent, client, secret):
    """Item 20: "retries re-send the same body; keep handlers idempotent\""""
    configure(**EVERY_SETTING)
    machine_id = "ITEM20-PREFLIGHT"
    message = preflight_message(machine_id, request_clean_sync=True)
    first = ok_json(send(client, "preflight", machine_id, message, secret))
    again = ok_json(send(client, "preflight", machine_id, message, secret))
    assert first == again

    agent = make_agent()
    agent.sync()
    first = agent.preflight()
    again = agent.preflight()
    assert first == again
    assert json_format.MessageToDict(first)["syncType"] == "NORMAL"


def test_item_20_repeated_ruledownload_page_same_answer(client, secret, settings):
    """Item 20: a retried rule page gets the same rules, and so do the pages after it."""
    settings.SYNC_RULES_PER_PAGE = 2
    for n in range(5):
        rule_create(data=RuleInput("BINARY", hexes(160 + n), "BLOCKLIST"))
    machine_id = "ITEM20-RULES"
    ok_json(send(client, "preflight", machine_id, preflight_message(machine_id), secret))

    def page(cursor):
        message = {"machine_id": machine_id} | ({"cursor": cursor} if cursor else {})
        return ok_json(send(client, "ruledownload", machine_id, message, secret))

    cursor, pages = None, []
    for _ in range(10):
        first, retried = page(cursor), page(cursor)
        assert first.get("rules") == retried.get("rules")
        assert bool(first.get("cursor")) == bool(retried.get("cursor"))
        if retried.get("cursor"):
            assert page(retried["cursor"]).get("rules") == page(first["cursor"]).get("rules")
        pages.append(first.get("rules", []))
        cursor = first.get("cursor")
        if not cursor:
            break
    delivered = [rule["identifier"] for rules in pages for rule in rules]
    assert sorted(delivered) == [hexes(160 + n) for n in range(5)]


def test_item_20_repeated_postflight_and_whole_sync(make_agent, client, secret):
    """Item 20: a retried postflight changes nothing more; a sync repeated after a lost
    postflight answer converges."""
    rule_create(data=RuleInput("BINARY", hexes(170), "BLOCKLIST"))
    agent = make_agent()
    agent.sync(drop_postflight=True)  # the postflight was lost...
    result = agent.sync()  # ...so the next sync happens
    host = Host.objects.get(machine_id=agent.machine_id)
    state = (host.rules_synced_rev, host.expected_counts, host.last_sync_type)
    message = {  # the postflight the agent just sent, sent again
        "rules_received": result.rules_received,
        "rules_processed": result.rules_processed,
        "machine_id": agent.machine_id,
        "syncType": result.sync_type,
        "rulesHash": agent.rules_hash(),
    }
    for _ in range(2):
        assert ok_json(send(client, "postflight", agent.machine_id, message, secret)) == {}
    host.refresh_from_db()
    assert (host.rules_synced_rev, host.expected_counts, host.last_sync_type) == state
    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 0
    assert set(agent.rules) == {("BINARY", hexes(170))}


# --- item 21 ------------------------------------------------------------------------------------


def test_item_21_santactl_doctor(client, secret):
    """Item 21: "santactl doctor POSTs an empty body to preflight/santactl-doctor-test; return
    200 or 400.\""""
    hosts = Host.objects.count()
    response = client.generic(
        "POST", f"/sync/preflight/{DOCTOR}", data=b"", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    assert not response.wsgi_request.META.get("CONTENT_TYPE")  # as the doctor sends it
    assert response.status_code == 200, response.content
    assert Host.objects.count() == hosts
    assert not Host.objects.filter(machine_id=DOCTOR).exists()


# --- item 22 ------------------------------------------------------------------------------------


def test_item_22_sixty_four_entitlements(client, secret):
    """Item 22: "Size limits: none enforced by the client …; entitlements are capped at 64 per
    event" — the server must take the most the client sends."""
    machine_id = "ITEM22-ENTITLEMENTS"
    entitlements = [
        {"key": f"com.example.entitlement.{n}", "value": json.dumps([f"v{n}"] * 4)}
        for n in range(64)
    ]
    event = an_event(
        hexes(180), entitlementInfo={"entitlementsFiltered": True, "entitlements": entitlements}
    )
    for fmt in ("json", "proto"):
        response = send(client, "eventupload", machine_id, {"events": [event]}, secret, fmt=fmt)
        assert response.status_code == 200, response.content
    stored = Event.objects.get(host__machine_id=machine_id)
    assert stored.entitlements == entitlements
    assert stored.entitlements_filtered is True


def test_item_22_largest_configurable_batch_is_accepted(client, secret):
    """Item 22: limits are the server's (SYNC_* settings); the defaults must admit a batch of
    the largest batch_size a profile may configure."""
    field = ConfigurationProfile._meta.get_field("batch_size")
    largest = max(v.limit_value for v in field.validators if hasattr(v, "limit_value"))
    configure(batch_size=largest)
    machine_id = "ITEM22-BATCH"
    events = [
        {"file_sha256": hexes(10_000 + n), "decision": "ALLOW_UNKNOWN", "execution_time": T0}
        for n in range(largest)
    ]
    response = send(client, "eventupload", machine_id, {"events": events}, secret)
    assert response.status_code == 200, response.content
    assert Event.objects.filter(host__machine_id=machine_id).count() == largest


def test_item_22_button_label_of_48_characters(client, secret):
    """Item 22: "button labels at 48 characters" — a 48-character label is sent whole."""
    label = "L" * 48
    configure(event_detail_text=label)
    machine_id = "ITEM22-LABEL"
    answer = ok_json(send(client, "preflight", machine_id, preflight_message(machine_id), secret))
    assert by_field("PreflightResponse", answer)["event_detail_text"] == label


def test_item_22_limits_are_server_settings(client, secret, settings):
    """Item 22: the server's own limits come from SYNC_* settings and can be raised."""
    machine_id = "ITEM22-SETTINGS"
    long_name = "h" * 300
    settings.SYNC_MAX_STRING_LENGTH = 299
    message = preflight_message(machine_id, hostname=long_name)
    assert send(client, "preflight", machine_id, message, secret).status_code == 400
    settings.SYNC_MAX_STRING_LENGTH = 300
    assert send(client, "preflight", machine_id, message, secret).status_code == 200
    assert Host.objects.get(machine_id=machine_id).hostname == long_name
