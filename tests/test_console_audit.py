"""The audit log page: newest first, filters, links, before/after values, roles."""

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import views as audit_views
from audit.models import AuditEntry
from hosts.models import Host
from rules.services import RuleInput, rule_create

XSS = "<script>alert(1)</script>"


def shown(browser, **params) -> list[int]:
    """Ids of the entries the page shows, in order (each row has a hidden marker below),
    leaving out the entries of the console fixture's account (users are audited wherever they
    are created)."""
    response = browser.get("/audit/", params)
    assert response.status_code == 200, response.content
    accounts = set(AuditEntry.objects.filter(object_type="user").values_list("pk", flat=True))
    return [pk for pk in entry_ids(response.content.decode()) if pk not in accounts]


def entry_ids(html: str) -> list[int]:
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [int(pk) for pk in re.findall(r'data-entry="(\d+)"', body)]


def at(day: int, hour: int = 12) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime(2026, 3, day, hour, 0))


@pytest.fixture
def entries(db):
    """Five entries with distinct actors, actions, objects, texts and days."""

    def make(**values):
        return AuditEntry.objects.create(**values).pk

    return {
        "rule": make(
            at=at(1),
            actor_name="ana",
            action="rule.create",
            object_type="rule",
            object_id="41",
            object_repr="BINARY aaaa BLOCKLIST",
            after={"policy": "BLOCKLIST"},
            justification="Malware sample",
            source_ip="10.0.0.7",
        ),
        "tags": make(
            at=at(2),
            actor_name="ana",
            action="host.set_tags",
            object_type="host",
            object_id="7",
            object_repr="MACHINE-SEVEN",
            before={"tags": []},
            after={"tags": ["eng"]},
            justification="Joined build team",
        ),
        "mode": make(
            at=at(3),
            actor_name="bob",
            action="host.set_mode",
            object_type="host",
            object_id="8",
            object_repr="MACHINE-EIGHT",
            before={"client_mode_override": ""},
            after={"client_mode_override": "LOCKDOWN"},
        ),
        "system": make(
            at=at(4),
            actor_name="system",
            action="rule.expire",
            object_type="rule",
            object_id="41",
            object_repr="BINARY aaaa BLOCKLIST",
            justification="Expired.",
        ),
        "enrollment": make(
            at=at(5),
            actor_name="bob",
            action="enrollment.create",
            object_type="enrollment",
            object_id="3",
            object_repr="kiosks",
        ),
    }


def test_newest_first(entries, analyst_console):
    order = ["enrollment", "system", "mode", "tags", "rule"]
    assert shown(analyst_console) == [entries[name] for name in order]


def test_row_content(entries, auditor_console):
    html = auditor_console.get("/audit/").content.decode()
    body = html.split("<tbody>")[1]
    row = body[body.index(f'data-entry="{entries["tags"]}"') :].split("</tr>")[0]
    assert "2026-03-02 12:00:00" in row
    assert ">ana<" in row and "host.set_tags" in row and "MACHINE-SEVEN" in row
    assert "Joined build team" in row
    assert "<details>" in row and "<pre>" in row
    assert "&quot;tags&quot;: [\n    &quot;eng&quot;\n  ]" in row  # pretty-printed, escaped
    rule_row = body[body.index(f'data-entry="{entries["rule"]}"') :].split("</tr>")[0]
    assert "10.0.0.7" in rule_row and "Malware sample" in rule_row


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"actor": "ana"}, ["tags", "rule"]),
        ({"actor": "system"}, ["system"]),
        ({"action": "host.set_mode"}, ["mode"]),
        ({"action": " rule.create "}, ["rule"]),
        ({"object_type": "host"}, ["mode", "tags"]),
        ({"object_type": "rule", "object_id": "41"}, ["system", "rule"]),
        ({"object_id": "8"}, ["mode"]),
        ({"q": "machine-seven"}, ["tags"]),  # object_repr, any case
        ({"q": "build team"}, ["tags"]),  # justification
        ({"q": "expired"}, ["system"]),
        ({"since": "2026-03-03"}, ["enrollment", "system", "mode"]),
        ({"until": "2026-03-02"}, ["tags", "rule"]),  # inclusive
        ({"since": "2026-03-02", "until": "2026-03-03"}, ["mode", "tags"]),
        ({"actor": "bob", "object_type": "host"}, ["mode"]),
        ({"actor": "nobody"}, []),
    ],
)
def test_filters(entries, analyst_console, params, expected):
    assert shown(analyst_console, **params) == [entries[name] for name in expected]


def test_invalid_date_is_shown_not_500(entries, analyst_console):
    response = analyst_console.get("/audit/", {"since": "yesterday"})
    assert response.status_code == 200
    assert b"Enter a valid date" in response.content


def test_links_to_existing_rules_and_hosts_only(agent, analyst_console):
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    rule = rule_create(data=RuleInput("BINARY", "a" * 64, "BLOCKLIST"))
    analyst_console.post(f"/hosts/{host.pk}/tags/", {"tags-tags": "eng"})
    gone = AuditEntry.objects.create(
        actor_name="x", action="host.set_tags", object_type="host", object_id="999999"
    )
    other = AuditEntry.objects.create(
        actor_name="x", action="enrollment.create", object_type="enrollment", object_id="1"
    )
    html = analyst_console.get("/audit/").content.decode()
    body = html.split("<tbody>")[1]

    def row(pk):
        return body[body.index(f'data-entry="{pk}"') :].split("</tr>")[0]

    host_entry = AuditEntry.objects.get(action="host.set_tags", object_id=str(host.pk))
    rule_entry = AuditEntry.objects.get(action="rule.create")
    assert f'href="/hosts/{host.pk}/"' in row(host_entry.pk)
    assert f'href="/rules/{rule.pk}/"' in row(rule_entry.pk)
    assert "href=" not in row(gone.pk) and "href=" not in row(other.pk)
    # The console's own change names its actor and source address.
    assert host_entry.actor_name == analyst_console.user.username
    assert host_entry.source_ip == "127.0.0.1"


def test_values_are_escaped(db, analyst_console):
    AuditEntry.objects.create(
        actor_name=XSS,
        action="host.set_tags",
        object_type="host",
        object_id="1",
        object_repr=XSS,
        before={"tags": [XSS]},
        after={XSS: XSS},
        justification=XSS,
    )
    content = analyst_console.get("/audit/").content
    assert XSS.encode() not in content
    assert content.count(b"&lt;script&gt;alert(1)&lt;/script&gt;") >= 5


def test_keyset_pagination(db, analyst_console):
    AuditEntry.objects.bulk_create(
        [
            AuditEntry(actor_name="bulk", action="rule.create", object_type="rule", object_id=n)
            for n in range(120)
        ]
    )
    ids = list(AuditEntry.objects.order_by("-id").values_list("pk", flat=True))
    first = analyst_console.get("/audit/").content.decode()
    assert entry_ids(first) == ids[:50]
    assert "Newer" not in first
    older = re.search(r'href="(\?[^"]*)" rel="next">Older<', first).group(1)
    assert older == f"?before={ids[49]}"
    second = analyst_console.get("/audit/" + older.replace("&amp;", "&")).content.decode()
    assert entry_ids(second) == ids[50:100]
    third = analyst_console.get("/audit/", {"before": ids[99]}).content.decode()
    assert entry_ids(third) == ids[100:]
    assert "Older" not in third
    newer = re.search(r'href="(\?[^"]*)" rel="prev">Newer<', third).group(1)
    back = analyst_console.get("/audit/" + newer.replace("&amp;", "&")).content.decode()
    assert entry_ids(back) == ids[50:100]
    back_to_top = analyst_console.get("/audit/", {"after": ids[50]}).content.decode()
    assert entry_ids(back_to_top) == ids[:50] and "Newer" not in back_to_top
    # Filters are kept across pages.
    filtered = analyst_console.get("/audit/", {"actor": "bulk"}).content.decode()
    assert "actor=bulk&amp;before=" in filtered
    assert (
        entry_ids(analyst_console.get("/audit/", {"before": "junk"}).content.decode()) == ids[:50]
    )


def test_queries_do_not_grow_with_rows(agent, analyst_console):
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)

    def add(count):
        AuditEntry.objects.bulk_create(
            [
                AuditEntry(
                    actor_name="x",
                    action="host.set_tags",
                    object_type="host" if n % 2 else "rule",
                    object_id=str(host.pk if n % 2 else n),
                    before={"n": n},
                )
                for n in range(count)
            ]
        )

    add(4)
    analyst_console.get("/audit/")
    with CaptureQueriesContext(connection) as small:
        analyst_console.get("/audit/")
    add(60)
    with CaptureQueriesContext(connection) as large:
        analyst_console.get("/audit/")
    assert len(large) == len(small)
    assert not any("COUNT(" in q["sql"].upper() for q in large.captured_queries)


def test_roles(entries, client, console, auditor_console, analyst_console):
    response = client.get("/audit/")
    assert response.status_code == 302 and response["Location"].startswith(
        "/accounts/login/?next=/audit/"
    )
    assert console(None).get("/audit/").status_code == 403
    assert auditor_console.get("/audit/").status_code == 200
    assert analyst_console.get("/audit/").status_code == 200
    assert audit_views.entry_list.console_permissions == ("audit.view_auditentry",)


def test_page_has_labels_and_no_inline_script(entries, analyst_console):
    html = analyst_console.get("/audit/").content.decode()
    form = html.split('class="filters"')[1].split("</form>")[0]
    for field_id in re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', form):
        assert f'<label for="{field_id}">' in form, field_id
    assert ' style="' not in html and html.count("<script") == 1
