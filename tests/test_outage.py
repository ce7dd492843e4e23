"""Database outages: every sync stage answers 503 with Retry-After and a JSON body, the console
and the API a clean 503 too, nothing is half-written, and service resumes by itself.

The unit tests below run on any database (the connection is made to fail in-process). The
integration tests start the production server (`manage.py serve`, two granian workers,
production settings) connected to PostgreSQL through a proxy (tests/live.py) that cuts every
connection and refuses new ones — the shared PostgreSQL is never stopped. They need
PostgreSQL: they skip without it, or fail when SANTAADMIN_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from django.db import OperationalError, connection
from django.test import Client

from events.models import Event, EventUpload
from hosts.models import Host, HostSync
from hosts.services import enrollment_create
from rules.services import RuleInput, rule_create
from tests.agent import SimulatedAgent
from tests.live import (
    LiveServer,
    TcpProxy,
    database_address,
    database_url,
    http_transport,
    tail,
    wait_for,
)

REQUIRED = os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1"
STAGES = ("preflight", "eventupload", "ruledownload", "postflight")
MESSAGES = {
    "preflight": "PreflightRequest",
    "eventupload": "EventUploadRequest",
    "ruledownload": "RuleDownloadRequest",
    "postflight": "PostflightRequest",
}
T0 = 1_767_225_600


def _event(n: int, sha: str = "d" * 64) -> dict:
    return {
        "file_sha256": sha,
        "file_name": "tool",
        "file_path": "/usr/local/bin",
        "executing_user": "alice",
        "decision": "BLOCK_UNKNOWN",
        "execution_time": T0 + n,
        "pid": 1000 + n,
    }


def _stage_body(agent: SimulatedAgent, stage: str) -> dict:
    values = {"machine_id": agent.machine_id}
    if stage == "eventupload":
        values["events"] = [_event(0)]
    return values


def _assert_unavailable(status: int, headers: dict, body: bytes, what: str) -> None:
    assert status == 503, f"{what}: {status} {body[:300]!r}"
    assert headers.get("Retry-After", "").isdigit(), f"{what}: no Retry-After in {headers}"
    assert orjson.loads(body)["error"] == "database_unavailable", f"{what}: {body[:300]!r}"


# --- unit: a database that raises ---------------------------------------------------------------


@pytest.fixture
def database_down():
    """Every statement of this thread's connection fails as with a lost server."""

    def refuse(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(refuse):
        yield


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_answers_503_with_retry_after(agent, stage, database_down):
    # `agent` registered nothing yet; the first statement of the stage fails.
    client = Client(raise_request_exception=False)
    body = agent.encode(MESSAGES[stage], _stage_body(agent, stage))
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in agent.headers().items()}
    response = client.generic(
        "POST",
        f"/sync/{stage}/{agent.machine_id}",
        data=body,
        content_type=headers.pop("HTTP_CONTENT_TYPE"),
        **headers,
    )
    _assert_unavailable(response.status_code, response.headers, response.content, stage)


@pytest.mark.parametrize(
    ("path", "json_body"),
    [("/", False), ("/rules/", False), ("/api/v1/hosts/", True), ("/api/v1/rules/", True)],
)
def test_console_and_api_answer_503_not_a_server_error(analyst, path, json_body):
    from accounts.services import api_token_create

    browser = Client(raise_request_exception=False)
    browser.force_login(analyst)
    _, key = api_token_create(user=analyst, name="outage", scopes=["read"])
    with connection.execute_wrapper(
        lambda *args: (_ for _ in ()).throw(OperationalError("connection refused"))
    ):
        if json_body:
            response = browser.get(path, HTTP_AUTHORIZATION=f"Token {key}")
        else:
            response = browser.get(path)
    assert response.status_code == 503, (path, response.status_code)
    assert response["Retry-After"].isdigit()
    if json_body:
        assert response.json()["error"] == "database_unavailable"
    else:
        assert b"Temporarily unavailable" in response.content


def test_other_errors_are_still_500(analyst, monkeypatch):
    """Only an unreachable database is a 503; a bug stays a 500 (and is logged as one)."""
    import santaadmin.views as views

    def broken(request):
        raise ValueError("a bug")

    monkeypatch.setattr(views, "describe_mode", lambda: broken(None))
    browser = Client(raise_request_exception=False)
    browser.force_login(analyst)
    assert browser.get("/").status_code == 500


# --- integration: the production server through a proxy that can be cut ------------------------


def _require_postgresql() -> None:
    if connection.vendor == "postgresql":
        return
    if REQUIRED:
        pytest.fail("PostgreSQL is required (SANTAADMIN_REQUIRE_SERVICES=1) but not configured")
    pytest.skip("needs PostgreSQL: the server is another process (CI=true .ci/run has it)")


@pytest.fixture
def db_proxy(django_db_setup):
    _require_postgresql()
    proxy = TcpProxy(database_address()).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def live(db_proxy, tmp_path):
    server = LiveServer(tmp_path, {"DATABASE_URL": database_url(db_proxy.port)})
    server.start()
    yield server
    server.stop()
    print(f"--- server log ({server.log}) ---\n{tail(server.log)}")  # shown if the test failed


def _agents(live: LiveServer, count: int) -> tuple[list[SimulatedAgent], str]:
    _, secret = enrollment_create(name="outage")
    transport = http_transport(live.address)
    return [
        SimulatedAgent(transport, f"OUTAGE-{n:04d}", secret, serial=f"C02OUT{n:04d}")
        for n in range(count)
    ], secret


def _post(live: LiveServer, agent: SimulatedAgent, stage: str, values: dict):
    return live.request(
        "POST",
        f"/sync/{stage}/{agent.machine_id}",
        agent.encode(MESSAGES[stage], values),
        agent.headers(),
    )


def _warm(live: LiveServer, agents: list[SimulatedAgent]) -> None:
    """Enough concurrent preflights that every worker thread holds a database connection."""
    with ThreadPoolExecutor(len(agents)) as pool:
        for _ in range(3):
            statuses = list(pool.map(lambda a: _post(live, a, "preflight", a.facts)[0], agents))
            assert statuses == [200] * len(agents), statuses


@pytest.mark.integration
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_connections_dropped_by_the_database_are_replaced(live, db_proxy):
    """Every worker thread's persistent connection dies (a database restart): the very next
    request of each stage succeeds — the dead connection is noticed before it is used."""
    agents, _ = _agents(live, 8)
    for agent in agents:
        agent.sync()
    _warm(live, agents)
    pids = live.worker_pids()

    db_proxy.cut()
    db_proxy.restore()

    for agent in agents:
        for stage in STAGES:
            status, _, body = _post(live, agent, stage, _stage_body(agent, stage))
            assert status == 200, f"{stage} after the database came back: {status} {body[:300]!r}"
    assert live.worker_pids() == pids, "a server process was replaced"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_outage_answers_503_writes_nothing_half_and_recovers(live, db_proxy, analyst):
    agents, _ = _agents(live, 4)
    agent, other = agents[0], agents[1]
    for each in agents:
        each.sync()
    _warm(live, agents)
    pids = live.worker_pids()
    host = Host.objects.get(machine_id=agent.machine_id)

    # A browser session and an API token made here, used against the live server.
    from accounts.services import api_token_create

    browser = Client()
    browser.force_login(analyst)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    _, key = api_token_create(user=analyst, name="outage", scopes=["read"])

    # 1. Events accepted (200) just before the cut; the cut comes while the web process
    # stores them (its drain's COPY never reaches the database).
    db_proxy.cut_when(b"COPY ")
    accepted = [_event(n) for n in range(20)]
    agent.upload_events(accepted)
    wait_for(db_proxy.triggered.is_set, "the drain to start storing the events")
    assert db_proxy.is_cut
    # Nothing half-stored: the drain's transaction died with its connection.
    wait_for(
        lambda: not Event.objects.exists() and EventUpload.objects.count() == 1,
        "the interrupted drain to leave the uploads waiting",
    )

    # 2. While cut: every stage, the console, the API and /healthz answer 503.
    for stage in STAGES:
        status, headers, body = _post(live, other, stage, _stage_body(other, stage))
        _assert_unavailable(status, headers, body, stage)
    status, headers, body = live.request("GET", "/", headers={"Cookie": cookie})
    assert status == 503 and headers.get("Retry-After", "").isdigit(), (status, body[:300])
    assert b"Temporarily unavailable" in body
    status, headers, body = live.request(
        "GET", "/api/v1/rules/", headers={"Authorization": f"Token {key}"}
    )
    _assert_unavailable(status, headers, body, "the API")
    assert live.request("GET", "/healthz")[0] == 503
    assert live.worker_pids() == pids, "a server process died during the outage"

    # 3. Restored: the next request of each stage succeeds at the first attempt.
    db_proxy.restore()
    for stage in STAGES:
        status, _, body = _post(live, other, stage, _stage_body(other, stage))
        assert status == 200, f"{stage} after the database came back: {status} {body[:300]!r}"
    status, _, _ = live.request("GET", "/api/v1/rules/", headers={"Authorization": f"Token {key}"})
    assert status == 200
    # The events accepted before the cut are stored, once each, by the web process itself.
    wait_for(lambda: not EventUpload.objects.exists(), "the waiting uploads to be drained")
    stored = sorted(Event.objects.filter(host=host).values_list("pid", flat=True))
    assert stored == [e["pid"] for e in accepted]
    # The background writer survived: last-seen times are written again.
    before = Host.objects.get(pk=host.pk).last_preflight_at
    agent.preflight()
    wait_for(
        lambda: Host.objects.get(pk=host.pk).last_preflight_at > before,
        "the write-behind thread to write a last-seen time after the outage",
    )

    # 4. A postflight cut between its two writes promotes nothing.
    rule_create(data=RuleInput("BINARY", "e" * 64, "BLOCKLIST"))
    agent.preflight()
    accepted_rules, received, _ = agent.download_rules()
    agent.apply_rules(accepted_rules, "NORMAL")
    host.refresh_from_db()
    assert host.pending_rev is not None
    position, syncs = host.rules_synced_rev, HostSync.objects.filter(host=host).count()
    time.sleep(1)  # let the write-behind thread write what earlier steps left it
    db_proxy.cut_when(b'INSERT INTO "hosts_hostsync"')
    postflight = {
        "machine_id": agent.machine_id,
        "rules_received": received,
        "rules_processed": len(accepted_rules),
        "sync_type": "NORMAL",
    }
    status, headers, body = _post(live, agent, "postflight", postflight)
    assert db_proxy.triggered.is_set(), "the postflight never wrote its history row"
    _assert_unavailable(status, headers, body, "the interrupted postflight")
    host.refresh_from_db()
    assert (host.rules_synced_rev, host.pending_rev is not None) == (position, True)
    assert HostSync.objects.filter(host=host).count() == syncs
    # The agent retries once the database is back: promoted, with one history row.
    db_proxy.restore()
    status, _, body = _post(live, agent, "postflight", postflight)
    assert status == 200, body
    host.refresh_from_db()
    assert host.pending_rev is None and host.rules_synced_rev != position
    assert HostSync.objects.filter(host=host).count() == syncs + 1
    assert live.worker_pids() == pids, "a server process was replaced"
