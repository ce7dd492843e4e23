"""Hosts in the console: the fleet list and its filters, one host, and the operator actions."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEntry
from hosts import tasks as host_tasks
from hosts import views as host_views
from hosts.models import Host, HostSync, HostTag, TagSource
from hosts.services import (
    host_request_clean_sync,
    host_set_mode_override,
    host_set_tags,
    hosts_prune_syncs,
    profile_create,
    tag_rule_create,
)
from rules.services import RuleInput, rule_create

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = b"&lt;script&gt;alert(1)&lt;/script&gt;"


def host_of(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


def listed(browser, **params) -> set[int]:
    """The host ids the list shows for these query parameters."""
    response = browser.get("/hosts/", params)
    assert response.status_code == 200, response.content
    return {int(pk) for pk in re.findall(rb'href="/hosts/(\d+)/"', response.content)}


def manual_tags(host: Host) -> list[str]:
    return sorted(
        HostTag.objects.filter(host=host, rev_to__isnull=True, source=TagSource.MANUAL).values_list(
            "tag__name", flat=True
        )
    )


# --- the list -------------------------------------------------------------------------------------


@pytest.fixture
def fleet(make_agent, make_enrollment):
    """Five hosts that differ in one way each from `plain`."""
    plain = make_agent(hostname="plain.example.com", primary_user="pat")
    tagged = make_agent(hostname="tagged.example.com", primary_user="tess")
    kiosk = make_agent(hostname="kiosk.example.com", santa_version="2026.9.0")
    stale = make_agent(hostname="stale.example.com", serial="SERIALSTALE1")
    drifted = make_agent(hostname="drifted.example.com")
    for agent in (plain, tagged, kiosk, stale, drifted):
        agent.sync()
    host_set_tags(host=host_of(tagged), tag_names=["eng"])
    host_set_mode_override(host=host_of(kiosk), client_mode="LOCKDOWN")
    Host.objects.filter(pk=host_of(stale).pk).update(stale_since=timezone.now())
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    drifted.sync()
    drifted.rules.clear()  # rules vanish behind the server's back
    drifted.preflight()  # reports counts that differ from what was delivered
    hosts = {
        name: host_of(agent).pk
        for name, agent in {
            "plain": plain,
            "tagged": tagged,
            "kiosk": kiosk,
            "stale": stale,
            "drifted": drifted,
        }.items()
    }
    never = make_agent(hostname="never.example.com")
    never.preflight()  # registered, never completed a sync
    hosts["never"] = host_of(never).pk
    hosts["agents"] = {"plain": plain, "tagged": tagged, "kiosk": kiosk}
    return hosts


def test_list_columns(fleet, analyst_console):
    response = analyst_console.get("/hosts/")
    assert response.status_code == 200
    html = response.content.decode()
    assert listed(analyst_console) == {
        fleet[n] for n in ("plain", "tagged", "kiosk", "stale", "drifted", "never")
    }
    plain_row = html[html.index("plain.example.com") :].split("</tr>")[0]
    assert "pat" in plain_row and "MONITOR" in plain_row and "2026.8.1" in plain_row
    assert "15.1" in plain_row and "24B83" in plain_row
    assert 'class="badge good">synced<' in plain_row
    kiosk_row = html[html.index("kiosk.example.com") :].split("</tr>")[0]
    assert "LOCKDOWN" in kiosk_row and "override" in kiosk_row and "2026.9.0" in kiosk_row
    tagged_row = html[html.index("tagged.example.com") :].split("</tr>")[0]
    assert ">eng</span>" in tagged_row
    stale_row = html[html.index("stale.example.com") :].split("</tr>")[0]
    assert 'class="badge warn">stale<' in stale_row
    drifted_row = html[html.index("drifted.example.com") :].split("</tr>")[0]
    assert 'class="badge bad">drifted<' in drifted_row
    never_row = html[html.index("never.example.com") :].split("</tr>")[0]
    assert "never synced" in never_row and "synced</span>" not in never_row.replace(
        "never synced</span>", ""
    )


def test_list_filters(fleet, analyst_console):
    everyone = {fleet[n] for n in ("plain", "tagged", "kiosk", "stale", "drifted", "never")}
    assert listed(analyst_console, tag="eng") == {fleet["tagged"]}
    assert listed(analyst_console, tag="ENG") == {fleet["tagged"]}
    assert listed(analyst_console, tag="none-such") == set()
    assert listed(analyst_console, mode="LOCKDOWN") == {fleet["kiosk"]}
    assert listed(analyst_console, mode="MONITOR") == everyone - {fleet["kiosk"]}
    assert listed(analyst_console, stale="true") == {fleet["stale"]}
    assert listed(analyst_console, stale="false") == everyone - {fleet["stale"]}
    assert listed(analyst_console, santa_version="2026.9.0") == {fleet["kiosk"]}
    assert listed(analyst_console, drifted="true") == {fleet["drifted"]}
    assert listed(analyst_console, drifted="false") == everyone - {fleet["drifted"]}
    assert listed(analyst_console, tag="eng", mode="LOCKDOWN") == set()


def test_list_search(fleet, analyst_console):
    tagged = fleet["agents"]["tagged"]
    assert listed(analyst_console, q=tagged.machine_id[:13].lower()) == {fleet["tagged"]}
    assert listed(analyst_console, q="KIOSK.example") == {fleet["kiosk"]}
    assert listed(analyst_console, q="serialstale") == {fleet["stale"]}
    assert listed(analyst_console, q="tess") == {fleet["tagged"]}
    assert listed(analyst_console, q="nobody-matches-this") == set()


def test_list_ordering_by_last_sync(fleet, analyst_console):
    Host.objects.filter(pk=fleet["plain"]).update(last_postflight_at=timezone.now() + timedelta(1))
    response = analyst_console.get("/hosts/", {"ordering": "-last_sync"})
    pks = [int(pk) for pk in re.findall(rb'href="/hosts/(\d+)/"', response.content)]
    assert pks[0] == fleet["plain"]
    response = analyst_console.get("/hosts/", {"ordering": "last_sync"})
    pks = [int(pk) for pk in re.findall(rb'href="/hosts/(\d+)/"', response.content)]
    assert pks[-1] == fleet["plain"]


def test_invalid_filter_shows_error_not_500(fleet, analyst_console):
    response = analyst_console.get("/hosts/", {"mode": "monitor"})
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content


def _bare_hosts(enrollment, count: int, start: int = 0) -> list[Host]:
    hosts = Host.objects.bulk_create(
        [
            Host(machine_id=f"BULK-{n:05d}", enrollment=enrollment, hostname=f"bulk-{n}")
            for n in range(start, start + count)
        ]
    )
    for host in Host.objects.filter(machine_id__startswith="BULK-")[:count]:
        host_set_tags(host=host, tag_names=["eng", f"t{host.pk % 3}"])
    return hosts


def test_list_queries_do_not_grow_with_rows(enrollment, analyst_console):
    _bare_hosts(enrollment[0], 3)
    analyst_console.get("/hosts/")  # session, user and permission caches warm
    with CaptureQueriesContext(connection) as small:
        assert analyst_console.get("/hosts/").status_code == 200
    _bare_hosts(enrollment[0], 30, start=3)
    with CaptureQueriesContext(connection) as large:
        response = analyst_console.get("/hosts/")
    assert len(listed(analyst_console)) == 33
    assert len(large) == len(small)
    assert b">t2</span>" in response.content


def test_list_is_paginated(enrollment, analyst_console):
    Host.objects.bulk_create(
        [Host(machine_id=f"PAGE-{n:03d}", enrollment=enrollment[0]) for n in range(60)]
    )
    first = analyst_console.get("/hosts/")
    assert len(listed(analyst_console)) == 50
    assert b"Page 1 of 2 (60 in all)" in first.content
    second = listed(analyst_console, page=2)
    assert len(second) == 10
    assert second == set(
        Host.objects.filter(machine_id__gte="PAGE-050").values_list("pk", flat=True)
    )


# --- one host -------------------------------------------------------------------------------------


EVENT = {
    "file_sha256": SHA_C,
    "file_name": "build-tool",
    "file_path": "/usr/local/bin",
    "decision": "BLOCK_BINARY",
    "execution_time": 1_760_000_000.5,
    "executing_user": "alice",
}


@pytest.fixture
def detailed(make_agent):
    """A synced host in tag eng (assigned) and tag "fleet-m1" (a tag rule), with rules for
    everyone, for its tag and for another tag, a profile setting, an event and two syncs."""
    tag_rule_create(
        tag_name="fleet-m1", fact="model_identifier", operator="equals", value="MacBookPro18,3"
    )
    agent = make_agent(hostname="detail.example.com", serial="C02DETAIL01", primary_user="dana")
    agent.sync()
    host = host_of(agent)
    host_set_tags(host=host, tag_names=["eng"])
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", custom_msg="everyone rule"))
    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST", tags=("eng",)))
    rule_create(data=RuleInput("TEAMID", "EQHXZ8M8AV", "ALLOWLIST", tags=("finance",)))
    profile_create(name="eng-profile", values={"batch_size": 77}, tag_names=["eng"])
    agent.add_event(**EVENT)
    agent.sync()
    return agent


def test_detail_content(detailed, analyst_console):
    host = host_of(detailed)
    response = analyst_console.get(f"/hosts/{host.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    # Facts.
    for fact in (
        "detail.example.com",
        "C02DETAIL01",
        "MacBookPro18,3",
        "15.1 (24B83)",
        "2026.8.1",
        "dana",
        "staff",
        ">111<",
        "default-enrollment",
    ):
        assert fact in html, fact
    # Configuration: each setting, its value and where it came from.
    config = html[html.index('id="h-config"') :].split("</section>")[0]
    assert "batch_size" in config and "full_sync_interval" in config
    row = config[config.index("batch_size") :].split("</tr>")[0]
    assert ">77<" in row and "profile:eng-profile" in row
    # Tags, apart.
    tags = html[html.index('id="h-tags"') :].split("</section>")[0]
    assigned, automatic = tags.split("<h3>Automatic</h3>")
    assert ">eng<" in assigned and "fleet-m1" not in assigned
    assert ">fleet-m1<" in automatic and ">eng<" not in automatic
    # Effective rules: everyone's and its tag's, not another tag's.
    rules = html[html.index('id="h-rules"') :].split("</section>")[0]
    assert SHA_A in rules and SHA_B in rules and "EQHXZ8M8AV" not in rules
    assert "everyone rule" in rules
    # Delivery: it synced after the rules were made.
    delivery = html[html.index('id="h-delivery"') :].split("</section>")[0]
    assert "in sync" in delivery
    # Events and binaries link to the binary page.
    events = html[html.index('id="h-events"') :].split("</section>")[0]
    assert f'href="/binaries/{SHA_C}/"' in events and "build-tool" in events
    assert "BLOCK_BINARY" in events and "alice" in events
    binaries = html[html.index('id="h-binaries"') :].split("</section>")[0]
    assert f'href="/binaries/{SHA_C}/"' in binaries
    # Sync history: both syncs, newest first.
    history = html[html.index('id="h-history"') :].split("</section>")[0]
    rows = history.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 2
    assert "Normal" in rows[0] and "Clean all" in rows[1]


def test_detail_delivery_shows_pending_rules(detailed, analyst_console):
    host = host_of(detailed)
    rule_create(data=RuleInput("CDHASH", "e" * 40, "BLOCKLIST"))
    delivery = analyst_console.get(f"/hosts/{host.pk}/").content.decode()
    delivery = delivery[delivery.index('id="h-delivery"') :].split("</section>")[0]
    assert "changes pending" in delivery and "e" * 40 in delivery
    detailed.sync()
    delivery = analyst_console.get(f"/hosts/{host.pk}/").content.decode()
    delivery = delivery[delivery.index('id="h-delivery"') :].split("</section>")[0]
    assert "in sync" in delivery and "e" * 40 not in delivery


def test_detail_effective_rules_paginate(agent, analyst_console):
    agent.sync()
    for n in range(30):
        rule_create(data=RuleInput("BINARY", f"{n:064x}", "BLOCKLIST"))
    host = host_of(agent)
    first = analyst_console.get(f"/hosts/{host.pk}/").content.decode()
    after = re.search(r"rules_after=([A-Z]+%3A[0-9a-f]{64})", first).group(1)
    assert after == f"BINARY%3A{24:064x}"  # the key of the page's last rule
    second = analyst_console.get(f"/hosts/{host.pk}/?rules_after={after}").content.decode()
    in_first = set(
        re.findall(r"[0-9a-f]{64}", first.split('id="h-rules"')[1].split("</section>")[0])
    )
    in_second = set(
        re.findall(r"[0-9a-f]{64}", second.split('id="h-rules"')[1].split("</section>")[0])
    )
    assert in_first == {f"{n:064x}" for n in range(25)}
    assert in_second == {f"{n:064x}" for n in range(25, 30)}
    assert "rules_after=" not in second.split('id="h-rules"')[1].split("</section>")[0]


def test_detail_shows_drift_reasons(fleet, analyst_console):
    html = analyst_console.get(f"/hosts/{fleet['drifted']}/").content.decode()
    drift = html[html.index('id="h-drift"') :].split("</section>")[0]
    assert "rule counts differ" in drift
    assert 'id="h-drift"' not in analyst_console.get(f"/hosts/{fleet['plain']}/").content.decode()


def test_unknown_host_is_404(db, analyst_console):
    assert analyst_console.get("/hosts/999999/").status_code == 404


# --- sync history ---------------------------------------------------------------------------------


def test_postflight_records_sync_history(agent):
    agent.sync()
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    host = host_of(agent)
    first, second = HostSync.objects.filter(host=host).order_by("finished_at", "id")
    assert first.sync_type == "CLEAN_ALL" and first.rules_received == first.rules_processed
    assert (second.sync_type, second.rules_received, second.rules_processed) == ("NORMAL", 1, 1)
    assert second.revision == host.rules_synced_rev and second.rules_dropped is False
    assert second.finished_at == host.last_postflight_at


def test_detail_shows_last_twenty_syncs(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    now = timezone.now()
    HostSync.objects.bulk_create(
        [
            HostSync(
                host=host,
                finished_at=now - timedelta(hours=n),
                sync_type="NORMAL",
                rules_received=n,
                rules_processed=n,
                revision=n,
            )
            for n in range(1, 30)
        ]
    )
    html = analyst_console.get(f"/hosts/{host.pk}/").content.decode()
    history = html[html.index('id="h-history"') :].split("</section>")[0]
    assert len(history.split("<tbody>")[1].split("</tr>")[:-1]) == 20


def test_sync_history_is_pruned_after_retention(agent, settings):
    settings.SYNC_HISTORY_RETENTION_DAYS = 30
    agent.sync()
    host = host_of(agent)
    old = HostSync.objects.create(
        host=host, finished_at=timezone.now() - timedelta(days=31), sync_type="NORMAL"
    )
    kept = HostSync.objects.create(
        host=host, finished_at=timezone.now() - timedelta(days=29), sync_type="NORMAL"
    )
    assert hosts_prune_syncs() == 1
    assert not HostSync.objects.filter(pk=old.pk).exists()
    assert HostSync.objects.filter(pk=kept.pk).exists()
    HostSync.objects.create(
        host=host, finished_at=timezone.now() - timedelta(days=40), sync_type="NORMAL"
    )
    host_tasks.mark_stale_hosts.apply().get()  # the periodic task prunes too
    assert HostSync.objects.filter(host=host).count() == 2
    settings.SYNC_HISTORY_RETENTION_DAYS = 0  # keep forever
    HostSync.objects.update(finished_at=timezone.now() - timedelta(days=400))
    assert hosts_prune_syncs() == 0 and HostSync.objects.count() == 2


# --- actions --------------------------------------------------------------------------------------


def test_save_tags_reaches_the_agent(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST", tags=("eng",)))
    assert ("BINARY", SHA_B) not in agent.rules
    response = analyst_console.post(
        f"/hosts/{host.pk}/tags/",
        {"tags-tags": "Eng, qa ,", "tags-justification": "Joined the build team"},
    )
    assert response.status_code == 302 and response["Location"] == f"/hosts/{host.pk}/"
    assert manual_tags(host) == ["eng", "qa"]
    entry = AuditEntry.objects.get(action="host.set_tags")
    assert entry.actor == analyst_console.user and entry.actor_name == analyst_console.user.username
    assert entry.justification == "Joined the build team"
    assert entry.before == {"tags": []} and entry.after == {"tags": ["eng", "qa"]}
    assert entry.object_type == "host" and entry.object_id == str(host.pk)
    page = analyst_console.get(response["Location"])
    assert b"Assigned tags saved (eng, qa)" in page.content
    agent.sync()
    assert agent.rules[("BINARY", SHA_B)]["policy"] == "ALLOWLIST"
    # Emptying the field removes them; the tag's rule is withdrawn.
    analyst_console.post(f"/hosts/{host.pk}/tags/", {"tags-tags": ""})
    assert manual_tags(host) == []
    agent.sync()
    assert ("BINARY", SHA_B) not in agent.rules


def test_save_tags_keeps_automatic_tags(detailed, analyst_console):
    host = host_of(detailed)
    analyst_console.post(f"/hosts/{host.pk}/tags/", {"tags-tags": "qa"})
    assert manual_tags(host) == ["qa"]
    auto = HostTag.objects.filter(host=host, rev_to__isnull=True, source=TagSource.AUTO)
    assert list(auto.values_list("tag__name", flat=True)) == ["fleet-m1"]


def test_unchanged_tags_record_nothing(detailed, analyst_console):
    host = host_of(detailed)
    response = analyst_console.post(f"/hosts/{host.pk}/tags/", {"tags-tags": "eng"})
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action="host.set_tags").count() == 1  # the fixture's


@pytest.mark.parametrize("value", ["Bad Tag", "eng, -leading", XSS, "x" * 65])
def test_bad_tags_change_nothing(detailed, analyst_console, value):
    host = host_of(detailed)
    entries = AuditEntry.objects.count()
    response = analyst_console.post(
        f"/hosts/{host.pk}/tags/", {"tags-tags": value, "tags-justification": "try"}
    )
    assert response.status_code == 400
    assert b"Invalid tag name" in response.content
    assert XSS.encode() not in response.content
    assert manual_tags(host) == ["eng"]
    assert AuditEntry.objects.count() == entries


def test_override_mode_reaches_the_agent(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    response = analyst_console.post(
        f"/hosts/{host.pk}/mode/",
        {"mode-client_mode": "LOCKDOWN", "mode-justification": "Kiosk"},
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.client_mode_override == "LOCKDOWN"
    entry = AuditEntry.objects.get(action="host.set_mode")
    assert entry.actor == analyst_console.user and entry.justification == "Kiosk"
    assert entry.after == {"client_mode_override": "LOCKDOWN"}
    result = agent.sync()
    assert result.preflight.client_mode == 2  # LOCKDOWN in the protocol's enum
    assert agent.client_mode == "LOCKDOWN"
    # "Follow configuration" removes the override.
    analyst_console.post(f"/hosts/{host.pk}/mode/", {"mode-client_mode": ""})
    host.refresh_from_db()
    assert host.client_mode_override == ""
    assert AuditEntry.objects.filter(action="host.set_mode").count() == 2


def test_bad_mode_changes_nothing(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    response = analyst_console.post(f"/hosts/{host.pk}/mode/", {"mode-client_mode": "BOGUS"})
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    host.refresh_from_db()
    assert host.client_mode_override == ""
    assert not AuditEntry.objects.filter(action="host.set_mode").exists()


@pytest.mark.parametrize("kind", ["CLEAN", "CLEAN_ALL"])
def test_request_clean_sync_reaches_the_agent(agent, analyst_console, kind):
    agent.sync()
    host = host_of(agent)
    assert agent.sync().sync_type == "NORMAL"
    response = analyst_console.post(
        f"/hosts/{host.pk}/clean-sync/", {"clean-kind": kind, "clean-justification": "Reset"}
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.clean_sync_requested == kind
    entry = AuditEntry.objects.get(action="host.request_clean_sync")
    assert entry.actor == analyst_console.user and entry.justification == "Reset"
    assert entry.after == {"clean_sync_requested": kind}
    assert analyst_console.get(f"/hosts/{host.pk}/").content.count(b" requested</span>") == 1
    result = agent.sync()
    assert result.sync_type == kind
    host.refresh_from_db()
    assert host.clean_sync_requested == ""  # done once
    assert agent.sync().sync_type == "NORMAL"


def test_cancel_clean_sync(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    host_request_clean_sync(host=host, kind="CLEAN")
    response = analyst_console.post(f"/hosts/{host.pk}/clean-sync/", {"clean-kind": ""})
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.clean_sync_requested == ""
    assert agent.sync().sync_type == "NORMAL"


def test_bad_clean_sync_changes_nothing(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    response = analyst_console.post(f"/hosts/{host.pk}/clean-sync/", {"clean-kind": "WIPE"})
    assert response.status_code == 400
    host.refresh_from_db()
    assert host.clean_sync_requested == ""
    assert not AuditEntry.objects.filter(action="host.request_clean_sync").exists()


def test_justification_too_long_is_400(agent, analyst_console):
    agent.sync()
    host = host_of(agent)
    response = analyst_console.post(
        f"/hosts/{host.pk}/mode/",
        {"mode-client_mode": "LOCKDOWN", "mode-justification": "x" * 1001},
    )
    assert response.status_code == 400
    host.refresh_from_db()
    assert host.client_mode_override == ""


def test_action_forms_are_labelled_and_protected(detailed, analyst_console):
    host = host_of(detailed)
    html = analyst_console.get(f"/hosts/{host.pk}/").content.decode()
    forms = re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', html, re.S)
    actions = {action: body for action, body in forms}
    assert set(actions) >= {
        f"/hosts/{host.pk}/tags/",
        f"/hosts/{host.pk}/mode/",
        f"/hosts/{host.pk}/clean-sync/",
    }
    for body in actions.values():
        assert "csrfmiddlewaretoken" in body
        for field_id in re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', body):
            assert f'<label for="{field_id}">' in body, field_id
    assert ">Save tags</button>" in actions[f"/hosts/{host.pk}/tags/"]
    assert 'value="eng"' in actions[f"/hosts/{host.pk}/tags/"]  # the assigned tags, editable
    assert ">Override mode</button>" in actions[f"/hosts/{host.pk}/mode/"]
    assert ">Follow configuration</option>" in actions[f"/hosts/{host.pk}/mode/"]
    assert ">Request clean sync</button>" in actions[f"/hosts/{host.pk}/clean-sync/"]
    assert "automatic tags" in html.lower() and "cannot be edited" in html
    assert ' style="' not in html and html.count("<script") == 1  # only the deferred file


def test_auditor_sees_no_action_forms(detailed, auditor_console):
    html = auditor_console.get(f"/hosts/{host_of(detailed).pk}/").content.decode()
    assert "Save tags" not in html and "Override mode" not in html
    assert "detail.example.com" in html


# --- roles ----------------------------------------------------------------------------------------


def _urls(pk: int):
    reads = ["/hosts/", f"/hosts/{pk}/"]
    writes = [
        (f"/hosts/{pk}/tags/", {"tags-tags": "qa"}),
        (f"/hosts/{pk}/mode/", {"mode-client_mode": "LOCKDOWN"}),
        (f"/hosts/{pk}/clean-sync/", {"clean-kind": "CLEAN"}),
    ]
    return reads, writes


def _state(host: Host) -> tuple:
    host.refresh_from_db()
    return (manual_tags(host), host.client_mode_override, host.clean_sync_requested)


def test_roles(agent, client, console, auditor_console, analyst_console):
    agent.sync()
    host = host_of(agent)
    reads, writes = _urls(host.pk)
    before = _state(host)
    nobody = console(None)
    for url in reads:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(
            "/accounts/login/?next="
        ), url
        assert nobody.get(url).status_code == 403, url
        assert auditor_console.get(url).status_code == 200, url
        assert analyst_console.get(url).status_code == 200, url
    for url, data in writes:
        response = client.post(url, data)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        assert client.get(url)["Location"].startswith("/accounts/login/"), url
        assert nobody.post(url, data).status_code == 403, url
        assert nobody.get(url).status_code == 403, url
        assert auditor_console.post(url, data).status_code == 403, url
        assert auditor_console.get(url).status_code == 403, url
        assert analyst_console.get(url).status_code == 405, url  # POST only
    assert _state(host) == before
    assert not AuditEntry.objects.filter(object_type="host").exists()
    for url, data in writes:
        assert analyst_console.post(url, data).status_code == 302, url
    assert _state(host) == (["qa"], "LOCKDOWN", "CLEAN")


def test_views_declare_their_permissions():
    assert host_views.host_list.console_permissions == ("hosts.view_host",)
    assert host_views.host_detail.console_permissions == ("hosts.view_host",)
    for view in (host_views.host_tags, host_views.host_mode, host_views.host_clean_sync):
        assert "hosts.change_host" in view.console_permissions


def test_csrf_is_enforced(agent, analyst_console):
    from django.test import Client

    agent.sync()
    host = host_of(agent)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(analyst_console.user)
    response = strict.post(f"/hosts/{host.pk}/mode/", {"mode-client_mode": "LOCKDOWN"})
    assert response.status_code == 403
    host.refresh_from_db()
    assert host.client_mode_override == ""


# --- escaping -------------------------------------------------------------------------------------


def test_agent_supplied_text_is_escaped(make_agent, analyst_console):
    agent = make_agent(hostname=XSS, primary_user=XSS, primary_user_groups=(XSS,))
    agent.sync()
    agent.add_event(**{**EVENT, "file_name": XSS, "executing_user": XSS, "file_path": XSS})
    agent.sync()
    host = host_of(agent)
    for url in ("/hosts/", f"/hosts/{host.pk}/"):
        response = analyst_console.get(url)
        assert response.status_code == 200
        assert XSS.encode() not in response.content, url
        assert XSS_ESCAPED in response.content, url
    detail = analyst_console.get(f"/hosts/{host.pk}/").content
    assert detail.count(XSS_ESCAPED) >= 5  # title, heading, facts, user, groups, event, binary


def test_filter_form_keeps_the_chosen_values(fleet, analyst_console):
    html = analyst_console.get(
        "/hosts/", {"stale": "false", "drifted": "true", "mode": "LOCKDOWN", "tag": "eng"}
    ).content.decode()
    stale = html.split('name="stale"')[1].split("</select>")[0]
    assert re.findall(r'<option value="(\w*)" selected>', stale) == ["false"]
    drifted = html.split('name="drifted"')[1].split("</select>")[0]
    assert re.findall(r'<option value="(\w*)" selected>', drifted) == ["true"]
    mode = html.split('name="mode"')[1].split("</select>")[0]
    assert re.findall(r'<option value="(\w*)" selected>', mode) == ["LOCKDOWN"]
    assert 'name="tag" value="eng"' in html


def test_api_shares_the_new_filters(fleet, analyst_api):
    def ids(**params):
        body = analyst_api.get("/api/v1/hosts/", {"page_size": 100, **params}).json()
        return {item["machine_id"] for item in body["results"]}

    kiosk = fleet["agents"]["kiosk"].machine_id
    assert ids(mode="LOCKDOWN") == {kiosk}
    assert ids(client_mode="LOCKDOWN") == set()  # the reported mode: not applied yet
    assert ids(q="kiosk.example") == {kiosk}
