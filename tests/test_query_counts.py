"""Each sync stage runs a fixed number of SQL statements, whatever the size of the rule set and
of the fleet (the cost of a statement is measured in `make bench`, not here)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Host
from hosts.services import host_set_tags
from rules.services import RuleInput, rule_create, rules_bulk_create

EVENT = {
    "file_sha256": "a" * 64,
    "file_name": "tool",
    "file_path": "/usr/local/bin",
    "decision": "BLOCK_BINARY",
    "execution_time": 1_760_000_000.5,
    "signing_chain": [{"sha256": "b" * 64, "cn": "Developer ID Application: X"}],
}

# Statements per request: one for the sync context (enrollment, host, its tags and profiles,
# the revision and the settings token: hosts.selectors.sync_context), then the stage's own
# work. Eventupload also counts the savepoint pair of its transaction (the tests run inside one).
EXPECTED = {
    # + the host's last-seen time (written behind the request in production: hosts.liveness)
    "preflight": 2,
    # + the host's last upload time (behind the request in production), then host lock,
    # stored keys, events, the binary x host upsert, certificates, each binary's facts and
    # counts in one upsert, and the day upsert (a batch with executing users adds one). With
    # SYNC_DEFER_EVENTS (production) the request is the context and one INSERT:
    # tests/test_deferred_events.py.
    "eventupload": 11,
    "ruledownload_steady": 1,  # nothing changed, nothing computed
    "ruledownload_changes": 5,  # + tag history, changed keys, versions, host UPDATE
    "ruledownload_clean_page": 5,  # one page: as ruledownload_changes
    # + one UPDATE of the host and one INSERT of its sync history (HostSync), in one
    # transaction (a savepoint inside the test's transaction; BEGIN/COMMIT in production).
    "postflight": 5,
}


def _fleet(make_agent, hosts: int, rules: int):
    """A fleet of `hosts` synced agents and `rules` rules for everyone, tags and hosts."""
    agents = [make_agent() for _ in range(hosts)]
    for agent in agents:
        agent.preflight()
    for index, agent in enumerate(agents):
        host_set_tags(
            host=Host.objects.get(machine_id=agent.machine_id),
            tag_names=["eng"] if index % 2 else ["finance"],
        )
    rules_bulk_create(
        items=[
            RuleInput(
                "BINARY",
                f"{n:064x}",
                "BLOCKLIST",
                tags=(("eng",) if n % 3 == 1 else ("finance",) if n % 3 == 2 else ()),
            )
            for n in range(rules)
        ]
    )
    rules_bulk_create(
        items=[
            RuleInput(
                "TEAMID", f"T{n:09d}", "ALLOWLIST", machine_ids=(agents[n % hosts].machine_id,)
            )
            for n in range(max(1, rules // 10))
        ]
    )
    for agent in agents:
        agent.sync()
    return agents[0]


@pytest.fixture(params=[(1, 3), (25, 400)], ids=["small", "large"])
def synced_agent(request, make_agent, settings):
    settings.SYNC_RULES_PER_PAGE = 1000
    hosts, rules = request.param
    return _fleet(make_agent, hosts, rules)


def test_preflight(synced_agent, django_assert_num_queries):
    with django_assert_num_queries(EXPECTED["preflight"]):
        synced_agent.preflight()


def test_eventupload(synced_agent, django_assert_num_queries):
    batch = [{**EVENT, "execution_time": 1_760_000_000 + n} for n in range(20)]
    with django_assert_num_queries(EXPECTED["eventupload"]):
        synced_agent.upload_events(batch)


def test_ruledownload_steady_state(synced_agent, django_assert_num_queries):
    synced_agent.preflight()
    with django_assert_num_queries(EXPECTED["ruledownload_steady"]):
        accepted, _, _ = synced_agent.download_rules()
    assert accepted == []


def test_ruledownload_incremental(synced_agent, django_assert_num_queries):
    synced_agent.preflight()
    rule_create(data=RuleInput("BINARY", "f" * 64, "BLOCKLIST"))
    rule_create(data=RuleInput("CDHASH", "e" * 40, "ALLOWLIST"))
    with django_assert_num_queries(EXPECTED["ruledownload_changes"]):
        accepted, _, pages = synced_agent.download_rules()
    assert len(accepted) == 2 and pages == 1


def test_ruledownload_clean_pages(synced_agent, settings):
    """Every page: context, tag history, page keys, versions; the last: + UPDATE."""
    settings.SYNC_RULES_PER_PAGE = 50
    synced_agent.request_clean_sync("CLEAN")
    synced_agent.preflight()
    counts, cursor = [], ""
    while True:
        values = {"machine_id": synced_agent.machine_id}
        if cursor:
            values["cursor"] = cursor
        with CaptureQueriesContext(connection) as queries:
            page = synced_agent.call(
                "ruledownload", "RuleDownloadRequest", "RuleDownloadResponse", values
            )
        counts.append(len(queries))
        cursor = page.cursor
        if not cursor:
            break
    if len(counts) == 1:
        assert counts == [EXPECTED["ruledownload_clean_page"]]
    else:
        assert counts == [4] * (len(counts) - 1) + [5]


def test_postflight(synced_agent, django_assert_num_queries):
    with django_assert_num_queries(EXPECTED["postflight"]):
        synced_agent.call(
            "postflight",
            "PostflightRequest",
            "PostflightResponse",
            {
                "machine_id": synced_agent.machine_id,
                "rules_received": 1,
                "rules_processed": 1,
                "sync_type": "NORMAL",
            },
        )
