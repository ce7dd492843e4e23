"""A simulated Santa agent, modelled on the real client's sync behaviour (protocol.md §5, §10).

It builds its requests with protobuf's own JSON printer (what the agent does: json_names,
defaults omitted, enums as names), parses responses with protobuf's parser plus the two checks
the agent's C++ parser makes that Python's does not (a field given twice, §10.8), validates and
normalises rules like the agent (§5.5.2) and applies them with the agent's semantics: all pages
or nothing, CLEAN wipes first unless zero rules were accepted, REMOVE deletes, settings applied
after postflight (§5.3.1). It never uses the server's codec.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import json_format

from syncapi.schema import CLASSES

Transport = Callable[[str, bytes, dict], tuple[int, bytes]]

VALID_POLICIES = {
    "ALLOWLIST",
    "ALLOWLIST_COMPILER",
    "BLOCKLIST",
    "SILENT_BLOCKLIST",
    "SILENT_GUI_BLOCKLIST",
    "SILENT_TTY_BLOCKLIST",
    "REMOVE",
    "CEL",
}
VALID_TYPES = {"BINARY", "CERTIFICATE", "TEAMID", "SIGNINGID", "CDHASH"}
COUNT_FIELDS = {
    "BINARY": "binary_rule_count",
    "CERTIFICATE": "certificate_rule_count",
    "TEAMID": "teamid_rule_count",
    "SIGNINGID": "signingid_rule_count",
    "CDHASH": "cdhash_rule_count",
}


def held(policy: str, custom_msg: str = "", custom_url: str = "", cel_expr: str = "") -> dict:
    """A rule as the simulated agent stores it (the value in `SimulatedAgent.rules`)."""
    return {
        "policy": policy,
        "custom_msg": custom_msg,
        "custom_url": custom_url,
        "cel_expr": cel_expr,
    }


class SyncFailed(Exception):
    def __init__(self, stage: str, status: int, body: bytes):
        super().__init__(f"{stage} answered {status}: {body[:300]!r}")
        self.stage, self.status, self.body = stage, status, body


def django_transport(client) -> Transport:
    """Send requests through Django's test client (in-process)."""

    def send(path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        extra = {
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in headers.items()
            if k.lower() != "content-type"
        }
        response = client.generic(
            "POST", path, data=body, content_type=headers.get("Content-Type", ""), **extra
        )
        return response.status_code, response.content

    return send


def _check_duplicate_fields(message_name: str, obj, path="") -> None:
    """The agent's parser rejects a field given under two names, and null list items."""
    if not isinstance(obj, dict):
        return
    descriptor = CLASSES[message_name].DESCRIPTOR
    seen = {}
    for key, value in obj.items():
        fd = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if key in (f.json_name, f.camelcase_name)), None
        )
        if fd is None:
            continue
        if fd.name in seen and value is not None:
            raise AssertionError(f"{path}{key}: field {fd.name} given twice ({seen[fd.name]})")
        seen[fd.name] = key
        if fd.message_type is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                assert item is not None, f"{path}{key}: null inside a list"
                _check_duplicate_fields(fd.message_type.name, item, f"{path}{key}.")
        elif isinstance(value, list):
            assert None not in value, f"{path}{key}: null inside a list"


def parse_response(message_name: str, body: bytes, fmt: str):
    """Parse a 200 response the way the agent does; raises on anything it would reject."""
    cls = CLASSES[message_name]
    if fmt == "proto":
        return cls.FromString(body)
    text = body.decode("utf-8")
    for prefix in (")]}'\n", "])}"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if not text.strip():
        return cls()
    _check_duplicate_fields(message_name, json.loads(text))
    return json_format.Parse(text, cls(), ignore_unknown_fields=True)


def validate_rule(rule) -> tuple[tuple[str, str], dict] | None:
    """The agent's per-rule validation and normalisation (§5.5.2); None = dropped."""
    identifier = rule.identifier or rule.deprecated_sha256
    policy = (
        CLASSES["Rule"]
        .DESCRIPTOR.fields_by_name["policy"]
        .enum_type.values_by_number.get(rule.policy)
    )
    rule_type = (
        CLASSES["Rule"]
        .DESCRIPTOR.fields_by_name["rule_type"]
        .enum_type.values_by_number.get(rule.rule_type)
    )
    if not identifier or policy is None or rule_type is None:
        return None
    policy = {
        "WHITELIST": "ALLOWLIST",
        "WHITELIST_COMPILER": "ALLOWLIST_COMPILER",
        "BLACKLIST": "BLOCKLIST",
        "SILENT_BLACKLIST": "SILENT_BLOCKLIST",
    }.get(policy.name, policy.name)
    rule_type = rule_type.name
    if policy not in VALID_POLICIES or rule_type not in VALID_TYPES:
        return None
    if rule_type in ("BINARY", "CERTIFICATE"):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", identifier):
            return None
        identifier = identifier.lower()
    elif rule_type == "CDHASH":
        if not re.fullmatch(r"[0-9a-fA-F]{40}", identifier):
            return None
        identifier = identifier.lower()
    elif rule_type == "TEAMID":
        if not re.fullmatch(r"[A-Za-z0-9]{10}", identifier):
            return None
        identifier = identifier.upper()
    else:
        team, sep, signing_id = identifier.partition(":")
        if not sep or not signing_id:
            return None
        if team.lower() == "platform":
            team = "platform"
        elif re.fullmatch(r"[A-Za-z0-9]{10}", team):
            team = team.upper()
        else:
            return None
        identifier = f"{team}:{signing_id}"
    if policy == "CEL" and not rule.cel_expr:
        return None
    return (rule_type, identifier), {
        "policy": policy,
        "custom_msg": rule.custom_msg,
        "custom_url": rule.custom_url,
        "cel_expr": rule.cel_expr,
    }


@dataclass
class SyncResult:
    sync_type: str = ""
    rules_received: int = 0
    rules_processed: int = 0
    pages: int = 0
    preflight: object = None
    events_uploaded: int = 0
    bundle_hashes_requested: list = field(default_factory=list)


class SimulatedAgent:
    def __init__(
        self,
        transport: Transport,
        machine_id: str,
        secret: str | None,
        *,
        fmt: str = "json",
        encoding: str = "deflate",
        serial: str = "C02TEST0001",
        hostname: str = "mac.example.com",
        santa_version: str = "2026.8.1",
        primary_user: str = "alice",
        primary_user_groups: tuple = ("staff",),
        base: str = "/sync/",
    ):
        self.transport, self.machine_id, self.secret = transport, machine_id, secret
        self.fmt, self.encoding, self.base = fmt, encoding, base
        self.facts = {
            "serial_number": serial,
            "hostname": hostname,
            "os_version": "15.1",
            "os_build": "24B83",
            "model_identifier": "MacBookPro18,3",
            "santa_version": santa_version,
            "primary_user": primary_user,
            "primary_user_groups": list(primary_user_groups),
        }
        self.rules: dict[tuple[str, str], dict] = {}
        self.settings: dict = {}
        self.client_mode = "MONITOR"
        self.wanted_sync = "CLEAN_ALL"  # a fresh rules database asks for a clean sync (§5.7)
        self.events: list[dict] = []
        self.requests: list[tuple[str, int]] = []

    # --- transport --------------------------------------------------------------------------

    def headers(self) -> dict:
        headers = {
            "Content-Type": "application/x-protobuf" if self.fmt == "proto" else "application/json",
            "User-Agent": f"santactl-sync/{self.facts['santa_version']}",
        }
        if self.encoding in ("deflate", "gzip"):
            headers["Content-Encoding"] = self.encoding
        if self.secret is not None:
            headers["Authorization"] = f"Bearer {self.secret}"
        return headers

    def encode(self, message_name: str, values: dict) -> bytes:
        msg = json_format.ParseDict(values, CLASSES[message_name]())
        if self.fmt == "proto":
            body = msg.SerializeToString()
        else:
            body = json.dumps(
                json_format.MessageToDict(msg), separators=(",", ":"), ensure_ascii=False
            ).encode()
        if self.encoding == "deflate":
            return zlib.compress(body)
        if self.encoding == "gzip":
            return gzip.compress(body)
        return body

    def post(self, stage: str, message_name: str, values: dict) -> tuple[int, bytes]:
        status, body = self.transport(
            f"{self.base}{stage}/{self.machine_id}",
            self.encode(message_name, values),
            self.headers(),
        )
        self.requests.append((stage, status))
        return status, body

    def call(self, stage: str, request_name: str, response_name: str, values: dict):
        status, body = self.post(stage, request_name, values)
        if status != 200:
            raise SyncFailed(stage, status, body)
        return parse_response(response_name, body, self.fmt)

    # --- state --------------------------------------------------------------------------------

    def counts(self) -> dict:
        counts = {name: 0 for name in COUNT_FIELDS.values()}
        counts["compiler_rule_count"] = 0
        for (rule_type, _), rule in self.rules.items():
            counts[COUNT_FIELDS[rule_type]] += 1
            if rule["policy"] == "ALLOWLIST_COMPILER":
                counts["compiler_rule_count"] += 1
        return counts

    def rules_hash(self) -> str:
        data = json.dumps(sorted((list(k), v) for k, v in self.rules.items()))
        return hashlib.sha256(data.encode()).hexdigest()[:32]

    def request_clean_sync(self, kind: str = "CLEAN") -> None:
        """`santactl sync --clean` (CLEAN) or `--clean-all` (CLEAN_ALL)."""
        self.wanted_sync = kind

    def add_event(self, **event) -> None:
        self.events.append(event)

    # --- stages -------------------------------------------------------------------------------

    def preflight(self, **extra):
        values = {
            **self.facts,
            "client_mode": self.client_mode,
            "machine_id": self.machine_id,
            "request_clean_sync": self.wanted_sync != "NORMAL",
            "sip_status": 111,
            "rules_hash": self.rules_hash(),
            **self.counts(),
            **extra,
        }
        return self.call("preflight", "PreflightRequest", "PreflightResponse", values)

    def upload_events(self, events: list[dict]):
        return self.call(
            "eventupload",
            "EventUploadRequest",
            "EventUploadResponse",
            {"events": events, "machine_id": self.machine_id},
        )

    def download_rules(self, stop_after_pages: int | None = None):
        """All pages; returns (accepted rules in order, received count, pages)."""
        cursor, received, accepted, pages = "", 0, [], 0
        while True:
            if stop_after_pages is not None and pages >= stop_after_pages:
                raise SyncFailed("ruledownload", 0, b"simulated connection drop")
            values = {"machine_id": self.machine_id}
            if cursor:
                values["cursor"] = cursor
            response = self.call(
                "ruledownload", "RuleDownloadRequest", "RuleDownloadResponse", values
            )
            pages += 1
            received += len(response.rules)
            for rule in response.rules:
                valid = validate_rule(rule)
                if valid is not None:
                    accepted.append(valid)
            cursor = response.cursor
            if not cursor:
                return accepted, received, pages

    def apply_rules(self, accepted: list, sync_type: str) -> None:
        if not accepted:
            return  # zero accepted rules: the daemon is not called, nothing is deleted (§5.5.3)
        if sync_type in ("CLEAN", "CLEAN_ALL"):
            self.rules.clear()
        for key, rule in accepted:
            if rule["policy"] == "REMOVE":
                self.rules.pop(key, None)
            else:
                self.rules[key] = rule

    def sync(
        self,
        *,
        drop_postflight: bool = False,
        stop_after_pages: int | None = None,
        upload_clean_events: bool = False,
    ) -> SyncResult:
        """A full sync. Raises SyncFailed where the real agent would abort."""
        result = SyncResult()
        pre = self.preflight()
        result.preflight = pre
        server_type = None
        if pre.HasField("sync_type"):
            server_type = (
                CLASSES["PreflightResponse"]
                .DESCRIPTOR.fields_by_name["sync_type"]
                .enum_type.values_by_number[pre.sync_type]
                .name
            )
        performed = "NORMAL"
        if server_type in ("CLEAN_ALL", "clean_all"):
            performed = "CLEAN_ALL"
        elif server_type in ("CLEAN", "clean"):
            performed = "CLEAN_ALL" if self.wanted_sync == "CLEAN_ALL" else "CLEAN"
        result.sync_type = performed
        cleaning = performed != "NORMAL"

        if self.events and (not cleaning or upload_clean_events):
            batch_size = self.settings.get("batch_size") or 50
            while self.events:
                batch = self.events[:batch_size]
                try:
                    response = self.upload_events(batch)
                except SyncFailed:
                    break  # a failed upload does not stop the sync (§5.2)
                result.events_uploaded += len(batch)
                result.bundle_hashes_requested += list(response.event_upload_bundle_binaries)
                del self.events[:batch_size]
        elif cleaning:
            self.events.clear()  # pending events are dropped on a clean sync (§5.4.2)

        accepted, received, pages = self.download_rules(stop_after_pages)
        result.rules_received, result.rules_processed, result.pages = (
            received,
            len(accepted),
            pages,
        )
        self.apply_rules(accepted, performed)
        if not drop_postflight:
            self.call(
                "postflight",
                "PostflightRequest",
                "PostflightResponse",
                {
                    "rules_received": received,
                    "rules_processed": len(accepted),
                    "machine_id": self.machine_id,
                    "sync_type": performed,
                    "rules_hash": self.rules_hash(),
                },
            )
        # Settings are applied after postflight, whatever its result (§5.3.1).
        self.apply_settings(pre, clean=cleaning)
        if cleaning:
            self.wanted_sync = "NORMAL"  # only a performed clean sync resets the request (§5.7)
        return result

    def apply_settings(self, pre, *, clean: bool) -> None:
        if clean:
            self.settings = {}
        values = json_format.MessageToDict(pre, preserving_proto_field_name=True)
        if values.get("client_mode") in ("MONITOR", "LOCKDOWN", "STANDALONE"):
            self.client_mode = values["client_mode"]
        for key, value in values.items():
            if key not in ("client_mode", "sync_type"):
                self.settings[key] = value
