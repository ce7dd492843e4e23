"""End to end in a real browser: an agent's blocked binary, approved by an analyst for a tag,
reaches the tagged host and only it.

Two simulated agents of one enrollment speak the real sync protocol; agent A's host is tagged
"eng", agent B's is not. The analyst works only through the console's visible controls,
found by their accessible names (so the test also proves the controls have them).
"""

import re

import pytest

from audit.models import AuditEntry
from hosts.models import Host
from hosts.services import host_set_tags
from rules.models import Rule
from tests.browser.pw import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SHA = "7e" * 32
JUSTIFICATION = "The build team needs protoc-gen-lint for the release pipeline"
EVENT = {
    "file_sha256": SHA,
    "file_name": "protoc-gen-lint",
    "file_path": "/usr/local/bin",
    "decision": "BLOCK_BINARY",
    "execution_time": 1_760_000_000.25,
    "executing_user": "dana",
    "pid": 4242,
    "ppid": 1,
    "parent_name": "zsh",
    "signing_chain": [],
}
RULE_URL = re.compile(r"/rules/(\d+)/$")


def test_analyst_approves_blocked_binary_for_a_tag(make_agent, signed_in_page):
    agent_a = make_agent(hostname="dana-mbp.example.com")
    agent_b = make_agent(hostname="erin-mbp.example.com")
    agent_a.preflight()  # registers the host, so it can be tagged
    host_set_tags(host=Host.objects.get(machine_id=agent_a.machine_id), tag_names=["eng"])
    agent_a.sync()
    agent_b.sync()
    assert agent_a.rules == {} and agent_b.rules == {}
    agent_a.upload_events([EVENT])

    page = signed_in_page("analyst")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Blocked binaries").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Blocked binaries")
    page.get_by_role("link", name="protoc-gen-lint").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("protoc-gen-lint")
    expect(page).to_have_url(re.compile(f"/binaries/{SHA}/$"))

    form = page.get_by_role("region", name="Approve or block")
    form.get_by_role("radio", name=re.compile(r"^Binary")).check()
    form.get_by_role("radio", name="Hosts with these tags").check()
    form.get_by_role("listbox", name="Tags").select_option("eng")
    form.get_by_label("Justification").fill(JUSTIFICATION)
    with page.expect_response(
        lambda r: RULE_URL.search(r.url) is not None and r.request.method == "GET"
    ) as landing:
        form.get_by_role("button", name="Approve").click()

    # The browser lands on the new rule's page, and that page shows the rule as decided.
    assert landing.value.status == 200, f"{landing.value.url} answered {landing.value.status}"
    expect(page).to_have_url(RULE_URL)
    rule = Rule.objects.get()
    assert int(RULE_URL.search(page.url).group(1)) == rule.pk
    assert (rule.rule_type, rule.identifier, rule.policy) == ("BINARY", SHA, "ALLOWLIST")
    assert [tag.name for tag in rule.tags.all()] == ["eng"]
    entry = AuditEntry.objects.get(action="rule.create")
    assert (entry.actor, entry.justification) == (page.user, JUSTIFICATION)

    expect(page.get_by_role("status")).to_contain_text("Approved")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Binary")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Allow")
    facts = page.get_by_role("region", name="Rule")
    expect(facts).to_contain_text(SHA)
    expect(facts).to_contain_text(JUSTIFICATION)
    expect(facts).to_contain_text(f"by {page.user.username}")
    expect(page.get_by_role("region", name="Scope")).to_contain_text("eng")
    # Delivery: one host targeted (A, tagged eng), not yet confirmed; B is not among them.
    delivery = page.get_by_role("region", name="Delivery")
    expect(delivery).to_contain_text("0 of 1 host confirmed")
    expect(delivery.get_by_role("progressbar", name="Confirmed by hosts")).to_be_visible()
    expect(delivery).to_contain_text(agent_a.machine_id)
    expect(delivery).not_to_contain_text(agent_b.machine_id)

    # The rule reaches the tagged host at its next sync, and only it.
    agent_a.sync()
    agent_b.sync()
    assert agent_a.rules.get(("BINARY", SHA), {}).get("policy") == "ALLOWLIST"
    assert ("BINARY", SHA) not in agent_b.rules
    assert agent_b.rules == {}
    # The open page follows delivery by itself (static/js/console.js polls until done).
    expect(delivery).to_contain_text("1 of 1 host confirmed (100%): delivered everywhere")
    expect(delivery).not_to_contain_text(agent_a.machine_id)  # no longer pending
