"""Rules in the console: the list and its filters, one rule (history, delivery), creating,
editing, deleting, importing and exporting rules, who may do what, and escaping."""

import csv
import datetime
import html as htmllib
import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from audit.models import AuditEntry
from events.models import Binary, Certificate
from hosts.models import Host, Revision
from hosts.services import host_set_tags
from rules.models import Rule, RuleVersion
from rules.services import RuleInput, rule_create, rule_update, rules_bulk_delete
from santaadmin.roles import ANALYST

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
CERT = "e" * 64
TEAM = "EQHXZ8M8AV"
SIGNING = f"{TEAM}:com.example.tool"
CDHASH = "d" * 40
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def fleet_revision() -> int:
    return Revision.objects.get(pk=1).value


def make_rule(actor=None, justification="because", **fields) -> Rule:
    data = {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", **fields}
    data.setdefault("comment", justification)
    return rule_create(data=RuleInput(**data), actor=actor, justification=justification)


def listed(response) -> list[str]:
    assert response.status_code == 200, response.content[:2000]
    return [rule.identifier for rule in response.context["rules"]]


def binary(sha256, executed_days_ago=None, **fields) -> Binary:
    now = timezone.now()
    last = None if executed_days_ago is None else now - datetime.timedelta(days=executed_days_ago)
    return Binary.objects.create(
        sha256=sha256,
        first_seen_at=now,
        last_seen_at=now,
        last_executed_at=last,
        **fields,
    )


@pytest.fixture
def hosts(make_agent):
    """Two synced agents: the first tagged eng, the second finance."""
    agents = [make_agent(), make_agent()]
    for agent in agents:
        agent.sync()
    host_set_tags(host=Host.objects.get(machine_id=agents[0].machine_id), tag_names=["eng"])
    host_set_tags(host=Host.objects.get(machine_id=agents[1].machine_id), tag_names=["finance"])
    return agents


@pytest.fixture
def analyst_user(analyst_console):
    return analyst_console.user


# --- list and filters -----------------------------------------------------------------------------


@pytest.fixture
def catalogue(hosts, analyst_user, console):
    """Five rules of different types, policies, scopes and authors."""
    other = console(ANALYST, "other-analyst").user
    return {
        "binary": make_rule(analyst_user, identifier=SHA_A, policy="BLOCKLIST"),
        "team": make_rule(
            analyst_user, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST", tags=["eng"]
        ),
        "signing": make_rule(
            other,
            rule_type="SIGNINGID",
            identifier=SIGNING,
            policy="ALLOWLIST",
            machine_ids=[hosts[1].machine_id],
        ),
        "cert": make_rule(
            other,
            rule_type="CERTIFICATE",
            identifier=CERT,
            policy="SILENT_BLOCKLIST",
            tags=["finance"],
            excluded_tags=["eng"],
        ),
        "cdhash": make_rule(
            analyst_user,
            rule_type="CDHASH",
            identifier=CDHASH,
            policy="BLOCKLIST",
            expires_at=timezone.now() + datetime.timedelta(days=3),
        ),
    }


def test_list_shows_every_column(catalogue, analyst_console):
    Rule.objects.filter(pk=catalogue["team"].pk).update(target_hosts=4, confirmed_hosts=3)
    response = analyst_console.get("/rules/")
    assert listed(response) == [SHA_A, CDHASH, CERT, SIGNING, TEAM]  # by type, identifier
    html = response.content.decode()
    assert "Team ID" in html and "Block silently" in html
    assert "3 of 4 hosts" in html
    assert "1 listed host" in html  # the SIGNINGID rule's scope
    assert "except tags eng" in html  # the CERTIFICATE rule's excluded tag
    assert "other-analyst" in html and "analyst-console" in html
    assert catalogue["cdhash"].expires_at.strftime("%Y-%m-%d") in html
    assert f'href="/rules/{catalogue["team"].pk}/"' in html
    assert "New rule" in html and "Import rules" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("rule_type=TEAMID", [TEAM]),
        ("rule_type=TEAMID&rule_type=CDHASH", [CDHASH, TEAM]),
        ("policy=ALLOWLIST", [SIGNING, TEAM]),
        ("policy=SILENT_BLOCKLIST", [CERT]),
        ("scope=everyone", [SHA_A, CDHASH]),
        ("scope=tags", [CERT, TEAM]),
        ("scope=hosts", [SIGNING]),
        ("tag=eng", [TEAM]),
        ("tag=FINANCE", [CERT]),
        ("created_by=other-analyst", [CERT, SIGNING]),
        ("identifier_contains=com.example", [SIGNING]),
        ("identifier_contains=EQHX", [SIGNING, TEAM]),
        ("identifier=eqhxz8m8av", [TEAM]),
        ("policy=BLOCKLIST&scope=everyone&created_by=analyst-console", [SHA_A, CDHASH]),
    ],
)
def test_list_filters(catalogue, analyst_console, query, expected):
    assert listed(analyst_console.get(f"/rules/?{query}")) == expected


def test_stale_filter_matches_each_rule_type_by_its_binary_field(catalogue, analyst_console):
    Certificate.objects.create(
        sha256=CERT, first_seen_at=timezone.now(), last_seen_at=timezone.now()
    )
    binary(SHA_A, executed_days_ago=2)  # BINARY rule: executed recently
    binary(SHA_B, executed_days_ago=100, team_id=TEAM)  # TEAMID rule: 100 days ago
    binary(SHA_C, executed_days_ago=10, signing_id=SIGNING, leaf_certificate_id=CERT)
    binary("f" * 64, executed_days_ago=None, cdhash=CDHASH)  # seen, never executed
    binary("9" * 64, executed_days_ago=1, cdhash="0" * 40)  # matches no rule

    assert listed(analyst_console.get("/rules/?stale_days=30")) == [CDHASH, TEAM]
    assert listed(analyst_console.get("/rules/?stale_days=5")) == [CDHASH, CERT, SIGNING, TEAM]
    assert listed(analyst_console.get("/rules/?stale_days=365")) == [CDHASH]
    assert listed(analyst_console.get("/rules/?stale_days=30&rule_type=TEAMID")) == [TEAM]


def test_stale_filter_in_the_api_too(catalogue, analyst_api):
    binary(SHA_A, executed_days_ago=2)
    response = analyst_api.get("/api/v1/rules/?stale_days=30&rule_type=BINARY")
    assert response.status_code == 200
    assert response.json()["results"] == []
    response = analyst_api.get("/api/v1/rules/?stale_days=1&rule_type=BINARY")
    assert [r["identifier"] for r in response.json()["results"]] == [SHA_A]


@pytest.mark.parametrize(
    "query", ["stale_days=abc", "stale_days=0", "stale_days=-3", "scope=nobody", "policy=FOO"]
)
def test_bad_filter_is_400_with_the_error(catalogue, analyst_console, query):
    response = analyst_console.get(f"/rules/?{query}")
    assert response.status_code == 400
    assert response.context["rules"] == []
    assert b'class="error"' in response.content


def test_list_paginates_on_the_server(db, analyst_user, analyst_console):
    for n in range(60):
        make_rule(analyst_user, identifier=f"{n:064x}")
    first = analyst_console.get("/rules/?policy=BLOCKLIST")
    assert len(listed(first)) == 50
    html = first.content.decode()
    assert "Page 1 of 2 (60 in all)" in html
    assert 'href="?policy=BLOCKLIST&amp;page=2"' in html  # the filters stay
    second = analyst_console.get("/rules/?page=2")
    assert listed(second) == [f"{n:064x}" for n in range(50, 60)]


# --- detail, history, delivery --------------------------------------------------------------------


def test_detail_shows_values_scope_and_links(catalogue, hosts, analyst_console):
    binary(SHA_B, executed_days_ago=1, team_id=TEAM, file_name="tool-one", host_count=2)
    binary(SHA_C, executed_days_ago=1, team_id=TEAM, file_name="tool-two", host_count=5)
    signing = catalogue["signing"]
    response = analyst_console.get(f"/rules/{catalogue['team'].pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert TEAM in html and "Allow" in html and "because" in html
    # Matched binaries, most hosts first, linking to their pages.
    assert [b.sha256 for b in response.context["binaries"]] == [SHA_C, SHA_B]
    assert f'href="/binaries/{SHA_C}/"' in html and "tool-two" in html

    host = Host.objects.get(machine_id=hosts[1].machine_id)
    html = analyst_console.get(f"/rules/{signing.pk}/").content.decode()
    assert f'href="/hosts/{host.pk}/"' in html and hosts[1].machine_id in html
    html = analyst_console.get(f"/rules/{catalogue['cert'].pk}/").content.decode()
    assert '<span class="badge">finance</span>' in html and '<span class="badge">eng</span>' in html
    assert html.index("Excluded tags") < html.index('<span class="badge">eng</span>')
    assert analyst_console.get("/rules/999999/").status_code == 404


def test_detail_history_lists_versions_and_audit_entries(hosts, analyst_user, analyst_console):
    rule = make_rule(analyst_user, justification="first reason", tags=["eng"])
    first_revision = rule.revision
    rule_update(
        rule=rule,
        data=RuleInput(
            rule_type="BINARY",
            identifier=SHA_A,
            policy="ALLOWLIST",
            comment="second reason",
            tags=["finance"],
            excluded_tags=["eng"],
        ),
        actor=analyst_user,
        justification="second reason",
    )
    rule.refresh_from_db()
    response = analyst_console.get(f"/rules/{rule.pk}/")
    versions = response.context["versions"]
    assert [(v.rev_from, v.rev_to, v.policy) for v in versions] == [
        (rule.revision, None, "ALLOWLIST"),
        (first_revision, rule.revision, "BLOCKLIST"),
    ]
    assert versions[0].tag_names == ["finance"] and versions[0].excluded_tag_names == ["eng"]
    assert versions[1].tag_names == ["eng"]
    assert [v.changed_by for v in versions] == [analyst_user, analyst_user]
    entries = list(response.context["audit_page"])
    assert [(e.action, e.actor_name, e.justification) for e in entries] == [
        ("rule.update", "analyst-console", "second reason"),
        ("rule.create", "analyst-console", "first reason"),
    ]
    html = response.content.decode()
    assert "first reason" in html and "second reason" in html and "rule.update" in html
    assert f"{first_revision} \u2013 {rule.revision}" in html


def test_delivery_fragment_progresses_to_done(
    make_agent, analyst_user, analyst_console, django_capture_on_commit_callbacks
):
    agents = [make_agent(), make_agent()]
    for agent in agents:
        agent.sync()
    with django_capture_on_commit_callbacks(execute=True):
        rule = make_rule(analyst_user)  # and its fan-out, which stores the summary counts
    url = f"/rules/{rule.pk}/delivery/"

    fragment = analyst_console.get(url)
    assert fragment.status_code == 200
    html = fragment.content.decode().strip()
    assert html.startswith('<div class="delivery"')
    assert f'data-refresh-url="{url}"' in html and 'data-done="false"' in html
    assert '<progress id="delivery-progress-' in html and 'max="2" value="0"' in html
    assert "0 of 2 hosts confirmed (0%)" in html
    assert agents[0].machine_id in html and agents[1].machine_id in html  # pending sample
    assert '<span class="badge good">Done</span>' in html  # the fan-out's state
    assert "0 of 2 hosts" in analyst_console.get("/rules/").content.decode()  # its summary

    agents[0].sync()
    html = analyst_console.get(url).content.decode()
    assert 'data-done="false"' in html and "1 of 2 hosts confirmed (50%)" in html
    assert agents[0].machine_id not in html and agents[1].machine_id in html

    agents[1].sync()
    html = analyst_console.get(url).content.decode()
    assert 'data-done="true"' in html and "2 of 2 hosts confirmed (100%)" in html

    # The detail page embeds the same fragment.
    detail = analyst_console.get(f"/rules/{rule.pk}/").content.decode()
    assert f'data-refresh-url="{url}" data-done="true"' in detail


def test_delivery_fragment_with_no_target(db, analyst_user, analyst_console):
    rule = make_rule(analyst_user)
    html = analyst_console.get(f"/rules/{rule.pk}/delivery/").content.decode()
    assert 'data-done="true"' in html and "No host is targeted" in html
    assert '<span class="badge pending">Queued</span>' in html
    assert "not counted yet" in analyst_console.get("/rules/").content.decode()
    assert "<progress" not in html


# --- create ---------------------------------------------------------------------------------------


def form_data(**fields) -> dict:
    data = {
        "rule_type": "BINARY",
        "identifier": SHA_A,
        "policy": "BLOCKLIST",
        "scope": "everyone",
        "justification": "Malware seen on two Macs",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def test_create_form_renders(db, analyst_console):
    response = analyst_console.get("/rules/new/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Create rule" in html and 'name="csrfmiddlewaretoken"' in html
    for name in ("rule_type", "identifier", "policy", "custom_msg", "custom_url", "cel_expr"):
        assert f'<label for="id_{name}">' in html
    assert '<label for="id_justification">Justification</label>' in html
    assert 'type="datetime-local"' in html


def test_create_rule_with_tag_scope_and_audit(hosts, analyst_console):
    expires = (timezone.localtime() + datetime.timedelta(days=7)).replace(second=0, microsecond=0)
    response = analyst_console.post(
        "/rules/new/",
        form_data(
            rule_type="TEAMID",
            identifier="eqhxz8m8av",
            policy="ALLOWLIST",
            custom_msg="Allowed by IT",
            custom_url="https://help.example.com/x",
            scope="tags",
            tags=["eng"],
            excluded_tags=["finance"],
            expires_at=expires.strftime("%Y-%m-%dT%H:%M"),
        ),
    )
    rule = Rule.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/rules/{rule.pk}/"
    assert (rule.rule_type, rule.identifier, rule.policy) == ("TEAMID", TEAM, "ALLOWLIST")
    assert (rule.custom_msg, rule.custom_url) == ("Allowed by IT", "https://help.example.com/x")
    assert rule.comment == "Malware seen on two Macs"
    assert [t.name for t in rule.tags.all()] == ["eng"]
    assert [t.name for t in rule.excluded_tags.all()] == ["finance"]
    assert rule.expires_at == expires
    assert rule.created_by == analyst_console.user
    entry = AuditEntry.objects.get(action="rule.create")
    assert entry.object_id == str(rule.pk) and entry.actor == analyst_console.user
    assert entry.justification == "Malware seen on two Macs"
    page = analyst_console.get(response["Location"])
    assert "rule created" in page.content.decode()


def test_create_rule_for_listed_hosts_and_cel(hosts, analyst_console):
    response = analyst_console.post(
        "/rules/new/",
        form_data(
            policy="CEL",
            cel_expr="target.signing_time >= timestamp('2025-01-01T00:00:00Z')",
            scope="hosts",
            machine_ids=f"{hosts[0].machine_id}\n{hosts[1].machine_id}",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = Rule.objects.get()
    assert rule.policy == "CEL" and rule.cel_expr.startswith("target.signing_time")
    assert sorted(h.machine_id for h in rule.hosts.all()) == sorted(a.machine_id for a in hosts)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"identifier": "not-a-hash"}, "identifier", "64 hexadecimal characters"),
        ({"identifier": ""}, "identifier", "required"),
        ({"justification": "   "}, "justification", "required"),
        ({"justification": None}, "justification", "required"),
        ({"cel_expr": "true"}, "cel_expr", "Only the CEL policy"),
        ({"policy": "CEL"}, "cel_expr", "needs an expression"),
        ({"policy": "EVERYTHING"}, "policy", "Select a valid choice"),
        ({"rule_type": "HASH"}, "rule_type", "Select a valid choice"),
        ({"custom_url": "javascript:alert(1)"}, "custom_url", "http:// or https://"),
        ({"custom_msg": "bell\x07"}, "custom_msg", "control characters"),
        ({"custom_msg": "nul\x00"}, "custom_msg", "Null characters"),
        ({"custom_msg": "x" * 2049}, "custom_msg", "at most 2048"),
        ({"scope": "tags"}, "tags", "at least one tag"),
        ({"scope": "tags", "tags": ["no-such-tag"]}, "tags", "Select a valid choice"),
        ({"scope": "hosts", "machine_ids": "UNKNOWN-MAC"}, "machine_ids", "Unknown machine"),
        ({"scope": "bogus"}, "scope", "Select a valid choice"),
        (
            {"scope": "hosts", "machine_ids": " ".join(f"M{n}" for n in range(1001))},
            "machine_ids",
            "At most 1000 machine IDs",
        ),
        ({"expires_at": "2001-01-01T00:00"}, "expires_at", "in the future"),
        ({"expires_at": "tomorrow"}, "expires_at", "valid date/time"),
        (
            {"scope": "tags", "tags": ["eng"], "excluded_tags": ["eng"]},
            "excluded_tags",
            "both targeted and excluded",
        ),
    ],
)
def test_create_refuses_bad_input_with_field_errors(hosts, analyst_console, fields, field, message):
    revision = fleet_revision()
    response = analyst_console.post("/rules/new/", form_data(**fields))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert message in " ".join(errors[field]), errors
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Rule.objects.exists()
    assert fleet_revision() == revision


def test_create_conflict_is_a_field_error(db, analyst_user, analyst_console):
    existing = make_rule(analyst_user)
    response = analyst_console.post("/rules/new/", form_data(policy="ALLOWLIST"))
    assert response.status_code == 400
    assert f"Rule {existing.pk} already applies" in response.context["form"].errors["identifier"][0]
    assert Rule.objects.count() == 1


# --- edit -----------------------------------------------------------------------------------------


def test_edit_form_is_prefilled(hosts, analyst_user, analyst_console):
    rule = make_rule(analyst_user, custom_msg="Nope", tags=["eng"], excluded_tags=["finance"])
    response = analyst_console.get(f"/rules/{rule.pk}/edit/")
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["scope"] == "tags" and form.initial["tags"] == ["eng"]
    assert form.initial["excluded_tags"] == ["finance"]
    html = response.content.decode()
    assert "Save changes" in html and "Nope" in html and 'value="BLOCKLIST" selected' in html


def test_edit_changes_rule_history_and_audit(hosts, analyst_user, analyst_console):
    rule = make_rule(analyst_user, justification="old reason")
    response = analyst_console.post(
        f"/rules/{rule.pk}/edit/",
        form_data(
            policy="SILENT_BLOCKLIST",
            custom_msg="Quietly",
            scope="hosts",
            machine_ids=hosts[0].machine_id,
            justification="Too noisy",
        ),
    )
    assert response.status_code == 302
    assert response["Location"] == f"/rules/{rule.pk}/"
    rule.refresh_from_db()
    assert (rule.policy, rule.custom_msg, rule.comment) == (
        "SILENT_BLOCKLIST",
        "Quietly",
        "Too noisy",
    )
    assert [h.machine_id for h in rule.hosts.all()] == [hosts[0].machine_id]
    assert RuleVersion.objects.filter(rule_id=rule.pk).count() == 2
    entry = AuditEntry.objects.get(action="rule.update")
    assert entry.object_id == str(rule.pk) and entry.justification == "Too noisy"
    assert entry.before["policy"] == "BLOCKLIST" and entry.after["policy"] == "SILENT_BLOCKLIST"

    hosts[0].sync()
    assert hosts[0].rules[("BINARY", SHA_A)]["policy"] == "SILENT_BLOCKLIST"


def test_edit_keeps_a_rule_with_tags_and_hosts(hosts, analyst_user, analyst_console):
    rule = make_rule(analyst_user, tags=["eng"], machine_ids=[hosts[1].machine_id])
    form = analyst_console.get(f"/rules/{rule.pk}/edit/").context["form"]
    assert form.initial["scope"] == "both"
    response = analyst_console.post(
        f"/rules/{rule.pk}/edit/",
        form_data(scope="both", tags=["eng"], machine_ids=hosts[1].machine_id, policy="ALLOWLIST"),
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.policy == "ALLOWLIST"
    assert [t.name for t in rule.tags.all()] == ["eng"]
    assert [h.machine_id for h in rule.hosts.all()] == [hosts[1].machine_id]


def test_edit_refuses_bad_input_and_changes_nothing(db, analyst_user, analyst_console):
    rule = make_rule(analyst_user)
    revision = fleet_revision()
    response = analyst_console.post(
        f"/rules/{rule.pk}/edit/", form_data(identifier="zz", policy="ALLOWLIST")
    )
    assert response.status_code == 400
    assert "identifier" in response.context["form"].errors
    rule.refresh_from_db()
    assert (rule.identifier, rule.policy) == (SHA_A, "BLOCKLIST")
    assert fleet_revision() == revision
    assert not AuditEntry.objects.filter(action="rule.update").exists()


# --- delete ---------------------------------------------------------------------------------------


def test_delete_asks_for_confirmation_and_justification(db, analyst_user, analyst_console):
    rule = make_rule(analyst_user)
    page = analyst_console.get(f"/rules/{rule.pk}/delete/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Delete rule" in html and 'name="justification"' in html and SHA_A in html
    assert Rule.objects.filter(pk=rule.pk).exists()

    refused = analyst_console.post(f"/rules/{rule.pk}/delete/", {"justification": "  "})
    assert refused.status_code == 400
    assert "justification" in refused.context["form"].errors
    assert Rule.objects.filter(pk=rule.pk).exists()


def test_delete_removes_rule_with_audit(agent, analyst_user, analyst_console):
    agent.sync()
    rule = make_rule(analyst_user)
    agent.sync()
    assert ("BINARY", SHA_A) in agent.rules
    response = analyst_console.post(f"/rules/{rule.pk}/delete/", {"justification": "False alarm"})
    assert response.status_code == 302 and response["Location"] == "/rules/"
    assert not Rule.objects.exists()
    entry = AuditEntry.objects.get(action="rule.delete")
    assert entry.object_id == str(rule.pk) and entry.justification == "False alarm"
    assert entry.actor == analyst_console.user
    agent.sync()
    assert ("BINARY", SHA_A) not in agent.rules
    assert (
        analyst_console.post(f"/rules/{rule.pk}/delete/", {"justification": "x"}).status_code == 404
    )


# --- import ---------------------------------------------------------------------------------------


def upload(content, name="rules.json") -> SimpleUploadedFile:
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode()
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def import_post(browser, content, name="rules.json", **fields):
    data = {"file": upload(content, name), "file_format": "auto", "scope": "everyone"}
    data["justification"] = "Migrating from the old server"
    data.update(fields)
    return browser.post("/rules/import/", data)


def test_import_page_renders(db, analyst_console):
    response = analyst_console.get("/rules/import/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html and ">Import</button>" in html
    assert '<label for="id_file">Rules file</label>' in html


def test_import_santactl_json(hosts, analyst_console):
    export = {
        "rules": [
            {
                "identifier": SHA_A,
                "policy": "BLOCKLIST",
                "rule_type": "BINARY",
                "custom_msg": "/bin/ls block for demo",
                "custom_url": "",
                "event_detail_button_label": "",
                "comment": "",
                "cel_expr": "",
            },
            # santactl lower-cases keys, upper-cases values and knows the old names.
            {"Identifier": "eqhxz8m8av", "POLICY": "whitelist", "Rule_Type": "teamid"},
            {"sha256": SHA_B, "policy": "SILENT_BLACKLIST", "rule_type": "BINARY"},
            {
                "identifier": SIGNING,
                "policy": "CEL",
                "rule_type": "SIGNINGID",
                "cel_expr": "true",
                "comment": "own comment",
                "event_detail_button_label": "More",
            },
        ]
    }
    response = import_post(analyst_console, export, scope="tags", tags=["eng"])
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == "/rules/"
    rules = {r.identifier: r for r in Rule.objects.prefetch_related("tags")}
    assert {k: (r.rule_type, r.policy) for k, r in rules.items()} == {
        SHA_A: ("BINARY", "BLOCKLIST"),
        TEAM: ("TEAMID", "ALLOWLIST"),
        SHA_B: ("BINARY", "SILENT_BLOCKLIST"),
        SIGNING: ("SIGNINGID", "CEL"),
    }
    assert rules[SHA_A].custom_msg == "/bin/ls block for demo"
    assert rules[SIGNING].cel_expr == "true" and rules[SIGNING].comment == "own comment"
    assert rules[TEAM].comment == "Migrating from the old server"
    assert all([t.name for t in r.tags.all()] == ["eng"] for r in rules.values())
    entries = AuditEntry.objects.filter(action="rule.bulk_create")
    assert sorted(e.object_id for e in entries) == sorted(str(r.pk) for r in rules.values())
    assert {(e.justification, e.actor) for e in entries} == {
        ("Migrating from the old server", analyst_console.user)
    }
    page = analyst_console.get("/rules/").content.decode()
    assert "Imported 4 rules" in page
    assert "1 rule had an event_detail_button_label" in page


def test_import_csv(hosts, analyst_console):
    content = (
        "rule_type,identifier,policy,custom_msg,comment\r\n"
        f'BINARY,{SHA_A},BLOCKLIST,"Blocked, see ""IT""",ticket 1\r\n'
        "\r\n"
        f"teamid,{TEAM.lower()},allowlist,,\r\n"
    )
    response = import_post(
        analyst_console, content, name="rules.csv", scope="hosts", machine_ids=hosts[0].machine_id
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    a = Rule.objects.get(identifier=SHA_A)
    assert (a.policy, a.custom_msg, a.comment) == ("BLOCKLIST", 'Blocked, see "IT"', "ticket 1")
    team = Rule.objects.get(identifier=TEAM)
    assert team.policy == "ALLOWLIST" and team.comment == "Migrating from the old server"
    assert [h.machine_id for h in team.hosts.all()] == [hosts[0].machine_id]


BAD_IMPORTS = [
    pytest.param(b"\xff\xfe{}", "rules.json", "not UTF-8", id="not-utf8"),
    pytest.param("", "rules.json", "empty", id="empty"),
    pytest.param('{"rules": [', "rules.json", "Not valid JSON", id="truncated-json"),
    pytest.param("[" * 100000 + "]" * 100000, "rules.json", "Not valid JSON", id="deep-json"),
    pytest.param('{"rules": [], "x": 1}', "rules.json", "Unknown top-level key", id="extra-top"),
    pytest.param([{"identifier": SHA_A}], "rules.json", '{"rules": [...]}', id="top-list"),
    pytest.param({"rules": {}}, "rules.json", "must be a list", id="rules-not-list"),
    pytest.param({"rules": []}, "rules.json", "holds no rules", id="no-rules"),
    pytest.param({"rules": ["x"]}, "rules.json", "Item 1: expected a rule object", id="item-type"),
    pytest.param(
        {"rules": [{"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY", "x": ""}]},
        "rules.json",
        "Item 1: unknown key 'x'",
        id="unknown-key",
    ),
    pytest.param(
        {"rules": [{"identifier": SHA_A, "policy": 1, "rule_type": "BINARY"}]},
        "rules.json",
        "Item 1, field policy: expected a string, got a number",
        id="wrong-type",
    ),
    pytest.param(
        f'{{"rules": [{{"identifier": "{SHA_A}", "identifier": "{SHA_B}"}}]}}',
        "rules.json",
        "appears twice",
        id="duplicate-key",
    ),
    pytest.param(
        {"rules": [{"identifier": SHA_A, "policy": "BLOCKLIST"}]},
        "rules.json",
        "Item 1, field rule_type: rule_type is missing",
        id="missing-type",
    ),
    pytest.param(
        {"rules": [{"identifier": SHA_A, "policy": "MAYBE", "rule_type": "BINARY"}]},
        "rules.json",
        "Item 1, field policy: 'MAYBE' is not a policy",
        id="unknown-policy",
    ),
    pytest.param(
        {
            "rules": [
                {"identifier": SHA_A, "policy": "ALLOWLIST_LOCAL_BINARY", "rule_type": "BINARY"}
            ]
        },
        "rules.json",
        "a sync server cannot send it",
        id="local-policy",
    ),
    pytest.param(
        {
            "rules": [
                {"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"},
                {"identifier": SHA_B, "policy": "BLOCKLIST", "rule_type": "BINARY"},
                {"identifier": "12345", "policy": "BLOCKLIST", "rule_type": "BINARY"},
            ]
        },
        "rules.json",
        "Item 3, field identifier: A BINARY identifier is a SHA-256",
        id="bad-identifier-item-3",
    ),
    pytest.param(
        {
            "rules": [
                {"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"},
                {"identifier": SHA_A.upper(), "policy": "ALLOWLIST", "rule_type": "BINARY"},
            ]
        },
        "rules.json",
        f"Item 2, field identifier: BINARY {SHA_A} is already in Item 1",
        id="repeated-rule",
    ),
    pytest.param(
        {"rules": [{"identifier": SHA_A, "policy": "CEL", "rule_type": "BINARY"}]},
        "rules.json",
        "Item 1, field cel_expr: A CEL rule needs a cel_expr",
        id="cel-without-expression",
    ),
    pytest.param(
        f"rule_type,identifier,policy,owner\nBINARY,{SHA_A},BLOCKLIST,me\n",
        "rules.csv",
        "unknown column 'owner'",
        id="csv-unknown-column",
    ),
    pytest.param(
        f"rule_type,identifier\nBINARY,{SHA_A}\n",
        "rules.csv",
        "missing column policy",
        id="csv-missing-column",
    ),
    pytest.param(
        f"rule_type,identifier,policy\nBINARY,{SHA_A},BLOCKLIST\nBINARY,{SHA_B}\n",
        "rules.csv",
        "Row 3 has 2 fields; the header has 3",
        id="csv-short-row",
    ),
    pytest.param(
        f"rule_type,identifier,policy\nBINARY,{SHA_A},BLOCKLIST\nBINARY,{SHA_B},NOPE\n",
        "rules.csv",
        "Row 3, field policy",
        id="csv-bad-policy",
    ),
    pytest.param(
        f'rule_type,identifier,policy,custom_msg\nBINARY,{SHA_A},BLOCKLIST,"a\x07"\n',
        "rules.csv",
        "Row 2, field custom_msg: custom_msg contains control characters",
        id="csv-control-chars",
    ),
    pytest.param(
        f'rule_type,identifier,policy\nBINARY,"{SHA_A}"x,BLOCKLIST\n',
        "rules.csv",
        "Not valid CSV at row 2",
        id="csv-bad-quoting",
    ),
    pytest.param(
        "rule_type,identifier,policy\n", "rules.csv", "holds no rules", id="csv-header-only"
    ),
]


@pytest.mark.parametrize(("content", "name", "message"), BAD_IMPORTS)
def test_bad_import_changes_nothing(db, analyst_user, analyst_console, content, name, message):
    existing = make_rule(analyst_user, identifier=SHA_C)
    revision = fleet_revision()
    audit_count = AuditEntry.objects.count()
    response = import_post(analyst_console, content, name=name)
    assert response.status_code == 400
    html = htmllib.unescape(response.content.decode())
    assert message in " ".join(response.context["form"].errors["file"]), html[-6000:]
    assert message in html
    assert "Nothing was imported" in html
    assert list(Rule.objects.values_list("pk", flat=True)) == [existing.pk]
    assert fleet_revision() == revision
    assert AuditEntry.objects.count() == audit_count


def test_import_conflict_with_existing_rule_names_the_item(db, analyst_user, analyst_console):
    existing = make_rule(analyst_user, identifier=SHA_B)
    content = {
        "rules": [
            {"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"},
            {"identifier": SHA_B, "policy": "ALLOWLIST", "rule_type": "BINARY"},
        ]
    }
    response = import_post(analyst_console, content)
    assert response.status_code == 400
    assert (
        f"Item 2, field identifier: Rule {existing.pk} already applies" in response.content.decode()
    )
    assert list(Rule.objects.values_list("pk", flat=True)) == [existing.pk]


def test_import_unknown_host_is_a_scope_error(db, analyst_console):
    content = {"rules": [{"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"}]}
    response = import_post(analyst_console, content, scope="hosts", machine_ids="NO-SUCH-MAC")
    assert response.status_code == 400
    assert "Unknown machine ids: NO-SUCH-MAC" in response.context["form"].errors["machine_ids"][0]
    assert not Rule.objects.exists()


def test_import_limits(db, analyst_console, settings):
    item = {"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"}
    too_many = import_post(analyst_console, {"rules": [item] * 20_001})
    assert too_many.status_code == 400
    assert (
        "The file holds 20,001 rules; one import takes at most API_MAX_BULK_RULES (20,000)"
        in too_many.content.decode()
    )

    rows = "".join(f"BINARY,{n:064x},BLOCKLIST\n" for n in range(20_001))
    too_many_rows = import_post(
        analyst_console, "rule_type,identifier,policy\n" + rows, name="rules.csv"
    )
    assert too_many_rows.status_code == 400
    assert "more than API_MAX_BULK_RULES (20,000) rules" in too_many_rows.content.decode()

    big = json.dumps({"rules": [{**item, "comment": "x" * (5 * 1024 * 1024)}]})
    too_big = import_post(analyst_console, big)
    assert too_big.status_code == 400
    assert "the limit is 5,242,880 bytes" in too_big.content.decode()
    assert not Rule.objects.exists()


def test_import_needs_file_and_justification(db, analyst_console):
    response = analyst_console.post(
        "/rules/import/", {"file_format": "auto", "scope": "everyone", "justification": ""}
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "file" in errors and "justification" in errors
    assert not Rule.objects.exists()


# --- export ---------------------------------------------------------------------------------------

TRICKY = [
    {"rule_type": "BINARY", "identifier": SHA_A, "policy": "BLOCKLIST", "custom_msg": XSS},
    {
        "rule_type": "TEAMID",
        "identifier": TEAM,
        "policy": "ALLOWLIST",
        "custom_msg": '=HYPERLINK("http://x")',
        "comment": "'=already quoted",
        "custom_url": "https://example.com/a,b",
    },
    {
        "rule_type": "SIGNINGID",
        "identifier": "platform:com.apple.curl",
        "policy": "CEL",
        "cel_expr": "args.size() > 1\n&& true",
        "comment": 'two\nlines, "quoted" and ünïcode',
    },
    {"rule_type": "CDHASH", "identifier": CDHASH, "policy": "REMOVE", "comment": "-1+1"},
    {
        "rule_type": "CERTIFICATE",
        "identifier": CERT,
        "policy": "SILENT_TTY_BLOCKLIST",
        "custom_msg": '  padded, "quoted"  ',
        "custom_url": "http://example.com/?a=1&b=2",
    },
]
FIELDS = ("rule_type", "identifier", "policy", "custom_msg", "custom_url", "cel_expr", "comment")


def rule_values() -> set[tuple]:
    return set(Rule.objects.values_list(*FIELDS))


def export_body(response) -> str:
    assert response.status_code == 200
    assert response.streaming
    return b"".join(response.streaming_content).decode()


@pytest.mark.parametrize(("export", "name"), [("json", "rules.json"), ("csv", "rules.csv")])
def test_export_then_import_round_trip(db, analyst_user, analyst_console, export, name):
    for fields in TRICKY:
        make_rule(analyst_user, **{"comment": f"ticket {fields['identifier'][:4]}", **fields})
    before = rule_values()
    body = export_body(analyst_console.get(f"/rules/?export={export}"))
    rules_bulk_delete(rule_ids=list(Rule.objects.values_list("pk", flat=True)))
    assert not Rule.objects.exists()

    response = import_post(analyst_console, body, name=name)
    assert response.status_code == 302, response.content.decode()[:3000]
    after = rule_values()
    assert after == before
    assert len(after) == len(TRICKY)


def test_export_json_is_santactl_format(db, analyst_user, auditor_console):
    make_rule(analyst_user, custom_msg="Nope")
    make_rule(analyst_user, rule_type="TEAMID", identifier=TEAM, policy="ALLOWLIST")
    response = auditor_console.get("/rules/?policy=BLOCKLIST&export=json&page=3")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="santa-rules-')
    document = json.loads(export_body(response))
    assert document == {
        "rules": [
            {
                "identifier": SHA_A,
                "policy": "BLOCKLIST",
                "rule_type": "BINARY",
                "custom_msg": "Nope",
                "custom_url": "",
                "event_detail_button_label": "",
                "comment": "because",
                "cel_expr": "",
            }
        ]
    }


def test_export_csv_neutralises_formulas(db, analyst_user, auditor_console):
    make_rule(analyst_user, custom_msg="=cmd|' /C calc'!A0", comment="@SUM(1)")
    response = auditor_console.get("/rules/?export=csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(export_body(response))))
    assert rows[0] == list(FIELDS)
    assert rows[1] == ["BINARY", SHA_A, "BLOCKLIST", "'=cmd|' /C calc'!A0", "", "", "'@SUM(1)"]


def test_export_refuses_bad_format_and_filters(db, analyst_console):
    assert analyst_console.get("/rules/?export=xml").status_code == 400
    assert analyst_console.get("/rules/?export=csv&stale_days=x").status_code == 400


def test_list_offers_export_links_with_filters(db, auditor_console):
    html = auditor_console.get("/rules/?policy=BLOCKLIST&page=2").content.decode()
    assert 'href="/rules/?policy=BLOCKLIST&amp;export=json"' in html
    assert 'href="/rules/?policy=BLOCKLIST&amp;export=csv"' in html
    assert "New rule" not in html and "Import rules" not in html


# --- who may do what ------------------------------------------------------------------------------

READ_URLS = ["/rules/", "/rules/{pk}/", "/rules/{pk}/delivery/", "/rules/?export=json"]
WRITE_URLS = ["/rules/new/", "/rules/import/", "/rules/{pk}/edit/", "/rules/{pk}/delete/"]


@pytest.fixture
def one_rule(db, analyst_user):
    return make_rule(analyst_user)


@pytest.mark.parametrize("url", READ_URLS + WRITE_URLS)
def test_analyst_may_open_everything(one_rule, analyst_console, url):
    assert analyst_console.get(url.format(pk=one_rule.pk)).status_code == 200


@pytest.mark.parametrize("url", READ_URLS)
def test_auditor_may_read_and_export(one_rule, auditor_console, url):
    assert auditor_console.get(url.format(pk=one_rule.pk)).status_code == 200


@pytest.mark.parametrize("url", WRITE_URLS)
def test_auditor_may_not_write(one_rule, auditor_console, url):
    url = url.format(pk=one_rule.pk)
    assert auditor_console.get(url).status_code == 403
    post = {**form_data(identifier=SHA_B), "file": upload({"rules": []})}
    assert auditor_console.post(url, post).status_code == 403
    one_rule.refresh_from_db()
    assert list(Rule.objects.values_list("pk", "policy")) == [(one_rule.pk, "BLOCKLIST")]
    assert (
        AuditEntry.objects.filter(actor=auditor_console.user)
        .exclude(action="auth.permission_denied")
        .count()
        == 0
    )  # refused: nothing changed, only the denial is on record


@pytest.mark.parametrize("url", READ_URLS + WRITE_URLS)
def test_user_without_role_is_refused(one_rule, console, url):
    browser = console(None)
    assert browser.get(url.format(pk=one_rule.pk)).status_code == 403
    assert browser.post(url.format(pk=one_rule.pk), form_data()).status_code in (403, 405)


@pytest.mark.parametrize("url", READ_URLS + WRITE_URLS)
def test_anonymous_is_sent_to_sign_in(one_rule, client, url):
    url = url.format(pk=one_rule.pk)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("url", READ_URLS)
def test_read_pages_refuse_post(one_rule, analyst_console, url):
    assert analyst_console.post(url.format(pk=one_rule.pk)).status_code == 405


def test_views_declare_their_permissions():
    from rules import views

    assert views.rule_list.console_permissions == ("rules.view_rule",)
    assert views.rule_create.console_permissions == ("rules.add_rule",)
    assert views.rule_import.console_permissions == ("rules.add_rule",)
    assert "rules.change_rule" in views.rule_edit.console_permissions
    assert "rules.delete_rule" in views.rule_delete.console_permissions


# --- escaping and page hygiene --------------------------------------------------------------------


def test_rule_texts_are_escaped_everywhere(db, analyst_user, analyst_console):
    rule = make_rule(analyst_user, custom_msg=XSS, comment=XSS, justification=XSS)
    for url in (
        "/rules/",
        f"/rules/{rule.pk}/",
        f"/rules/{rule.pk}/edit/",
        f"/rules/{rule.pk}/delete/",
    ):
        html = analyst_console.get(url).content.decode()
        assert XSS not in html, url
        assert XSS_ESCAPED in html, url


def test_pages_have_no_inline_script_or_style(catalogue, analyst_console):
    pk = catalogue["cert"].pk
    for url in (
        "/rules/",
        f"/rules/{pk}/",
        f"/rules/{pk}/delivery/",
        "/rules/new/",
        f"/rules/{pk}/edit/",
        f"/rules/{pk}/delete/",
        "/rules/import/",
    ):
        html = analyst_console.get(url).content.decode()
        assert "style=" not in html, url
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], url
        assert not re.search(r"<[^>]+\son[a-z]+=", html), url


def test_hostile_import_is_reported_escaped(db, analyst_console):
    content = {"rules": [{"identifier": SHA_A, "policy": "BLOCKLIST", "rule_type": "BINARY"}]}
    content["rules"][0][XSS] = "x"
    response = import_post(analyst_console, content, name=f"{XSS}.json")
    assert response.status_code == 400
    html = response.content.decode()
    assert XSS not in html
    assert "Item 1: unknown key &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in html
    assert not Rule.objects.exists()
