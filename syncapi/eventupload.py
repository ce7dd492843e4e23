"""Stage 2, event upload: store the batch (whole or not at all) and ask for bundle binaries."""

from django.conf import settings
from django.utils import timezone

from events.services import (
    CertificateIn,
    EventIn,
    FileAccessEventIn,
    events_check,
    events_defer,
    events_ingest,
    events_prepare,
)
from hosts.services import host_record_eventupload

from .base import SyncRequest, sync_stage
from .codec import ProtocolError

_EVENT_FIELDS = (
    "file_path",
    "file_name",
    "executing_user",
    "parent_name",
    "team_id",
    "signing_id",
    "cdhash",
    "file_bundle_id",
    "file_bundle_path",
    "file_bundle_executable_rel_path",
    "file_bundle_name",
    "file_bundle_version",
    "file_bundle_version_string",
    "file_bundle_hash",
    "quarantine_data_url",
    "quarantine_referer_url",
    "quarantine_agent_bundle_id",
    "signing_status",
)


def _certificate(cert: dict) -> CertificateIn:
    return CertificateIn(
        sha256=cert.get("sha256", ""),
        cn=cert.get("cn", ""),
        org=cert.get("org", ""),
        ou=cert.get("ou", ""),
        valid_from=cert.get("valid_from", 0),
        valid_until=cert.get("valid_until", 0),
    )


def event_from(event: dict) -> EventIn:
    info = event.get("entitlement_info", {})
    return EventIn(
        file_sha256=event.get("file_sha256", ""),
        decision=event.get("decision", "DECISION_UNKNOWN"),
        execution_time=event.get("execution_time"),
        logged_in_users=tuple(event.get("logged_in_users", ())),
        current_sessions=tuple(event.get("current_sessions", ())),
        pid=event.get("pid"),
        ppid=event.get("ppid"),
        cs_flags=event.get("cs_flags"),
        secure_signing_time=event.get("secure_signing_time", 0),
        signing_time=event.get("signing_time", 0),
        static_rule=event.get("static_rule", False),
        signing_chain=tuple(_certificate(c) for c in event.get("signing_chain", ())),
        entitlements=tuple(
            (item.get("key"), item.get("value")) for item in info.get("entitlements", ())
        ),
        entitlements_filtered=info.get("entitlements_filtered"),
        file_bundle_hash_millis=event.get("file_bundle_hash_millis"),
        file_bundle_binary_count=event.get("file_bundle_binary_count"),
        quarantine_timestamp=event.get("quarantine_timestamp", 0),
        **{name: event.get(name, "") for name in _EVENT_FIELDS},
    )


def file_access_event_from(event: dict) -> FileAccessEventIn:
    return FileAccessEventIn(
        rule_name=event.get("rule_name", ""),
        rule_version=event.get("rule_version", ""),
        target=event.get("target", ""),
        decision=event.get("decision", "FILE_ACCESS_DECISION_UNKNOWN"),
        access_time=event.get("access_time"),
        process_chain=tuple(event.get("process_chain", ())),
    )


@sync_stage("EventUploadRequest", "EventUploadResponse")
def eventupload(sync: SyncRequest) -> dict:
    events = sync.message.get("events", [])
    file_access = sync.message.get("file_access_events", [])
    limit = settings.SYNC_MAX_EVENTS_PER_REQUEST
    if len(events) + len(file_access) > limit:
        raise ProtocolError(
            413,
            "too_many_events",
            f"The batch holds more than SYNC_MAX_EVENTS_PER_REQUEST ({limit}) events.",
        )
    received_at = timezone.now()
    events_in = [event_from(e) for e in events]
    file_access_in = [file_access_event_from(e) for e in file_access]
    # The whole batch is checked before the host is registered: a refused upload stores nothing.
    blocked_bundles = events_check(events=events_in, file_access_events=file_access_in)
    host = sync.host()
    host_record_eventupload(host=host, at=received_at)
    # Only a blocking event from inside a bundle can lead to a bundle request (§5.4.4), and
    # the answer needs the bundle's stored binaries: that upload is stored at once.
    bundles = bool(blocked_bundles) and bool(sync.configuration(host).enable_bundles)
    if settings.SYNC_DEFER_EVENTS and not bundles:
        events_defer(
            host=host, events=events_in, file_access_events=file_access_in, received_at=received_at
        )
        return {}
    batch = events_prepare(
        machine_id=sync.machine_id,
        events=events_in,
        file_access_events=file_access_in,
        received_at=received_at,
    )
    result = events_ingest(host=host, batch=batch, bundles_enabled=bundles)
    if result.bundle_binaries_wanted:
        return {"event_upload_bundle_binaries": result.bundle_binaries_wanted}
    return {}
