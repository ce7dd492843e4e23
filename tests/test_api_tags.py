"""The tags API: list with member counts, create, rename, describe, and deletion only of tags
nothing ever used."""

import pytest

from audit.models import AuditEntry
from hosts.models import HostTag, Tag
from hosts.services import (
    enrollment_create,
    host_set_tags,
    profile_create,
    tag_create,
    tag_rule_create,
)
from tests.api import assert_error

URL = "/api/v1/tags/"


def detail(tag_id) -> str:
    return f"{URL}{tag_id}/"


def tags_state() -> list:
    return sorted(Tag.objects.values_list("pk", "name", "description"))


@pytest.fixture
def fleet(make_agent, make_enrollment):
    """Three synced hosts: two enrolled with tag eng (one also in "ops" by hand), one with a
    tag rule putting it in "ops" automatically."""
    from hosts.models import Host

    _, secret = make_enrollment(tags=["eng"])
    a, b = make_agent(secret=secret, hostname="a.example"), make_agent(secret=secret)
    c = make_agent(hostname="build-1.example")
    for agent in (a, b, c):
        agent.sync()
    host_a = Host.objects.get(machine_id=a.machine_id)
    host_set_tags(host=host_a, tag_names=["eng", "ops"])
    tag_rule_create(tag_name="ops", fact="hostname", operator="starts_with", value="build-")
    c.sync()
    return a, b, c


def test_list_counts_current_members_assigned_and_automatic(analyst_api, fleet):
    body = analyst_api.get(URL).json()
    assert body["count"] == 2
    by_name = {tag["name"]: tag for tag in body["results"]}
    assert (
        by_name["eng"]["host_count"],
        by_name["eng"]["assigned_host_count"],
        by_name["eng"]["automatic_host_count"],
    ) == (2, 2, 0)
    assert (
        by_name["ops"]["host_count"],
        by_name["ops"]["assigned_host_count"],
        by_name["ops"]["automatic_host_count"],
    ) == (2, 1, 1)


def test_a_host_in_a_tag_by_hand_and_by_rule_counts_once(analyst_api, fleet):
    from hosts.models import Host

    _, _, c = fleet
    host_set_tags(host=Host.objects.get(machine_id=c.machine_id), tag_names=["ops"])
    ops = analyst_api.get(URL, {"name": "ops"}).json()["results"][0]
    assert (ops["host_count"], ops["assigned_host_count"], ops["automatic_host_count"]) == (
        2,
        2,
        1,
    )


def test_past_memberships_are_not_counted(analyst_api, fleet):
    from hosts.models import Host

    a, _, _ = fleet
    host_set_tags(host=Host.objects.get(machine_id=a.machine_id), tag_names=[])
    eng = analyst_api.get(URL, {"name": "eng"}).json()["results"][0]
    assert eng["host_count"] == 1
    assert HostTag.objects.filter(tag__name="eng", rev_to__isnull=False).exists()


def test_filters(analyst_api, fleet):
    tag_create(name="engineering-leads")
    assert [t["name"] for t in analyst_api.get(URL, {"name": " ENG "}).json()["results"]] == ["eng"]
    names = [t["name"] for t in analyst_api.get(URL, {"name_contains": "eng"}).json()["results"]]
    assert names == ["eng", "engineering-leads"]


def test_list_query_count_does_not_grow_with_tags(
    analyst_api, fleet, django_assert_max_num_queries
):
    for number in range(30):
        tag_create(name=f"tag-{number}")
    # Auth (token, user, permissions) + count + one page: the counts are in the page's query.
    with django_assert_max_num_queries(6):
        body = analyst_api.get(URL, {"page_size": 100}).json()
    assert body["count"] == 32


def test_create_normalises_and_audits(analyst_api, analyst):
    response = analyst_api.post(URL, {"name": " Finance ", "description": "Money"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["description"], body["host_count"]) == ("finance", "Money", 0)
    assert body["references"] == []
    entry = AuditEntry.objects.get(action="tag.create")
    assert (entry.actor_id, entry.object_id, entry.after) == (
        analyst.pk,
        str(body["id"]),
        {"name": "finance", "description": "Money"},
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Not A Tag!"}, "name"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x" * 65}, "name"),
        ({}, "name"),
        ({"name": "ok", "tag": "typo"}, "tag"),
        ({"name": "ok", "description": ["x"]}, "description"),
    ],
)
def test_create_refuses_bad_input(analyst_api, body, field):
    before = tags_state()
    assert_error(analyst_api.post(URL, body, format="json"), 400, field)
    assert tags_state() == before
    assert not AuditEntry.objects.filter(action__startswith="tag.").exists()


def test_create_refuses_control_characters_in_the_description(analyst_api):
    assert_error(analyst_api.post(URL, {"name": "ok", "description": "a\x00b"}, format="json"), 400)
    assert not Tag.objects.exists()


def test_create_duplicate_is_409(analyst_api):
    tag_create(name="eng")
    before = tags_state()
    body = assert_error(analyst_api.post(URL, {"name": "ENG"}, format="json"), 409, "name")
    assert body["error"] == "tag_exists"
    assert tags_state() == before


def test_rename_keeps_delivery_and_is_audited(analyst_api, make_agent, make_enrollment):
    """Rules, memberships and profiles point at the tag's id: after a rename the host still
    holds the tag's rule, and nothing new is sent."""
    from tests.agent import held

    _, secret = make_enrollment(tags=["eng"])
    agent = make_agent(secret=secret)
    agent.sync()
    rule = analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "TEAMID", "identifier": "EQHXZ8M8AV", "policy": "BLOCKLIST", "tags": ["eng"]},
        format="json",
    ).json()
    agent.sync()
    expected = {("TEAMID", "EQHXZ8M8AV"): held("BLOCKLIST")}
    assert agent.rules == expected
    tag = Tag.objects.get(name="eng")
    response = analyst_api.patch(detail(tag.pk), {"name": "engineering"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "engineering"
    result = agent.sync()
    assert result.rules_received == 0
    assert agent.rules == expected
    assert analyst_api.get(f"/api/v1/rules/{rule['id']}/").json()["tags"] == ["engineering"]
    entry = AuditEntry.objects.get(action="tag.update")
    assert (entry.before["name"], entry.after["name"]) == ("eng", "engineering")


def test_patch_description_only(analyst_api):
    tag = tag_create(name="eng")
    response = analyst_api.patch(detail(tag.pk), {"description": "Engineers"}, format="json")
    assert response.status_code == 200
    assert Tag.objects.get(pk=tag.pk).description == "Engineers"


def test_patch_to_an_existing_name_is_409(analyst_api):
    tag, _ = tag_create(name="eng"), tag_create(name="ops")
    before = tags_state()
    assert_error(analyst_api.patch(detail(tag.pk), {"name": "ops"}, format="json"), 409, "name")
    assert tags_state() == before


def test_patch_without_change_writes_no_entry(analyst_api):
    tag = tag_create(name="eng", description="x")
    assert analyst_api.patch(detail(tag.pk), {"name": "eng"}, format="json").status_code == 200
    assert not AuditEntry.objects.filter(action="tag.update").exists()


def test_delete_an_unused_tag(admin_api):
    tag = tag_create(name="typo")
    assert admin_api.delete(detail(tag.pk)).status_code == 204
    assert not Tag.objects.filter(pk=tag.pk).exists()
    assert AuditEntry.objects.get(action="tag.delete").before == {"name": "typo", "description": ""}


def _use_by_rule(api, name):
    response = api.post(
        "/api/v1/rules/",
        {"rule_type": "TEAMID", "identifier": "EQHXZ8M8AV", "policy": "BLOCKLIST", "tags": [name]},
        format="json",
    )
    assert response.status_code == 201
    return response.json()["id"]


@pytest.mark.parametrize(
    ("use", "named"),
    [
        (lambda api, host: enrollment_create(name="e", tag_names=["t"]), "enrollments"),
        (lambda api, host: profile_create(name="p", values={}, tag_names=["t"]), "profiles"),
        (
            lambda api, host: tag_rule_create(
                tag_name="t", fact="hostname", operator="equals", value="x"
            ),
            "tag rules",
        ),
        (lambda api, host: host_set_tags(host=host, tag_names=["t"]), "host memberships"),
        (lambda api, host: _use_by_rule(api, "t"), "rules"),
    ],
    ids=["enrollment", "profile", "tag rule", "membership", "rule"],
)
def test_delete_a_tag_in_use_is_409_naming_the_use(admin_api, agent, use, named):
    from hosts.models import Host

    agent.sync()
    tag_create(name="t")
    use(admin_api, Host.objects.get(machine_id=agent.machine_id))
    tag = Tag.objects.get(name="t")
    before = tags_state()
    body = assert_error(admin_api.delete(detail(tag.pk)), 409)
    assert body["error"] == "tag_in_use"
    assert named in body["detail"]
    assert tags_state() == before
    assert named.split()[0] in " ".join(admin_api.get(detail(tag.pk)).json()["references"])


@pytest.mark.parametrize("history", ["membership", "rule"])
def test_delete_a_tag_used_only_in_the_past_is_409(admin_api, agent, history):
    """Delivery history (closed spans, closed rule versions) still names it."""
    from hosts.models import Host

    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    if history == "membership":
        host_set_tags(host=host, tag_names=["t"])
        host_set_tags(host=host, tag_names=[])
    else:
        rule_id = _use_by_rule(admin_api, "t")
        assert admin_api.delete(f"/api/v1/rules/{rule_id}/").status_code == 204
    tag = Tag.objects.get(name="t")
    assert_error(admin_api.delete(detail(tag.pk)), 409)
    assert Tag.objects.filter(pk=tag.pk).exists()


def test_unknown_tag_is_404_json(analyst_api):
    assert_error(analyst_api.get(detail(999)), 404)
    assert_error(analyst_api.patch(detail(999), {"description": "x"}, format="json"), 404)


def test_filter_and_page_errors_are_4xx_json(analyst_api):
    tag_create(name="eng")
    assert_error(analyst_api.get(URL, {"page": "9"}), 404)
    assert_error(analyst_api.get(URL, {"page": "abc"}), 404)
    assert_error(analyst_api.get(URL, {"page_size": "abc"}), 400, "page_size")
    assert_error(analyst_api.get(URL, {"page_size": "0"}), 400, "page_size")
    assert_error(analyst_api.get(URL, {"page_size": "-3"}), 400, "page_size")
    assert len(analyst_api.get(URL, {"page_size": "5000"}).json()["results"]) == 1
