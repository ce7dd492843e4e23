"""The Santa sync protocol v1 (package `santa.sync.v1`), declared once.

From this one table we build real protobuf descriptors and message classes (for
`application/x-protobuf` bodies) and the lookup tables of the JSON codec (for the agent's default
JSON bodies). Field numbers, names, `json_name`s, types and enum values follow
`../shared/protocol.md` §4; a test compares them with the published definitions.

Only what a v1 server receives or sends is declared: v2-only fields, the push-token chain
(never sent, §7 item 19) and `ExportConfiguration` (ignored by v1 clients) are left out, so an
agent's extra keys are simply unknown fields and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "santa.sync.v1"
_FDP = descriptor_pb2.FieldDescriptorProto

STRING = _FDP.TYPE_STRING
BOOL = _FDP.TYPE_BOOL
UINT32 = _FDP.TYPE_UINT32
INT32 = _FDP.TYPE_INT32
DOUBLE = _FDP.TYPE_DOUBLE
ENUM = _FDP.TYPE_ENUM
MESSAGE = _FDP.TYPE_MESSAGE


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: int
    json_name: str | None = None  # only where the proto sets one explicitly
    repeated: bool = False
    optional: bool = False  # proto3 `optional`: explicit presence
    ref: str | None = None  # enum or message name
    oneof: str | None = None
    camel: bool = False  # in a snake_case message: this field has no explicit json_name

    @property
    def camel_name(self) -> str:
        head, *rest = self.name.split("_")
        return head + "".join(part[:1].upper() + part[1:] for part in rest)

    @property
    def wire_name(self) -> str:
        """The key this server writes: the explicit json_name, else the proto field name.

        Every v1 client accepts proto names (§3.2) and the pre-2024 clients read only these
        snake_case keys (§8), so this is the spelling every client understands.
        """
        return self.json_name or self.name

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """Keys read for this field: json_name, proto name and lowerCamelCase (§3.2)."""
        names = [self.json_name or self.camel_name, self.name, self.camel_name]
        return tuple(dict.fromkeys(names))


def _f(name, number, type_, **kw) -> Field:
    return Field(name, number, type_, **kw)


ENUMS: dict[str, list[tuple[str, int]]] = {
    "ClientMode": [
        ("UNKNOWN_CLIENT_MODE", 0),
        ("MONITOR", 1),
        ("LOCKDOWN", 2),
        ("STANDALONE", 3),
    ],
    "SyncType": [
        ("SYNC_TYPE_UNSPECIFIED", 0),
        ("NORMAL", 1),
        ("normal", 1),
        ("CLEAN", 2),
        ("clean", 2),
        ("CLEAN_ALL", 3),
        ("clean_all", 3),
        ("CLEAN_STANDALONE", 4),
        ("CLEAN_RULES", 5),
        ("CLEAN_FILE_ACCESS_RULES", 6),
    ],
    "FileAccessAction": [
        ("FILE_ACCESS_ACTION_UNSPECIFIED", 0),
        ("NONE", 1),
        ("None", 1),
        ("AUDIT_ONLY", 2),
        ("AuditOnly", 2),
        ("DISABLE", 3),
        ("Disable", 3),
    ],
    "Decision": [
        ("DECISION_UNKNOWN", 0),
        ("ALLOW_UNKNOWN", 1),
        ("ALLOW_BINARY", 2),
        ("ALLOW_CERTIFICATE", 3),
        ("ALLOW_SCOPE", 4),
        ("ALLOW_TEAMID", 5),
        ("ALLOW_SIGNINGID", 6),
        ("ALLOW_CDHASH", 7),
        ("BLOCK_UNKNOWN", 8),
        ("BLOCK_BINARY", 9),
        ("BLOCK_CERTIFICATE", 10),
        ("BLOCK_SCOPE", 11),
        ("BLOCK_TEAMID", 12),
        ("BLOCK_SIGNINGID", 13),
        ("BLOCK_CDHASH", 14),
        ("BUNDLE_BINARY", 15),
        ("BLOCK_BINARY_MISMATCH", 18),
        ("ALLOW_PLATFORM", 19),
    ],
    "SigningStatus": [
        ("SIGNING_STATUS_UNSPECIFIED", 0),
        ("SIGNING_STATUS_UNSIGNED", 1),
        ("SIGNING_STATUS_INVALID", 2),
        ("SIGNING_STATUS_ADHOC", 3),
        ("SIGNING_STATUS_DEVELOPMENT", 4),
        ("SIGNING_STATUS_PRODUCTION", 5),
    ],
    "FileAccessDecision": [
        ("FILE_ACCESS_DECISION_UNKNOWN", 0),
        ("FILE_ACCESS_DECISION_DENIED", 1),
        ("FILE_ACCESS_DECISION_DENIED_INVALID_SIGNATURE", 2),
        ("FILE_ACCESS_DECISION_AUDIT_ONLY", 3),
    ],
    "Policy": [
        ("POLICY_UNKNOWN", 0),
        ("ALLOWLIST", 1),
        ("ALLOWLIST_COMPILER", 2),
        ("BLOCKLIST", 3),
        ("SILENT_BLOCKLIST", 4),
        ("REMOVE", 5),
        ("CEL", 6),
        ("SILENT_GUI_BLOCKLIST", 8),
        ("SILENT_TTY_BLOCKLIST", 9),
        ("WHITELIST", 1),
        ("WHITELIST_COMPILER", 2),
        ("BLACKLIST", 3),
        ("SILENT_BLACKLIST", 4),
    ],
    "RuleType": [
        ("RULETYPE_UNKNOWN", 0),
        ("BINARY", 1),
        ("CERTIFICATE", 2),
        ("TEAMID", 3),
        ("SIGNINGID", 4),
        ("CDHASH", 5),
    ],
}

_RULE_COUNTS = [
    ("binary_rule_count", 11),
    ("certificate_rule_count", 12),
    ("compiler_rule_count", 13),
    ("transitive_rule_count", 14),
    ("teamid_rule_count", 15),
    ("signingid_rule_count", 16),
    ("cdhash_rule_count", 17),
]

MESSAGES: dict[str, list[Field]] = {
    "PreflightRequest": [
        _f("serial_number", 1, STRING, json_name="serial_num"),
        _f("hostname", 2, STRING),
        _f("os_version", 3, STRING),
        _f("os_build", 4, STRING),
        _f("model_identifier", 5, STRING),
        _f("santa_version", 6, STRING),
        _f("primary_user", 7, STRING),
        _f("primary_user_groups", 21, STRING, repeated=True),
        _f("push_notification_token", 8, STRING),
        _f("client_mode", 9, ENUM, ref="ClientMode"),
        _f("request_clean_sync", 10, BOOL),
        *[_f(name, number, UINT32) for name, number in _RULE_COUNTS],
        _f("machine_id", 18, STRING),
        _f("push_notification_sync", 19, BOOL),
        _f("sip_status", 20, UINT32, camel=True),
        _f("rules_hash", 22, STRING, camel=True),
    ],
    "RemountPolicy": [_f("flags", 1, STRING, repeated=True)],
    "RemovableMediaPolicy": [
        _f("allow", 1, BOOL, oneof="action"),
        _f("block", 2, BOOL, oneof="action"),
        _f("remount", 3, MESSAGE, ref="RemountPolicy", oneof="action"),
    ],
    "PreflightResponse": [
        _f("client_mode", 1, ENUM, ref="ClientMode"),
        _f("sync_type", 2, ENUM, ref="SyncType", optional=True),
        _f("batch_size", 3, UINT32),
        _f("enable_bundles", 4, BOOL, optional=True),
        _f("enable_transitive_rules", 5, BOOL, optional=True),
        _f("enable_all_event_upload", 6, BOOL, optional=True),
        _f("disable_unknown_event_upload", 7, BOOL, optional=True),
        _f("full_sync_interval_seconds", 8, UINT32, json_name="full_sync_interval"),
        _f(
            "push_notification_full_sync_interval_seconds",
            9,
            UINT32,
            json_name="push_notification_full_sync_interval",
        ),
        _f(
            "push_notification_global_rule_sync_deadline_seconds",
            10,
            UINT32,
            json_name="push_notification_global_rule_sync_deadline",
        ),
        _f("allowed_path_regex", 11, STRING, optional=True),
        _f("blocked_path_regex", 12, STRING, optional=True),
        _f("block_usb_mount", 13, BOOL, optional=True),
        _f("remount_usb_mode", 14, STRING, repeated=True),
        _f("override_file_access_action", 15, ENUM, ref="FileAccessAction", optional=True),
        _f("event_detail_url", 26, STRING, optional=True),
        _f("event_detail_text", 27, STRING, optional=True),
        _f("removable_media_policy", 36, MESSAGE, ref="RemovableMediaPolicy", optional=True),
        _f(
            "encrypted_removable_media_policy",
            37,
            MESSAGE,
            ref="RemovableMediaPolicy",
            optional=True,
        ),
    ],
    "Certificate": [
        _f("sha256", 1, STRING),
        _f("cn", 2, STRING),
        _f("org", 3, STRING),
        _f("ou", 4, STRING),
        _f("valid_from", 5, UINT32),
        _f("valid_until", 6, UINT32),
    ],
    "Entitlement": [
        _f("key", 1, STRING, optional=True),
        _f("value", 2, STRING, optional=True),
    ],
    "EntitlementInfo": [
        _f("entitlements_filtered", 1, BOOL, optional=True),
        _f("entitlements", 2, MESSAGE, ref="Entitlement", repeated=True),
    ],
    "Event": [
        _f("file_sha256", 1, STRING),
        _f("file_path", 2, STRING),
        _f("file_name", 3, STRING),
        _f("executing_user", 4, STRING),
        _f("execution_time", 5, DOUBLE),
        _f("logged_in_users", 6, STRING, repeated=True),
        _f("current_sessions", 7, STRING, repeated=True),
        _f("decision", 8, ENUM, ref="Decision"),
        _f("file_bundle_id", 9, STRING),
        _f("file_bundle_path", 10, STRING),
        _f("file_bundle_executable_rel_path", 11, STRING),
        _f("file_bundle_name", 12, STRING),
        _f("file_bundle_version", 13, STRING),
        _f("file_bundle_version_string", 14, STRING),
        _f("file_bundle_hash", 15, STRING),
        _f("file_bundle_hash_millis", 16, UINT32),
        _f("file_bundle_binary_count", 17, UINT32),
        _f("pid", 18, INT32),
        _f("ppid", 19, INT32),
        _f("parent_name", 20, STRING),
        _f("team_id", 21, STRING),
        _f("signing_id", 22, STRING),
        _f("cdhash", 23, STRING),
        _f("quarantine_data_url", 24, STRING),
        _f("quarantine_referer_url", 25, STRING),
        _f("quarantine_timestamp", 26, UINT32),
        _f("quarantine_agent_bundle_id", 27, STRING),
        _f("signing_chain", 28, MESSAGE, ref="Certificate", repeated=True),
        _f("entitlement_info", 29, MESSAGE, ref="EntitlementInfo", camel=True),
        _f("cs_flags", 30, UINT32, camel=True),
        _f("signing_status", 31, ENUM, ref="SigningStatus", camel=True),
        _f("secure_signing_time", 32, UINT32, camel=True),
        _f("signing_time", 33, UINT32, camel=True),
        _f("static_rule", 34, BOOL),
    ],
    "Process": [
        _f("file_path", 1, STRING),
        _f("cdhash", 2, STRING),
        _f("file_sha256", 3, STRING),
        _f("signing_id", 4, STRING),
        _f("team_id", 5, STRING),
        _f("pid", 6, INT32),
        _f("signing_chain", 7, MESSAGE, ref="Certificate", repeated=True),
    ],
    "FileAccessEvent": [
        _f("rule_version", 1, STRING),
        _f("rule_name", 2, STRING),
        _f("target", 3, STRING),
        _f("process_chain", 4, MESSAGE, ref="Process", repeated=True),
        _f("access_time", 5, DOUBLE),
        _f("decision", 6, ENUM, ref="FileAccessDecision"),
    ],
    "EventUploadRequest": [
        _f("events", 1, MESSAGE, ref="Event", repeated=True),
        _f("machine_id", 2, STRING),
        _f("file_access_events", 4, MESSAGE, ref="FileAccessEvent", repeated=True),
    ],
    "EventUploadResponse": [
        _f("event_upload_bundle_binaries", 1, STRING, repeated=True),
    ],
    "Rule": [
        _f("identifier", 1, STRING),
        _f("policy", 2, ENUM, ref="Policy"),
        _f("rule_type", 3, ENUM, ref="RuleType"),
        _f("custom_msg", 4, STRING),
        _f("custom_url", 5, STRING),
        _f("file_bundle_hash", 6, STRING),
        _f("file_bundle_binary_count", 7, UINT32),
        _f("notification_app_name", 8, STRING),
        _f("cel_expr", 9, STRING),
        _f("event_detail_button_label", 12, STRING),
        _f("deprecated_sha256", 1000, STRING, json_name="sha256"),
    ],
    "RuleDownloadRequest": [
        _f("cursor", 1, STRING),
        _f("machine_id", 2, STRING),
    ],
    "RuleDownloadResponse": [
        _f("rules", 1, MESSAGE, ref="Rule", repeated=True),
        _f("cursor", 2, STRING),
    ],
    "PostflightRequest": [
        _f("rules_received", 1, UINT32),
        _f("rules_processed", 2, UINT32),
        _f("machine_id", 3, STRING),
        _f("sync_type", 4, ENUM, ref="SyncType", camel=True),
        _f("rules_hash", 5, STRING, camel=True),
    ],
    "PostflightResponse": [],
}

_ALIASED_ENUMS = {"SyncType", "FileAccessAction", "Policy"}

# In these messages every field carries an explicit snake_case json_name equal to its historical
# JSON key (usually the proto name), except those marked `camel` (§3.1).
_SNAKE_JSON_MESSAGES = {
    "PreflightRequest",
    "Certificate",
    "Event",
    "Process",
    "FileAccessEvent",
    "EventUploadRequest",
    "RuleDownloadRequest",
    "PostflightRequest",
}
for _message_name in _SNAKE_JSON_MESSAGES:
    MESSAGES[_message_name] = [
        spec if spec.json_name or spec.camel else replace(spec, json_name=spec.name)
        for spec in MESSAGES[_message_name]
    ]


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="santaadmin/sync_v1.proto", package=PACKAGE, syntax="proto3"
    )
    for enum_name, values in ENUMS.items():
        enum = fdp.enum_type.add(name=enum_name)
        if enum_name in _ALIASED_ENUMS:
            enum.options.allow_alias = True
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for message_name, fields in MESSAGES.items():
        message = fdp.message_type.add(name=message_name)
        oneofs: dict[str, int] = {}
        for spec in fields:
            if spec.oneof and spec.oneof not in oneofs:
                oneofs[spec.oneof] = len(message.oneof_decl)
                message.oneof_decl.add(name=spec.oneof)
        for spec in fields:
            fd = message.field.add(name=spec.name, number=spec.number, type=spec.type)
            fd.label = _FDP.LABEL_REPEATED if spec.repeated else _FDP.LABEL_OPTIONAL
            fd.json_name = spec.json_name or spec.camel_name
            if spec.ref:
                fd.type_name = f".{PACKAGE}.{spec.ref}"
            if spec.oneof:
                fd.oneof_index = oneofs[spec.oneof]
            elif spec.optional:
                # proto3 `optional` is a synthetic one-member oneof named `_<field>`.
                fd.proto3_optional = True
                fd.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{spec.name}")
    return fdp


POOL = descriptor_pool.DescriptorPool()
FILE = POOL.Add(_file_descriptor())
CLASSES = {
    name: message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
    for name in MESSAGES
}


@dataclass
class MessageSpec:
    name: str
    fields: list[Field]
    by_key: dict[str, Field] = field(default_factory=dict)


SPECS: dict[str, MessageSpec] = {}
for _name, _fields in MESSAGES.items():
    _spec = MessageSpec(_name, _fields)
    for _field in _fields:
        for _key in _field.accepted_names:
            _spec.by_key[_key] = _field
    SPECS[_name] = _spec

# Enum lookups: any declared name (aliases included, case-sensitive) -> number, and number ->
# the canonical (first declared) name.
ENUM_NUMBER: dict[str, dict[str, int]] = {name: dict(values) for name, values in ENUMS.items()}
ENUM_NAME: dict[str, dict[int, str]] = {}
for _name, _values in ENUMS.items():
    _canonical: dict[int, str] = {}
    for _value_name, _number in _values:
        _canonical.setdefault(_number, _value_name)
    ENUM_NAME[_name] = _canonical
