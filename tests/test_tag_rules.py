"""Tag rules: automatic tags computed from the facts hosts report.

Condition semantics (each operator, group membership, version comparisons), validation through
the service and the API (nothing stored on refusal), re-evaluation at each preflight with the
rule download of the same sync following it, the fleet-wide fan-out in batches, the
independence of assigned and automatic memberships, and who may use /api/v1/tag-rules/ and
/api/v1/fanouts/.
"""

import pytest
from rest_framework.test import APIClient

from hosts import services as host_services
from hosts.errors import InvalidTagRule, TagRuleExists
from hosts.fanout import fanout_execute
from hosts.models import FanOut, FanOutKind, FanOutState, Host, HostTag, Revision, Tag, TagRule
from hosts.services import (
    host_set_tags,
    tag_rule_create,
    tag_rule_delete,
    tag_rule_update,
    tag_rules_apply_fleet,
)
from hosts.tagging import Condition, auto_tag_ids, parse_version, validate_condition
from rules.services import RuleInput, rule_create
from tests.agent import held
from tests.api import assert_error

TAG_RULES = "/api/v1/tag-rules/"
FANOUTS = "/api/v1/fanouts/"
HOSTS = "/api/v1/hosts/"
SHA_A = "a" * 64
SHA_B = "b" * 64


def fleet_revision() -> int:
    return Revision.objects.get(pk=1).value


def tag_rule_url(rule_id) -> str:
    return f"{TAG_RULES}{rule_id}/"


def host_url(machine_id: str) -> str:
    return f"{HOSTS}{machine_id}/"


def spans(machine_id: str, source: str) -> set[str]:
    """Names of the tags the host is in now through `source` ("manual" or "auto")."""
    return set(
        HostTag.objects.filter(
            host__machine_id=machine_id, rev_to__isnull=True, source=source
        ).values_list("tag__name", flat=True)
    )


def condition(fact: str, operator: str, value: str) -> Condition:
    return Condition.of(TagRule(tag_id=7, fact=fact, operator=operator, value=value))


def stored_state() -> tuple:
    """Everything a tag-rule write could change."""
    return (
        sorted(TagRule.objects.values_list("pk", "tag__name", "fact", "operator", "value")),
        sorted(Tag.objects.values_list("name", flat=True)),
        FanOut.objects.count(),
        fleet_revision(),
        sorted(HostTag.objects.values_list("host_id", "tag_id", "source", "rev_from", "rev_to")),
    )


def post_tag_rule(api, **fields):
    payload = {"tag": "admins", "fact": "primary_user_groups", "operator": "contains"}
    payload["value"] = "admin"
    payload.update(fields)
    return api.post(TAG_RULES, payload, format="json")


# --- condition semantics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fact", "operator", "value", "fact_value", "expected"),
    [
        ("hostname", "equals", "build-1.example.com", "build-1.example.com", True),
        ("hostname", "equals", "build-1.example.com", "BUILD-1.example.com", False),
        ("hostname", "equals", "build-1", "build-1.example.com", False),
        ("hostname", "contains", "build", "ci-build-3.example.com", True),
        ("hostname", "contains", "build", "ci-bld-3.example.com", False),
        ("serial_number", "starts_with", "C02", "C02XYZ123", True),
        ("serial_number", "starts_with", "C02", "XC02YZ123", False),
        ("model_identifier", "matches", r"^Mac(Book)?Pro\d+,\d+$", "MacBookPro18,3", True),
        ("model_identifier", "matches", r"^Mac(Book)?Pro\d+,\d+$", "MacBookAir10,1", False),
        ("hostname", "matches", r"\d", "mac7.example.com", True),  # search, not fullmatch
        ("hostname", "matches", r"^lab-", "my-lab-1", False),
        ("primary_user", "equals", "alice", "alice", True),
        ("primary_user", "contains", "lic", "alice", True),
        ("enrollment", "equals", "kiosks", "kiosks", True),
        ("enrollment", "equals", "kiosks", "kiosks-2", False),
        # An empty fact never matches, even a pattern that matches the empty string.
        ("hostname", "matches", ".*", "", False),
        ("hostname", "contains", "a", None, False),
    ],
)
def test_text_operators(fact, operator, value, fact_value, expected):
    assert condition(fact, operator, value).matches({fact: fact_value}) is expected


@pytest.mark.parametrize(
    ("operator", "value", "reported", "expected"),
    [
        ("version_below", "14.6.1", "14.6", True),
        ("version_below", "14.6.1", "14.6.0", True),
        ("version_below", "14.6.1", "14.6.1", False),
        ("version_below", "14.6.1", "14.6.2", False),
        ("version_below", "14.6.1", "14.10", False),  # numeric, not lexical
        ("version_below", "14.6.1", "13.9.9", True),
        ("version_below", "14.6.1", "9.0", True),
        ("version_at_least", "14.6.1", "14.6.1", True),
        ("version_at_least", "14.6.1", "14.6.1.0", True),
        ("version_at_least", "14.6.1", "15", True),
        ("version_at_least", "14.6.1", "14.6", False),
        ("version_at_least", "14", "14.0", True),  # 14.0 == 14
        ("version_below", "14", "14.0.0", False),
        ("version_below", "14.0", "13.7", True),
        ("version_at_least", "2025.11", "2025.11", True),
        ("version_at_least", "2025.11", "2025.11.1", True),
        ("version_at_least", "2025.11", "2025.9", False),  # 9 < 11
        ("version_at_least", "2025.11", "2025.2", False),
        ("version_at_least", "2025.11", "2026.1", True),
        ("version_at_least", "2025.11", "2025.11 (build 12)", True),
        ("version_below", "2025.11", "2025.10", True),
        ("version_below", "2025.11", "2024.12", True),
        # A version that does not parse is never below nor at least anything.
        ("version_below", "2025.11", "unknown", False),
        ("version_at_least", "2025.11", "unknown", False),
        ("version_below", "2025.11", "v2025.1", False),
        ("version_at_least", "1", "beta", False),
        ("version_below", "2025.11", "", False),
        ("version_at_least", "2025.11", "", False),
    ],
)
@pytest.mark.parametrize("fact", ["os_version", "santa_version"])
def test_version_operators(fact, operator, value, reported, expected):
    assert condition(fact, operator, value).matches({fact: reported}) is expected


def test_parse_version():
    assert parse_version("2025.11 (build 12)") == (2025, 11)
    assert parse_version("14.6.1") == (14, 6, 1)
    assert parse_version("14.0.0") == parse_version("14") == (14,)
    assert parse_version("unknown") is None
    assert parse_version("") is None


@pytest.mark.parametrize(
    ("operator", "value", "groups", "expected"),
    [
        # "contains" is membership of the list of groups, not a substring of a group name.
        ("contains", "admin", ["staff", "admin"], True),
        ("contains", "admin", ["administrators", "sysadmin"], False),
        ("contains", "admin", ["Admin"], False),
        ("contains", "admin", [], False),
        ("contains", "admin", None, False),
        ("equals", "staff", ["everyone", "staff"], True),
        ("equals", "staff", ["staffers"], False),
        ("starts_with", "eng-", ["staff", "eng-ios"], True),
        ("starts_with", "eng-", ["staff", "my-eng-ios"], False),
        ("matches", r"^eng-(ios|mac)$", ["staff", "eng-mac"], True),
        ("matches", r"^eng-(ios|mac)$", ["eng-web"], False),
        ("contains", "admin", [7, "admin"], True),  # non-strings are ignored, not fatal
        ("equals", "7", [7], False),
    ],
)
def test_primary_user_groups(operator, value, groups, expected):
    cond = condition("primary_user_groups", operator, value)
    assert cond.matches({"primary_user_groups": groups}) is expected


def test_several_conditions_give_the_union_of_their_tags():
    conds = [
        Condition.of(TagRule(tag_id=1, fact="hostname", operator="starts_with", value="lab-")),
        Condition.of(TagRule(tag_id=2, fact="primary_user", operator="equals", value="bob")),
        Condition.of(TagRule(tag_id=2, fact="primary_user", operator="equals", value="eve")),
    ]
    assert auto_tag_ids(conds, {"hostname": "lab-1", "primary_user": "eve"}) == {1, 2}
    assert auto_tag_ids(conds, {"hostname": "lab-1", "primary_user": "alice"}) == {1}
    assert auto_tag_ids(conds, {"hostname": "desk-1", "primary_user": "bob"}) == {2}
    assert auto_tag_ids(conds, {"hostname": "desk-1", "primary_user": "alice"}) == set()


# --- validation -----------------------------------------------------------------------------------

INVALID_CONDITIONS = [
    pytest.param("colour", "equals", "blue", id="unknown-fact"),
    pytest.param("hostname", "like", "mac", id="unknown-operator"),
    pytest.param("hostname", "matches", "(unclosed", id="bad-regex"),
    pytest.param("hostname", "matches", "*mac", id="bad-regex-repeat"),
    pytest.param("os_version", "version_below", "14.x", id="bad-version"),
    pytest.param("santa_version", "version_at_least", "2025.", id="bad-version-dot"),
    pytest.param("santa_version", "version_at_least", "latest", id="bad-version-word"),
    pytest.param("hostname", "equals", "", id="empty-value"),
    pytest.param("hostname", "equals", "mac\x00.example.com", id="nul-value"),
    pytest.param("hostname", "equals", "m" * 256, id="value-too-long"),
    pytest.param("hostname", "version_below", "14", id="version-on-hostname"),
    pytest.param("primary_user_groups", "version_at_least", "1", id="version-on-groups"),
    pytest.param("enrollment", "version_below", "2", id="version-on-enrollment"),
]


@pytest.mark.parametrize(("fact", "operator", "value"), INVALID_CONDITIONS)
def test_service_refuses_invalid_conditions_and_stores_nothing(db, fact, operator, value):
    before = stored_state()
    with pytest.raises(InvalidTagRule) as raised:
        tag_rule_create(tag_name="lab", fact=fact, operator=operator, value=value)
    assert raised.value.status == 400 and raised.value.detail
    assert stored_state() == before
    assert not Tag.objects.filter(name="lab").exists()


@pytest.mark.parametrize(("fact", "operator", "value"), INVALID_CONDITIONS)
def test_api_refuses_invalid_conditions_and_stores_nothing(analyst_api, fact, operator, value):
    before = stored_state()
    response = post_tag_rule(analyst_api, tag="lab", fact=fact, operator=operator, value=value)
    assert_error(response, 400)
    assert stored_state() == before


@pytest.mark.parametrize(
    "payload",
    [
        {"tag": "Not A Tag!", "fact": "hostname", "operator": "equals", "value": "x"},
        {"fact": "hostname", "operator": "equals", "value": "x"},
        {"tag": "lab", "fact": "hostname", "operator": "equals"},
        {"tag": "lab", "fact": "hostname", "operator": "equals", "value": 5},
        {"tag": "lab", "fact": "hostname", "operator": "equals", "value": "x", "extra": 1},
    ],
)
def test_api_refuses_malformed_bodies(analyst_api, payload):
    before = stored_state()
    assert_error(analyst_api.post(TAG_RULES, payload, format="json"), 400)
    assert stored_state() == before


def test_valid_conditions_pass_validation():
    validate_condition("os_version", "version_below", "14.6.1")
    validate_condition("santa_version", "version_at_least", "2025.11")
    validate_condition("hostname", "matches", r"^lab-\d+$")
    validate_condition("primary_user_groups", "contains", "admin")


@pytest.mark.parametrize("operator", ["version_below", "version_at_least"])
def test_version_operator_on_os_build_is_refused(db, operator):
    with pytest.raises(InvalidTagRule):
        validate_condition("os_build", operator, "24")


def test_invalid_update_changes_nothing(db):
    rule = tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    before = stored_state()
    with pytest.raises(InvalidTagRule):
        tag_rule_update(rule=rule, operator="version_below")  # on hostname
    with pytest.raises(InvalidTagRule):
        tag_rule_update(rule=rule, operator="matches", value="[")
    assert stored_state() == before


def test_api_invalid_patch_changes_nothing(analyst_api):
    created = post_tag_rule(analyst_api, tag="lab", fact="hostname", operator="starts_with")
    rule_id = created.json()["id"]
    before = stored_state()
    for payload in (
        {"operator": "version_below"},
        {"operator": "matches", "value": "("},
        {"value": ""},
        {"fact": "colour"},
        {"tag": "Bad Tag"},
    ):
        assert_error(analyst_api.patch(tag_rule_url(rule_id), payload, format="json"), 400)
    assert stored_state() == before


# --- duplicates -----------------------------------------------------------------------------------


def test_duplicate_tag_rule_is_409(analyst_api):
    first = post_tag_rule(analyst_api)
    assert first.status_code == 201, first.content
    before = stored_state()
    body = assert_error(post_tag_rule(analyst_api, tag="Admins"), 409)
    assert body["error"] == "tag_rule_exists"
    assert stored_state() == before
    # The same condition for another tag, or another value for the same tag, is fine.
    assert post_tag_rule(analyst_api, tag="wheel").status_code == 201
    assert post_tag_rule(analyst_api, value="wheel").status_code == 201
    assert TagRule.objects.count() == 3


def test_duplicate_through_update_is_409(analyst_api):
    post_tag_rule(analyst_api)
    other = post_tag_rule(analyst_api, value="wheel").json()
    before = stored_state()
    response = analyst_api.patch(tag_rule_url(other["id"]), {"value": "admin"}, format="json")
    assert assert_error(response, 409)["error"] == "tag_rule_exists"
    assert stored_state() == before
    with pytest.raises(TagRuleExists):
        tag_rule_update(rule=TagRule.objects.get(pk=other["id"]), value="admin")
    assert stored_state() == before


# --- the API --------------------------------------------------------------------------------------


def test_create_list_change_delete_through_the_api(analyst_api):
    before = fleet_revision()
    response = post_tag_rule(analyst_api, tag="Admins", description="local admins")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["tag"] == "admins"
    assert (body["fact"], body["operator"], body["value"]) == (
        "primary_user_groups",
        "contains",
        "admin",
    )
    assert body["description"] == "local admins"
    assert fleet_revision() == before + 1
    fanout = FanOut.objects.get()
    assert (fanout.kind, fanout.state, fanout.revision) == ("tag_rules", "queued", before + 1)

    listed = analyst_api.get(TAG_RULES).json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]
    assert analyst_api.get(TAG_RULES, {"tag": "admins"}).json()["count"] == 1
    assert analyst_api.get(TAG_RULES, {"tag": "other"}).json()["count"] == 0

    changed = analyst_api.patch(
        tag_rule_url(body["id"]), {"value": "wheel", "tag": "Wheel"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["tag"], changed.json()["value"]) == ("wheel", "wheel")
    rule = TagRule.objects.get()
    assert (rule.tag.name, rule.value, rule.fact) == ("wheel", "wheel", "primary_user_groups")
    assert FanOut.objects.filter(kind=FanOutKind.TAG_RULES).count() == 2

    assert analyst_api.delete(tag_rule_url(body["id"])).status_code == 204
    assert not TagRule.objects.exists()
    assert FanOut.objects.filter(kind=FanOutKind.TAG_RULES).count() == 3
    assert_error(analyst_api.get(tag_rule_url(body["id"])), 404)


# --- preflight re-evaluation ----------------------------------------------------------------------


def test_preflight_tags_and_untags_with_the_rules_of_the_same_sync(make_agent, analyst_api):
    agent = make_agent(primary_user_groups=("staff",))
    agent.sync()
    tag_rule_create(
        tag_name="admins", fact="primary_user_groups", operator="contains", value="admin"
    )
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["admins"]))
    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST"))
    agent.sync()
    assert agent.rules == {("BINARY", SHA_B): held("ALLOWLIST")}
    assert spans(agent.machine_id, "auto") == set()

    agent.facts["primary_user_groups"] = ["staff", "admin"]
    result = agent.sync()
    assert result.sync_type == "NORMAL"
    assert spans(agent.machine_id, "auto") == {"admins"}
    assert agent.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST"),
        ("BINARY", SHA_B): held("ALLOWLIST"),
    }
    host = analyst_api.get(host_url(agent.machine_id)).json()
    assert host["tags"] == ["admins"] and host["automatic_tags"] == ["admins"]

    agent.facts["primary_user_groups"] = ["staff", "administrators"]  # not "admin" itself
    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 1
    assert spans(agent.machine_id, "auto") == set()
    assert agent.rules == {("BINARY", SHA_B): held("ALLOWLIST")}
    host = analyst_api.get(host_url(agent.machine_id)).json()
    assert host["tags"] == [] and host["automatic_tags"] == []

    # Nothing changed: the preflight takes no revision.
    before = fleet_revision()
    agent.sync()
    assert fleet_revision() == before


def test_version_rule_follows_upgrades(make_agent):
    agent = make_agent(santa_version="2025.9")
    agent.sync()
    tag_rule_create(
        tag_name="old-santa", fact="santa_version", operator="version_below", value="2025.11"
    )
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["old-santa"]))
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}
    agent.facts["santa_version"] = "2025.11.2"
    agent.sync()
    assert agent.rules == {}
    assert spans(agent.machine_id, "auto") == set()


def test_deleting_the_tag_rule_untags_once_the_fanout_runs(make_agent):
    agent = make_agent(primary_user_groups=("admin",))
    rule = tag_rule_create(
        tag_name="admins", fact="primary_user_groups", operator="contains", value="admin"
    )
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["admins"]))
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}
    assert spans(agent.machine_id, "auto") == {"admins"}

    tag_rule_delete(rule=rule)
    fanout = FanOut.objects.filter(kind=FanOutKind.TAG_RULES).latest("id")
    assert fanout.state == FanOutState.QUEUED  # on_commit did not run in this test
    assert spans(agent.machine_id, "auto") == {"admins"}  # not yet: the fan-out re-tags

    before = fleet_revision()
    assert fanout_execute(fanout.pk) == FanOutState.DONE
    fanout.refresh_from_db()
    assert fanout.state == FanOutState.DONE and fanout.attempts == 1
    assert fanout.result == {"hosts_retagged": 1}
    assert fanout.finished_at is not None
    assert spans(agent.machine_id, "auto") == set()
    assert fleet_revision() == before + 1

    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 1
    assert agent.rules == {}


def test_deleting_through_the_api_runs_the_fanout_on_commit(
    make_agent, analyst_api, django_capture_on_commit_callbacks
):
    agent = make_agent(primary_user_groups=("admin",))
    created = post_tag_rule(analyst_api)
    assert created.status_code == 201
    agent.sync()
    assert spans(agent.machine_id, "auto") == {"admins"}

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = analyst_api.delete(tag_rule_url(created.json()["id"]))
    assert response.status_code == 204
    assert len(callbacks) == 1
    latest = FanOut.objects.latest("id")
    assert latest.state == FanOutState.DONE and latest.result == {"hosts_retagged": 1}
    assert spans(agent.machine_id, "auto") == set()
    assert analyst_api.get(host_url(agent.machine_id)).json()["automatic_tags"] == []


def test_creating_through_the_api_tags_existing_hosts_on_commit(
    make_agent, analyst_api, django_capture_on_commit_callbacks
):
    admin = make_agent(primary_user_groups=("staff", "admin"))
    staff = make_agent(primary_user_groups=("staff",))
    admin.sync()
    staff.sync()
    with django_capture_on_commit_callbacks(execute=True):
        assert post_tag_rule(analyst_api).status_code == 201
    assert spans(admin.machine_id, "auto") == {"admins"}  # before its next preflight
    assert spans(staff.machine_id, "auto") == set()
    fanout = analyst_api.get(FANOUTS).json()["results"][0]
    assert (fanout["kind"], fanout["state"]) == ("tag_rules", "done")
    assert fanout["result"] == {"hosts_retagged": 1}

    # Changing the condition re-tags the fleet the same way.
    rule_id = TagRule.objects.get().pk
    with django_capture_on_commit_callbacks(execute=True):
        response = analyst_api.patch(tag_rule_url(rule_id), {"value": "staff"}, format="json")
    assert response.status_code == 200
    assert spans(admin.machine_id, "auto") == {"admins"}
    assert spans(staff.machine_id, "auto") == {"admins"}


# --- the fleet fan-out ----------------------------------------------------------------------------


def test_fleet_fanout_in_batches_is_idempotent(make_agent, settings, monkeypatch):
    settings.TAG_RULES_BATCH_SIZE = 2
    names = ["lab-1", "lab-2", "office-1", "lab-3", "office-2"]
    agents = [make_agent(hostname=f"{name}.example.com") for name in names]
    for agent in agents:
        agent.sync()
    tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["lab"]))
    assert HostTag.objects.filter(source="auto").count() == 0

    calls = []
    original = host_services.tag_rules_apply_batch

    def spy(**kwargs):
        result = original(**kwargs)
        calls.append((kwargs, result))
        return result

    monkeypatch.setattr(host_services, "tag_rules_apply_batch", spy)
    before = fleet_revision()
    assert tag_rules_apply_fleet() == {"hosts_retagged": 3}
    assert [kwargs["limit"] for kwargs, _ in calls] == [2, 2, 2]
    assert [changed for _, (_, changed) in calls] == [2, 1, 0]
    assert calls[-1][1][0] is None
    # One revision per batch that changed something, at most.
    assert fleet_revision() == before + 2
    for agent, name in zip(agents, names, strict=True):
        expected = {"lab"} if name.startswith("lab-") else set()
        assert spans(agent.machine_id, "auto") == expected, name

    snapshot = sorted(HostTag.objects.values_list("host_id", "tag_id", "source", "rev_from"))
    revision = fleet_revision()
    assert tag_rules_apply_fleet() == {"hosts_retagged": 0}
    assert fleet_revision() == revision
    assert sorted(HostTag.objects.values_list("host_id", "tag_id", "source", "rev_from")) == (
        snapshot
    )

    for agent, name in zip(agents, names, strict=True):
        agent.sync()
        expected = {("BINARY", SHA_A)} if name.startswith("lab-") else set()
        assert set(agent.rules) == expected, name


def test_fleet_fanout_removes_tags_of_hosts_that_no_longer_match(make_agent, settings):
    settings.TAG_RULES_BATCH_SIZE = 2
    agents = [make_agent(hostname=f"lab-{n}.example.com") for n in range(3)]
    for agent in agents:
        agent.sync()
    rule = tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    tag_rules_apply_fleet()
    assert all(spans(a.machine_id, "auto") == {"lab"} for a in agents)
    tag_rule_update(rule=rule, value="lab-1")
    assert tag_rules_apply_fleet() == {"hosts_retagged": 2}
    assert [spans(a.machine_id, "auto") for a in agents] == [set(), {"lab"}, set()]


# --- manual and automatic memberships -------------------------------------------------------------


def test_patching_tags_keeps_automatic_tags(make_agent, analyst_api):
    agent = make_agent(hostname="lab-1.example.com")
    tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["lab"]))
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}

    response = analyst_api.patch(host_url(agent.machine_id), {"tags": ["eng"]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["tags"] == ["eng", "lab"] and body["automatic_tags"] == ["lab"]
    response = analyst_api.patch(host_url(agent.machine_id), {"tags": []}, format="json")
    body = response.json()
    assert body["tags"] == ["lab"] and body["automatic_tags"] == ["lab"]
    assert spans(agent.machine_id, "auto") == {"lab"}
    assert spans(agent.machine_id, "manual") == set()
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}


def test_removing_the_tag_rule_keeps_an_assigned_tag_of_the_same_name(make_agent, analyst_api):
    agent = make_agent(hostname="lab-1.example.com")
    rule = tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=["lab"]))
    agent.sync()
    host_set_tags(host=Host.objects.get(machine_id=agent.machine_id), tag_names=["lab"])
    assert spans(agent.machine_id, "manual") == {"lab"}
    assert spans(agent.machine_id, "auto") == {"lab"}
    agent.sync()

    tag_rule_delete(rule=rule)
    fanout_execute(FanOut.objects.latest("id").pk)
    assert spans(agent.machine_id, "auto") == set()
    assert spans(agent.machine_id, "manual") == {"lab"}
    body = analyst_api.get(host_url(agent.machine_id)).json()
    assert body["tags"] == ["lab"] and body["automatic_tags"] == []
    result = agent.sync()
    assert result.rules_received == 0
    assert set(agent.rules) == {("BINARY", SHA_A)}

    # And the other way round: dropping the assigned tag now does withdraw the rule.
    host_set_tags(host=Host.objects.get(machine_id=agent.machine_id), tag_names=[])
    agent.sync()
    assert agent.rules == {}


def test_host_list_shows_union_and_automatic_tags(make_agent, make_enrollment, analyst_api):
    _, secret = make_enrollment(name="eng-laptops", tags=["eng"])
    agent = make_agent(secret=secret, primary_user_groups=("admin",))
    other = make_agent(primary_user_groups=("staff",))
    tag_rule_create(
        tag_name="admins", fact="primary_user_groups", operator="contains", value="admin"
    )
    tag_rule_create(tag_name="eng", fact="enrollment", operator="equals", value="eng-laptops")
    agent.sync()
    other.sync()
    body = analyst_api.get(HOSTS, {"page_size": 100}).json()
    by_id = {h["machine_id"]: h for h in body["results"]}
    assert by_id[agent.machine_id]["tags"] == ["admins", "eng"]
    assert by_id[agent.machine_id]["automatic_tags"] == ["admins", "eng"]
    assert by_id[other.machine_id]["tags"] == []
    assert by_id[other.machine_id]["automatic_tags"] == []
    assert spans(agent.machine_id, "manual") == {"eng"}  # from the enrollment
    assert analyst_api.get(HOSTS, {"tag": "admins"}).json()["count"] == 1


# --- permissions ----------------------------------------------------------------------------------


@pytest.fixture
def existing_rule(db):
    return tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="lab-")


def test_analyst_and_admin_have_full_crud(analyst_api, admin_api, existing_rule):
    for number, api in enumerate((analyst_api, admin_api)):
        created = post_tag_rule(api, value=f"group-{number}")
        assert created.status_code == 201, created.content
        url = tag_rule_url(created.json()["id"])
        assert api.get(TAG_RULES).status_code == 200
        assert api.get(url).status_code == 200
        assert api.patch(url, {"description": "x"}, format="json").status_code == 200
        assert TagRule.objects.get(pk=created.json()["id"]).description == "x"
        assert api.delete(url).status_code == 204
        assert not TagRule.objects.filter(pk=created.json()["id"]).exists()


def test_auditor_reads_but_cannot_write(auditor_api, existing_rule):
    url = tag_rule_url(existing_rule.pk)
    listed = auditor_api.get(TAG_RULES)
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert auditor_api.get(url).json()["value"] == "lab-"
    before = stored_state()
    assert_error(post_tag_rule(auditor_api), 403)
    assert_error(auditor_api.patch(url, {"value": "x"}, format="json"), 403)
    assert_error(auditor_api.delete(url), 403)
    assert stored_state() == before


def test_user_without_role_gets_403(norole_api, existing_rule):
    url = tag_rule_url(existing_rule.pk)
    before = stored_state()
    assert_error(norole_api.get(TAG_RULES), 403)
    assert_error(norole_api.get(url), 403)
    assert_error(post_tag_rule(norole_api), 403)
    assert_error(norole_api.patch(url, {"value": "x"}, format="json"), 403)
    assert_error(norole_api.delete(url), 403)
    assert_error(norole_api.get(FANOUTS), 403)
    assert stored_state() == before


def test_anonymous_gets_401(existing_rule):
    api = APIClient()
    url = tag_rule_url(existing_rule.pk)
    before = stored_state()
    for response in (
        api.get(TAG_RULES),
        api.get(url),
        post_tag_rule(api),
        api.patch(url, {"value": "x"}, format="json"),
        api.delete(url),
        api.get(FANOUTS),
        api.get(f"{FANOUTS}{FanOut.objects.get().pk}/"),
    ):
        assert_error(response, 401)
    assert stored_state() == before


@pytest.mark.parametrize("role", ["auditor_api", "analyst_api", "admin_api"])
def test_every_role_reads_fanouts(request, role, existing_rule):
    api = request.getfixturevalue(role)
    fanout = FanOut.objects.get()
    body = api.get(FANOUTS).json()
    assert [f["id"] for f in body["results"]] == [fanout.pk]
    detail = api.get(f"{FANOUTS}{fanout.pk}/")
    assert detail.status_code == 200
    assert detail.json()["kind"] == "tag_rules" and detail.json()["state"] == "queued"
    assert api.get(FANOUTS, {"state": "done"}).json()["count"] == 0
    assert api.get(FANOUTS, {"state": "queued", "kind": "tag_rules"}).json()["count"] == 1


@pytest.mark.parametrize("role", ["auditor_api", "analyst_api", "admin_api"])
def test_nobody_writes_fanouts(request, role, existing_rule):
    api = request.getfixturevalue(role)
    fanout = FanOut.objects.get()
    url = f"{FANOUTS}{fanout.pk}/"
    before = sorted(FanOut.objects.values_list("pk", "state", "attempts", "kind", "revision"))
    responses = [
        api.post(FANOUTS, {"kind": "rules", "revision": 1}, format="json"),
        api.patch(url, {"state": "done"}, format="json"),
        api.put(url, {"state": "done"}, format="json"),
        api.delete(url),
    ]
    for response in responses:
        assert response.status_code in (403, 405), response.content
    if role == "admin_api":  # every permission: only the read-only view stops it
        assert [r.status_code for r in responses] == [405, 405, 405, 405]
    after = sorted(FanOut.objects.values_list("pk", "state", "attempts", "kind", "revision"))
    assert after == before
