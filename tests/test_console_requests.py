"""Approval requests end to end: Santa's block dialog link (event_detail_url), the public
request page, the analysts' queue and decision, and the rule reaching the requester's Mac."""

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from django.utils.timezone import localtime

from audit.models import AuditEntry
from events.approvals import (
    ApprovalError,
    NotPending,
    approval_request_approve,
    approval_request_deny,
    approval_request_submit,
)
from events.models import ApprovalRequest, Binary
from hosts.models import ConfigurationProfile, Host
from rules.errors import RuleConflict
from rules.models import Rule
from rules.services import rule_approve
from syncapi.preflight import DEFAULT_EVENT_DETAIL_TEXT

SHA = "5" * 64
HOSTILE = "<script>alert(1)</script>"
ESCAPED = b"&lt;script&gt;alert(1)&lt;/script&gt;"
EVENT = {
    "file_sha256": SHA,
    "file_name": "Builder",
    "file_path": "/Applications/Builder.app/Contents/MacOS",
    "decision": "BLOCK_UNKNOWN",
    "execution_time": 1_760_000_000.5,
    "executing_user": "alice",
    "team_id": "EQHXZ8M8AV",
    "signing_id": "EQHXZ8M8AV:com.example.builder",
    "file_bundle_id": "com.example.builder",
    "file_bundle_name": "Builder Pro",
    "file_bundle_version_string": "4.2",
    "signing_chain": [{"sha256": "b" * 64, "cn": "Developer ID Application: Example Corp"}],
}
TEMPLATE = "http://testserver/request/?sha=%file_identifier%&machine=%machine_id%&user=%username%"


def _host(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


def public_url(agent, user="alice", sha=SHA) -> str:
    """What the agent opens: its event_detail_url with the placeholders filled in."""
    url = (
        TEMPLATE.replace("%file_identifier%", sha)
        .replace("%machine_id%", agent.machine_id)
        .replace("%username%", user)
    )
    return url.removeprefix("http://testserver")


@pytest.fixture
def blocked(make_agent):
    """Two synced Macs; the first blocked Builder for alice, the second never ran it."""
    requester, bystander = make_agent(machine_id="MAC-ALICE"), make_agent(machine_id="MAC-BOB")
    for agent in (requester, bystander):
        agent.sync()
    requester.upload_events([EVENT])
    return requester, bystander


@pytest.fixture
def anonymous():
    return Client()


def decide(console, approval, **values):
    data = {
        "action": "decide",
        "rule_type": "BINARY",
        "scope": "hosts",
        "machine_ids": approval.host.machine_id,
        "justification": "Builder is our build tool",
        "decision": "allow",
    }
    data.update(values)
    return console.post(f"/requests/{approval.pk}/", data)


# --- the whole flow -----------------------------------------------------------------------------


def test_request_flow_from_block_dialog_to_rule_on_the_mac(blocked, anonymous, analyst_console):
    requester, bystander = blocked
    answer = requester.preflight()
    assert answer.event_detail_url == TEMPLATE
    assert answer.event_detail_text == DEFAULT_EVENT_DETAIL_TEXT == "Request access"

    # The user opens the link from the dialog: no account needed.
    url = public_url(requester)
    page = anonymous.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Builder" in html and "Builder Pro" in html and "com.example.builder" in html
    assert "Developer ID Application: Example Corp" in html and "EQHXZ8M8AV" in html
    assert "Send request" in html and 'name="csrfmiddlewaretoken"' in html
    assert "MAC-BOB" not in html and "MAC-ALICE" not in html  # nothing about the fleet

    sent = anonymous.post(url, {"reason": "I build the release with it."})
    assert sent.status_code == 302 and sent["Location"] == url  # back to the same page (PRG)
    approval = ApprovalRequest.objects.get()
    assert (approval.binary_id, approval.host.machine_id, approval.requester) == (
        SHA,
        "MAC-ALICE",
        "alice",
    )
    assert approval.state == "pending" and approval.reason == "I build the release with it."
    waiting = anonymous.get(url).content.decode()
    assert 'id="request-state">Waiting for an analyst<' in waiting
    assert "I build the release with it." in waiting

    # The analysts' queue and the request's page.
    queue = analyst_console.get("/requests/")
    assert queue.status_code == 200
    assert [a.pk for a in queue.context["approvals"]] == [approval.pk]
    assert f'href="/requests/{approval.pk}/"' in queue.content.decode()
    detail = analyst_console.get(f"/requests/{approval.pk}/")
    assert detail.status_code == 200
    form = detail.context["form"]
    assert form["scope"].value() == "hosts" and form["machine_ids"].value() == "MAC-ALICE"
    body = detail.content.decode()
    assert re.search(r'<input type="radio" name="scope" value="hosts"[^>]*checked', body)
    for button in (">Approve<", ">Block<", ">Deny<"):
        assert button in body

    # Approve for the requester's Mac only.
    response = decide(analyst_console, approval, response="Enjoy.")
    rule = Rule.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/rules/{rule.pk}/"
    assert (rule.rule_type, rule.identifier, rule.policy) == ("BINARY", SHA, "ALLOWLIST")
    assert [h.machine_id for h in rule.hosts.all()] == ["MAC-ALICE"]
    approval.refresh_from_db()
    assert approval.state == "approved" and approval.rule == rule
    assert approval.decided_by == analyst_console.user and approval.decided_at is not None
    assert approval.response == "Enjoy."

    # The requester sees the outcome on the same link...
    outcome = anonymous.get(url)
    html = outcome.content.decode()
    assert 'id="request-state">Approved<' in html
    assert f'id="decided-at">{localtime(approval.decided_at):%Y-%m-%d %H:%M}<' in html
    assert 'id="response">Enjoy.<' in html
    assert outcome.context["form"] is None and "Send request" not in html
    assert len(analyst_console.get("/requests/").context["approvals"]) == 0  # none waiting

    # ...and the rule reaches that Mac at its next sync, not the other one.
    requester.sync()
    bystander.sync()
    assert requester.rules[("BINARY", SHA)]["policy"] == "ALLOWLIST"
    assert ("BINARY", SHA) not in bystander.rules


def test_deny_flow_shows_the_message(blocked, anonymous, analyst_console):
    requester, _ = blocked
    url = public_url(requester)
    anonymous.post(url, {"reason": "Please"})
    approval = ApprovalRequest.objects.get()

    empty = analyst_console.post(
        f"/requests/{approval.pk}/", {"action": "deny", "deny-response": "  "}
    )
    assert empty.status_code == 400
    assert "This field is required." in empty.content.decode()
    approval.refresh_from_db()
    assert approval.state == "pending"

    denied = analyst_console.post(
        f"/requests/{approval.pk}/",
        {"action": "deny", "deny-response": "Use the approved compiler instead."},
    )
    assert denied.status_code == 302 and denied["Location"] == "/requests/"
    approval.refresh_from_db()
    assert approval.state == "denied" and approval.rule is None
    assert not Rule.objects.exists()
    html = anonymous.get(url).content.decode()
    assert 'id="request-state">Denied<' in html
    assert 'id="response">Use the approved compiler instead.<' in html
    assert "Send request" not in html
    # Asking again is refused while the Mac has not blocked it since the decision.
    again = anonymous.post(url, {"reason": "Please, really"})
    assert again.status_code == 409
    assert "already decided" in again.content.decode()
    assert "Send request" not in again.content.decode()
    assert ApprovalRequest.objects.count() == 1


def test_block_button_blocks_and_closes_the_request(blocked, anonymous, analyst_console):
    requester, _ = blocked
    anonymous.post(public_url(requester), {"reason": "Please"})
    approval = ApprovalRequest.objects.get()
    response = decide(analyst_console, approval, decision="block", scope="everyone")
    rule = Rule.objects.get()
    assert response.status_code == 302
    assert (rule.policy, rule.hosts.count(), rule.tags.count()) == ("BLOCKLIST", 0, 0)
    approval.refresh_from_db()
    assert approval.state == "denied" and approval.rule == rule
    assert AuditEntry.objects.filter(action="approval_request.deny").count() == 1


def test_asking_again_after_being_blocked_again(blocked, anonymous, analyst_console):
    requester, _ = blocked
    url = public_url(requester)
    anonymous.post(url, {"reason": "Please"})
    approval = ApprovalRequest.objects.get()
    analyst_console.post(f"/requests/{approval.pk}/", {"action": "deny", "deny-response": "No."})
    assert anonymous.get(url).context["form"] is None
    approval.refresh_from_db()
    later = approval.decided_at.timestamp() + 60
    requester.upload_events([{**EVENT, "execution_time": later}])
    page = anonymous.get(url)
    assert page.context["form"] is not None and "Ask again" in page.content.decode()
    assert anonymous.post(url, {"reason": "It changed"}).status_code == 302
    assert list(ApprovalRequest.objects.values_list("state", flat=True)) == ["pending", "denied"]


def test_missing_user_asks_for_a_name(blocked, anonymous):
    requester, _ = blocked
    url = public_url(requester, user="")
    page = anonymous.get(url)
    assert page.status_code == 200 and 'name="name"' in page.content.decode()
    assert anonymous.post(url, {"reason": "Please"}).status_code == 400  # the name is required
    assert not ApprovalRequest.objects.exists()
    sent = anonymous.post(url, {"name": "carol", "reason": "Please"})
    assert sent.status_code == 302
    assert parse_qs(urlsplit(sent["Location"]).query) == {
        "sha": [SHA],
        "machine": ["MAC-ALICE"],
        "user": ["carol"],
    }
    assert ApprovalRequest.objects.get().requester == "carol"
    no_user_param = anonymous.get(f"/request/?sha={SHA}&machine=MAC-ALICE")
    assert no_user_param.status_code == 200 and 'name="name"' in no_user_param.content.decode()


def test_resubmitting_updates_the_reason(blocked, anonymous):
    requester, _ = blocked
    url = public_url(requester)
    anonymous.post(url, {"reason": "First"})
    page = anonymous.get(url)
    assert page.context["form"]["reason"].value() == "First"  # a waiting request can be changed
    anonymous.post(url, {"reason": "Second, with details"})
    assert list(ApprovalRequest.objects.values_list("reason", flat=True)) == [
        "Second, with details"
    ]
    assert AuditEntry.objects.filter(action="approval_request.create").count() == 1
    assert AuditEntry.objects.filter(action="approval_request.update").count() == 1


# --- hostile input on the public page -------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",
        "sha=&machine=MAC-ALICE&user=alice",
        f"sha={SHA[:-1]}&machine=MAC-ALICE&user=alice",
        f"sha={'g' * 64}&machine=MAC-ALICE&user=alice",
        f"sha={SHA}0&machine=MAC-ALICE&user=alice",
        f"sha={SHA}&machine=&user=alice",
        f"sha={SHA}&machine=NO-SUCH-MAC&user=alice",
        f"sha={SHA}&machine=MAC-BOB&user=alice",  # a real Mac that never ran it
        f"sha={'6' * 64}&machine=MAC-ALICE&user=alice",  # a binary this Mac never ran
        f"sha={SHA}&machine={'M' * 300}&user=alice",
    ],
)
def test_unknown_links_are_a_friendly_404(blocked, anonymous, query):
    for method in ("get", "post"):
        response = getattr(anonymous, method)(
            f"/request/?{query}", *([{"reason": "x"}] if method == "post" else [])
        )
        assert response.status_code == 404
        html = response.content.decode()
        assert "This request link does not work" in html
        assert "Builder" not in html and "Traceback" not in html
    assert not ApprovalRequest.objects.exists()


def test_uppercase_sha_and_a_plus_in_the_machine_id(blocked, anonymous, make_agent):
    requester, _ = blocked
    assert anonymous.get(public_url(requester, sha=SHA.upper())).status_code == 200
    plus = make_agent(machine_id="MAC+1")
    plus.sync()
    plus.upload_events([EVENT])
    url = public_url(plus)
    assert "machine=MAC+1&" in url  # as the agent fills it in, unencoded
    assert anonymous.get(url).status_code == 200
    assert anonymous.post(url, {"reason": "Please"}).status_code == 302
    assert ApprovalRequest.objects.get().host.machine_id == "MAC+1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "This field is required."),
        ({"reason": "   "}, "This field is required."),
        ({"reason": "x" * 2001}, "at most 2000 characters"),
        ({"reason": "bell \x07 here"}, "control characters"),
        ({"reason": "esc \x1b[31m"}, "control characters"),
        ({"reason": "nul \x00"}, "Null characters are not allowed."),
    ],
)
def test_bad_reasons_store_nothing(blocked, anonymous, data, message):
    requester, _ = blocked
    response = anonymous.post(public_url(requester), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ApprovalRequest.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="approval_request").exists()


def test_a_multiline_reason_is_kept(blocked, anonymous):
    requester, _ = blocked
    assert anonymous.post(public_url(requester), {"reason": "line 1\r\nline 2\tend"}).status_code
    assert ApprovalRequest.objects.get().reason == "line 1\r\nline 2\tend"


@pytest.mark.parametrize("user", ["x" * 256, "bob\x07", "bob\nsmith"])
def test_bad_user_names_store_nothing(blocked, anonymous, user):
    url = "/request/?" + urlencode({"sha": SHA, "machine": "MAC-ALICE", "user": user})
    for response in (anonymous.get(url), anonymous.post(url, {"reason": "x"})):
        assert response.status_code == 400
        html = response.content.decode()
        assert "This link cannot be used" in html and "Send request" not in html
    assert not ApprovalRequest.objects.exists()


def test_hostile_name_field(blocked, anonymous):
    requester, _ = blocked
    url = public_url(requester, user="")
    response = anonymous.post(url, {"name": "x" * 256, "reason": "Please"})
    assert response.status_code == 400
    response = anonymous.post(url, {"name": "tab\tname", "reason": "Please"})
    assert response.status_code == 400 and "control characters" in response.content.decode()
    assert not ApprovalRequest.objects.exists()


def test_csrf_applies_to_the_public_form(blocked):
    requester, _ = blocked
    strict = Client(enforce_csrf_checks=True)
    url = public_url(requester)
    assert strict.post(url, {"reason": "Please"}).status_code == 403
    assert not ApprovalRequest.objects.exists()
    page = strict.get(url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    sent = strict.post(url, {"reason": "Please", "csrfmiddlewaretoken": token})
    assert sent.status_code == 302
    assert ApprovalRequest.objects.count() == 1


def test_other_methods_are_refused(blocked, anonymous, analyst_console):
    requester, _ = blocked
    assert anonymous.put(public_url(requester)).status_code == 405
    anonymous.post(public_url(requester), {"reason": "Please"})
    pk = ApprovalRequest.objects.get().pk
    assert analyst_console.delete(f"/requests/{pk}/").status_code == 405


def test_too_many_waiting_requests_per_binary_and_host(blocked, anonymous):
    requester, _ = blocked
    for n in range(10):
        assert (
            anonymous.post(public_url(requester, user=f"u{n}"), {"reason": "x"}).status_code == 302
        )
    refused = anonymous.post(public_url(requester, user="u10"), {"reason": "x"})
    assert refused.status_code == 400 and "Too many requests" in refused.content.decode()
    assert ApprovalRequest.objects.count() == 10
    # A waiting requester can still change their own.
    assert anonymous.post(public_url(requester, user="u3"), {"reason": "y"}).status_code == 302


# --- escaping -----------------------------------------------------------------------------------


def test_hostile_file_name_requester_and_reason_are_escaped(make_agent, anonymous, console):
    agent = make_agent(machine_id="MAC-EVIL")
    agent.sync()
    agent.upload_events(
        [
            {
                **EVENT,
                "file_name": HOSTILE,
                "file_bundle_name": HOSTILE,
                "team_id": "",
                "signing_chain": [],
            }
        ]
    )
    url = public_url(agent, user=HOSTILE).replace(HOSTILE, "%3Cscript%3Ealert(1)%3C/script%3E")
    page = anonymous.get(url)
    assert page.status_code == 200
    assert HOSTILE.encode() not in page.content and ESCAPED in page.content
    assert anonymous.post(url, {"reason": HOSTILE}).status_code == 302
    approval = ApprovalRequest.objects.get()
    assert approval.requester == HOSTILE and approval.reason == HOSTILE
    analyst = console("analyst")
    for path in (url, "/requests/", f"/requests/{approval.pk}/", "/"):
        content = (anonymous if path == url else analyst).get(path).content
        assert HOSTILE.encode() not in content, path
        assert ESCAPED in content, path
    detail = analyst.get(f"/requests/{approval.pk}/").content
    assert detail.count(ESCAPED) >= 4  # title, file, requester, reason


# --- roles --------------------------------------------------------------------------------------


@pytest.fixture
def waiting(blocked, anonymous):
    requester, _ = blocked
    anonymous.post(public_url(requester), {"reason": "Please"})
    return ApprovalRequest.objects.get()


def test_roles_on_every_url(waiting, console, client, blocked):
    requester, _ = blocked
    analyst, auditor, admin, nobody = (
        console("analyst"),
        console("auditor"),
        console("admin"),
        console(None),
    )
    detail = f"/requests/{waiting.pk}/"
    for path in ("/requests/", detail):
        assert analyst.get(path).status_code == 200
        assert auditor.get(path).status_code == 200
        assert admin.get(path).status_code == 200
        assert nobody.get(path).status_code == 403
        anonymous = client.get(path)
        assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    # The auditor reads, without a decision form.
    page = auditor.get(detail)
    assert page.context.get("form") is None and ">Approve<" not in page.content.decode()
    assert "can read requests but not decide" in page.content.decode()
    # Deciding: analysts and admins only.
    for browser in (auditor, nobody):
        assert decide(browser, waiting).status_code == 403
        deny = browser.post(detail, {"action": "deny", "deny-response": "No"})
        assert deny.status_code == 403
    assert client.post(detail, {"action": "deny", "deny-response": "No"}).status_code == 302
    waiting.refresh_from_db()
    assert waiting.state == "pending" and not Rule.objects.exists()
    # The public page needs no account.
    assert client.get(public_url(requester)).status_code == 200
    assert decide(admin, waiting).status_code == 302


def test_deciding_twice_is_refused(waiting, analyst_console):
    assert decide(analyst_console, waiting).status_code == 302
    again = decide(analyst_console, waiting, machine_ids="MAC-BOB")
    assert again.status_code == 409
    assert "already decided" in again.content.decode()
    deny = analyst_console.post(
        f"/requests/{waiting.pk}/", {"action": "deny", "deny-response": "No"}
    )
    assert deny.status_code == 409
    assert Rule.objects.count() == 1
    waiting.refresh_from_db()
    assert waiting.state == "approved"


def test_conflicting_rule_is_a_form_error(waiting, analyst_console):
    rule_approve(
        binary=waiting.binary,
        rule_type="BINARY",
        machine_ids=["MAC-ALICE"],
        justification="earlier",
    )
    response = decide(analyst_console, waiting)
    assert response.status_code == 400
    assert "already targets one of these hosts" in response.content.decode()
    assert response.context["form"].errors["machine_ids"]
    waiting.refresh_from_db()
    assert waiting.state == "pending" and Rule.objects.count() == 1
    assert not AuditEntry.objects.filter(action="approval_request.approve").exists()


def test_queue_filters_by_state_newest_first(blocked, anonymous, analyst_console):
    requester, _ = blocked
    for name in ("first", "second", "third"):
        anonymous.post(public_url(requester, user=name), {"reason": "x"})
    first = ApprovalRequest.objects.order_by("id").first()
    approval_request_deny(request=first, actor=analyst_console.user, response="No")

    def listed(query=""):
        response = analyst_console.get(f"/requests/{query}")
        assert response.status_code == 200
        return [a.requester for a in response.context["approvals"]]

    assert listed() == ["third", "second"]
    assert listed("?state=denied") == ["first"]
    assert listed("?state=approved") == []
    assert listed("?state=all") == ["third", "second", "first"]
    assert listed("?state=bogus") == ["third", "second"]  # an invalid filter shows the default
    html = analyst_console.get("/requests/").content.decode()
    assert '<option value="pending" selected>' in html


# --- services -----------------------------------------------------------------------------------


def test_services_write_audit_entries(blocked, analyst):
    requester, bystander = blocked
    binary, host = Binary.objects.get(), _host(requester)
    made = approval_request_submit(binary=binary, host=host, requester="alice", reason="Because")
    entry = AuditEntry.objects.get(action="approval_request.create")
    assert entry.actor is None and entry.actor_name == "requester:alice@MAC-ALICE"
    assert (entry.object_type, entry.object_id) == ("approval_request", str(made.pk))
    assert entry.after["reason"] == "Because" and entry.after["state"] == "pending"

    again = approval_request_submit(binary=binary, host=host, requester="alice", reason="Why")
    assert again.pk == made.pk and again.reason == "Why"
    update = AuditEntry.objects.get(action="approval_request.update")
    assert (update.before["reason"], update.after["reason"]) == ("Because", "Why")

    rule = approval_request_approve(
        request=made,
        actor=analyst,
        rule_type="SIGNINGID",
        machine_ids=["MAC-ALICE", "MAC-BOB"],
        justification="Team tool",
        response="Done",
    )
    assert (rule.rule_type, rule.identifier) == ("SIGNINGID", "EQHXZ8M8AV:com.example.builder")
    assert made.state == "approved" and made.rule_id == rule.pk  # the caller's object too
    approve = AuditEntry.objects.get(action="approval_request.approve")
    assert approve.actor == analyst and approve.justification == "Team tool"
    assert approve.before["state"] == "pending"
    assert approve.after["state"] == "approved" and approve.after["rule"] == rule.pk
    assert AuditEntry.objects.filter(action="rule.create", actor=analyst).count() == 1

    with pytest.raises(NotPending):
        approval_request_deny(request=made, actor=analyst, response="No")
    with pytest.raises(NotPending):
        approval_request_approve(request=made, actor=analyst, rule_type="BINARY", justification="x")

    other = approval_request_submit(binary=binary, host=host, requester="bob", reason="Me too")
    with pytest.raises(ApprovalError, match="has not run this program"):
        approval_request_submit(
            binary=binary, host=_host(bystander), requester="bob", reason="Me too"
        )
    with pytest.raises(ApprovalError, match="required"):
        approval_request_deny(request=other, actor=analyst, response=" ")
    approval_request_deny(request=other, actor=analyst, response="Ask your manager")
    deny = AuditEntry.objects.get(action="approval_request.deny")
    assert deny.actor == analyst and deny.after["response"] == "Ask your manager"
    assert deny.after["state"] == "denied"


@pytest.mark.parametrize(
    ("requester", "reason", "field"),
    [
        ("", "Because", "requester"),
        ("x" * 256, "Because", "requester"),
        ("bob\x00", "Because", "requester"),
        ("alice", "", "reason"),
        ("alice", "x" * 2001, "reason"),
        ("alice", "a\x1bb", "reason"),
        ("alice", None, "reason"),
        ("alice", 42, "reason"),
    ],
)
def test_submit_validates(blocked, requester, reason, field):
    agent, _ = blocked
    with pytest.raises(ApprovalError) as caught:
        approval_request_submit(
            binary=Binary.objects.get(), host=_host(agent), requester=requester, reason=reason
        )
    assert caught.value.field == field
    assert (
        not ApprovalRequest.objects.exists()
        and not AuditEntry.objects.filter(action__startswith="approval_request").exists()
    )


def test_approve_conflict_writes_nothing(blocked, analyst):
    agent, _ = blocked
    made = approval_request_submit(
        binary=Binary.objects.get(), host=_host(agent), requester="alice", reason="Because"
    )
    rule_approve(binary=made.binary, rule_type="BINARY", justification="everyone already")
    with pytest.raises(RuleConflict):
        approval_request_approve(
            request=made, actor=analyst, rule_type="BINARY", justification="again"
        )
    made.refresh_from_db()
    assert made.state == "pending" and made.decided_at is None
    assert Rule.objects.count() == 1


# --- the default event_detail_url -----------------------------------------------------------------


def test_console_url_setting_and_profiles(agent, settings):
    settings.CONSOLE_URL = "https://santa.example.com"
    answer = agent.preflight()
    assert answer.event_detail_url == (
        "https://santa.example.com/request/"
        "?sha=%file_identifier%&machine=%machine_id%&user=%username%"
    )
    assert answer.event_detail_text == "Request access"

    profile = ConfigurationProfile.objects.create(name="mine", event_detail_text="Ask IT")
    profile.hosts.add(Host.objects.get(machine_id=agent.machine_id))
    answer = agent.preflight()
    assert answer.event_detail_url.startswith("https://santa.example.com/request/?")
    assert answer.event_detail_text == "Ask IT"

    profile.event_detail_url = "https://tickets.example.com/new?hash=%file_identifier%"
    profile.event_detail_text = None
    profile.save()
    answer = agent.preflight()
    assert answer.event_detail_url == "https://tickets.example.com/new?hash=%file_identifier%"
    assert not answer.HasField("event_detail_text")  # the agent's own label

    profile.event_detail_url = ""  # "" sends no URL at all
    profile.save()
    answer = agent.preflight()
    assert answer.HasField("event_detail_url") and answer.event_detail_url == ""


def test_default_url_follows_the_agents_address(make_agent, client, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "santa.internal"]
    agent = make_agent()
    agent.transport = _secure_transport(client)
    assert agent.preflight().event_detail_url == (
        "https://santa.internal:8443/request/"
        "?sha=%file_identifier%&machine=%machine_id%&user=%username%"
    )


def _secure_transport(client):
    def send(path, body, headers):
        extra = {
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in headers.items()
            if k.lower() != "content-type"
        }
        response = client.generic(
            "POST",
            path,
            data=body,
            content_type=headers["Content-Type"],
            secure=True,
            HTTP_HOST="santa.internal:8443",
            **extra,
        )
        return response.status_code, response.content

    return send
