"""Shared actors for every test: enrollments, simulated agents, API clients per role."""

import itertools
import os
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import caches
from django.test import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from accounts.services import api_token_create
from hosts.services import enrollment_create
from santaadmin.roles import ADMIN, ANALYST, AUDITOR
from tests.agent import SimulatedAgent, django_transport

_serials = itertools.count(1)

# Property-based tests (tests/test_fuzz_*.py). "ci", the default, keeps them to about a minute
# per file on two cores; HYPOTHESIS_PROFILE=deep runs many more examples locally. No deadline:
# a request's time depends on the machine, and timings belong in the benchmarks. Fixtures are
# function-scoped on purpose: each example rolls back its own writes (tests/fuzzing.py).
_FUZZ_HEALTH = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
]
hypothesis_settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=_FUZZ_HEALTH
)
hypothesis_settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=_FUZZ_HEALTH
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def celery_tasks_in_process():
    """Tasks a test triggers run in the test's process, also when the suite runs with a real
    broker (CI=true): a fan-out sent on commit is then done when the request returns, as in
    embedded mode, and nothing depends on a worker that is not running. The real worker and
    broker are exercised in tests/test_worker.py (whose fixture switches this off)."""
    from santaadmin.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.fixture(autouse=True)
def liveness_in_request(settings):
    """Last-seen times, sync history and events are written in the request, as in embedded
    mode, also when the suite runs with production settings: tests read them right after a
    sync. The write-behind and deferred events are tested in tests/test_liveness.py and
    tests/test_deferred_events.py."""
    settings.SYNC_WRITE_BEHIND_SECONDS = 0
    settings.SYNC_DEFER_EVENTS = False
    yield
    from hosts import liveness

    liveness.writer.stop()  # a test that turned the background thread on ends it


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache of its own (local memory, whatever the
    environment says), so the API's rate-limit counters never carry from one test to the
    next: the default rates are never reached by one test, and the throttling tests set low
    ones. Never the Redis of CACHE_URL, which another process may share."""
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    ):
        caches["default"].clear()
        yield


@pytest.fixture(autouse=True)
def sync_rate_limits_out_of_reach(settings):
    """The suite syncs thousands of times from 127.0.0.1, some tests hundreds of times per
    machine within a minute: the sync rate limits are counted (so their code runs on every
    sync) in this process's memory, from zero in each test, at rates no test reaches.
    tests/test_sync_rate_limits.py sets low ones."""
    from syncapi.ratelimit import limiter

    settings.SYNC_RATE_LIMIT_PER_MACHINE = "100000/min"
    settings.SYNC_RATE_LIMIT_PER_ADDRESS = "1000000/min"
    settings.SYNC_RATE_LIMIT_STORAGE = "memory://"
    limiter.reset()
    yield
    limiter.reset()


@pytest.fixture
def enrollment(db):
    """(enrollment, secret) for an enrollment without tags."""
    return enrollment_create(name="default-enrollment")


@pytest.fixture
def make_enrollment(db):
    names = itertools.count(1)

    def make(name=None, tags=(), mode=""):
        return enrollment_create(
            name=name or f"enrollment-{next(names)}", tag_names=tags, client_mode=mode
        )

    return make


@pytest.fixture
def make_agent(db, client, enrollment):
    """Build simulated agents talking to the in-process server."""

    def make(machine_id=None, secret=None, **options):
        number = next(_serials)
        options.setdefault("serial", f"C02TEST{number:05d}")
        options.setdefault("hostname", f"mac-{number}.example.com")
        return SimulatedAgent(
            django_transport(client),
            machine_id or str(uuid.uuid4()).upper(),
            enrollment[1] if secret is None else secret,
            **options,
        )

    return make


@pytest.fixture
def agent(make_agent):
    return make_agent()


def _user_with_role(role: str | None, username: str) -> User:
    user = User.objects.create_user(username, password="not-used-in-tests-8c1f")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def _api_client(user: User) -> APIClient:
    """An API client authenticated with a new `write` token of `user` (all its role allows)."""
    api = APIClient()
    token, key = api_token_create(user=user, name="tests", scopes=["write"])
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    api.user = user
    api.token = token
    return api


@pytest.fixture
def analyst(db):
    return _user_with_role(ANALYST, "ana")


@pytest.fixture
def analyst_api(analyst):
    return _api_client(analyst)


@pytest.fixture
def auditor_api(db):
    return _api_client(_user_with_role(AUDITOR, "audrey"))


@pytest.fixture
def admin_api(db):
    return _api_client(_user_with_role(ADMIN, "adam"))


@pytest.fixture
def norole_api(db):
    return _api_client(_user_with_role(None, "nobody"))


@pytest.fixture
def console(db):
    """A signed-in browser session (Django test client) for a role: console("analyst")."""
    from django.test import Client

    def make(role: str | None, username: str | None = None) -> Client:
        browser = Client()
        user = _user_with_role(role, username or f"{role or 'norole'}-console")
        browser.force_login(user)
        browser.user = user
        return browser

    return make


@pytest.fixture
def analyst_console(console):
    return console(ANALYST)


@pytest.fixture
def auditor_console(console):
    return console(AUDITOR)
