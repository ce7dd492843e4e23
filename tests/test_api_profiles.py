"""The configuration-profiles API: admin CRUD, the effect on agents through the real sync,
validation (every refusal stores nothing) and roles.

Precedence, later wins: the default profile, the enrollment's mode, tag profiles (higher
priority later; on equal priority the name that sorts first applies last), host profiles,
the host's mode override (hosts/selectors.py).
"""

import pytest
from google.protobuf import json_format
from rest_framework.test import APIClient

from hosts.models import ConfigurationProfile, Revision, Tag
from hosts.selectors import SETTING_FIELDS
from tests.api import assert_error

PROFILES = "/api/v1/profiles/"
HOSTS = "/api/v1/hosts/"
DEFAULT_SETTINGS = {
    "client_mode": "MONITOR",
    "batch_size": 50,
    "full_sync_interval": 600,
    "enable_bundles": False,
    "enable_transitive_rules": False,
    "enable_all_event_upload": False,
    "disable_unknown_event_upload": False,
    "clean_sync_on_drift": False,
}
UNKNOWN_MACHINE = "NO-SUCH-MACHINE-0001"


def profile_url(pk) -> str:
    return f"{PROFILES}{pk}/"


def default_profile() -> ConfigurationProfile:
    return ConfigurationProfile.objects.get(is_default=True)


def create_profile(api, **fields) -> dict:
    response = api.post(PROFILES, fields, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def patch_profile(api, pk, **fields) -> dict:
    response = api.patch(profile_url(pk), fields, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def delete_profile(api, pk) -> None:
    response = api.delete(profile_url(pk))
    assert response.status_code == 204, response.content


def answer(agent) -> dict:
    """The agent's next preflight answer, enums as names, only the fields that are set."""
    return json_format.MessageToDict(agent.preflight(), preserving_proto_field_name=True)


def configuration(api, machine_id) -> dict:
    response = api.get(f"{HOSTS}{machine_id}/")
    assert response.status_code == 200, response.content
    return response.json()["configuration"]


def snapshot():
    """Everything a profile write could change: every profile (values, scope, save time),
    the tags and the fleet revision."""
    profiles = []
    for profile in ConfigurationProfile.objects.order_by("pk").prefetch_related("tags", "hosts"):
        row = {
            name: getattr(profile, name)
            for name in ("pk", "name", "description", "is_default", "priority", "updated_at")
        }
        row.update({name: getattr(profile, name) for name in SETTING_FIELDS})
        row["tags"] = sorted(tag.name for tag in profile.tags.all())
        row["hosts"] = sorted(host.machine_id for host in profile.hosts.all())
        profiles.append(row)
    tags = sorted(Tag.objects.values_list("name", flat=True))
    return profiles, tags, Revision.objects.get(pk=1).value


@pytest.fixture
def tagged_agent(make_agent, make_enrollment):
    """An agent enrolled with the given tags (and enrollment mode), synced once."""

    def make(*tags, mode="", **options):
        _, secret = make_enrollment(tags=tags, mode=mode)
        agent = make_agent(secret=secret, **options)
        agent.sync()
        return agent

    return make


# --- CRUD by admin --------------------------------------------------------------------------------


def test_list_shows_the_default_profile(admin_api):
    response = admin_api.get(PROFILES)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 1
    (default,) = body["results"]
    assert default["name"] == "default"
    assert default["is_default"] is True
    assert default["tags"] == [] and default["machine_ids"] == []
    for name, value in DEFAULT_SETTINGS.items():
        assert default[name] == value, name
    assert default["allowed_path_regex"] is None


def test_create_retrieve_and_list(admin_api, tagged_agent):
    agent = tagged_agent()
    before = ConfigurationProfile.objects.count()
    created = create_profile(
        admin_api,
        name="engineering",
        description="Build machines",
        priority=7,
        tags=["Eng", "qa", " eng "],
        machine_ids=[agent.machine_id],
        client_mode="LOCKDOWN",
        batch_size=25,
        blocked_path_regex="^/tmp/",
        removable_media_action="remount",
        removable_media_remount_flags=["rdonly", "noexec"],
        event_detail_text="Ask IT",
    )
    assert ConfigurationProfile.objects.count() == before + 1
    assert created["name"] == "engineering"
    assert created["description"] == "Build machines"
    assert created["is_default"] is False
    assert created["priority"] == 7
    assert created["tags"] == ["eng", "qa"]  # normalised, without duplicates
    assert created["machine_ids"] == [agent.machine_id]
    assert created["client_mode"] == "LOCKDOWN"
    assert created["batch_size"] == 25
    assert created["blocked_path_regex"] == "^/tmp/"
    assert created["removable_media_remount_flags"] == ["rdonly", "noexec"]
    assert created["event_detail_text"] == "Ask IT"
    # Settings not given are null: they inherit.
    unset = set(SETTING_FIELDS) - {
        "client_mode",
        "batch_size",
        "blocked_path_regex",
        "removable_media_action",
        "removable_media_remount_flags",
        "event_detail_text",
    }
    assert unset and all(created[name] is None for name in unset)

    stored = ConfigurationProfile.objects.get(pk=created["id"])
    assert stored.client_mode == "LOCKDOWN" and stored.full_sync_interval is None
    assert sorted(stored.tags.values_list("name", flat=True)) == ["eng", "qa"]

    response = admin_api.get(profile_url(created["id"]))
    assert response.status_code == 200, response.content
    assert response.json() == created

    listed = admin_api.get(PROFILES).json()
    assert listed["count"] == 2
    assert {p["name"] for p in listed["results"]} == {"default", "engineering"}
    assert next(p for p in listed["results"] if p["id"] == created["id"]) == created


def test_create_with_only_tags_or_only_machine_ids(admin_api, tagged_agent):
    agent = tagged_agent()
    only_tags = create_profile(admin_api, name="t", tags=["kiosk"], batch_size=5)
    assert only_tags["tags"] == ["kiosk"] and only_tags["machine_ids"] == []
    assert only_tags["priority"] == 100  # the model's default
    only_host = create_profile(admin_api, name="h", machine_ids=[agent.machine_id])
    assert only_host["tags"] == [] and only_host["machine_ids"] == [agent.machine_id]
    assert all(only_host[name] is None for name in SETTING_FIELDS)
    assert Tag.objects.filter(name="kiosk").exists()


def test_patch_settings_scope_name_and_priority(admin_api, tagged_agent):
    one, two = tagged_agent(), tagged_agent()
    created = create_profile(
        admin_api,
        name="p",
        tags=["eng"],
        machine_ids=[one.machine_id],
        client_mode="LOCKDOWN",
        batch_size=10,
        description="kept",
    )
    pk = created["id"]

    body = patch_profile(admin_api, pk, batch_size=20, client_mode=None, enable_bundles=True)
    assert (body["batch_size"], body["client_mode"], body["enable_bundles"]) == (20, None, True)
    assert body["tags"] == ["eng"] and body["machine_ids"] == [one.machine_id]
    assert body["description"] == "kept" and body["name"] == "p"

    body = patch_profile(admin_api, pk, name="renamed", priority=3)
    assert (body["name"], body["priority"], body["batch_size"]) == ("renamed", 3, 20)

    body = patch_profile(admin_api, pk, tags=["QA"], machine_ids=[two.machine_id, one.machine_id])
    assert body["tags"] == ["qa"]
    assert sorted(body["machine_ids"]) == sorted([one.machine_id, two.machine_id])

    body = patch_profile(admin_api, pk, machine_ids=[])  # tags are left alone
    assert body["tags"] == ["qa"] and body["machine_ids"] == []
    body = patch_profile(admin_api, pk, tags=[])
    assert body["tags"] == [] and body["machine_ids"] == []

    stored = ConfigurationProfile.objects.get(pk=pk)
    assert (stored.name, stored.priority, stored.batch_size) == ("renamed", 3, 20)
    assert stored.client_mode is None and stored.enable_bundles is True
    assert not stored.tags.exists() and not stored.hosts.exists()
    assert admin_api.get(profile_url(pk)).json() == body


def test_delete(admin_api):
    created = create_profile(admin_api, name="gone", tags=["eng"], batch_size=5)
    delete_profile(admin_api, created["id"])
    assert not ConfigurationProfile.objects.filter(pk=created["id"]).exists()
    assert_error(admin_api.get(profile_url(created["id"])), 404)
    assert admin_api.get(PROFILES).json()["count"] == 1
    assert Tag.objects.filter(name="eng").exists()  # the tag itself stays


def test_unknown_profile_is_404_json(admin_api):
    url = profile_url(999999)
    assert_error(admin_api.get(url), 404)
    assert_error(admin_api.patch(url, {"batch_size": 5}, format="json"), 404)
    assert_error(admin_api.delete(url), 404)


def test_put_is_not_allowed(admin_api):
    before = snapshot()
    pk = default_profile().pk
    body = assert_error(admin_api.put(profile_url(pk), {"name": "x"}, format="json"), 405)
    assert body["error"] == "method_not_allowed"
    assert snapshot() == before


def test_default_profile_cannot_be_deleted(admin_api):
    before = snapshot()
    body = assert_error(admin_api.delete(profile_url(default_profile().pk)), 400)
    assert body["error"] == "invalid_profile"
    assert snapshot() == before


@pytest.mark.parametrize(
    "scope",
    [
        {"tags": ["eng"]},
        {"machine_ids": ["HOST-1"]},
        {"tags": ["eng"], "batch_size": 7},
        {"machine_ids": ["HOST-1"], "tags": []},
    ],
)
def test_default_profile_cannot_be_given_a_scope(admin_api, make_agent, scope):
    make_agent(machine_id="HOST-1").sync()
    before = snapshot()
    body = assert_error(
        admin_api.patch(profile_url(default_profile().pk), scope, format="json"), 400
    )
    assert body["error"] == "invalid_profile"
    assert snapshot() == before
    assert not default_profile().tags.exists() and not default_profile().hosts.exists()


def test_default_profile_settings_can_be_changed(admin_api, tagged_agent):
    agent = tagged_agent()
    pk = default_profile().pk
    body = patch_profile(
        admin_api, pk, batch_size=200, client_mode="LOCKDOWN", allowed_path_regex="^/opt/"
    )
    assert body["is_default"] is True
    assert (body["batch_size"], body["client_mode"]) == (200, "LOCKDOWN")
    assert body["tags"] == [] and body["machine_ids"] == []
    stored = default_profile()
    assert (stored.batch_size, stored.client_mode) == (200, "LOCKDOWN")

    got = answer(agent)
    assert got["batch_size"] == 200
    assert got["client_mode"] == "LOCKDOWN"
    assert got["allowed_path_regex"] == "^/opt/"
    config = configuration(admin_api, agent.machine_id)
    assert config["settings"]["batch_size"] == 200
    assert config["sources"]["batch_size"] == "profile:default"


# --- effect on agents through the real sync ---------------------------------------------------


def test_tag_profile_reaches_tagged_agents_only(admin_api, tagged_agent):
    eng = tagged_agent("eng")
    other = tagged_agent("qa")
    assert eng.client_mode == other.client_mode == "MONITOR"
    assert "blocked_path_regex" not in answer(eng)

    create_profile(
        admin_api,
        name="eng-lockdown",
        tags=["eng"],
        client_mode="LOCKDOWN",
        blocked_path_regex="^/Users/.*/Downloads/",
    )
    got = answer(eng)
    assert got["client_mode"] == "LOCKDOWN"
    assert got["blocked_path_regex"] == "^/Users/.*/Downloads/"
    assert got["batch_size"] == 50  # null: inherited from the default profile

    untouched = answer(other)
    assert untouched["client_mode"] == "MONITOR"
    assert "blocked_path_regex" not in untouched

    # Through a whole sync the agent applies them.
    eng.sync()
    assert eng.client_mode == "LOCKDOWN"
    assert eng.settings["blocked_path_regex"] == "^/Users/.*/Downloads/"
    other.sync()
    assert other.client_mode == "MONITOR"
    assert "blocked_path_regex" not in other.settings

    config = configuration(admin_api, eng.machine_id)
    assert config["settings"]["client_mode"] == "LOCKDOWN"
    assert config["settings"]["blocked_path_regex"] == "^/Users/.*/Downloads/"
    assert config["sources"]["client_mode"] == "profile:eng-lockdown"
    assert config["sources"]["blocked_path_regex"] == "profile:eng-lockdown"
    assert config["sources"]["batch_size"] == "profile:default"
    other_config = configuration(admin_api, other.machine_id)
    assert other_config["settings"]["blocked_path_regex"] is None
    assert "blocked_path_regex" not in other_config["sources"]
    assert other_config["sources"]["client_mode"] == "profile:default"


def test_host_profile_beats_tag_profile(admin_api, tagged_agent):
    agent = tagged_agent("eng")
    neighbour = tagged_agent("eng")
    # The host profile has the lower priority and the name that would lose a tie: only its
    # level makes it win.
    create_profile(admin_api, name="aaa-tag", tags=["eng"], priority=1000, batch_size=10)
    create_profile(
        admin_api, name="zzz-host", machine_ids=[agent.machine_id], priority=1, batch_size=99
    )
    assert answer(agent)["batch_size"] == 99
    assert answer(neighbour)["batch_size"] == 10
    assert configuration(admin_api, agent.machine_id)["sources"]["batch_size"] == (
        "profile:zzz-host"
    )
    assert configuration(admin_api, neighbour.machine_id)["sources"]["batch_size"] == (
        "profile:aaa-tag"
    )


def test_higher_priority_tag_profile_wins(admin_api, tagged_agent):
    agent = tagged_agent("eng", "qa")
    # Created first and named to win a tie: only the priority decides.
    low = create_profile(admin_api, name="aaa", tags=["qa"], priority=1, batch_size=11)
    create_profile(admin_api, name="zzz", tags=["eng"], priority=5, batch_size=22)
    assert answer(agent)["batch_size"] == 22
    config = configuration(admin_api, agent.machine_id)
    assert config["settings"]["batch_size"] == 22
    assert config["sources"]["batch_size"] == "profile:zzz"

    # Raising the other's priority changes the winner at the next preflight.
    patch_profile(admin_api, low["id"], priority=6)
    assert answer(agent)["batch_size"] == 11
    assert configuration(admin_api, agent.machine_id)["sources"]["batch_size"] == "profile:aaa"


@pytest.mark.parametrize("first", ["alpha", "beta"])
def test_equal_priority_the_name_sorting_first_wins(admin_api, tagged_agent, first):
    agent = tagged_agent("eng", "qa")
    values = {"alpha": ("eng", 1), "beta": ("qa", 2)}
    for name in (first, *(n for n in values if n != first)):
        tag, batch = values[name]
        create_profile(admin_api, name=name, tags=[tag], priority=5, batch_size=batch)
    assert answer(agent)["batch_size"] == 1
    assert configuration(admin_api, agent.machine_id)["sources"]["batch_size"] == "profile:alpha"


def test_equal_priority_tie_break_with_a_name_that_is_a_prefix(admin_api, tagged_agent):
    agent = tagged_agent("eng")
    create_profile(admin_api, name="ab", tags=["eng"], batch_size=2)
    create_profile(admin_api, name="a", tags=["eng"], batch_size=1)
    assert sorted(["a", "ab"])[0] == "a"
    assert configuration(admin_api, agent.machine_id)["sources"]["batch_size"] == "profile:a"
    assert answer(agent)["batch_size"] == 1


def test_host_mode_override_beats_every_profile(admin_api, tagged_agent):
    agent = tagged_agent("eng", mode="LOCKDOWN")
    create_profile(admin_api, name="tag", tags=["eng"], priority=1000, client_mode="MONITOR")
    create_profile(admin_api, name="host", machine_ids=[agent.machine_id], client_mode="MONITOR")
    assert answer(agent)["client_mode"] == "MONITOR"

    response = admin_api.patch(
        f"{HOSTS}{agent.machine_id}/", {"client_mode_override": "STANDALONE"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert answer(agent)["client_mode"] == "STANDALONE"
    config = configuration(admin_api, agent.machine_id)
    assert config["settings"]["client_mode"] == "STANDALONE"
    assert config["sources"]["client_mode"] == "host override"

    agent.sync()
    assert agent.client_mode == "STANDALONE"


def test_null_settings_inherit_level_by_level(admin_api, tagged_agent):
    agent = tagged_agent("eng", mode="LOCKDOWN")
    config = configuration(admin_api, agent.machine_id)
    assert config["sources"]["client_mode"] == "enrollment"

    # A tag profile without a mode keeps the enrollment's mode and the default's batch size.
    tag = create_profile(admin_api, name="tag", tags=["eng"], blocked_path_regex="^/x/")
    got = answer(agent)
    assert (got["client_mode"], got["batch_size"]) == ("LOCKDOWN", 50)
    assert got["blocked_path_regex"] == "^/x/"
    sources = configuration(admin_api, agent.machine_id)["sources"]
    assert sources["client_mode"] == "enrollment"
    assert sources["batch_size"] == "profile:default"
    assert sources["blocked_path_regex"] == "profile:tag"

    # A host profile with only a batch size keeps the tag profile's regex.
    create_profile(admin_api, name="host", machine_ids=[agent.machine_id], batch_size=7)
    got = answer(agent)
    assert (got["client_mode"], got["batch_size"], got["blocked_path_regex"]) == (
        "LOCKDOWN",
        7,
        "^/x/",
    )

    # Setting a tag-profile value back to null inherits again.
    patch_profile(admin_api, tag["id"], blocked_path_regex=None, client_mode="STANDALONE")
    got = answer(agent)
    assert got["client_mode"] == "STANDALONE"
    assert "blocked_path_regex" not in got
    config = configuration(admin_api, agent.machine_id)
    assert config["settings"]["blocked_path_regex"] is None
    assert config["sources"]["client_mode"] == "profile:tag"
    assert config["sources"]["batch_size"] == "profile:host"


def test_empty_regex_is_sent_to_clear_the_agents_value(admin_api, tagged_agent):
    agent = tagged_agent("eng")
    create_profile(admin_api, name="clear", tags=["eng"], allowed_path_regex="")
    got = answer(agent)
    assert "allowed_path_regex" in got and got["allowed_path_regex"] == ""


def test_deleting_the_profile_reverts_at_the_next_preflight(admin_api, tagged_agent):
    agent = tagged_agent("eng")
    created = create_profile(
        admin_api,
        name="eng-lockdown",
        tags=["eng"],
        client_mode="LOCKDOWN",
        batch_size=5,
        blocked_path_regex="^/tmp/",
    )
    agent.sync()
    assert agent.client_mode == "LOCKDOWN"

    delete_profile(admin_api, created["id"])
    got = answer(agent)
    assert got["client_mode"] == "MONITOR"
    assert got["batch_size"] == 50
    assert "blocked_path_regex" not in got
    config = configuration(admin_api, agent.machine_id)
    assert config["settings"]["client_mode"] == "MONITOR"
    assert config["sources"]["client_mode"] == "profile:default"
    assert "blocked_path_regex" not in config["sources"]
    agent.sync()
    assert agent.client_mode == "MONITOR"


def test_scope_changes_apply_at_the_next_preflight(admin_api, tagged_agent):
    eng, qa = tagged_agent("eng"), tagged_agent("qa")
    created = create_profile(admin_api, name="p", tags=["eng"], client_mode="LOCKDOWN")
    assert (answer(eng)["client_mode"], answer(qa)["client_mode"]) == ("LOCKDOWN", "MONITOR")
    patch_profile(admin_api, created["id"], tags=["qa"])
    assert (answer(eng)["client_mode"], answer(qa)["client_mode"]) == ("MONITOR", "LOCKDOWN")
    patch_profile(admin_api, created["id"], tags=[], machine_ids=[eng.machine_id])
    assert (answer(eng)["client_mode"], answer(qa)["client_mode"]) == ("LOCKDOWN", "MONITOR")


# --- validation -----------------------------------------------------------------------------------

# (payload without a name, expected status, the field named in "fields" or None)
INVALID = [
    pytest.param({"client_mod": "LOCKDOWN"}, 400, "client_mod", id="unknown-key"),
    pytest.param({"is_default": True}, 400, "is_default", id="is_default-not-writable"),
    pytest.param({"hosts": []}, 400, "hosts", id="unknown-key-hosts"),
    pytest.param({"batch_size": "many"}, 400, "batch_size", id="batch_size-text"),
    pytest.param({"batch_size": True}, 400, "batch_size", id="batch_size-bool"),
    pytest.param({"batch_size": 1.5}, 400, "batch_size", id="batch_size-fraction"),
    pytest.param({"full_sync_interval": []}, 400, "full_sync_interval", id="interval-list"),
    pytest.param({"enable_bundles": "maybe"}, 400, "enable_bundles", id="bool-text"),
    pytest.param({"enable_bundles": []}, 400, "enable_bundles", id="bool-list"),
    pytest.param({"clean_sync_on_drift": {}}, 400, "clean_sync_on_drift", id="bool-object"),
    pytest.param({"priority": "high"}, 400, "priority", id="priority-text"),
    pytest.param({"priority": None}, 400, "priority", id="priority-null"),
    pytest.param({"description": None}, 400, "description", id="description-null"),
    pytest.param({"description": {"a": 1}}, 400, "description", id="description-object"),
    pytest.param({"blocked_path_regex": ["^/x"]}, 400, "blocked_path_regex", id="regex-list"),
    pytest.param({"event_detail_text": True}, 400, "event_detail_text", id="text-bool"),
    pytest.param({"client_mode": 2}, 400, "client_mode", id="mode-number"),
    pytest.param({"tags": "eng"}, 400, "tags", id="tags-string"),
    pytest.param({"tags": [5]}, 400, "tags", id="tags-number"),
    pytest.param({"tags": None}, 400, "tags", id="tags-null"),
    pytest.param({"machine_ids": "HOST-1"}, 400, "machine_ids", id="machine_ids-string"),
    pytest.param({"machine_ids": [5]}, 400, "machine_ids", id="machine_ids-number"),
    pytest.param({"batch_size": 0}, 400, "batch_size", id="batch_size-0"),
    pytest.param({"batch_size": 1001}, 400, "batch_size", id="batch_size-1001"),
    pytest.param({"batch_size": -1}, 400, "batch_size", id="batch_size-negative"),
    pytest.param({"full_sync_interval": 59}, 400, "full_sync_interval", id="interval-59"),
    pytest.param({"full_sync_interval": 604801}, 400, "full_sync_interval", id="interval-8d"),
    pytest.param({"allowed_path_regex": "("}, 400, "allowed_path_regex", id="regex-paren"),
    pytest.param({"blocked_path_regex": "[a-"}, 400, "blocked_path_regex", id="regex-bracket"),
    pytest.param({"blocked_path_regex": "*x"}, 400, "blocked_path_regex", id="regex-repeat"),
    pytest.param(
        {"removable_media_remount_flags": ["RDONLY"]},
        400,
        "removable_media_remount_flags",
        id="flags-upper",
    ),
    pytest.param(
        {"removable_media_remount_flags": ["no exec"]},
        400,
        "removable_media_remount_flags",
        id="flags-space",
    ),
    pytest.param(
        {"removable_media_remount_flags": ["-rdonly"]},
        400,
        "removable_media_remount_flags",
        id="flags-dash",
    ),
    pytest.param(
        {"removable_media_remount_flags": [""]},
        400,
        "removable_media_remount_flags",
        id="flags-empty",
    ),
    pytest.param(
        {"removable_media_remount_flags": "rdonly"},
        400,
        "removable_media_remount_flags",
        id="flags-string",
    ),
    pytest.param(
        {"removable_media_remount_flags": ["rdonly", 5]},
        400,
        "removable_media_remount_flags",
        id="flags-number",
    ),
    pytest.param(
        {"removable_media_remount_flags": [f"f{n}" for n in range(17)]},
        400,
        "removable_media_remount_flags",
        id="flags-17",
    ),
    pytest.param(
        {"encrypted_removable_media_remount_flags": ["nosuid", "No-Exec"]},
        400,
        "encrypted_removable_media_remount_flags",
        id="encrypted-flags",
    ),
    pytest.param({"client_mode": "lockdown"}, 400, "client_mode", id="mode-lowercase"),
    pytest.param({"client_mode": "BLOCK"}, 400, "client_mode", id="mode-unknown"),
    pytest.param(
        {"removable_media_action": "Block"}, 400, "removable_media_action", id="media-case"
    ),
    pytest.param(
        {"encrypted_removable_media_action": "eject"},
        400,
        "encrypted_removable_media_action",
        id="encrypted-media-unknown",
    ),
    pytest.param(
        {"override_file_access_action": "audit_only"},
        400,
        "override_file_access_action",
        id="file-access-case",
    ),
    pytest.param({"event_detail_text": "x" * 49}, 400, "event_detail_text", id="text-49"),
    pytest.param({"description": "a\x00b"}, 400, "description", id="nul-description"),
    pytest.param({"allowed_path_regex": "^/a\x00"}, 400, "allowed_path_regex", id="nul-regex"),
    pytest.param({"event_detail_url": "https://x/\x00"}, 400, "event_detail_url", id="nul-url"),
    pytest.param({"event_detail_text": "Ask\x00IT"}, 400, "event_detail_text", id="nul-text"),
    pytest.param({"tags": ["e\x00ng"]}, 400, "tags", id="nul-tag"),
    pytest.param({"machine_ids": ["HOST-1\x00"]}, 400, "machine_ids", id="nul-machine-id"),
    pytest.param(
        {"removable_media_remount_flags": ["rd\x00only"]},
        400,
        "removable_media_remount_flags",
        id="nul-flag",
    ),
    pytest.param({"machine_ids": [UNKNOWN_MACHINE]}, 400, "machine_ids", id="unknown-machine"),
    pytest.param(
        {"machine_ids": ["HOST-1", UNKNOWN_MACHINE]}, 400, "machine_ids", id="one-unknown-machine"
    ),
    pytest.param({"tags": ["bad tag"]}, 400, "tags", id="tag-space"),
    pytest.param({"tags": ["-eng"]}, 400, "tags", id="tag-dash-first"),
    pytest.param({"tags": ["x" * 65]}, 400, "tags", id="tag-too-long"),
    pytest.param({"tags": [""]}, 400, "tags", id="tag-empty"),
    pytest.param({"tags": ["ok", "ünicode"]}, 400, "tags", id="tag-non-ascii"),
]

# "" is not null: it would hide every lower layer; numbers are not text.
EMPTY_ENUMS = [
    pytest.param({name: ""}, 400, name, id=f"empty-{name}")
    for name in (
        "client_mode",
        "removable_media_action",
        "encrypted_removable_media_action",
        "override_file_access_action",
    )
]
NUMBERS_FOR_STRINGS = [
    pytest.param({name: 5}, 400, name, id=f"number-{name}")
    for name in (
        "description",
        "allowed_path_regex",
        "blocked_path_regex",
        "event_detail_url",
        "event_detail_text",
    )
]


@pytest.fixture
def world(admin_api, make_agent):
    """A known host, and a profile for tag 'eng' to compare against."""
    make_agent(machine_id="HOST-1").sync()
    existing = create_profile(
        admin_api, name="existing", tags=["eng"], client_mode="LOCKDOWN", batch_size=10
    )
    return existing


def _check_refused(response, status, field) -> None:
    body = assert_error(response, status)
    if field is not None:
        assert field in body["fields"], body


@pytest.mark.parametrize(("payload", "status", "field"), INVALID)
def test_invalid_create_is_refused_and_stores_nothing(admin_api, world, payload, status, field):
    before = snapshot()
    response = admin_api.post(PROFILES, {"name": "new", **payload}, format="json")
    _check_refused(response, status, field)
    assert snapshot() == before
    assert not ConfigurationProfile.objects.filter(name="new").exists()


@pytest.mark.parametrize(("payload", "status", "field"), INVALID)
def test_invalid_patch_leaves_the_profile_as_it_was(admin_api, world, payload, status, field):
    before = snapshot()
    response = admin_api.patch(profile_url(world["id"]), payload, format="json")
    _check_refused(response, status, field)
    assert snapshot() == before
    assert admin_api.get(profile_url(world["id"])).json() == world


@pytest.mark.parametrize(("payload", "status", "field"), EMPTY_ENUMS)
def test_empty_enum_values_are_refused(admin_api, world, payload, status, field):
    before = snapshot()
    response = admin_api.post(PROFILES, {"name": "new", **payload}, format="json")
    _check_refused(response, status, field)
    assert snapshot() == before


@pytest.mark.parametrize(("payload", "status", "field"), NUMBERS_FOR_STRINGS)
def test_numbers_for_text_settings_are_refused(admin_api, world, payload, status, field):
    before = snapshot()
    response = admin_api.post(PROFILES, {"name": "new", **payload}, format="json")
    _check_refused(response, status, field)
    assert snapshot() == before


def test_a_number_as_name_is_refused(admin_api, world):
    before = snapshot()
    _check_refused(admin_api.post(PROFILES, {"name": 5}, format="json"), 400, "name")
    assert snapshot() == before


@pytest.mark.parametrize(
    "name", [pytest.param("", id="empty"), pytest.param("   ", id="blank"), None, "x" * 65, "a\x00"]
)
def test_invalid_name_is_refused(admin_api, world, name):
    before = snapshot()
    _check_refused(admin_api.post(PROFILES, {"name": name}, format="json"), 400, "name")
    _check_refused(
        admin_api.patch(profile_url(world["id"]), {"name": name}, format="json"), 400, "name"
    )
    assert snapshot() == before


def test_missing_name_is_refused(admin_api, world):
    before = snapshot()
    _check_refused(admin_api.post(PROFILES, {"batch_size": 5}, format="json"), 400, "name")
    assert snapshot() == before


@pytest.mark.parametrize("body", [[], [{"name": "new"}], "new", 5, True])
def test_non_object_body_is_refused(admin_api, world, body):
    before = snapshot()
    assert_error(admin_api.post(PROFILES, body, format="json"), 400)
    assert_error(admin_api.patch(profile_url(world["id"]), body, format="json"), 400)
    assert snapshot() == before


def test_malformed_json_is_refused(admin_api, world):
    before = snapshot()
    response = admin_api.generic(
        "POST", PROFILES, data=b'{"name": "new",', content_type="application/json"
    )
    assert_error(response, 400)
    assert snapshot() == before


@pytest.mark.parametrize("name", ["existing", "default"])
def test_duplicate_name_is_409(admin_api, world, name):
    before = snapshot()
    body = assert_error(
        admin_api.post(PROFILES, {"name": name, "tags": ["qa"], "batch_size": 3}, format="json"),
        409,
    )
    assert body["error"] == "profile_exists"
    assert snapshot() == before
    assert ConfigurationProfile.objects.filter(name=name).count() == 1


def test_rename_to_an_existing_name_is_409(admin_api, world):
    other = create_profile(admin_api, name="other", tags=["qa"], batch_size=3)
    before = snapshot()
    for name in ("existing", "default"):
        response = admin_api.patch(
            profile_url(other["id"]),
            {"name": name, "batch_size": 4, "tags": ["ops"]},
            format="json",
        )
        assert assert_error(response, 409)["error"] == "profile_exists"
    assert snapshot() == before
    assert admin_api.get(profile_url(other["id"])).json() == other
    # Its own name is no conflict.
    assert patch_profile(admin_api, other["id"], name="other", batch_size=4)["batch_size"] == 4


def test_failed_create_with_unknown_machine_creates_no_tags(admin_api, world):
    before = snapshot()
    response = admin_api.post(
        PROFILES,
        {"name": "new", "tags": ["brand-new"], "machine_ids": ["HOST-1", UNKNOWN_MACHINE]},
        format="json",
    )
    body = assert_error(response, 400)
    assert UNKNOWN_MACHINE in body["detail"] and "machine_ids" in body["fields"]
    assert snapshot() == before
    assert not Tag.objects.filter(name="brand-new").exists()


def test_failed_patch_with_unknown_machine_keeps_tags_and_settings(admin_api, world, make_agent):
    make_agent(machine_id="HOST-2").sync()
    patch_profile(admin_api, world["id"], machine_ids=["HOST-1"])
    current = admin_api.get(profile_url(world["id"])).json()
    before = snapshot()
    response = admin_api.patch(
        profile_url(world["id"]),
        {
            "batch_size": 99,
            "name": "renamed",
            "tags": ["qa", "brand-new"],
            "machine_ids": ["HOST-2", UNKNOWN_MACHINE],
        },
        format="json",
    )
    body = assert_error(response, 400)
    assert "machine_ids" in body["fields"]
    assert snapshot() == before
    assert admin_api.get(profile_url(world["id"])).json() == current
    stored = ConfigurationProfile.objects.get(pk=world["id"])
    assert sorted(stored.tags.values_list("name", flat=True)) == ["eng"]
    assert list(stored.hosts.values_list("machine_id", flat=True)) == ["HOST-1"]
    assert (stored.name, stored.batch_size) == ("existing", 10)
    assert not Tag.objects.filter(name="brand-new").exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"batch_size": 20, "blocked_path_regex": "("},
        {"batch_size": 20, "removable_media_remount_flags": ["BAD"]},
        {"batch_size": 20, "tags": ["bad tag"]},
        {"tags": ["qa"], "client_mode": "nope"},
        {"tags": ["qa"], "event_detail_text": "x" * 49},
    ],
)
def test_failed_patch_applies_none_of_its_changes(admin_api, world, payload):
    before = snapshot()
    assert_error(admin_api.patch(profile_url(world["id"]), payload, format="json"), 400)
    assert snapshot() == before
    stored = ConfigurationProfile.objects.get(pk=world["id"])
    assert stored.batch_size == 10
    assert sorted(stored.tags.values_list("name", flat=True)) == ["eng"]


def test_refused_writes_do_not_reach_agents(admin_api, tagged_agent):
    agent = tagged_agent("eng")
    existing = create_profile(admin_api, name="eng", tags=["eng"], batch_size=10)
    for payload in ({"batch_size": 0}, {"batch_size": 20, "blocked_path_regex": "("}):
        assert_error(admin_api.patch(profile_url(existing["id"]), payload, format="json"), 400)
    assert_error(
        admin_api.post(
            PROFILES,
            {"name": "more", "tags": ["eng"], "client_mode": "LOCKDOWN", "machine_ids": ["X"]},
            format="json",
        ),
        400,
    )
    got = answer(agent)
    assert (got["batch_size"], got["client_mode"]) == (10, "MONITOR")
    assert "blocked_path_regex" not in got


# --- roles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["analyst_api", "auditor_api"])
def test_readers_can_read_but_not_write(request, admin_api, world, role):
    api = request.getfixturevalue(role)
    listed = api.get(PROFILES)
    assert listed.status_code == 200, listed.content
    assert {p["name"] for p in listed.json()["results"]} == {"default", "existing"}
    detail = api.get(profile_url(world["id"]))
    assert detail.status_code == 200 and detail.json() == world

    before = snapshot()
    default_pk = default_profile().pk
    for response in (
        api.post(PROFILES, {"name": "mine", "batch_size": 5}, format="json"),
        api.patch(profile_url(world["id"]), {"batch_size": 5}, format="json"),
        api.patch(profile_url(default_pk), {"client_mode": "LOCKDOWN"}, format="json"),
        api.delete(profile_url(world["id"])),
    ):
        assert_error(response, 403)
    assert snapshot() == before


def test_user_without_role_gets_403(norole_api, world):
    before = snapshot()
    for response in (
        norole_api.get(PROFILES),
        norole_api.get(profile_url(world["id"])),
        norole_api.post(PROFILES, {"name": "mine"}, format="json"),
        norole_api.patch(profile_url(world["id"]), {"batch_size": 5}, format="json"),
        norole_api.delete(profile_url(world["id"])),
    ):
        assert_error(response, 403)
    assert snapshot() == before


def test_anonymous_is_refused(world):
    api = APIClient()
    before = snapshot()
    for response in (
        api.get(PROFILES),
        api.get(profile_url(world["id"])),
        api.post(PROFILES, {"name": "mine"}, format="json"),
        api.patch(profile_url(world["id"]), {"batch_size": 5}, format="json"),
        api.delete(profile_url(world["id"])),
    ):
        assert response.status_code in (401, 403), response.content
        assert_error(response, response.status_code)
    assert snapshot() == before


# --- filters --------------------------------------------------------------------------------------


def test_list_filters(admin_api, tagged_agent, django_assert_max_num_queries):
    agent = tagged_agent("eng")
    create_profile(admin_api, name="eng-lockdown", tags=["eng"], client_mode="LOCKDOWN")
    create_profile(admin_api, name="one-mac", machine_ids=[agent.machine_id], batch_size=10)
    create_profile(admin_api, name="ops", tags=["ops"])

    def names(**params):
        response = admin_api.get(PROFILES, params)
        assert response.status_code == 200, response.content
        return [p["name"] for p in response.json()["results"]]

    assert names(tag="ENG") == ["eng-lockdown"]
    assert names(machine_id=agent.machine_id) == ["one-mac"]
    assert names(is_default="true") == ["default"]
    assert sorted(names(is_default="false")) == ["eng-lockdown", "one-mac", "ops"]
    assert names(name="ops") == ["ops"]
    assert sorted(names(name_contains="O")) == ["eng-lockdown", "one-mac", "ops"]
    assert names(machine_id=UNKNOWN_MACHINE) == []
    with django_assert_max_num_queries(7):
        assert len(names(page_size=100)) == 4
    assert_error(admin_api.get(PROFILES, {"page": "7"}), 404)
