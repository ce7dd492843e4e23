"""API rate limits: per token (per user for sessions), per address for requests nobody
authenticated; 429 in the API's error shape with Retry-After. Each test gets an empty cache
(conftest.fresh_cache) and sets a low rate; the default rates never trip the suite."""

import logging
import os
import uuid

import pytest
from asgiref.local import Local
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.core.cache import caches, close_caches
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_create
from santaadmin.roles import ANALYST
from tests.api import assert_error

RULES = "/api/v1/rules/"


def user(username="ana"):
    person = User.objects.create_user(username, password="not-used-in-tests-3c9d")
    person.groups.add(Group.objects.get(name=ANALYST))
    return person


def client_with(key, **extra) -> APIClient:
    api = APIClient(**extra)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def assert_throttled(response) -> int:
    body = assert_error(response, 429)
    assert body["error"] == "throttled"
    wait = int(response["Retry-After"])
    assert 0 < wait <= 60
    assert f"{wait} second" in body["detail"]
    return wait


@override_settings(API_THROTTLE_RATE="3/min")
def test_a_token_is_limited_and_told_when_to_retry(db):
    person = user()
    _, key = api_token_create(user=person, name="busy", scopes=["read"])
    api = client_with(key)
    for _ in range(3):
        assert api.get(RULES).status_code == 200
    assert_throttled(api.get(RULES))
    # Each token has its own allowance, even of the same user.
    _, other = api_token_create(user=person, name="other", scopes=["read"])
    assert client_with(other).get(RULES).status_code == 200


@override_settings(API_THROTTLE_RATE="2/min")
def test_a_throttled_write_changes_nothing(db):
    from rules.models import Rule

    _, key = api_token_create(user=user(), name="w", scopes=["write"])
    api = client_with(key)
    api.get(RULES)
    api.get(RULES)
    body = {"rule_type": "BINARY", "identifier": "a" * 64, "policy": "BLOCKLIST"}
    assert_throttled(api.post(RULES, body, format="json"))
    assert not Rule.objects.exists()


@override_settings(API_THROTTLE_RATE="2/min")
def test_a_browser_session_is_limited_per_user(db, client):
    client.force_login(user())
    assert client.get(RULES).status_code == 200
    assert client.get(RULES).status_code == 200
    assert_throttled(client.get(RULES))


@override_settings(API_THROTTLE_ANON_RATE="2/min")
def test_anonymous_requests_are_limited_per_address(db):
    anonymous = APIClient(REMOTE_ADDR="10.0.0.9")
    assert_error(anonymous.get(RULES), 401)
    # Failed credentials count as anonymous requests of their address.
    bad = client_with("sat_not-a-key", REMOTE_ADDR="10.0.0.9")
    assert_error(bad.get(RULES), 401)
    assert_throttled(anonymous.get(RULES))
    assert_throttled(bad.get(RULES))
    # A header the client sets does not make it someone else (no proxy is trusted by default).
    assert_throttled(anonymous.get(RULES, HTTP_X_FORWARDED_FOR="192.0.2.1"))
    # Another address, and anyone with valid credentials, are not affected.
    assert_error(APIClient(REMOTE_ADDR="10.0.0.10").get(RULES), 401)
    _, key = api_token_create(user=user(), name="ok", scopes=["read"])
    assert client_with(key, REMOTE_ADDR="10.0.0.9").get(RULES).status_code == 200


@override_settings(API_THROTTLE_ANON_RATE="1/min", API_THROTTLE_RATE="1/min")
def test_the_sync_endpoints_are_not_throttled(agent):
    for _ in range(3):
        agent.sync()


@override_settings(API_THROTTLE_RATE="", API_THROTTLE_ANON_RATE="")
def test_an_empty_rate_disables_the_limit(db):
    _, key = api_token_create(user=user(), name="many", scopes=["read"])
    api = client_with(key)
    for _ in range(5):
        assert api.get(RULES).status_code == 200


@override_settings(
    API_THROTTLE_RATE="1/min",
    API_THROTTLE_ANON_RATE="1/min",
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    },
)
def test_an_unreachable_cache_lets_requests_through(db, caplog):
    _, key = api_token_create(user=user(), name="r", scopes=["read"])
    api = client_with(key)
    with caplog.at_level(logging.WARNING, logger="accounts.throttling"):
        assert api.get(RULES).status_code == 200
        assert api.get(RULES).status_code == 200
        assert_error(APIClient().get(RULES), 401)
        assert_error(APIClient().get(RULES), 401)
    assert "cache unreachable" in caplog.text


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
@override_settings(API_THROTTLE_RATE="1/min")
def test_the_schema_and_docs_are_limited_too(db, url):
    _, key = api_token_create(user=user(), name="docs", scopes=["read"])
    api = client_with(key)
    assert api.get(url).status_code == 200
    assert api.get(url).status_code == 429


@pytest.mark.integration
def test_counters_in_redis_are_shared_by_every_process(db):
    """With Redis (production), a fresh connection — as in another web process — sees the
    counts made before it. The keys get a prefix of their own and expire with the window, so
    the broker's database they may share is left as it was."""
    url = django_settings.CACHE_URL or django_settings.CELERY_BROKER_URL
    if not url.startswith("redis"):
        if os.environ.get("SANTAADMIN_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis (CACHE_URL or CELERY_BROKER_URL) is required but not configured")
        pytest.skip("Redis not configured: embedded run (CI=true .ci/run uses the real one)")
    redis_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
    }
    _, key = api_token_create(user=user(), name="shared", scopes=["read"])
    with override_settings(CACHES={"default": redis_cache}, API_THROTTLE_RATE="2/min"):
        assert client_with(key).get(RULES).status_code == 200
        assert client_with(key).get(RULES).status_code == 200
        close_caches()
        caches._connections = Local()  # the next request opens a new client, like a process
        assert_throttled(client_with(key).get(RULES))
        assert caches["default"].get(f"throttle_api_token:{ApiToken.objects.get().pk}")
