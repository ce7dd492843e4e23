"""Stage behaviour in detail: configuration resolution at preflight, event storage, bundles."""

from datetime import UTC, datetime

import pytest

from events.models import Binary, Bundle, Certificate, Event, FileAccessEvent
from hosts.models import ConfigurationProfile, Host
from hosts.services import host_set_mode_override, host_set_tags

SHA = "fb2c6a695f556367f141f0c069695078c5e35e9154de35cb0fbd017af5be194e"
LEAF = "d84db96af8c2e60ac4c851a21ec460f6f84e0235beb17d24a78712b9b021ed57"
ROOT = "b0b1730ecbc7ff4505142c49f1295e6eda6bcaed7e2c68c5be91b5a11001f024"
BUNDLE = "9" * 64


def _host(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


def _profile(name, **settings):
    return ConfigurationProfile.objects.create(name=name, **settings)


# --- preflight: configuration -------------------------------------------------------------------


def test_preflight_records_every_fact(agent):
    agent.preflight(push_notification_token="fcm-token", primary_user_groups=["staff", "eng"])
    host = _host(agent)
    assert (host.serial_number, host.hostname) == (
        agent.facts["serial_number"],
        agent.facts["hostname"],
    )
    assert (host.os_version, host.os_build, host.model_identifier) == (
        "15.1",
        "24B83",
        "MacBookPro18,3",
    )
    assert host.santa_version == "2026.8.1"
    assert host.primary_user == "alice"
    assert host.primary_user_groups == ["staff", "eng"]
    assert host.push_notification_token == "fcm-token"
    assert host.reported_client_mode == "MONITOR"
    assert host.sip_status == 111
    assert host.request_clean_sync is True
    assert host.preflight_rules_hash == agent.rules_hash()
    assert host.reported_counts["binary"] == 0
    assert host.last_preflight_at is not None


def test_default_configuration_is_sent_in_full(agent):
    answer = agent.preflight()
    assert answer.client_mode == 1  # MONITOR
    assert answer.batch_size == 50
    assert answer.full_sync_interval_seconds == 600
    for name in (
        "enable_bundles",
        "enable_transitive_rules",
        "enable_all_event_upload",
        "disable_unknown_event_upload",
    ):
        assert answer.HasField(name) and getattr(answer, name) is False
    # Settings the server does not manage are not sent, so the Mac's profile keeps them.
    assert not answer.HasField("allowed_path_regex")
    assert not answer.HasField("removable_media_policy")


def test_precedence_default_enrollment_tag_host(make_agent, make_enrollment):
    _, secret = make_enrollment(name="kiosks", mode="LOCKDOWN")
    agent = make_agent(secret=secret)
    assert agent.preflight().client_mode == 2  # enrollment mode over the default profile

    host = _host(agent)
    low = _profile("low", priority=1, batch_size=10, client_mode="MONITOR")
    high = _profile("high", priority=5, batch_size=20, allowed_path_regex="^/opt/")
    low.tags.set(host_set_tags(host=host, tag_names=["eng"]))
    high.tags.set(host_set_tags(host=host, tag_names=["eng", "finance"])[1:])
    answer = agent.preflight()
    assert answer.batch_size == 20  # higher priority tag profile wins
    assert answer.client_mode == 1  # a tag profile overrides the enrollment
    assert answer.allowed_path_regex == "^/opt/"

    own = _profile("this-host", batch_size=99)
    own.hosts.add(host)
    assert agent.preflight().batch_size == 99  # host profile over tag profiles

    host_set_mode_override(host=host, client_mode="STANDALONE")
    assert agent.preflight().client_mode == 3  # the host's own override wins over all


def test_equal_priority_tag_profiles_resolve_by_name(agent):
    agent.preflight()
    host = _host(agent)
    tags = host_set_tags(host=host, tag_names=["a-tag", "b-tag"])
    _profile("beta", batch_size=2).tags.add(tags[1])
    _profile("alpha", batch_size=1).tags.add(tags[0])
    assert agent.preflight().batch_size == 1  # on a tie the name sorting first wins


def test_empty_regex_clears_and_media_policies(agent):
    agent.preflight()
    _profile(
        "media",
        allowed_path_regex="",
        removable_media_action="remount",
        removable_media_remount_flags=["rdonly", "noexec"],
        encrypted_removable_media_action="allow",
        override_file_access_action="AUDIT_ONLY",
        event_detail_url="https://santa.example.com/approve/%machine_id%/%file_identifier%",
        event_detail_text="Request approval",
    ).hosts.add(_host(agent))
    answer = agent.preflight()
    assert answer.HasField("allowed_path_regex") and answer.allowed_path_regex == ""
    assert answer.removable_media_policy.WhichOneof("action") == "remount"
    assert list(answer.removable_media_policy.remount.flags) == ["rdonly", "noexec"]
    assert answer.block_usb_mount is True and list(answer.remount_usb_mode) == ["rdonly", "noexec"]
    assert answer.encrypted_removable_media_policy.WhichOneof("action") == "allow"
    assert answer.override_file_access_action == 2  # AUDIT_ONLY
    assert answer.event_detail_text == "Request approval"


# --- eventupload --------------------------------------------------------------------------------

FULL_EVENT = {
    "file_sha256": SHA,
    "file_path": "/usr/bin",
    "file_name": "yes",
    "executing_user": "foo",
    "execution_time": 1751111111.123456,
    "logged_in_users": ["foo", "bar"],
    "current_sessions": ["nobody@console"],
    "decision": "BLOCK_BINARY",
    "file_bundle_id": "com.example.yes",
    "file_bundle_path": "/Applications/Yes.app",
    "file_bundle_executable_rel_path": "Contents/MacOS/yes",
    "file_bundle_name": "Yes",
    "file_bundle_version": "2003004001",
    "file_bundle_version_string": "2.3.4",
    "file_bundle_hash": BUNDLE,
    "file_bundle_hash_millis": 42,
    "file_bundle_binary_count": 2,
    "pid": 2222,
    "ppid": 1,
    "parent_name": "launchd",
    "team_id": "EQHXZ8M8AV",
    "signing_id": "EQHXZ8M8AV:com.example.yes",
    "cdhash": "e6088e2df9163416c1d66a0c0bc74dfe34419fa7",
    "quarantine_data_url": "https://downloads.example.com/yes.dmg",
    "quarantine_referer_url": "https://example.com/",
    "quarantine_timestamp": 1464204868,
    "quarantine_agent_bundle_id": "com.google.Chrome",
    "signing_chain": [
        {
            "sha256": LEAF,
            "cn": "Software Signing",
            "org": "Apple Inc.",
            "ou": "Apple Software",
            "valid_from": 1603996358,
            "valid_until": 1792863581,
        },
        {"sha256": ROOT, "cn": "Apple Root CA", "org": "Apple Inc."},
    ],
    "entitlement_info": {
        "entitlements_filtered": True,
        "entitlements": [
            {"key": "com.apple.security.get-task-allow", "value": "true"},
            {"key": "com.apple.application-identifier", "value": '["a","b"]'},
        ],
    },
    "cs_flags": 570503953,
    "signing_status": "SIGNING_STATUS_PRODUCTION",
    "secure_signing_time": 1700000000,
    "signing_time": 1690000000,
    "static_rule": True,
}


def test_every_event_field_is_stored(agent):
    agent.sync()
    agent.upload_events([FULL_EVENT])
    event = Event.objects.get()
    for name in (
        "file_path",
        "file_name",
        "executing_user",
        "decision",
        "file_bundle_id",
        "file_bundle_path",
        "file_bundle_executable_rel_path",
        "file_bundle_name",
        "file_bundle_version",
        "file_bundle_version_string",
        "file_bundle_hash",
        "file_bundle_hash_millis",
        "file_bundle_binary_count",
        "pid",
        "ppid",
        "parent_name",
        "team_id",
        "signing_id",
        "cdhash",
        "quarantine_data_url",
        "quarantine_referer_url",
        "quarantine_agent_bundle_id",
        "cs_flags",
        "signing_status",
        "static_rule",
    ):
        assert getattr(event, name) == FULL_EVENT[name], name
    assert event.binary_id == SHA
    assert event.host.machine_id == agent.machine_id
    assert event.execution_time == datetime.fromtimestamp(1751111111.123456, tz=UTC)
    assert event.logged_in_users == ["foo", "bar"]
    assert event.current_sessions == ["nobody@console"]
    assert event.quarantine_timestamp == datetime.fromtimestamp(1464204868, tz=UTC)
    assert event.secure_signing_time == datetime.fromtimestamp(1700000000, tz=UTC)
    assert event.signing_time == datetime.fromtimestamp(1690000000, tz=UTC)
    assert event.entitlements_filtered is True
    assert event.entitlements == FULL_EVENT["entitlement_info"]["entitlements"]
    assert [c["sha256"] for c in event.signing_chain] == [LEAF, ROOT]
    assert event.signing_chain[0]["cn"] == "Software Signing"


def test_catalogue_of_binaries_and_certificates(agent):
    agent.sync()
    agent.upload_events([FULL_EVENT])
    binary = Binary.objects.get(pk=SHA)
    assert binary.file_name == "yes" and binary.team_id == "EQHXZ8M8AV"
    assert binary.leaf_certificate_id == LEAF
    assert binary.signing_chain == [LEAF, ROOT]
    leaf = Certificate.objects.get(pk=LEAF)
    assert (leaf.cn, leaf.org, leaf.ou) == ("Software Signing", "Apple Inc.", "Apple Software")
    assert leaf.valid_until == datetime.fromtimestamp(1792863581, tz=UTC)
    first_seen = binary.first_seen_at

    agent.upload_events([{**FULL_EVENT, "execution_time": 1751111200, "file_name": "yes2"}])
    binary.refresh_from_db()
    assert binary.file_name == "yes2"  # latest metadata
    assert binary.first_seen_at == first_seen
    assert Binary.objects.count() == 1 and Certificate.objects.count() == 2
    assert Event.objects.count() == 2


def test_bundle_binaries_requested_until_complete(agent):
    ConfigurationProfile.objects.filter(is_default=True).update(enable_bundles=True)
    agent.sync()
    response = agent.upload_events([FULL_EVENT])
    assert list(response.event_upload_bundle_binaries) == [BUNDLE]
    assert Bundle.objects.get().binary_count == 2

    member = {
        "file_sha256": SHA,
        "decision": "BUNDLE_BINARY",
        "file_bundle_hash": BUNDLE,
        "file_bundle_binary_count": 2,
        "file_bundle_name": "Yes",
        "file_name": "yes",
        "file_path": "/Applications/Yes.app/Contents/MacOS",
    }
    other = {**member, "file_sha256": "1" * 64, "file_name": "helper"}
    agent.upload_events([member])
    assert list(agent.upload_events([FULL_EVENT]).event_upload_bundle_binaries) == [BUNDLE]
    agent.upload_events([other, member])  # member again: no duplicate
    assert Bundle.objects.get().uploaded_binary_count == 2
    assert Event.objects.filter(decision="BUNDLE_BINARY").count() == 2
    assert Event.objects.filter(decision="BUNDLE_BINARY").first().execution_time is None
    assert list(agent.upload_events([FULL_EVENT]).event_upload_bundle_binaries) == []


def test_bundle_binaries_not_requested_when_bundles_are_off(agent):
    agent.sync()
    assert list(agent.upload_events([FULL_EVENT]).event_upload_bundle_binaries) == []


def test_file_access_events_are_stored(agent):
    agent.sync()
    faa = {
        "rule_version": "v1",
        "rule_name": "MyRule",
        "target": "/you/are/being/watched",
        "process_chain": [
            {
                "file_path": "/bin/mkdir",
                "cdhash": "d" * 40,
                "file_sha256": "<unknown sha>",
                "pid": 123,
            },
            {"file_path": "/bin/zsh", "pid": 456},
        ],
        "access_time": 1753333333,
        "decision": "FILE_ACCESS_DECISION_DENIED",
    }
    agent.call(
        "eventupload",
        "EventUploadRequest",
        "EventUploadResponse",
        {"file_access_events": [faa, faa], "machine_id": agent.machine_id},
    )
    stored = FileAccessEvent.objects.get()
    assert (stored.rule_name, stored.rule_version, stored.target) == (
        "MyRule",
        "v1",
        "/you/are/being/watched",
    )
    assert stored.process_chain[0]["file_sha256"] == "<unknown sha>"
    assert stored.process_chain[1] == {"file_path": "/bin/zsh", "pid": 456}
    assert stored.access_time == datetime.fromtimestamp(1753333333, tz=UTC)


@pytest.mark.parametrize(
    "decision", ["ALLOW_UNKNOWN", "BLOCK_UNKNOWN", "ALLOW_PLATFORM", "BLOCK_BINARY_MISMATCH"]
)
def test_every_decision_is_accepted(agent, decision):
    agent.sync()
    agent.upload_events([{**FULL_EVENT, "decision": decision}])
    assert Event.objects.get().decision == decision
