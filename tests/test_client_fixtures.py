"""The real Santa client's own sync test data, replayed against this server (protocol.md §6).

The files are read at test time from the shared workspace (`../shared/fixtures/
santa-client-testdata/`, see its README for what each exercises); nothing from them is copied
here. Requests the client emits are POSTed byte for byte; responses the client is fed are parsed
with the simulated agent (tests/agent.py) to check that it models the client, and then compared
with what this server answers when configured the same way; the client's archived events are
decoded (tests/nskeyed.py), turned into v1 Event JSON the way the client's
SNTSyncEventUpload.mm does, uploaded, and compared with the stored rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.models import Binary, Certificate, Event, FileAccessEvent
from hosts.models import ConfigurationProfile, Host
from rules.errors import RulesError
from rules.services import RuleInput, rule_create
from syncapi import codec
from syncapi.schema import CLASSES, SPECS
from tests.agent import parse_response, validate_rule
from tests.nskeyed import ArchivedObject, NSDate, unarchive

try:  # optional: certificate names and validity from the DER, as MOLCertificate reads them
    from cryptography import x509
    from cryptography.x509.oid import NameOID
except ImportError:  # not a dependency of the project; then only the SHA-256 is derived
    x509 = None

FIXTURES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "santa-client-testdata"
)
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason="../shared/fixtures/santa-client-testdata not present (only in the project's CI "
    "workspace)",
)

PREFLIGHT_FIXTURES = [
    "sync_preflight_basic.json",
    "sync_preflight_lockdown.json",
    "sync_preflight_standalone.json",
    "sync_preflight_blockusb_absent.json",
    "sync_preflight_turn_on_blockusb.json",
    "sync_preflight_turn_off_blockusb.json",
]


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str):
    return json.loads(fixture_bytes(name))


def post(client, stage: str, machine_id: str, body: bytes, secret: str, encoding: str = ""):
    """One request as the client sends it: JSON, optionally compressed, bearer secret."""
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    if encoding:
        headers["HTTP_CONTENT_ENCODING"] = encoding
    return client.generic(
        "POST", f"/sync/{stage}/{machine_id}", data=body, content_type="application/json", **headers
    )


def enum_name(message: str, field: str, number: int) -> str | None:
    enum = CLASSES[message].DESCRIPTOR.fields_by_name[field].enum_type
    value = enum.values_by_number.get(number)
    return value.name if value is not None else None


# --- 1-3: the client's preflight requests ---------------------------------------------------

# Key in the client's preflight JSON -> Host column holding it.
HOST_COLUMNS = {
    "serial_num": "serial_number",
    "hostname": "hostname",
    "os_version": "os_version",
    "os_build": "os_build",
    "model_identifier": "model_identifier",
    "santa_version": "santa_version",
    "primary_user": "primary_user",
    "client_mode": "reported_client_mode",
    "sipStatus": "sip_status",
    "rulesHash": "preflight_rules_hash",
}


def assert_host_holds(request: dict) -> Host:
    host = Host.objects.get(machine_id=request["machine_id"])
    stored = {key: getattr(host, column) for key, column in HOST_COLUMNS.items()}
    assert stored == {key: request[key] for key in HOST_COLUMNS}
    return host


@pytest.mark.parametrize("encoding", ["", "deflate", "gzip"], ids=["plain", "deflate", "gzip"])
def test_client_preflight_request_is_stored(client, enrollment, encoding):
    raw = fixture_bytes("sync_preflight_request.json")
    request = json.loads(raw)
    # Every fact the client sent has a home (machine_id is the URL's).
    assert set(request) - {"machine_id"} == set(HOST_COLUMNS)
    body = {"": raw, "deflate": zlib.compress(raw), "gzip": gzip.compress(raw)}[encoding]

    response = post(client, "preflight", request["machine_id"], body, enrollment[1], encoding)

    assert response.status_code == 200, response.content
    parse_response("PreflightResponse", response.content, "json")  # the client can read it
    host = assert_host_holds(request)
    assert host.enrollment_id == enrollment[0].id


@pytest.mark.parametrize(
    ("name", "encoding", "magic"),
    [
        ("sync_preflight_basic.z", "deflate", b"\x78\x9c"),
        ("sync_preflight_basic.gz", "gzip", b"\x1f\x8b"),
    ],
    ids=["zlib", "gzip"],
)
def test_server_inflates_the_client_compressed_bodies(name, encoding, magic):
    plain = fixture_bytes("sync_preflight_basic.json")
    assert len(plain) == 102 and plain.endswith(b"\n")  # README: with a trailing newline
    compressed = fixture_bytes(name)
    assert compressed.startswith(magic)

    assert codec.decompress(compressed, encoding) == plain


@pytest.mark.parametrize(
    ("name", "encoding"),
    [("sync_preflight_basic.z", "deflate"), ("sync_preflight_basic.gz", "gzip")],
)
def test_client_compressed_bodies_are_accepted_as_preflight(client, enrollment, name, encoding):
    plain = fixture_json("sync_preflight_basic.json")
    # A response body used as a request: only client_mode is a PreflightRequest key.
    assert [key for key in plain if key in SPECS["PreflightRequest"].by_key] == ["client_mode"]
    machine_id = "FIXTURE-COMPRESSED-BODY"

    response = post(client, "preflight", machine_id, fixture_bytes(name), enrollment[1], encoding)

    assert response.status_code == 200, response.content
    host = Host.objects.get(machine_id=machine_id)
    assert host.reported_client_mode == plain["client_mode"]


def test_client_v2_preflight_request_is_accepted_by_this_v1_server(client, enrollment):
    raw = fixture_bytes("sync_preflight_request_v2.json")
    request = json.loads(raw)
    v2_only = set(request) - set(HOST_COLUMNS) - {"machine_id"}
    assert v2_only  # fileAccessRulesHash, network_flow_rules_hash, santanetd_version
    assert not v2_only & set(SPECS["PreflightRequest"].by_key)

    response = post(
        client, "preflight", request["machine_id"], zlib.compress(raw), enrollment[1], "deflate"
    )

    assert response.status_code == 200, response.content
    parse_response("PreflightResponse", response.content, "json")
    assert_host_holds(request)


# --- 4: the simulated agent reads the client's response fixtures like the client -------------


def removable_media(pre, *, legacy_client: bool = False):
    """The removable-media setting the client takes from a preflight response
    (SNTSyncPreflight.mm): removable_media_policy first (which member is present), else the
    deprecated block_usb_mount / remount_usb_mode; None = unchanged. A `legacy_client` (before
    removable_media_policy existed, 2026-04) reads only the deprecated keys."""
    if not legacy_client and pre.HasField("removable_media_policy"):
        which = pre.removable_media_policy.WhichOneof("action")
        if which == "remount":
            return ("Remount", list(pre.removable_media_policy.remount.flags))
        return {"allow": ("Allow", []), "block": ("Block", [])}.get(which)
    if pre.HasField("block_usb_mount"):
        if not pre.block_usb_mount:
            return ("Allow", [])
        flags = list(pre.remount_usb_mode)
        return ("Remount", flags) if flags else ("Block", [])
    return None


def client_view(pre) -> dict:
    """What a v1 client keeps from a parsed PreflightResponse (protocol.md §4.3, §5.3.2)."""
    mode = enum_name("PreflightResponse", "client_mode", pre.client_mode)
    return {
        "client_mode": mode if mode in ("MONITOR", "LOCKDOWN", "STANDALONE") else None,
        "batch_size": pre.batch_size or 50,
        "allowed_path_regex": (
            pre.allowed_path_regex if pre.HasField("allowed_path_regex") else None
        ),
        "blocked_path_regex": (
            pre.blocked_path_regex if pre.HasField("blocked_path_regex") else None
        ),
        "removable_media": removable_media(pre),
        "removable_media_legacy_client": removable_media(pre, legacy_client=True),
    }


# What the client test (SNTSyncTest.mm) expects from each preflight response fixture.
_UNSET = {"allowed_path_regex": None, "blocked_path_regex": None, "batch_size": 100}
EXPECTED_PREFLIGHT = {
    "sync_preflight_basic.json": {**_UNSET, "client_mode": "MONITOR", "media": None},
    "sync_preflight_lockdown.json": {**_UNSET, "client_mode": "LOCKDOWN", "media": None},
    "sync_preflight_standalone.json": {**_UNSET, "client_mode": "STANDALONE", "media": None},
    "sync_preflight_blockusb_absent.json": {**_UNSET, "client_mode": "LOCKDOWN", "media": None},
    "sync_preflight_turn_on_blockusb.json": {
        **_UNSET,
        "client_mode": "LOCKDOWN",
        "media": ("Remount", ["rdonly", "noexec"]),
    },
    "sync_preflight_turn_off_blockusb.json": {
        **_UNSET,
        "client_mode": "LOCKDOWN",
        "media": ("Allow", []),
    },
}


@pytest.mark.parametrize("name", PREFLIGHT_FIXTURES)
def test_agent_parses_preflight_fixtures_like_the_client(name):
    raw = fixture_json(name)
    pre = parse_response("PreflightResponse", fixture_bytes(name), "json")
    expected = EXPECTED_PREFLIGHT[name]

    view = client_view(pre)
    assert view == {
        "client_mode": expected["client_mode"],
        "batch_size": expected["batch_size"],
        "allowed_path_regex": None,  # JSON null = not set (never the string "None" or "")
        "blocked_path_regex": None,
        "removable_media": expected["media"],
        "removable_media_legacy_client": expected["media"],
    }
    # null regexes are explicitly present in every fixture (current or legacy key names).
    assert any(key.endswith("_regex") and value is None for key, value in raw.items())
    if "block_usb_mount" in raw:
        assert pre.HasField("block_usb_mount") and pre.block_usb_mount is raw["block_usb_mount"]
    else:
        assert not pre.HasField("block_usb_mount")


def fixture_rules(*names: str) -> tuple[int, dict]:
    """(rules received, accepted rules by key) for RuleDownload pages, as the client sees them."""
    received, accepted = 0, {}
    for name in names:
        page = parse_response("RuleDownloadResponse", fixture_bytes(name), "json")
        received += len(page.rules)
        for rule in page.rules:
            valid = validate_rule(rule)
            if valid is not None:
                key, fields = valid
                accepted[key] = fields
    return received, accepted


def test_agent_reads_legacy_rule_keys_and_cursor():
    raw1 = fixture_json("sync_ruledownload_batch1.json")
    raw2 = fixture_json("sync_ruledownload_batch2.json")
    page1 = parse_response(
        "RuleDownloadResponse", fixture_bytes("sync_ruledownload_batch1.json"), "json"
    )
    page2 = parse_response(
        "RuleDownloadResponse", fixture_bytes("sync_ruledownload_batch2.json"), "json"
    )

    assert page1.cursor == raw1["cursor"] != ""  # more pages to fetch
    assert page2.cursor == "" and "cursor" not in raw2  # last page
    for raw, page in ((raw1, page1), (raw2, page2)):
        assert len(page.rules) == len(raw["rules"])
        for raw_rule, rule in zip(raw["rules"], page.rules, strict=True):
            key, fields = validate_rule(rule)
            # `sha256` is the legacy spelling of the identifier.
            assert key == (raw_rule["rule_type"], raw_rule.get("identifier") or raw_rule["sha256"])
            assert rule.deprecated_sha256 == raw_rule.get("sha256", "")
            # BLACKLIST is an alias of BLOCKLIST.
            legacy = {"BLACKLIST": "BLOCKLIST", "WHITELIST": "ALLOWLIST"}
            assert fields["policy"] == legacy.get(raw_rule["policy"], raw_rule["policy"])
            assert fields["custom_msg"] == raw_rule.get("custom_msg", "")
    assert any("sha256" in r for r in raw1["rules"])
    assert any(r["policy"] == "BLACKLIST" for r in raw2["rules"])

    received, accepted = fixture_rules(
        "sync_ruledownload_batch1.json", "sync_ruledownload_batch2.json"
    )
    assert received == len(accepted) == 5


def test_agent_keeps_both_cel_rules_even_the_invalid_expression():
    raw = fixture_json("sync_ruledownload_with_cel_1.json")
    received, accepted = fixture_rules("sync_ruledownload_with_cel_1.json")

    assert received == len(accepted) == 2  # only the daemon rejects the bad expression
    assert {key: fields["cel_expr"] for key, fields in accepted.items()} == {
        (r["rule_type"], r["identifier"]): r["cel_expr"] for r in raw["rules"]
    }
    assert {fields["policy"] for fields in accepted.values()} == {"CEL"}


def test_agent_drops_the_v2_only_seatbelt_rule():
    page = parse_response(
        "RuleDownloadResponse", fixture_bytes("sync_ruledownload_with_seatbelt.json"), "json"
    )

    assert len(page.rules) == 1
    assert page.rules[0].policy == 0  # "SEATBELT" is no v1 Policy name: read as unknown
    assert validate_rule(page.rules[0]) is None
    assert fixture_rules("sync_ruledownload_with_seatbelt.json") == (1, {})


# --- 5: this server's answers have the shape of the real ones --------------------------------

# Default-profile settings that make the server answer like each preflight fixture.
PROFILE_FOR = {
    "sync_preflight_basic.json": {"client_mode": "MONITOR"},
    "sync_preflight_lockdown.json": {"client_mode": "LOCKDOWN"},
    "sync_preflight_standalone.json": {"client_mode": "STANDALONE"},
    "sync_preflight_blockusb_absent.json": {"client_mode": "LOCKDOWN"},
    "sync_preflight_turn_on_blockusb.json": {
        "client_mode": "LOCKDOWN",
        "removable_media_action": "remount",
        "removable_media_remount_flags": ["rdonly", "noexec"],
    },
    "sync_preflight_turn_off_blockusb.json": {
        "client_mode": "LOCKDOWN",
        "removable_media_action": "allow",
    },
}


@pytest.mark.parametrize("name", PREFLIGHT_FIXTURES)
def test_server_preflight_answers_like_the_fixture(make_agent, name):
    settings = {
        "batch_size": 100,
        "allowed_path_regex": None,
        "blocked_path_regex": None,
        "removable_media_action": None,
        "removable_media_remount_flags": None,
        **PROFILE_FOR[name],
    }
    updated = ConfigurationProfile.objects.filter(is_default=True).update(**settings)
    assert updated == 1
    expected = client_view(parse_response("PreflightResponse", fixture_bytes(name), "json"))

    answer = make_agent().preflight()  # parsed the way the client parses it

    assert client_view(answer) == expected


def create_rules(accepted: dict) -> None:
    for (rule_type, identifier), fields in accepted.items():
        rule_create(
            data=RuleInput(
                rule_type,
                identifier,
                fields["policy"],
                custom_msg=fields["custom_msg"],
                custom_url=fields["custom_url"],
                cel_expr=fields["cel_expr"],
            )
        )


def test_server_rule_pages_deliver_what_the_batch_fixtures_describe(make_agent, settings):
    received, accepted = fixture_rules(
        "sync_ruledownload_batch1.json", "sync_ruledownload_batch2.json"
    )
    create_rules(accepted)
    settings.SYNC_RULES_PER_PAGE = len(fixture_json("sync_ruledownload_batch1.json")["rules"])
    agent = make_agent()

    result = agent.sync()

    assert result.pages >= 2  # paginated with a cursor, like batch1 -> batch2
    assert result.rules_received == received
    assert result.rules_processed == result.rules_received  # nothing the client drops
    assert agent.rules == accepted


def test_server_delivers_cel_rules_like_the_fixture(agent):
    received, accepted = fixture_rules("sync_ruledownload_with_cel_1.json")
    create_rules(accepted)

    result = agent.sync()

    assert result.rules_received == result.rules_processed == received
    assert agent.rules == accepted


def test_server_cannot_be_made_to_send_a_seatbelt_rule(db):
    rule = fixture_json("sync_ruledownload_with_seatbelt.json")["rules"][0]

    with pytest.raises(RulesError):
        rule_create(data=RuleInput(rule["rule_type"], rule["identifier"], rule["policy"]))


# --- 6: the client's archived events, uploaded as the client uploads them --------------------

# SNTEventState (Source/common/SNTCommonEnums.h) -> v1 Decision, as MessageForExecutionEvent
# maps it; states mapped to None are never uploaded.
EVENT_STATE = {
    0: None,
    1: "BUNDLE_BINARY",
    1 << 16: "BLOCK_UNKNOWN",
    1 << 17: "BLOCK_BINARY",
    1 << 18: "BLOCK_CERTIFICATE",
    1 << 19: "BLOCK_SCOPE",
    1 << 20: "BLOCK_TEAMID",
    1 << 21: None,  # long path
    1 << 22: "BLOCK_SIGNINGID",
    1 << 23: "BLOCK_CDHASH",
    1 << 24: "BLOCK_UNKNOWN",  # CEL fallback: no v1 value
    1 << 40: "ALLOW_UNKNOWN",
    1 << 41: "ALLOW_BINARY",
    1 << 42: "ALLOW_CERTIFICATE",
    1 << 43: "ALLOW_SCOPE",
    1 << 44: "ALLOW_BINARY",  # compiler
    1 << 45: None,  # transitive
    1 << 46: None,  # pending transitive
    1 << 47: "ALLOW_TEAMID",
    1 << 48: "ALLOW_SIGNINGID",
    1 << 49: "ALLOW_CDHASH",
    1 << 50: None,  # local (standalone) binary
    1 << 51: None,  # local (standalone) signing id
    1 << 52: "ALLOW_SIGNINGID",  # compiler
    1 << 53: "ALLOW_CDHASH",  # compiler
    1 << 54: "ALLOW_UNKNOWN",  # CEL fallback: no v1 value
    1 << 55: "ALLOW_PLATFORM",
}
# The quarantine archive was written in 2016 (google/santa 86dd5d80, unchanged since) by the
# class then named SNTStoredEvent, when SNTEventState was a plain 0..9 enum. Its `decision` 1
# meant "allow unknown" then; the current bit-field enum would read it as BUNDLE_BINARY.
LEGACY_EVENT_STATE = {
    1: "ALLOW_UNKNOWN",
    2: "ALLOW_BINARY",
    3: "ALLOW_CERTIFICATE",
    4: "ALLOW_SCOPE",
    5: "BLOCK_UNKNOWN",
    6: "BLOCK_BINARY",
    7: "BLOCK_CERTIFICATE",
    8: "BLOCK_SCOPE",
}
SIGNING_STATUS = [  # SNTSigningStatus 0..4
    "SIGNING_STATUS_UNSIGNED",
    "SIGNING_STATUS_INVALID",
    "SIGNING_STATUS_ADHOC",
    "SIGNING_STATUS_DEVELOPMENT",
    "SIGNING_STATUS_PRODUCTION",
]
FILE_ACCESS_DECISION = {  # FileAccessPolicyDecision; the others are not uploaded
    1: "FILE_ACCESS_DECISION_DENIED",
    2: "FILE_ACCESS_DECISION_DENIED_INVALID_SIGNATURE",
    5: "FILE_ACCESS_DECISION_AUDIT_ONLY",
}
MAX_ENTITLEMENTS = 64


def _compact(values: dict) -> dict:
    """Drop unset fields, as the client's JSON printer omits defaults."""
    return {k: v for k, v in values.items() if v not in (None, "", 0, [], False)}


def _unix(date: NSDate | None) -> float | None:
    return date.unix if date is not None else None


def certificate_json(cert: ArchivedObject) -> dict:
    der = cert["certData"]
    out = {"sha256": hashlib.sha256(der).hexdigest()}
    if x509 is not None:
        parsed = x509.load_der_x509_certificate(der)

        def first(oid) -> str:
            found = parsed.subject.get_attributes_for_oid(oid)
            return str(found[0].value) if found else ""

        out.update(
            cn=first(NameOID.COMMON_NAME),
            org=first(NameOID.ORGANIZATION_NAME),
            ou=first(NameOID.ORGANIZATIONAL_UNIT_NAME),
            valid_from=int(parsed.not_valid_before_utc.timestamp()),
            valid_until=int(parsed.not_valid_after_utc.timestamp()),
        )
    return _compact(out)


def entitlement_info(stored: ArchivedObject) -> dict:
    """EncodeEntitlementsCommon: at most 64, each value as JSON text; always present."""
    entitlements = stored.get("entitlements") or {}
    kept = list(entitlements.items())[:MAX_ENTITLEMENTS]
    return {
        "entitlements_filtered": bool(stored.get("entitlementsFiltered"))
        or len(kept) != len(entitlements),
        "entitlements": [
            {"key": key, "value": json.dumps(value, separators=(",", ":"))} for key, value in kept
        ],
    }


def execution_event_json(stored: ArchivedObject) -> dict | None:
    """A stored execution event as a v1 Event, like MessageForExecutionEvent."""
    legacy = stored.classname == "SNTStoredEvent"
    decision = (LEGACY_EVENT_STATE if legacy else EVENT_STATE).get(stored.get("decision", 0))
    if decision is None:
        return None
    path = stored.get("filePath") or ""
    status = stored.get("signingStatus", 0)
    event = {
        "file_sha256": stored.get("fileSHA256"),
        "file_path": posixpath.dirname(path),  # stringByDeletingLastPathComponent
        "file_name": posixpath.basename(path),  # lastPathComponent
        "executing_user": stored.get("executingUser"),
        "execution_time": (
            None if decision == "BUNDLE_BINARY" else _unix(stored.get("occurrenceDate"))
        ),
        "logged_in_users": stored.get("loggedInUsers") or [],
        "current_sessions": stored.get("currentSessions") or [],
        "decision": decision,
        "file_bundle_id": stored.get("fileBundleID"),
        "file_bundle_path": stored.get("fileBundlePath"),
        "file_bundle_executable_rel_path": stored.get("fileBundleExecutableRelPath"),
        "file_bundle_name": stored.get("fileBundleName"),
        "file_bundle_version": stored.get("fileBundleVersion"),
        "file_bundle_version_string": stored.get("fileBundleVersionString"),
        "file_bundle_hash": stored.get("fileBundleHash"),
        "file_bundle_hash_millis": stored.get("fileBundleHashMilliseconds"),
        "file_bundle_binary_count": stored.get("fileBundleBinaryCount"),
        "pid": stored.get("pid"),
        "ppid": stored.get("ppid"),
        "parent_name": stored.get("parentName"),
        "quarantine_data_url": stored.get("quarantineDataURL"),
        "quarantine_referer_url": stored.get("quarantineRefererURL"),
        "quarantine_timestamp": int(_unix(stored.get("quarantineTimestamp")) or 0),
        "quarantine_agent_bundle_id": stored.get("quarantineAgentBundleID"),
        "team_id": stored.get("teamID"),
        "signing_id": stored.get("signingID"),
        "cdhash": stored.get("cdhash"),
        "cs_flags": stored.get("codesigningFlags"),
        "secure_signing_time": int(_unix(stored.get("secureSigningTime")) or 0),
        "signing_time": int(_unix(stored.get("signingTime")) or 0),
        # The 2016 format had no signing status; the current one stores SNTSigningStatus.
        "signing_status": None if legacy else SIGNING_STATUS[status],
        "signing_chain": [certificate_json(c) for c in stored.get("signingChain") or []],
        "static_rule": bool(stored.get("staticRule")),
    }
    return {**_compact(event), "entitlement_info": entitlement_info(stored)}


def process_json(process: ArchivedObject) -> dict:
    """PopulateProcess: here file_path is the full path."""
    return _compact(
        {
            "file_path": process.get("filePath"),
            "file_sha256": process.get("fileSHA256"),
            "cdhash": process.get("cdhash"),
            "signing_id": process.get("signingID"),
            "team_id": process.get("teamID"),
            "pid": process.get("pid"),
            "signing_chain": [certificate_json(c) for c in process.get("signingChain") or []],
        }
    )


def file_access_event_json(stored: ArchivedObject) -> dict | None:
    decision = FILE_ACCESS_DECISION.get(stored.get("decision"))
    if decision is None:
        return None
    chain, process = [], stored.get("process")
    while process is not None:
        chain.append(process_json(process))
        process = process.get("parent")
    return _compact(
        {
            "rule_version": stored.get("ruleVersion"),
            "rule_name": stored.get("ruleName"),
            "target": stored.get("accessedPath"),
            "access_time": _unix(stored.get("occurrenceDate")),
            "decision": decision,
            "process_chain": chain,
        }
    )


def v1_uploads(stored_events: list) -> list[tuple[str, dict, ArchivedObject]]:
    """The (request field, message, stored event) a v1 client uploads, in archive order: the
    execution and file-access events; v2-only kinds produce nothing (EventUpload in
    SNTSyncEventUpload.mm)."""
    uploads = []
    for stored in stored_events:
        if stored.is_kind_of("SNTStoredExecutionEvent") or stored.classname == "SNTStoredEvent":
            message = execution_event_json(stored)
            kind = "events"
        elif stored.is_kind_of("SNTStoredFileAccessEvent"):
            message = file_access_event_json(stored)
            kind = "file_access_events"
        else:
            continue
        if message is not None:
            uploads.append((kind, message, stored))
    return uploads


def upload(agent, uploads) -> None:
    body = {"machine_id": agent.machine_id, "events": [], "file_access_events": []}
    for kind, message, _ in uploads:
        body[kind].append(message)
    status, content = agent.post("eventupload", "EventUploadRequest", body)
    assert status == 200, content
    parse_response("EventUploadResponse", content, "json")


def at(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def assert_same_time(stored: datetime | None, unix: float) -> None:
    assert stored is not None
    assert abs(stored.timestamp() - unix) < 1e-3


def assert_event_stored(host: Host, message: dict, stored: ArchivedObject) -> None:
    row = Event.objects.get(host=host, binary_id=message["file_sha256"])
    path = stored["filePath"]
    assert (row.file_path, row.file_name) == (posixpath.dirname(path), posixpath.basename(path))
    assert row.file_path + "/" + row.file_name == path
    assert row.decision == message["decision"]
    assert_same_time(row.execution_time, stored["occurrenceDate"].unix)
    assert row.executing_user == stored["executingUser"]
    assert row.logged_in_users == stored["loggedInUsers"]
    assert row.current_sessions == stored["currentSessions"]
    assert (row.pid, row.ppid, row.parent_name) == (
        stored["pid"],
        stored["ppid"],
        stored["parentName"],
    )
    assert row.signing_id == stored.get("signingID", "")
    assert row.team_id == stored.get("teamID", "")
    assert row.cdhash == stored.get("cdhash", "")
    assert (row.cs_flags or 0) == stored.get("codesigningFlags", 0)
    assert row.signing_status == message.get("signing_status", "")
    for column, key in (
        ("secure_signing_time", "secureSigningTime"),
        ("signing_time", "signingTime"),
    ):
        if key in stored:
            assert_same_time(getattr(row, column), int(stored[key].unix))
        else:
            assert getattr(row, column) is None
    entitlements = stored.get("entitlements") or {}
    assert row.entitlements == [
        {"key": key, "value": json.dumps(value)} for key, value in entitlements.items()
    ]
    assert row.entitlements_filtered is bool(stored.get("entitlementsFiltered"))
    chain = [hashlib.sha256(c["certData"]).hexdigest() for c in stored["signingChain"]]
    assert [cert["sha256"] for cert in row.signing_chain] == chain
    assert Certificate.objects.filter(sha256__in=chain).count() == len(set(chain))
    if x509 is not None:
        assert row.signing_chain == [
            {"cn": "", "org": "", "ou": "", "valid_from": 0, "valid_until": 0, **cert}
            for cert in message["signing_chain"]
        ]
    binary = Binary.objects.get(sha256=message["file_sha256"])
    assert binary.signing_chain == chain


def test_decoder_reads_the_basic_archive_as_the_client_test_does():
    stored = unarchive(fixture_bytes("sync_eventupload_input_basic.plist"))

    assert len(stored) == 7
    uploads = v1_uploads(stored)
    assert [kind for kind, _, _ in uploads] == ["events", "events", "file_access_events"]
    (_, yes, _), (_, santa, _), (_, faa, _) = uploads
    # Values SNTSyncTest.mm testEventUploadBasic expects in the client's request.
    assert (yes["file_path"], yes["file_name"]) == ("/usr/bin", "yes")
    assert yes["decision"] == "ALLOW_SIGNINGID"
    assert yes["execution_time"] == 1751111111
    assert yes["signing_id"] == "platform:com.apple.yes" and "team_id" not in yes
    assert yes["signing_chain"][0]["sha256"] == (
        "d84db96af8c2e60ac4c851a21ec460f6f84e0235beb17d24a78712b9b021ed57"
    )
    assert len(yes["signing_chain"]) == len(santa["signing_chain"]) == 3
    if x509 is not None:
        assert yes["signing_chain"][0] == {
            "sha256": "d84db96af8c2e60ac4c851a21ec460f6f84e0235beb17d24a78712b9b021ed57",
            "cn": "Software Signing",
            "org": "Apple Inc.",
            "ou": "Apple Software",
            "valid_from": 1603996358,
            "valid_until": 1792863581,
        }
    assert (santa["file_name"], santa["team_id"]) == ("Santa", "ZMCG7MLDV9")
    assert santa["decision"] == "ALLOW_TEAMID"
    assert (yes["signing_status"], santa["signing_status"]) == (
        "SIGNING_STATUS_PRODUCTION",
        "SIGNING_STATUS_DEVELOPMENT",
    )
    assert santa["execution_time"] == 1752222222
    assert faa["access_time"] == 1753333333
    assert faa["decision"] == "FILE_ACCESS_DECISION_DENIED"
    assert [p["pid"] for p in faa["process_chain"]] == [123, 456]
    assert faa["process_chain"][1] == {"pid": 456}
    assert len(faa["process_chain"][0]["signing_chain"]) == 3


def test_basic_archive_events_are_stored_and_deduplicated(make_agent):
    agent = make_agent()
    uploads = v1_uploads(unarchive(fixture_bytes("sync_eventupload_input_basic.plist")))

    for item in uploads:  # batch size 1: one request per uploadable event (3 with v1)
        upload(agent, [item])

    assert len(agent.requests) == 3
    host = Host.objects.get(machine_id=agent.machine_id)
    executions = [(m, s) for kind, m, s in uploads if kind == "events"]
    assert Event.objects.filter(host=host).count() == len(executions) == 2
    for message, stored in executions:
        assert_event_stored(host, message, stored)

    (message, stored) = next((m, s) for kind, m, s in uploads if kind == "file_access_events")
    row = FileAccessEvent.objects.get(host=host)
    assert (row.rule_name, row.rule_version, row.target) == (
        stored["ruleName"],
        stored["ruleVersion"],
        stored["accessedPath"],
    )
    assert row.decision == "FILE_ACCESS_DECISION_DENIED"
    assert_same_time(row.access_time, stored["occurrenceDate"].unix)
    offender = stored["process"]
    assert [p.get("pid") for p in row.process_chain] == [offender["pid"], offender["parent"]["pid"]]
    first = row.process_chain[0]
    assert first["file_path"] == offender["filePath"]  # the full path, unlike Event.file_path
    assert (first["file_sha256"], first["cdhash"], first["signing_id"]) == (
        offender["fileSHA256"],
        offender["cdhash"],
        offender["signingID"],
    )
    assert [c["sha256"] for c in first["signing_chain"]] == [
        hashlib.sha256(c["certData"]).hexdigest() for c in offender["signingChain"]
    ]

    upload(agent, uploads)  # the same events again, in one batch

    assert Event.objects.filter(host=host).count() == 2
    assert FileAccessEvent.objects.filter(host=host).count() == 1


def test_quarantine_archive_event_is_stored_with_bundle_and_quarantine_fields(make_agent):
    stored_events = unarchive(fixture_bytes("sync_eventupload_input_quarantine.plist"))
    assert [e.classname for e in stored_events] == ["SNTStoredEvent"]
    uploads = v1_uploads(stored_events)
    assert len(uploads) == 1
    _, message, stored = uploads[0]
    # Values SNTSyncTest.mm testEventUploadBundleAndQuarantineData expects.
    assert message["quarantine_timestamp"] == 1464204868
    assert message["file_bundle_version_string"] == "2.3.4"
    agent = make_agent()

    upload(agent, uploads)

    host = Host.objects.get(machine_id=agent.machine_id)
    assert_event_stored(host, message, stored)
    row = Event.objects.get(host=host)
    assert row.decision == "ALLOW_UNKNOWN"
    assert (
        row.file_bundle_id,
        row.file_bundle_name,
        row.file_bundle_path,
        row.file_bundle_version,
        row.file_bundle_version_string,
    ) == (
        stored["fileBundleID"],
        stored["fileBundleName"],
        stored["fileBundlePath"],
        stored["fileBundleVersion"],
        stored["fileBundleVersionString"],
    )
    assert (
        row.quarantine_data_url,
        row.quarantine_referer_url,
        row.quarantine_agent_bundle_id,
    ) == (
        stored["quarantineDataURL"],
        stored["quarantineRefererURL"],
        stored["quarantineAgentBundleID"],
    )
    assert row.quarantine_timestamp == at(int(stored["quarantineTimestamp"].unix))

    upload(agent, uploads)

    assert Event.objects.filter(host=host).count() == 1
