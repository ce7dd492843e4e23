"""The two modes: embedded defaults, production requirements, `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "DATABASE_URL": "postgresql://santa:secret@db.internal:5432/santaadmin",
    "SECRET_KEY": "k7v9Q2mZx4Lp8Rt1Wn6Yb3Hc5Jd0Fg2Ks9Ue4Ia7Oq1Tr8Ew3Py6Uz5Xc2Vb0Nm",
    "ALLOWED_HOSTS": "santa.example.com",
    "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    "CACHE_URL": "redis://redis.internal:6379/1",
    "TRUSTED_PROXY_COUNT": "1",
}


def manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            *PRODUCTION,
            "DEBUG",
            "CELERY_TASK_ALWAYS_EAGER",
            "REDIS_URL",
            "API_THROTTLE_RATE",
            "API_THROTTLE_ANON_RATE",
            "SECURE_SSL_REDIRECT",
            "SANTAADMIN_REQUIRE_SERVICES",
        }
    }
    clean["SANTAADMIN_VAR_DIR"] = os.environ.get("SANTAADMIN_VAR_DIR", str(ROOT / "var"))
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("override", "warning"),
    [
        ({"DATABASE_URL": "sqlite:////tmp/santa.sqlite3"}, "santaadmin.W001"),
        ({"CELERY_BROKER_URL": "", "CELERY_TASK_ALWAYS_EAGER": "1"}, "santaadmin.W002"),
        # Throttle counters per process: the API limits are multiplied by the workers.
        ({"CACHE_URL": ""}, "santaadmin.W003"),
        # Behind the proxy every client would have its address: limits and lockouts shared.
        ({"TRUSTED_PROXY_COUNT": "0"}, "santaadmin.W004"),
    ],
)
def test_check_deploy_warns_about_embedded_parts_in_production(override, warning):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION, **override})
    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "CELERY_BROKER_URL"])
def test_production_requires_its_variables(missing):
    result = manage("check", **{**PRODUCTION, missing: ""})
    assert result.returncode != 0
    assert missing in result.stderr


PRINT_CACHE = (
    "from django.conf import settings; c = settings.CACHES['default']; "
    "print(c['BACKEND'], c.get('LOCATION', '-'))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "django.core.cache.backends.locmem.LocMemCache -"),
        (
            {"REDIS_URL": "redis://cache.internal:6379/2"},
            "django.core.cache.backends.redis.RedisCache redis://cache.internal:6379/2",
        ),
        (
            {"REDIS_URL": "redis://other:6379/0", "CACHE_URL": "redis://cache.internal:6379/3"},
            "django.core.cache.backends.redis.RedisCache redis://cache.internal:6379/3",
        ),
    ],
)
def test_the_cache_comes_from_the_environment(tmp_path, env, expected):
    result = manage("shell", "-c", PRINT_CACHE, SANTAADMIN_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_THROTTLE_RATE", "fast"),
        ("API_THROTTLE_ANON_RATE", "60/fortnight"),
        ("CACHE_URL", "memcached://127.0.0.1:11211"),
        ("SYNC_RATE_LIMIT_PER_MACHINE", "600"),
        ("SYNC_RATE_LIMIT_PER_ADDRESS", "lots/min"),
        ("SYNC_RATE_LIMIT_STORAGE", "memcached://127.0.0.1:11211"),
        ("SIGNIN_LOCKOUT_MINUTES", "0"),
    ],
)
def test_bad_throttle_or_cache_settings_stop_start_up(tmp_path, name, value):
    result = manage("check", SANTAADMIN_VAR_DIR=str(tmp_path), **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_throttle_rates_come_from_the_environment(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.API_THROTTLE_RATE, s.API_THROTTLE_ANON_RATE)",
        SANTAADMIN_VAR_DIR=str(tmp_path),
        API_THROTTLE_RATE="100/hour",
        API_THROTTLE_ANON_RATE="5/second",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "100/hour 5/second"


def test_embedded_mode_says_so_at_startup(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from santaadmin.startup import log_mode; log_mode()",
        SANTAADMIN_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "EMBEDDED MODE" in result.stderr
    assert "Celery tasks run in-process" in result.stderr
    assert (tmp_path / "secret_key").exists()  # generated once, kept for sessions


def test_healthz_reports_mode(client, db, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    body = client.get("/healthz").json()
    assert body == {
        "status": "ok",
        "mode": "embedded" if settings.EMBEDDED else "production",
        "database": "ok",
        "tasks": "in-process",
        "broker": "in-process",
    }


def test_healthz_reports_an_unreachable_broker(client, db, settings, monkeypatch):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from santaadmin.celery import app

    # Nothing listens on port 1. (Patching the connection rather than the configuration
    # leaves no explicit broker_write_url behind for later tests.)
    original = app.connection_for_write
    monkeypatch.setattr(
        app, "connection_for_write", lambda *a, **kw: original("redis://127.0.0.1:1/0")
    )
    response = client.get("/healthz")
    assert response.status_code == 200  # syncs do not need the broker
    assert response.json()["broker"] == "unavailable"
    assert response.json()["status"] == "degraded"


PRINT_DB_OPTIONS = (
    "from django.conf import settings as s; o = s.DATABASES['default']['OPTIONS']; "
    "print(o.get('connect_timeout'), o.get('keepalives'), o.get('keepalives_idle'))"
)


def test_database_connections_give_up_on_an_unreachable_database(tmp_path):
    """A request must fail (503) within seconds when PostgreSQL is unreachable or a connection
    was lost without a close, not hold a worker thread until the kernel gives up."""
    result = manage("shell", "-c", PRINT_DB_OPTIONS, SANTAADMIN_VAR_DIR=str(tmp_path), **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "5 1 30"
    url = PRODUCTION["DATABASE_URL"] + "?connect_timeout=2"
    result = manage(
        "shell",
        "-c",
        PRINT_DB_OPTIONS,
        SANTAADMIN_VAR_DIR=str(tmp_path),
        **{**PRODUCTION, "DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "9"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 1 30"  # the URL's own option wins
