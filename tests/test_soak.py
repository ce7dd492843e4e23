"""The soak test: a simulated fleet syncing with the production server for minutes through a
network that drops and delays requests, while an analyst changes rules through the API.

The server is `manage.py serve` (granian, two workers, production settings: PostgreSQL, write-
behind liveness, deferred event storage). Agents (threads, real HTTP, tests/agent.py's
SimulatedAgent) reach it through tests/live.py's FaultyHttpProxy, which resets connections
before the request, part-way through its body, and after the server answered but before the
agent heard (the nasty case: the server did the work, the agent retries it), and delays others.
Agents retry like Santa (five attempts), upload events with unique ids and replay some batches
out of band, and keep their rules as the agent does (all pages or nothing, clean syncs).

At the end, after one fault-free sync round:
* every event acknowledged with a 200 is stored exactly once, nothing is stored that no agent
  sent, and the binaries' execution counts equal the stored events (no double counting);
* every host holds exactly the rules the server computes for it (rules.delivery.host_rules);
* no server process died or answered a 500, and each worker's resident memory grew less than
  SOAK_RSS_GROWTH_MB between the warm-up point and the end.

Only on PostgreSQL (the production configuration; the server is another process and cannot
share the SQLite in-memory test database; embedded mode runs one process and does not defer
events): it skips without, or fails when SANTAADMIN_REQUIRE_SERVICES=1. SOAK_SECONDS (default
180), SOAK_AGENTS (default 60) and SOAK_SEED tune it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection

from accounts.services import api_token_create
from events.models import Binary, Event, EventUpload
from hosts.models import Host
from hosts.selectors import revision_current
from hosts.services import enrollment_create
from rules.delivery import host_rules
from tests.agent import SimulatedAgent, SyncFailed
from tests.live import (
    FAULTS,
    FaultyHttpProxy,
    LiveServer,
    http_transport,
    retrying,
    tail,
    wait_for,
)

REQUIRED = os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1"
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
SOAK_AGENTS = int(os.environ.get("SOAK_AGENTS", "60"))
SOAK_SEED = int(os.environ.get("SOAK_SEED", "7"))
RSS_GROWTH_MB = float(os.environ.get("SOAK_RSS_GROWTH_MB", "30"))
FAULT_RATES = {
    "reset_before_request": 0.04,
    "reset_mid_body": 0.04,
    "lost_response": 0.05,
    "delay": 0.05,
}
SHAS = [f"{n:064x}" for n in range(0x5A0, 0x5A4)]
RULE_KEYS = [f"{n:064x}" for n in range(0x7B0, 0x7D0)]
SCOPES = ["everyone", "tags", "hosts"]
# The analyst's changes, in this order, round and round (a bulk create first: several pages).
ACTIONS = ["bulk", "create", "delete", "create", "clean", "bulk", "bulk-delete", "create"]
# Small rule-download pages, so that downloads take several pages and retried pages (the same
# cursor sent again) happen often.
RULES_PER_PAGE = 3
T0 = 1_767_225_600

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


class SoakAgent(SimulatedAgent):
    """A SimulatedAgent that remembers every event it sent and every one acknowledged."""

    def __init__(self, *args, number: int, rng: random.Random, **kwargs):
        super().__init__(*args, **kwargs)
        self.number, self.rng = number, rng
        self.next_event = 0
        self.sent: set[tuple[str, int]] = set()
        self.acked: set[tuple[str, int]] = set()
        self.acked_batches: list[list[dict]] = []
        self.failures: Counter = Counter()
        self.paged_syncs = 0  # syncs whose rule download took more than one page
        self.most_rules = 0  # the most rules it held at once

    def new_events(self, count: int) -> None:
        for _ in range(count):
            n = self.next_event
            self.next_event += 1
            self.add_event(
                file_sha256=SHAS[(self.number + n) % len(SHAS)],
                file_name="tool",
                file_path="/usr/local/bin",
                executing_user="alice",
                decision="BLOCK_UNKNOWN",
                execution_time=T0 + n,
                pid=n + 1,
            )

    def upload_events(self, events: list[dict]):
        keys = {(self.machine_id, e["pid"]) for e in events}
        self.sent |= keys
        response = super().upload_events(events)  # raises SyncFailed unless 200
        self.acked |= keys
        self.acked_batches.append(list(events))
        return response

    def step(self) -> None:
        """What a Mac does between two looks from the test: run things, maybe upload out of
        band (sometimes a batch it already sent), then a full sync."""
        self.new_events(self.rng.randint(0, 3))
        try:
            if self.acked_batches and self.rng.random() < 0.1:
                self.upload_events(self.rng.choice(self.acked_batches))  # a replay
            elif self.events and self.rng.random() < 0.2:
                batch = self.events[:10]
                self.upload_events(batch)  # out of band (§5.4)
                del self.events[: len(batch)]
            if self.sync().pages > 1:
                self.paged_syncs += 1
            self.most_rules = max(self.most_rules, len(self.rules))
        except SyncFailed as exc:
            self.failures[exc.stage] += 1


def _require_postgresql() -> None:
    if connection.vendor == "postgresql":
        return
    if REQUIRED:
        pytest.fail("PostgreSQL is required (SANTAADMIN_REQUIRE_SERVICES=1) but not configured")
    pytest.skip("the soak runs the production configuration (PostgreSQL); CI=true .ci/run has it")


class Analyst:
    """Rule changes through the REST API of the live server (not through the faulty proxy)."""

    def __init__(self, server: LiveServer, key: str, machine_ids: list[str], seed: int):
        self.server, self.key, self.machine_ids = server, key, machine_ids
        self.rng = random.Random(seed)
        self.rule_ids: list[int] = []
        self.changes = Counter()
        self.made = 0

    def call(self, method: str, path: str, payload=None):
        status, _, body = self.server.request(
            method,
            path,
            json.dumps(payload).encode() if payload is not None else None,
            {"Authorization": f"Token {self.key}", "Content-Type": "application/json"},
        )
        return status, body

    def _rule(self, scope: str) -> dict:
        payload = {
            "rule_type": "BINARY",
            "identifier": self.rng.choice(RULE_KEYS),
            "policy": self.rng.choice(["BLOCKLIST", "ALLOWLIST", "SILENT_BLOCKLIST"]),
        }
        if scope == "tags":
            payload["tags"] = ["eng"]
        elif scope == "hosts":
            payload["machine_ids"] = self.rng.sample(self.machine_ids, 3)
        return payload

    def change(self) -> None:
        """One change: a rule created (for everyone, a tag or hosts), several at once, one or
        several deleted, or a host told to clean-sync."""
        action = ACTIONS[self.made % len(ACTIONS)]
        self.made += 1
        if action in ("delete", "bulk-delete") and len(self.rule_ids) < 2:
            action = "create"
        if action == "delete":
            rule_id = self.rule_ids.pop(self.rng.randrange(len(self.rule_ids)))
            status, body = self.call("DELETE", f"/api/v1/rules/{rule_id}/")
            assert status == 204, (status, body[:300])
        elif action == "bulk-delete":
            ids = self.rng.sample(self.rule_ids, 2)
            status, body = self.call("POST", "/api/v1/rules/bulk-delete/", {"ids": ids})
            assert status == 200, (status, body[:300])
            self.rule_ids = [i for i in self.rule_ids if i not in ids]
        elif action == "clean":
            machine_id = self.rng.choice(self.machine_ids)
            status, body = self.call(
                "PATCH", f"/api/v1/hosts/{machine_id}/", {"clean_sync_requested": "CLEAN"}
            )
            assert status == 200, (status, body[:300])
        else:
            if action == "bulk":
                keys = self.rng.sample(RULE_KEYS, 6)
                items = [{**self._rule("everyone"), "identifier": key} for key in keys]
                status, body = self.call("POST", "/api/v1/rules/bulk/", {"rules": items})
                created = json.loads(body)["results"] if status == 201 else []
            else:
                status, body = self.call(
                    "POST", "/api/v1/rules/", self._rule(self.rng.choice(SCOPES))
                )
                created = [json.loads(body)] if status == 201 else []
            # 409: a rule for that key and scope exists already (a refusal changes nothing).
            assert status in (201, 409), (status, body[:300])
            if status == 409:
                action = "refused"
            self.rule_ids += [rule["id"] for rule in created]
        self.changes[action] += 1


def test_a_fleet_soaks_through_a_faulty_network(django_db_setup, tmp_path, analyst):
    _require_postgresql()
    from tests.live import database_url

    server = LiveServer(
        tmp_path,
        {"DATABASE_URL": database_url(), "SYNC_RULES_PER_PAGE": str(RULES_PER_PAGE)},
    )
    server.start()
    proxy = FaultyHttpProxy(server.address, FAULT_RATES, seed=SOAK_SEED).start()
    try:
        _soak(server, proxy, analyst)
    finally:
        proxy.stop()
        server.stop()
        print(f"--- server log ({server.log}) ---\n{tail(server.log)}")


def _soak(server: LiveServer, proxy: FaultyHttpProxy, analyst) -> None:
    _, plain = enrollment_create(name="soak-plain")
    _, tagged = enrollment_create(name="soak-eng", tag_names=["eng"])
    transport = retrying(http_transport(("127.0.0.1", proxy.port), timeout=30))
    rng = random.Random(SOAK_SEED)
    agents = [
        SoakAgent(
            transport,
            f"SOAK-{n:04d}",
            tagged if n % 3 == 0 else plain,
            serial=f"C02SOAK{n:04d}",
            number=n,
            rng=random.Random(rng.random()),
        )
        for n in range(SOAK_AGENTS)
    ]
    _, key = api_token_create(user=analyst, name="soak", scopes=["write"])
    analyst_api = Analyst(server, key, [a.machine_id for a in agents], SOAK_SEED)
    pids = server.worker_pids()

    stop = threading.Event()
    errors: list[BaseException] = []

    def run(agent: SoakAgent) -> None:
        try:
            while not stop.is_set():
                agent.step()
                stop.wait(agent.rng.uniform(0.5, 2.5))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in agents]
    for thread in threads:
        thread.start()

    started = time.monotonic()
    warm_at = started + min(30.0, SOAK_SECONDS / 4)
    warm_rss: dict[int, int] = {}
    next_change = started + 5
    while time.monotonic() - started < SOAK_SECONDS and not errors:
        now = time.monotonic()
        if not warm_rss and now >= warm_at:
            warm_rss = {pid: server.rss_kib(pid) for pid in server.worker_pids()}
        if now >= next_change:
            analyst_api.change()
            next_change = now + max(2.0, SOAK_SECONDS / 12)
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(120)
    assert not errors, f"an agent thread failed: {errors[0]!r}"
    end_rss = {pid: server.rss_kib(pid) for pid in server.worker_pids()}

    # One fault-free round: every agent uploads what it still holds and syncs.
    proxy.enabled = False
    for agent in agents:
        agent.sync()
    wait_for(lambda: not EventUpload.objects.exists(), "the event inbox to be drained", 60)

    report = (
        f"faults: {dict(proxy.counts)}; analyst: {dict(analyst_api.changes)}; "
        f"failed stages: {dict(sum((a.failures for a in agents), Counter()))}; "
        f"paged syncs: {sum(a.paged_syncs for a in agents)}; "
        f"most rules held: {max(a.most_rules for a in agents)}; "
        f"rss KiB warm {warm_rss} end {end_rss}"
    )
    print(report)

    # The faults really happened, and the servers survived them without a 500.
    for name in FAULTS:
        assert proxy.counts[name] > 0, f"no {name} fault was injected: {report}"
    assert sum(a.paged_syncs for a in agents) > 0, f"no download took several pages: {report}"
    assert server.worker_pids() == pids, f"a server process died and was replaced: {report}"
    assert "Internal Server Error" not in server.log.read_text(errors="replace"), tail(server.log)

    _check_events(agents, report)
    _check_rules(agents, report)

    assert warm_rss, "the soak ended before its warm-up point"
    grown = {pid: (end_rss[pid] - warm_rss[pid]) / 1024 for pid in warm_rss}
    assert all(mb < RSS_GROWTH_MB for mb in grown.values()), (
        f"worker memory grew by {grown} MB (bound {RSS_GROWTH_MB} MB): {report}"
    )


def _check_events(agents: list[SoakAgent], report: str) -> None:
    machines = [a.machine_id for a in agents]
    stored = Counter(
        Event.objects.filter(host__machine_id__in=machines).values_list("host__machine_id", "pid")
    )
    sent = set().union(*(a.sent for a in agents))
    acked = set().union(*(a.acked for a in agents))
    duplicated = sorted(key for key, n in stored.items() if n > 1)
    missing = sorted(acked - stored.keys())
    unsent = sorted(stored.keys() - sent)
    assert not (duplicated or missing or unsent), (
        f"events: {len(duplicated)} stored more than once {duplicated[:10]}, "
        f"{len(missing)} acknowledged but not stored {missing[:10]}, "
        f"{len(unsent)} stored but never sent {unsent[:10]}; {report}"
    )
    assert len(acked) > SOAK_AGENTS, f"too few events went through: {len(acked)}; {report}"
    counts = {sha: Event.objects.filter(binary_id=sha).count() for sha in SHAS}
    executions = dict(Binary.objects.filter(pk__in=SHAS).values_list("sha256", "executions"))
    assert executions == counts, f"binary statistics {executions} != stored events {counts}"


def _check_rules(agents: list[SoakAgent], report: str) -> None:
    revision = revision_current()
    hosts = dict(
        Host.objects.filter(machine_id__in=[a.machine_id for a in agents]).values_list(
            "machine_id", "id"
        )
    )
    diverged = []
    for agent in agents:
        expected = {
            (rule.rule_type, rule.identifier): rule.policy
            for rule in host_rules(hosts[agent.machine_id], revision)
        }
        holds = {key: rule["policy"] for key, rule in agent.rules.items()}
        if holds != expected:
            diverged.append(
                f"{agent.machine_id}: missing {sorted(expected.items() - holds.items())} "
                f"extra {sorted(holds.items() - expected.items())}"
            )
    assert not diverged, f"{len(diverged)} hosts diverged:\n" + "\n".join(diverged[:10]) + report
    assert all(agent.most_rules for agent in agents), "a host never received a rule"
