"""Stage 1, preflight: record the host's facts, answer with its configuration and sync type."""

import functools

from django.conf import settings
from django.http import HttpRequest
from django.urls import get_script_prefix, reverse

from hosts.models import RemovableMediaAction
from hosts.selectors import SyncConfiguration
from hosts.services import PreflightFacts, PreflightResult, host_preflight

from .base import SyncRequest, sync_stage

_COUNT_FIELDS = {
    "binary": "binary_rule_count",
    "certificate": "certificate_rule_count",
    "compiler": "compiler_rule_count",
    "transitive": "transitive_rule_count",
    "teamid": "teamid_rule_count",
    "signingid": "signingid_rule_count",
    "cdhash": "cdhash_rule_count",
}


def facts_from(message: dict) -> PreflightFacts:
    return PreflightFacts(
        serial_number=message.get("serial_number", ""),
        hostname=message.get("hostname", ""),
        os_version=message.get("os_version", ""),
        os_build=message.get("os_build", ""),
        model_identifier=message.get("model_identifier", ""),
        santa_version=message.get("santa_version", ""),
        primary_user=message.get("primary_user", ""),
        primary_user_groups=tuple(message.get("primary_user_groups", ())),
        push_notification_token=message.get("push_notification_token", ""),
        client_mode=message.get("client_mode", ""),
        request_clean_sync=message.get("request_clean_sync", False),
        rule_counts={kind: message.get(name, 0) for kind, name in _COUNT_FIELDS.items()},
        sip_status=message.get("sip_status"),
        rules_hash=message.get("rules_hash", ""),
    )


def _media_policy(action: str | None, flags) -> dict | None:
    # The agent looks at which member of the oneof is present, not at its value (§4.3).
    if action == RemovableMediaAction.ALLOW:
        return {"allow": True}
    if action == RemovableMediaAction.BLOCK:
        return {"block": True}
    if action == RemovableMediaAction.REMOUNT:
        return {"remount": {"flags": list(flags or [])}}
    return None


# The "Open" button of Santa's block dialog leads to the console's request page unless a
# configuration profile sets its own event_detail_url. The agent fills in the placeholders
# (protocol.md §4.3 field 26): %file_identifier% is the file's SHA-256.
REQUEST_PAGE_QUERY = "?sha=%file_identifier%&machine=%machine_id%&user=%username%"
# Sent with that default URL when no profile sets a label (the agent shows at most 48
# characters; a profile's own URL keeps the agent's own label unless the profile sets one).
DEFAULT_EVENT_DETAIL_TEXT = "Request access"


def default_event_detail_url(http: HttpRequest) -> str:
    """<CONSOLE_URL>/request/?sha=...; without CONSOLE_URL, the scheme and host (and script
    prefix) this agent reached the server at, which also serves the console."""
    prefix = get_script_prefix()
    base = settings.CONSOLE_URL or f"{http.scheme}://{http.get_host()}{prefix}"
    return _detail_url(base, prefix)


@functools.lru_cache(maxsize=64)
def _detail_url(base: str, prefix: str) -> str:
    page = reverse("events:request_public")[len(prefix) :]
    return f"{base.rstrip('/')}/{page}{REQUEST_PAGE_QUERY}"


def response_for(
    config: SyncConfiguration, sync_type: str, default_detail_url: str | None = None
) -> dict:
    """The PreflightResponse: every managed setting, always (a clean sync erases the agent's
    synced settings, §5.3.1), and nothing the server does not manage. `default_detail_url`
    is sent (with DEFAULT_EVENT_DETAIL_TEXT) when no profile sets event_detail_url."""
    answer: dict = {"sync_type": sync_type}
    if config.client_mode:
        answer["client_mode"] = config.client_mode
    if config.batch_size:
        answer["batch_size"] = config.batch_size
    if config.full_sync_interval:
        answer["full_sync_interval_seconds"] = config.full_sync_interval
    for name in (
        "enable_bundles",
        "enable_transitive_rules",
        "enable_all_event_upload",
        "disable_unknown_event_upload",
        "allowed_path_regex",
        "blocked_path_regex",
        "override_file_access_action",
        "event_detail_url",
        "event_detail_text",
    ):
        value = getattr(config, name)
        if value is not None:
            answer[name] = value
    if config.event_detail_url is None and default_detail_url:
        answer["event_detail_url"] = default_detail_url
        answer.setdefault("event_detail_text", DEFAULT_EVENT_DETAIL_TEXT)
    media = _media_policy(config.removable_media_action, config.removable_media_remount_flags)
    if media is not None:
        answer["removable_media_policy"] = media
        # Agents older than removable_media_policy (2026-04) read the deprecated USB keys.
        answer["block_usb_mount"] = config.removable_media_action != RemovableMediaAction.ALLOW
        if config.removable_media_action == RemovableMediaAction.REMOUNT:
            answer["remount_usb_mode"] = list(config.removable_media_remount_flags or [])
    encrypted = _media_policy(
        config.encrypted_removable_media_action, config.encrypted_removable_media_remount_flags
    )
    if encrypted is not None:
        answer["encrypted_removable_media_policy"] = encrypted
    return answer


@sync_stage("PreflightRequest", "PreflightResponse")
def preflight(sync: SyncRequest) -> dict:
    host = sync.host()
    context = sync.context
    result: PreflightResult = host_preflight(
        host=host,
        facts=facts_from(sync.message),
        tag_spans=context.tag_spans,
        host_profile_ids=context.host_profile_ids,
        settings_token=context.settings_token,
    )
    return response_for(result.configuration, result.sync_type, default_event_detail_url(sync.http))
