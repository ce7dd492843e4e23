"""Sync rate limits per machine and per client address (syncapi.ratelimit): 429 with
Retry-After and a JSON body naming the limit, before any database work, changing nothing.

The limiter's clock is fixed at the start of a minute in every test (windows are calendar
minutes), so no test straddles a window by chance and none sleeps.
"""

import logging
import os
import uuid

import orjson
import pytest
from django.conf import settings as django_settings
from django.test import Client

from events.models import Event
from hosts.models import Host
from syncapi import ratelimit
from syncapi.ratelimit import address_bucket
from tests.agent import SimulatedAgent, SyncFailed, django_transport
from tests.test_settings import manage

MINUTE_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of 60


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    now = {"t": MINUTE_START + 5}
    monkeypatch.setattr(ratelimit, "clock", lambda: now["t"])
    return now


@pytest.fixture
def limits(settings):
    """Set the limits of a test: limits(machine="3/min", address="")."""

    def set_limits(machine="", address=""):
        settings.SYNC_RATE_LIMIT_PER_MACHINE = machine
        settings.SYNC_RATE_LIMIT_PER_ADDRESS = address

    return set_limits


@pytest.fixture
def mac(db, enrollment):
    """mac(address) -> a simulated agent connecting from that address."""

    def make(address="10.0.0.1", machine_id=None, secret=None, **meta):
        client = Client(REMOTE_ADDR=address, **meta)
        return SimulatedAgent(
            django_transport(client),
            machine_id or str(uuid.uuid4()).upper(),
            enrollment[1] if secret is None else secret,
            serial=f"C02RL{uuid.uuid4().hex[:6]}",
        )

    return make


def raw_post(address, machine_id, secret, **meta):
    """An empty JSON preflight (valid for the protocol) from `address`; the response."""
    return Client(REMOTE_ADDR=address).post(
        f"/sync/preflight/{machine_id}",
        data=b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        **meta,
    )


def assert_limited(response, setting):
    assert response.status_code == 429, response.content
    body = orjson.loads(response.content)
    assert body["error"] == "rate_limited"
    assert setting in body["detail"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def refused(agent, stage="preflight") -> SyncFailed:
    with pytest.raises(SyncFailed) as failed:
        if stage == "preflight":
            agent.preflight()
        else:
            agent.upload_events([EVENT])
    assert failed.value.status == 429
    return failed.value


EVENT = {
    "file_sha256": "a" * 64,
    "file_path": "/usr/bin",
    "file_name": "yes",
    "executing_user": "foo",
    "execution_time": 1751111111.5,
    "decision": "BLOCK_BINARY",
}


def test_over_the_machine_limit_a_request_is_refused_and_changes_nothing(
    mac, limits, django_assert_num_queries
):
    limits(machine="4/min")
    agent = mac()
    agent.sync()  # preflight, rule download, postflight
    agent.preflight()
    host_before = Host.objects.values().get(machine_id=agent.machine_id)

    with django_assert_num_queries(0):  # answered before any database work
        failure = refused(agent, "eventupload")
    body = orjson.loads(failure.body)
    assert body["error"] == "rate_limited"
    assert "SYNC_RATE_LIMIT_PER_MACHINE" in body["detail"]
    assert "4 per minute" in body["detail"]
    refused(agent, "preflight")

    assert Host.objects.values().get(machine_id=agent.machine_id) == host_before
    assert not Event.objects.exists()


def test_the_answer_has_retry_after_until_the_window_ends(mac, limits, fixed_clock):
    limits(machine="1/min")
    agent = mac()
    agent.preflight()
    fixed_clock["t"] = MINUTE_START + 42.5
    response = raw_post("10.0.0.1", agent.machine_id, agent.secret)
    assert assert_limited(response, "SYNC_RATE_LIMIT_PER_MACHINE") == 18


def test_another_machine_from_the_same_address_is_not_limited_by_the_first(mac, limits):
    limits(machine="3/min")
    first, second = mac("10.0.0.1"), mac("10.0.0.1")
    first.sync()
    refused(first)
    second.sync()  # three requests of its own


def test_the_machine_limit_counts_each_credential_apart(mac, limits):
    """Someone who knows a Mac's id but not the enrollment secret cannot spend its budget."""
    limits(machine="3/min")
    victim = mac("10.0.0.1")
    for n in range(10):
        response = raw_post("192.0.2.66", victim.machine_id, "sa_not-the-secret")
        assert response.status_code == (401 if n < 3 else 429)
    victim.sync()


def test_the_address_limit_counts_every_machine_behind_it(mac, limits):
    limits(address="5/min")
    macs = [mac("10.0.0.7") for _ in range(3)]
    macs[0].sync()
    macs[1].preflight()
    macs[1].preflight()
    failure = refused(macs[2])
    assert "SYNC_RATE_LIMIT_PER_ADDRESS" in orjson.loads(failure.body)["detail"]
    mac("10.0.0.8").sync()  # another address is not concerned


def test_a_refused_request_counts_against_neither_limit(mac, limits):
    """A Mac looping behind a NAT is refused by its own limit without spending the address's
    budget, which its neighbours still have."""
    limits(machine="3/min", address="5/min")
    looping, neighbour = mac("10.0.0.1"), mac("10.0.0.1")
    looping.sync()
    for _ in range(20):
        refused(looping)
    neighbour.preflight()
    neighbour.preflight()  # 3 + 2: the address's 5
    failure = refused(neighbour)
    assert "SYNC_RATE_LIMIT_PER_ADDRESS" in orjson.loads(failure.body)["detail"]


def test_the_limit_ends_with_its_window(mac, limits, fixed_clock):
    limits(machine="3/min", address="6/min")
    agent = mac()
    agent.sync()
    refused(agent)
    fixed_clock["t"] = MINUTE_START + 59.9
    refused(agent)
    fixed_clock["t"] = MINUTE_START + 60
    agent.sync()
    refused(agent)


def test_an_empty_setting_turns_a_limit_off(mac, limits):
    limits(machine="", address="")
    agent = mac()
    for _ in range(8):
        agent.preflight()
    limits(machine="3/min", address="")  # uncounted while off; counted from now on
    for _ in range(3):
        agent.preflight()
    refused(agent)
    limits(machine="", address="")
    agent.preflight()
    limits(machine="", address="3/min")
    for _ in range(3):
        agent.preflight()
    refused(agent)


def test_x_forwarded_for_is_trusted_only_with_trusted_proxies(db, enrollment, limits, settings):
    limits(address="2/min")
    secret = enrollment[1]
    machine = "PROXIED-MAC"

    def post(xff):
        return raw_post("10.9.9.9", machine, secret, HTTP_X_FORWARDED_FOR=xff)

    settings.NUM_PROXIES = 0  # a client's own header changes nothing
    assert post("198.51.100.1").status_code == 200
    assert post("198.51.100.2").status_code == 200
    assert_limited(post("198.51.100.3"), "SYNC_RATE_LIMIT_PER_ADDRESS")

    settings.NUM_PROXIES = 1  # the proxy's entry (the last) names the client
    for client_address in ("198.51.100.1", "198.51.100.2"):
        assert post(f"6.6.6.6, {client_address}").status_code == 200
        assert post(f"7.7.7.7, {client_address}").status_code == 200
        assert_limited(post(client_address), "SYNC_RATE_LIMIT_PER_ADDRESS")
    # Not an address: counted as the connection's, whose budget is spent.
    assert_limited(post("not-an-address"), "SYNC_RATE_LIMIT_PER_ADDRESS")


def test_ipv6_addresses_count_by_their_64():
    assert address_bucket("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_bucket("192.0.2.1") == "192.0.2.1"


def test_an_ipv6_client_cannot_spread_over_its_64(mac, limits):
    limits(address="3/min")
    mac("2001:db8::1").sync()
    refused(mac("2001:db8::2"))
    mac("2001:db8:0:1::1").preflight()


def test_an_unreachable_storage_lets_syncs_through(mac, limits, settings, caplog):
    limits(machine="1/min", address="1/min")
    settings.SYNC_RATE_LIMIT_STORAGE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    agent = mac()
    with caplog.at_level(logging.WARNING, logger="santaadmin.sync"):
        agent.sync()
        agent.sync()
    assert "Sync rate limits not applied" in caplog.text
    assert caplog.text.count("Sync rate limits not applied") == 1  # then paused, not retried


def redis_url() -> str:
    url = django_settings.CELERY_BROKER_URL or ""
    if not url.startswith("redis"):
        if os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis (CELERY_BROKER_URL) is required but not configured")
        pytest.skip("Redis not configured: embedded run (CI=true .ci/run uses the real one)")
    return url


@pytest.mark.integration
def test_counts_in_redis_are_shared_by_every_process(mac, limits, settings):
    """Two limiters — two web processes — share the counts in Redis. Keys are unique to the
    test (a new machine id and address) and expire after their window; nothing is flushed."""
    settings.SYNC_RATE_LIMIT_STORAGE = redis_url()
    limits(machine="3/min", address="")
    agent = mac(f"10.{uuid.uuid4().int % 250}.0.1")
    agent.preflight()
    agent.preflight()
    # The next requests are served by "another process": a new connection, no local state.
    ratelimit.limiter._storages.clear()
    agent.preflight()
    refused(agent)
    ratelimit.limiter._storages.clear()
    refused(agent)


def test_the_defaults_leave_room_for_a_real_fleet(tmp_path):
    """600 requests a minute per Mac (a clean sync of 20,000 rules is ~25, a backlog of 10,000
    events 200) and 6,000 per address (a NAT of ~15,000 Macs at steady state), in memory."""
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.SYNC_RATE_LIMIT_PER_MACHINE, "
        "s.SYNC_RATE_LIMIT_PER_ADDRESS, s.SYNC_RATE_LIMIT_STORAGE)",
        SANTAADMIN_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["600/min", "6000/min", "memory://"]
