"""The hosts API: what agents reported, filters, operator edits, and each host's rule set.

`/hosts/<machine_id>/rules/` must equal exactly what the agent holds after its next sync; that
is checked against simulated agents in several scenarios, clean and incremental.
"""

import pytest
from django.utils.dateparse import parse_datetime

from hosts.models import Host, Revision
from tests.agent import held
from tests.api import assert_error

HOSTS = "/api/v1/hosts/"
RULES = "/api/v1/rules/"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
SHA_D = "d" * 64
TEAM = "EQHXZ8M8AV"


def host_url(machine_id: str) -> str:
    return f"{HOSTS}{machine_id}/"


def fleet_revision() -> int:
    return Revision.objects.get(pk=1).value


def create_rule(api, **fields) -> dict:
    payload = {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", **fields}
    response = api.post(RULES, payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def patch_host(api, machine_id, **fields) -> dict:
    response = api.patch(host_url(machine_id), fields, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def api_rule_set(api, machine_id) -> dict:
    """The host's effective rules from the API, keyed like SimulatedAgent.rules."""
    response = api.get(f"{host_url(machine_id)}rules/", {"page_size": 1000})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(body["results"])
    rules = {}
    for rule in body["results"]:
        key = (rule["rule_type"], rule["identifier"])
        assert key not in rules, f"{key} listed twice"
        rules[key] = {
            name: rule[name] for name in ("policy", "custom_msg", "custom_url", "cel_expr")
        }
    return rules


@pytest.fixture
def tagged_agent(make_agent, make_enrollment):
    """An agent enrolled with the given tags (and options), synced once."""

    def make(*tags, mode="", **options):
        _, secret = make_enrollment(tags=tags, mode=mode)
        agent = make_agent(secret=secret, **options)
        agent.sync()
        return agent

    return make


# --- list and retrieve ----------------------------------------------------------------------------


def test_retrieve_shows_facts_reported_at_preflight(analyst_api, make_agent, make_enrollment):
    make_enrollment(name="laptops", tags=["Eng", "qa"])
    _, secret = make_enrollment(name="desktops", tags=["eng"], mode="LOCKDOWN")
    agent = make_agent(
        machine_id="A1B2C3D4-0000-4000-8000-000000000001",
        secret=secret,
        serial="C02XYZ12345",
        hostname="build-7.example.com",
        santa_version="2026.9.0",
        primary_user="bob",
        primary_user_groups=("staff", "admin"),
    )
    agent.facts["os_version"] = "15.3"
    agent.facts["os_build"] = "24D60"
    agent.facts["model_identifier"] = "Mac15,3"
    create_rule(analyst_api)
    create_rule(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST_COMPILER")
    result = agent.sync()
    assert result.sync_type == "CLEAN_ALL"

    response = analyst_api.get(host_url(agent.machine_id))
    assert response.status_code == 200, response.content
    host = response.json()
    assert host["machine_id"] == agent.machine_id
    assert host["serial_number"] == "C02XYZ12345"
    assert host["hostname"] == "build-7.example.com"
    assert host["os_version"] == "15.3"
    assert host["os_build"] == "24D60"
    assert host["model_identifier"] == "Mac15,3"
    assert host["santa_version"] == "2026.9.0"
    assert host["primary_user"] == "bob"
    assert host["primary_user_groups"] == ["staff", "admin"]
    assert host["enrollment"] == "desktops"
    assert host["tags"] == ["eng"]
    assert host["client_mode"] == "MONITOR"  # what the agent reported before applying LOCKDOWN
    assert host["client_mode_override"] == ""
    assert host["clean_sync_requested"] == ""
    assert host["sip_status"] == 111
    assert host["request_clean_sync"] is True
    assert host["last_sync_type"] == "CLEAN_ALL"
    assert host["rules_synced_revision"] == fleet_revision()
    assert host["expected_counts"] == {"binary": 1, "teamid": 1, "compiler": 1}
    assert host["drifted"] is False and host["drift_reasons"] == []
    assert host["rules_received"] == 2 and host["rules_processed"] == 2
    assert host["rules_dropped"] is False
    for stamp in ("first_seen_at", "last_preflight_at", "last_ruledownload_at"):
        assert parse_datetime(host[stamp]) is not None, stamp
    assert parse_datetime(host["last_postflight_at"]) is not None
    assert host["configuration"]["settings"]["client_mode"] == "LOCKDOWN"

    agent.sync()
    again = analyst_api.get(host_url(agent.machine_id)).json()
    assert again["client_mode"] == "LOCKDOWN"
    assert again["request_clean_sync"] is False
    assert again["last_sync_type"] == "NORMAL"
    assert again["reported_counts"]["binary"] == 1
    assert again["reported_counts"]["teamid"] == 1
    assert again["reported_counts"]["compiler"] == 1


def test_list_shows_every_host_with_the_same_fields(analyst_api, tagged_agent):
    one = tagged_agent("eng", hostname="one.example.com")
    two = tagged_agent(hostname="two.example.com")
    response = analyst_api.get(HOSTS)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    by_id = {h["machine_id"]: h for h in body["results"]}
    assert set(by_id) == {one.machine_id, two.machine_id}
    assert by_id[one.machine_id]["hostname"] == "one.example.com"
    assert by_id[one.machine_id]["tags"] == ["eng"]
    assert by_id[two.machine_id]["tags"] == []
    detail = analyst_api.get(host_url(one.machine_id)).json()
    listed = by_id[one.machine_id]
    assert {k: v for k, v in detail.items() if k not in ("configuration", "delivery")} == listed


def test_unknown_host_is_404_json(analyst_api, agent):
    agent.sync()
    for url in (host_url("NO-SUCH-MACHINE"), f"{host_url('NO-SUCH-MACHINE')}rules/"):
        assert_error(analyst_api.get(url), 404)
    assert_error(analyst_api.patch(host_url("NO-SUCH-MACHINE"), {"tags": []}, format="json"), 404)


def test_host_page_size(analyst_api, tagged_agent):
    for _ in range(3):
        tagged_agent()
    body = analyst_api.get(HOSTS, {"page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]


# --- filters --------------------------------------------------------------------------------------


def listed(api, **params) -> set:
    response = api.get(HOSTS, {"page_size": 1000, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    ids = [h["machine_id"] for h in body["results"]]
    assert len(ids) == len(set(ids)) == body["count"]
    return set(ids)


def test_host_filters(analyst_api, make_agent, make_enrollment):
    _, eng_secret = make_enrollment(name="eng-laptops", tags=["eng", "laptops"])
    _, lock_secret = make_enrollment(name="kiosks", mode="LOCKDOWN")
    eng = make_agent(secret=eng_secret, santa_version="2026.8.1")
    kiosk = make_agent(secret=lock_secret, santa_version="2026.9.0")
    plain = make_agent(santa_version="2026.8.1")
    for agent in (eng, kiosk, plain):
        agent.sync()
    kiosk.sync()  # now reports the LOCKDOWN mode it was given
    create_rule(analyst_api)
    eng.sync()
    eng.rules.clear()  # rules vanish behind the server's back
    eng.sync()  # reports counts that differ from what was delivered

    assert listed(analyst_api) == {eng.machine_id, kiosk.machine_id, plain.machine_id}
    assert listed(analyst_api, tag="eng") == {eng.machine_id}
    assert listed(analyst_api, tag="ENG") == {eng.machine_id}
    assert listed(analyst_api, tag="laptops") == {eng.machine_id}
    assert listed(analyst_api, tag="none-such") == set()
    assert listed(analyst_api, client_mode="LOCKDOWN") == {kiosk.machine_id}
    assert listed(analyst_api, client_mode="MONITOR") == {eng.machine_id, plain.machine_id}
    assert listed(analyst_api, santa_version="2026.9.0") == {kiosk.machine_id}
    assert listed(analyst_api, santa_version="2026.8.1") == {eng.machine_id, plain.machine_id}
    assert listed(analyst_api, drifted="true") == {eng.machine_id}
    assert listed(analyst_api, drifted="false") == {kiosk.machine_id, plain.machine_id}
    assert listed(analyst_api, enrollment="kiosks") == {kiosk.machine_id}
    assert listed(analyst_api, enrollment="default-enrollment") == {plain.machine_id}
    assert listed(analyst_api, enrollment="eng-laptops", tag="eng") == {eng.machine_id}
    assert listed(analyst_api, enrollment="kiosks", tag="eng") == set()

    drifted = analyst_api.get(host_url(eng.machine_id)).json()
    assert drifted["drifted"] is True and drifted["drift_reasons"]


def test_tag_filter_follows_tag_changes(analyst_api, tagged_agent):
    agent = tagged_agent("eng")
    patch_host(analyst_api, agent.machine_id, tags=["qa"])
    assert listed(analyst_api, tag="eng") == set()
    assert listed(analyst_api, tag="qa") == {agent.machine_id}


def test_invalid_host_filter_is_400(analyst_api, agent):
    agent.sync()
    body = assert_error(analyst_api.get(HOSTS, {"client_mode": "monitor"}), 400)
    assert "client_mode" in body["fields"]


# --- PATCH tags -----------------------------------------------------------------------------------


def test_patch_tags_delivers_and_withdraws_tag_rules(analyst_api, tagged_agent):
    agent = tagged_agent()
    create_rule(analyst_api, tags=["eng"], custom_msg="eng rule")
    create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST")  # everyone
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_B)}

    before = fleet_revision()
    body = patch_host(analyst_api, agent.machine_id, tags=["Eng", "laptops"])
    assert body["tags"] == ["eng", "laptops"]
    assert fleet_revision() == before + 1
    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 1
    assert agent.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST", "eng rule"),
        ("BINARY", SHA_B): held("ALLOWLIST"),
    }
    assert analyst_api.get(host_url(agent.machine_id)).json()["tags"] == ["eng", "laptops"]

    body = patch_host(analyst_api, agent.machine_id, tags=["laptops"])
    assert body["tags"] == ["laptops"]
    result = agent.sync()
    assert result.sync_type == "NORMAL" and result.rules_received == 1
    assert agent.rules == {("BINARY", SHA_B): held("ALLOWLIST")}


def test_patch_tags_to_empty_list_removes_all_tags(analyst_api, tagged_agent):
    agent = tagged_agent("eng", "qa")
    create_rule(analyst_api, tags=["qa"])
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}
    assert patch_host(analyst_api, agent.machine_id, tags=[])["tags"] == []
    agent.sync()
    assert agent.rules == {}


def test_patch_same_tags_takes_no_revision(analyst_api, tagged_agent):
    agent = tagged_agent("eng")
    before = fleet_revision()
    patch_host(analyst_api, agent.machine_id, tags=["ENG"])
    assert fleet_revision() == before


# --- PATCH client_mode_override -------------------------------------------------------------------


def test_patch_client_mode_override(analyst_api, tagged_agent):
    agent = tagged_agent()
    assert agent.client_mode == "MONITOR"
    body = patch_host(analyst_api, agent.machine_id, client_mode_override="LOCKDOWN")
    assert body["client_mode_override"] == "LOCKDOWN"
    assert body["configuration"]["settings"]["client_mode"] == "LOCKDOWN"

    result = agent.sync()
    assert result.preflight.client_mode == 2  # LOCKDOWN in the protocol's enum
    assert agent.client_mode == "LOCKDOWN"
    agent.sync()
    assert analyst_api.get(host_url(agent.machine_id)).json()["client_mode"] == "LOCKDOWN"

    patch_host(analyst_api, agent.machine_id, client_mode_override="MONITOR")
    agent.sync()
    assert agent.client_mode == "MONITOR"


def test_override_wins_over_enrollment_mode_and_clears(analyst_api, tagged_agent):
    agent = tagged_agent(mode="LOCKDOWN")
    assert agent.client_mode == "LOCKDOWN"
    patch_host(analyst_api, agent.machine_id, client_mode_override="MONITOR")
    agent.sync()
    assert agent.client_mode == "MONITOR"
    body = patch_host(analyst_api, agent.machine_id, client_mode_override=None)
    assert body["client_mode_override"] == ""
    agent.sync()
    assert agent.client_mode == "LOCKDOWN"


# --- PATCH clean_sync_requested -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["CLEAN", "CLEAN_ALL"])
def test_patch_clean_sync_requested(analyst_api, tagged_agent, kind):
    agent = tagged_agent()
    create_rule(analyst_api)
    assert agent.sync().sync_type == "NORMAL"
    body = patch_host(analyst_api, agent.machine_id, clean_sync_requested=kind)
    assert body["clean_sync_requested"] == kind

    # The request stands until a postflight confirms the clean sync.
    result = agent.sync(drop_postflight=True)
    assert result.sync_type == kind
    assert Host.objects.get(machine_id=agent.machine_id).clean_sync_requested == kind

    agent.rules[("BINARY", SHA_D)] = held("ALLOWLIST")  # a stray rule a clean sync wipes
    result = agent.sync()
    assert result.sync_type == kind
    assert agent.rules == {("BINARY", SHA_A): held("BLOCKLIST")}
    host = analyst_api.get(host_url(agent.machine_id)).json()
    assert host["clean_sync_requested"] == ""
    assert host["last_sync_type"] == kind

    assert agent.sync().sync_type == "NORMAL"


def test_patch_clean_sync_can_be_cancelled(analyst_api, tagged_agent):
    agent = tagged_agent()
    patch_host(analyst_api, agent.machine_id, clean_sync_requested="CLEAN")
    body = patch_host(analyst_api, agent.machine_id, clean_sync_requested="")
    assert body["clean_sync_requested"] == ""
    assert agent.sync().sync_type == "NORMAL"


def test_patch_several_fields_at_once(analyst_api, tagged_agent):
    agent = tagged_agent()
    body = patch_host(
        analyst_api,
        agent.machine_id,
        tags=["eng"],
        client_mode_override="LOCKDOWN",
        clean_sync_requested="CLEAN",
    )
    assert body["tags"] == ["eng"]
    assert body["client_mode_override"] == "LOCKDOWN"
    assert body["clean_sync_requested"] == "CLEAN"
    assert agent.sync().sync_type == "CLEAN"
    assert agent.client_mode == "LOCKDOWN"


# --- invalid PATCH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"client_mode_override": "lockdown"},
        {"client_mode_override": "PARANOID"},
        {"client_mode_override": 2},
        {"clean_sync_requested": "clean"},
        {"clean_sync_requested": "NORMAL"},
        {"clean_sync_requested": True},
        {"tags": "eng"},
        {"tags": [None]},
        {"tags": [{"name": "eng"}]},
        {"tags": ["t" * 65]},
        {"tags": [f"t{n}" for n in range(101)]},
        {"tags": ["eng", "Not A Tag"]},
        {"tags": ["-dash-first"]},
    ],
)
def test_invalid_patch_is_400_and_changes_nothing(analyst_api, tagged_agent, fields):
    agent = tagged_agent("eng")
    before = analyst_api.get(host_url(agent.machine_id)).json()
    revision = fleet_revision()
    body = assert_error(analyst_api.patch(host_url(agent.machine_id), fields, format="json"), 400)
    assert next(iter(fields)) in body.get("fields", {}), body
    assert analyst_api.get(host_url(agent.machine_id)).json() == before
    assert fleet_revision() == revision


@pytest.mark.parametrize("body", [["eng"], "LOCKDOWN"])
def test_patch_with_non_object_body_is_400(analyst_api, tagged_agent, body):
    agent = tagged_agent()
    assert_error(analyst_api.patch(host_url(agent.machine_id), body, format="json"), 400)


# --- /hosts/<machine_id>/rules/ -------------------------------------------------------------------


def check(api, *agents) -> list:
    """Sync each agent; its rules must then equal what the API said before the sync."""
    results = []
    for agent in agents:
        expected = api_rule_set(api, agent.machine_id)
        results.append(agent.sync())
        assert agent.rules == expected, agent.machine_id
        assert api_rule_set(api, agent.machine_id) == expected
    return results


def test_rules_endpoint_shape(analyst_api, tagged_agent):
    agent = tagged_agent()
    rule = create_rule(analyst_api, custom_msg="m", custom_url="https://x.example")
    body = analyst_api.get(f"{host_url(agent.machine_id)}rules/").json()
    assert set(body) >= {"count", "next", "previous", "results", "revision"}
    assert body["revision"] == fleet_revision()
    assert body["results"] == [
        {
            "rule_id": rule["id"],
            "rule_type": "BINARY",
            "identifier": SHA_A,
            "policy": "BLOCKLIST",
            "custom_msg": "m",
            "custom_url": "https://x.example",
            "cel_expr": "",
        }
    ]


def test_rules_endpoint_of_a_host_without_rules(analyst_api, tagged_agent):
    agent = tagged_agent()
    create_rule(analyst_api, tags=["eng"])
    check(analyst_api, agent)
    assert agent.rules == {}


def test_rules_endpoint_everyone_tag_host_and_excluded(analyst_api, tagged_agent):
    plain = tagged_agent()
    eng = tagged_agent("eng")
    qa = tagged_agent("qa")
    eng_qa = tagged_agent("eng", "qa")
    special = tagged_agent("eng")
    agents = (plain, eng, qa, eng_qa, special)

    # Everyone rule, overridden by a tag rule, overridden by a host rule.
    create_rule(analyst_api, identifier=SHA_A, policy="BLOCKLIST", custom_msg="everyone")
    create_rule(analyst_api, identifier=SHA_A, policy="ALLOWLIST", tags=["eng"])
    create_rule(
        analyst_api,
        identifier=SHA_A,
        policy="SILENT_BLOCKLIST",
        machine_ids=[special.machine_id],
        custom_msg="just you",
    )
    # Everyone rule with an excluded tag.
    create_rule(
        analyst_api, identifier=SHA_B, policy="BLOCKLIST", excluded_tags=["qa"], custom_msg="nq"
    )
    # A REMOVE-policy tag rule over an everyone rule: qa hosts hold nothing for this key.
    create_rule(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST")
    create_rule(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="REMOVE", tags=["qa"])
    # A CEL rule for eng.
    create_rule(analyst_api, identifier=SHA_C, policy="CEL", cel_expr="true", tags=["eng"])

    check(analyst_api, *agents)

    assert plain.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST", "everyone"),
        ("BINARY", SHA_B): held("BLOCKLIST", "nq"),
        ("TEAMID", TEAM): held("ALLOWLIST"),
    }
    assert eng.rules == {
        ("BINARY", SHA_A): held("ALLOWLIST"),
        ("BINARY", SHA_B): held("BLOCKLIST", "nq"),
        ("TEAMID", TEAM): held("ALLOWLIST"),
        ("BINARY", SHA_C): held("CEL", cel_expr="true"),
    }
    assert qa.rules == {("BINARY", SHA_A): held("BLOCKLIST", "everyone")}
    assert eng_qa.rules == {
        ("BINARY", SHA_A): held("ALLOWLIST"),
        ("BINARY", SHA_C): held("CEL", cel_expr="true"),
    }
    assert special.rules == {
        ("BINARY", SHA_A): held("SILENT_BLOCKLIST", "just you"),
        ("BINARY", SHA_B): held("BLOCKLIST", "nq"),
        ("TEAMID", TEAM): held("ALLOWLIST"),
        ("BINARY", SHA_C): held("CEL", cel_expr="true"),
    }


def test_rules_endpoint_ties_blocking_wins_then_lowest_id(analyst_api, tagged_agent):
    both = tagged_agent("eng", "qa")
    only_eng = tagged_agent("eng")
    # Same level (tag) for one host: a blocking policy beats an older allow rule.
    create_rule(analyst_api, identifier=SHA_A, policy="ALLOWLIST", tags=["eng"])
    create_rule(analyst_api, identifier=SHA_A, policy="SILENT_TTY_BLOCKLIST", tags=["qa"])
    # Neither blocks: the lowest rule id wins.
    create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST", tags=["qa"], custom_msg="old")
    create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST_COMPILER", tags=["eng"])
    # Both block: the lowest rule id wins.
    create_rule(analyst_api, identifier=SHA_C, policy="BLOCKLIST", tags=["eng"], custom_msg="1st")
    create_rule(analyst_api, identifier=SHA_C, policy="SILENT_BLOCKLIST", tags=["qa"])

    check(analyst_api, both, only_eng)
    assert both.rules == {
        ("BINARY", SHA_A): held("SILENT_TTY_BLOCKLIST"),
        ("BINARY", SHA_B): held("ALLOWLIST", "old"),
        ("BINARY", SHA_C): held("BLOCKLIST", "1st"),
    }
    assert only_eng.rules == {
        ("BINARY", SHA_A): held("ALLOWLIST"),
        ("BINARY", SHA_B): held("ALLOWLIST_COMPILER"),
        ("BINARY", SHA_C): held("BLOCKLIST", "1st"),
    }


def test_rules_endpoint_after_incremental_changes(analyst_api, tagged_agent):
    eng = tagged_agent("eng")
    qa = tagged_agent("qa")
    plain = tagged_agent()
    agents = (eng, qa, plain)
    everyone = create_rule(analyst_api, identifier=SHA_A, policy="BLOCKLIST")
    eng_rule = create_rule(analyst_api, identifier=SHA_A, policy="ALLOWLIST", tags=["eng"])
    excl = create_rule(analyst_api, identifier=SHA_B, excluded_tags=["qa"])
    remove = create_rule(analyst_api, identifier=SHA_C, policy="REMOVE", tags=["qa"])
    create_rule(analyst_api, identifier=SHA_C, policy="ALLOWLIST")
    check(analyst_api, *agents)
    assert ("BINARY", SHA_C) not in qa.rules

    # Change the rules and the hosts' tags, then sync incrementally.
    for rule, change in (
        (eng_rule, {"tags": ["qa"]}),
        (excl, {"excluded_tags": ["eng"]}),
        (everyone, {"custom_msg": "changed"}),
    ):
        response = analyst_api.patch(f"{RULES}{rule['id']}/", change, format="json")
        assert response.status_code == 200, response.content
    assert analyst_api.delete(f"{RULES}{remove['id']}/").status_code == 204
    create_rule(analyst_api, identifier=SHA_D, machine_ids=[plain.machine_id])
    patch_host(analyst_api, plain.machine_id, tags=["eng"])
    patch_host(analyst_api, qa.machine_id, tags=[])

    results = check(analyst_api, *agents)
    assert all(result.sync_type == "NORMAL" for result in results)
    assert eng.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST", "changed"),
        ("BINARY", SHA_C): held("ALLOWLIST"),
    }
    assert qa.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST", "changed"),
        ("BINARY", SHA_B): held("BLOCKLIST"),
        ("BINARY", SHA_C): held("ALLOWLIST"),
    }
    assert plain.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST", "changed"),
        ("BINARY", SHA_C): held("ALLOWLIST"),
        ("BINARY", SHA_D): held("BLOCKLIST"),
    }

    # A clean sync from scratch agrees with the incremental result.
    for agent in agents:
        before = dict(agent.rules)
        patch_host(analyst_api, agent.machine_id, clean_sync_requested="CLEAN")
        assert agent.sync().sync_type == "CLEAN"
        assert agent.rules == before == api_rule_set(analyst_api, agent.machine_id)


def test_rules_endpoint_paginates(analyst_api, tagged_agent):
    agent = tagged_agent()
    items = [
        {"rule_type": "BINARY", "identifier": f"{n + 1:064x}", "policy": "ALLOWLIST"}
        for n in range(7)
    ]
    assert analyst_api.post(f"{RULES}bulk/", {"rules": items}, format="json").status_code == 201
    url = f"{host_url(agent.machine_id)}rules/"
    page = analyst_api.get(url, {"page_size": 3}).json()
    assert page["count"] == 7 and len(page["results"]) == 3
    seen = [r["identifier"] for r in page["results"]]
    while page["next"]:
        page = analyst_api.get(page["next"]).json()
        seen += [r["identifier"] for r in page["results"]]
    agent.sync()
    assert sorted(seen) == sorted(identifier for _, identifier in agent.rules)
    assert len(seen) == 7


def test_rules_endpoint_when_tags_alone_change(analyst_api, tagged_agent):
    """No rule changes, only the host's tags: excluded, targeted and REMOVE rules follow."""
    agent = tagged_agent()
    create_rule(analyst_api, identifier=SHA_A, excluded_tags=["kiosk"])
    create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST", tags=["eng"])
    create_rule(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST")
    create_rule(analyst_api, rule_type="TEAMID", identifier=TEAM, policy="REMOVE", tags=["eng"])
    check(analyst_api, agent)
    assert set(agent.rules) == {("BINARY", SHA_A), ("TEAMID", TEAM)}

    for tags, keys in (
        (["eng"], {("BINARY", SHA_A), ("BINARY", SHA_B)}),
        (["eng", "kiosk"], {("BINARY", SHA_B)}),
        (["kiosk"], {("TEAMID", TEAM)}),
        ([], {("BINARY", SHA_A), ("TEAMID", TEAM)}),
    ):
        patch_host(analyst_api, agent.machine_id, tags=tags)
        (result,) = check(analyst_api, agent)
        assert result.sync_type == "NORMAL"
        assert set(agent.rules) == keys, tags


def test_rules_endpoint_matches_a_download_of_many_pages(analyst_api, tagged_agent, settings):
    settings.SYNC_RULES_PER_PAGE = 2
    eng = tagged_agent("eng")
    plain = tagged_agent()
    items = []
    for n in range(9):
        scope = {"tags": ["eng"]} if n % 3 == 0 else {}
        if n % 4 == 1:
            scope["excluded_tags"] = ["eng"]
        policy = "REMOVE" if n == 5 else "BLOCKLIST"
        items.append(
            {"rule_type": "BINARY", "identifier": f"{n + 1:064x}", "policy": policy, **scope}
        )
    assert analyst_api.post(f"{RULES}bulk/", {"rules": items}, format="json").status_code == 201
    results = check(analyst_api, eng, plain)
    assert all(result.pages > 1 for result in results)
    assert len(eng.rules) == 7 and len(plain.rules) == 5


def test_rules_endpoint_after_a_lost_postflight(analyst_api, tagged_agent):
    """The agent applied a download the server never saw confirmed; later changes that undo
    part of it must still leave the agent with exactly the API's set."""
    agent = tagged_agent("eng")
    everyone = create_rule(analyst_api, identifier=SHA_A, policy="BLOCKLIST")
    eng_rule = create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST", tags=["eng"])
    check(analyst_api, agent)

    analyst_api.patch(f"{RULES}{everyone['id']}/", {"policy": "ALLOWLIST"}, format="json")
    assert analyst_api.delete(f"{RULES}{eng_rule['id']}/").status_code == 204
    create_rule(analyst_api, identifier=SHA_C, policy="BLOCKLIST")
    agent.sync(drop_postflight=True)
    assert agent.rules == {
        ("BINARY", SHA_A): held("ALLOWLIST"),
        ("BINARY", SHA_C): held("BLOCKLIST"),
    }

    # Undo the changes: back to what the server last saw confirmed.
    analyst_api.patch(f"{RULES}{everyone['id']}/", {"policy": "BLOCKLIST"}, format="json")
    create_rule(analyst_api, identifier=SHA_B, policy="ALLOWLIST", tags=["eng"])
    sha_c = analyst_api.get(RULES, {"identifier": SHA_C}).json()["results"][0]
    assert analyst_api.delete(f"{RULES}{sha_c['id']}/").status_code == 204

    check(analyst_api, agent)
    assert agent.rules == {
        ("BINARY", SHA_A): held("BLOCKLIST"),
        ("BINARY", SHA_B): held("ALLOWLIST"),
    }
    check(analyst_api, agent)


def test_rules_endpoint_after_an_interrupted_download(analyst_api, tagged_agent, settings):
    from tests.agent import SyncFailed

    settings.SYNC_RULES_PER_PAGE = 1
    agent = tagged_agent()
    create_rule(analyst_api, identifier=SHA_A)
    check(analyst_api, agent)
    create_rule(analyst_api, identifier=SHA_B)
    create_rule(analyst_api, identifier=SHA_C, tags=["eng"])
    patch_host(analyst_api, agent.machine_id, tags=["eng"])
    with pytest.raises(SyncFailed):
        agent.sync(stop_after_pages=1)
    assert set(agent.rules) == {("BINARY", SHA_A)}  # all pages or nothing
    check(analyst_api, agent)
    assert set(agent.rules) == {("BINARY", SHA_A), ("BINARY", SHA_B), ("BINARY", SHA_C)}


@pytest.mark.parametrize("machine_id", ["mac-01.corp.example:a@b+c", "C02XYZ.json"])
def test_machine_ids_with_punctuation_are_addressable(analyst_api, make_agent, machine_id):
    agent = make_agent(machine_id=machine_id)
    agent.sync()
    assert analyst_api.get(host_url(machine_id)).json()["machine_id"] == machine_id
    assert patch_host(analyst_api, machine_id, tags=["eng"])["tags"] == ["eng"]
    create_rule(analyst_api, machine_ids=[machine_id])
    assert set(api_rule_set(analyst_api, machine_id)) == {("BINARY", SHA_A)}
    check(analyst_api, agent)
