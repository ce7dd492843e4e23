"""The only settings module: every value comes from the environment (see .env.example).

Two modes, decided by DATABASE_URL:

* **embedded** (DATABASE_URL unset): SQLite under var/, Celery tasks run in the web process,
  a secret key generated once into var/. For a laptop or a trial (`make run`).
* **production** (DATABASE_URL set): SECRET_KEY and ALLOWED_HOSTS are required, and so is a
  Celery broker unless CELERY_TASK_ALWAYS_EAGER=1 is set on purpose (which `check --deploy`
  then reports, as it reports SQLite).
"""

import re
import secrets
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SANTAADMIN_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

EMBEDDED = not env.str("DATABASE_URL", default="")
DEBUG = env.bool("DEBUG", default=False)


def _embedded_secret_key() -> str:
    """A random key kept in var/, so sessions survive restarts of an embedded install."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


if EMBEDDED:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
else:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production).")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DATABASE_URL is set.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "hosts",
    "rules",
    "events",
    "syncapi",
    "audit",
    "reports",
    "accounts",
    "axes",
]

MIDDLEWARE = [
    # First: the agents' /sync/ URLs are answered here, before any session, CSRF, auth or
    # redirecting middleware can touch them (protocol.md §2.3, §7 items 2-3).
    "syncapi.middleware.SyncMiddleware",
    "santaadmin.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise: static files are answered before it and need no policy.
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "audit.context.AuditContextMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a refused or locking sign-in into the lockout page (accounts.lockout).
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses sign-ins that are locked out before any password is checked.
    "accounts.lockout.SignInLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "santaadmin.urls"
WSGI_APPLICATION = "santaadmin.wsgi.application"
ASGI_APPLICATION = "santaadmin.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
if EMBEDDED:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "santaadmin.sqlite3",
        }
    }
else:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A database that cannot be reached, or a connection lost without the server closing
        # it (a network partition, a failover), must fail the request (503) in seconds, not
        # hold a worker thread until the kernel gives up on the socket. Options given in
        # DATABASE_URL's query string win.
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        _options.setdefault("connect_timeout", env.int("DB_CONNECT_TIMEOUT", default=5))
        _options.setdefault("keepalives", 1)
        _options.setdefault("keepalives_idle", 30)
        _options.setdefault("keepalives_interval", 10)
        _options.setdefault("keepalives_count", 3)

for _db in DATABASES.values():
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        # IMMEDIATE takes the write lock when a transaction starts, so two writers queue
        # instead of failing with "database is locked" when one upgrades a read lock.
        _db.setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
        if str(_db["NAME"]) not in ("", ":memory:"):
            _db["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))
if EMBEDDED:
    Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # production runs collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from static/ too, so `make run` needs no collectstatic.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Security -----------------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if not EMBEDDED:
    # TLS ends at a reverse proxy that sets X-Forwarded-Proto (see README, "Production").
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CSRF_FAILURE_VIEW = "santaadmin.views.csrf_failure"

# Content-Security-Policy on every response but /sync/ (answered before the middleware) and
# static files: only the console's own script and stylesheet run, never anything inline, so
# markup an agent or a user manages to inject cannot execute (defence behind the templates'
# escaping). The console, the admin site and Swagger UI (/api/docs/, whose init script is served
# from its own URL) all work under it; tests/browser/test_csp_browser.py walks them in Chromium.
# img-src allows data: for the icons Swagger UI's stylesheet embeds.
CSP_REPORT_URI = env.str("CSP_REPORT_URI", default="")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "report-uri": [CSP_REPORT_URI] if CSP_REPORT_URI else None,
    },
}

# --- Console ------------------------------------------------------------------------------------
# The console's address as users' browsers reach it (https://santa.example.com). Preflight
# points Santa's block dialog at <CONSOLE_URL>/request/ unless a configuration profile sets its
# own event_detail_url; empty: the scheme and host the agent used to reach the sync URL.
CONSOLE_URL = env.str("CONSOLE_URL", default="").rstrip("/")
if CONSOLE_URL and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", CONSOLE_URL):
    raise ImproperlyConfigured("CONSOLE_URL must be an http:// or https:// URL without a query.")

# --- Cache --------------------------------------------------------------------------------------
# Holds the API's rate-limit counters, which every web process must share: Redis in production
# (CACHE_URL, else REDIS_URL; give it its own database number, apart from the Celery broker's),
# local memory otherwise (one process; `check --deploy` warns in production).
CACHE_URL = env.str("CACHE_URL", default="") or env.str("REDIS_URL", default="")
if CACHE_URL:
    if not re.match(r"(redis|rediss|unix)://", CACHE_URL):
        raise ImproperlyConfigured("CACHE_URL must be a redis://, rediss:// or unix:// URL.")
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "santaadmin",
            # A request never waits long on a cache that is down (the throttles then let
            # requests through, accounts.throttling).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- REST API -----------------------------------------------------------------------------------
API_MAX_PAGE_SIZE = 1000
# Rules one request may create or delete: bulk create, bulk delete, import (API and console).
API_MAX_BULK_RULES = env.int("API_MAX_BULK_RULES", default=20_000)


def _rate(name: str, value: str) -> str:
    """A DRF throttle rate, checked at start-up rather than at the first API request."""
    value = value.strip()
    if value and not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must look like 1200/min (number/s|min|hour|day).")
    return value


# Requests per token (or per signed-in user's session), and per address for requests without
# valid credentials: "<number>/<second|minute|hour|day>" ("1200/min"); empty disables.
API_THROTTLE_RATE = _rate("API_THROTTLE_RATE", env.str("API_THROTTLE_RATE", default="1200/min"))
API_THROTTLE_ANON_RATE = _rate(
    "API_THROTTLE_ANON_RATE", env.str("API_THROTTLE_ANON_RATE", default="60/min")
)
# Trusted proxies in front (X-Forwarded-For entries): the API's throttles, the sync rate limits
# and the sign-in lockout all find the client's address with it (santaadmin.clientaddr).
# TRUSTED_PROXY_COUNT (formerly API_THROTTLE_NUM_PROXIES, still read): how many proxies in
# front add an X-Forwarded-For entry naming the client (santaadmin.clientaddr).
NUM_PROXIES = env.int("TRUSTED_PROXY_COUNT", default=env.int("API_THROTTLE_NUM_PROXIES", default=0))
REST_FRAMEWORK = {
    # Order matters: a token, else a session; the last counts requests nobody authenticated.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "accounts.throttling.AnonymousRateLimit",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["santaadmin.permissions.RolePermission"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ApiRateThrottle"],
    # Proxies in front whose X-Forwarded-For entry names an anonymous client's address; 0
    # (the default) trusts no header and counts by the connection's address.
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "santaadmin.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "santaadmin.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "santaadmin.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "santaadmin.openapi.ErrorAutoSchema",
}

# The OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/), assets from the sidecar
# package through staticfiles: the docs work without internet access.
SPECTACULAR_SETTINGS = {
    "TITLE": "santaadmin API",
    "VERSION": "1",
    "DESCRIPTION": (
        "Rules, hosts, tags, tag rules, profiles, enrollments, events, binaries, certificates, "
        "approval requests, audit entries, reports and fan-outs of a Santa sync "
        "server. Authenticate with `Authorization: Token <key>` (an API token, whose scopes "
        "narrow its user's role: `read`, `write`, `<area>:read`, `<area>:write`) or a "
        "signed-in session. Requests are rate-limited (429 with Retry-After). Errors "
        'are JSON: `{"error": code, "detail": text, "fields": {...}, "index": n}`.'
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["santaadmin.openapi.AnyRolePermission"],
    "SCHEMA_PATH_PREFIX": r"/api/v1/",
    # The ways to sign in; accounts.throttling.AnonymousRateLimit only counts the others.
    "AUTHENTICATION_WHITELIST": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One schema name per shared choice set (it is used by several fields).
    "ENUM_NAME_OVERRIDES": {
        "ClientModeEnum": "hosts.models.ClientMode",
        "RemovableMediaActionEnum": "hosts.models.RemovableMediaAction",
        "CleanSyncEnum": "hosts.models.CleanSync",
        "RuleTypeEnum": "rules.models.RuleType",
        "PolicyEnum": "rules.models.Policy",
        # Writes list the bare values (no labels): a set of its own.
        "RuleTypeInputEnum": "rules.models.RuleType.values",
        "PolicyInputEnum": "rules.models.Policy.values",
        "CleanSyncInputEnum": "hosts.models.CleanSync.values",
        "ClientModeInputEnum": "hosts.models.ClientMode.values",
        "ReportKindEnum": "reports.models.ReportKind",
        "ReportStateEnum": "reports.models.ReportState",
        "FanOutStateEnum": "hosts.models.FanOutState",
        "ReportFormatEnum": "reports.models.ReportFormat",
        "ApprovalStateEnum": "events.models.ApprovalState",
    },
}

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or env.str("REDIS_URL", default="")
_eager_default = not CELERY_BROKER_URL
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=_eager_default)
if not EMBEDDED and not CELERY_BROKER_URL and "CELERY_TASK_ALWAYS_EAGER" not in env.ENVIRON:
    raise ImproperlyConfigured(
        "Production (DATABASE_URL set) needs CELERY_BROKER_URL or REDIS_URL; set "
        "CELERY_TASK_ALWAYS_EAGER=1 to run tasks in the web process on purpose."
    )
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers wait out a broker outage however long it lasts (Celery's default gives up after 100
# attempts, about 50 minutes, and exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Enqueueing never waits on a broker that is down: the change is committed and its FanOut row
# is picked up by the reconciler (hosts.fanout).
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] = CELERY_BROKER_CONNECTION_TIMEOUT
CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] = CELERY_BROKER_CONNECTION_TIMEOUT * 5

# --- Fan-out and periodic work (Celery beat) ----------------------------------------------------
# A fan-out still queued this long after its change is run by the reconciler.
FANOUT_GRACE_SECONDS = env.int("FANOUT_GRACE_SECONDS", default=60)
FANOUT_RECONCILE_INTERVAL = env.float("FANOUT_RECONCILE_INTERVAL", default=60.0)
TAG_RULES_BATCH_SIZE = env.int("TAG_RULES_BATCH_SIZE", default=1000)
# A host is stale once it missed this many of its full-sync intervals.
HOST_STALE_MISSED_SYNCS = env.int("HOST_STALE_MISSED_SYNCS", default=3)
# Events received longer ago than this are deleted daily; 0 keeps them forever.
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", default=180)
# A fleet of 100,000 hosts syncing every 10 minutes writes 14 million sync records a day.
SYNC_HISTORY_RETENTION_DAYS = env.int("SYNC_HISTORY_RETENTION_DAYS", default=14)
# Hosts whose delivered rule counts the drift audit re-computes per run (every 10 minutes).
DRIFT_CHECK_BATCH = env.int("DRIFT_CHECK_BATCH", default=200)
# Generated reports (and their stored content) are deleted this many days after they were
# requested; 0 keeps them forever.
REPORT_RETENTION_DAYS = env.int("REPORT_RETENTION_DAYS", default=7)
CELERY_BEAT_SCHEDULE = {
    "fanout-reconcile": {"task": "hosts.fanout_reconcile", "schedule": FANOUT_RECONCILE_INTERVAL},
    "hosts-mark-stale": {"task": "hosts.mark_stale", "schedule": 300.0},
    "rules-refresh-delivery": {"task": "rules.refresh_delivery", "schedule": 300.0},
    "rules-check-drift": {"task": "rules.check_drift", "schedule": 600.0},
    "rules-expire": {"task": "rules.expire", "schedule": 60.0},
    "events-prune": {"task": "events.prune", "schedule": 3600.0},
    # Uploads accepted by a web process that stopped before storing them.
    "events-drain": {"task": "events.drain", "schedule": 10.0},
    "reports-reconcile": {"task": "reports.reconcile", "schedule": FANOUT_RECONCILE_INTERVAL},
    "reports-prune": {"task": "reports.prune", "schedule": 3600.0},
}

# --- Santa sync ---------------------------------------------------------------------------------
# Every limit is a setting; hitting one answers 413/400 with a message that names it.
SYNC_MAX_BODY_BYTES = env.int("SYNC_MAX_BODY_BYTES", default=4 * 1024 * 1024)
SYNC_MAX_DECOMPRESSED_BYTES = env.int("SYNC_MAX_DECOMPRESSED_BYTES", default=32 * 1024 * 1024)
SYNC_MAX_EVENTS_PER_REQUEST = env.int("SYNC_MAX_EVENTS_PER_REQUEST", default=1000)
SYNC_MAX_STRING_LENGTH = env.int("SYNC_MAX_STRING_LENGTH", default=16384)
SYNC_MAX_LIST_LENGTH = env.int("SYNC_MAX_LIST_LENGTH", default=1000)
SYNC_RULES_PER_PAGE = env.int("SYNC_RULES_PER_PAGE", default=1000)
# Event uploads are validated and accepted in one INSERT, and stored (catalogue, statistics)
# in batches by a background thread of each web process and the `events.drain` task
# (events.services.events_drain). Off: stored in the request. Default: on with PostgreSQL.
SYNC_DEFER_EVENTS = env.bool(
    "SYNC_DEFER_EVENTS",
    default=DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
)
# How many processes may store waiting uploads at the same time (PostgreSQL), each its own
# share of the hosts (host id modulo this number): one drain waits on the database while
# another runs Python. 1 drains one upload batch at a time, fleet-wide.
SYNC_EVENT_DRAINERS = env.int("SYNC_EVENT_DRAINERS", default=2)
# The sync path's fixed statements are prepared once per database connection (santaadmin.db);
# turn off behind a connection pooler in transaction mode that does not track them.
SYNC_PREPARED_STATEMENTS = env.bool("SYNC_PREPARED_STATEMENTS", default=True)
# Steady-state preflights and postflights change nothing but last-seen times and the sync
# history: each web process writes those every this many seconds (hosts.liveness). 0 writes
# them in the request (the embedded default).
SYNC_WRITE_BEHIND_SECONDS = env.float("SYNC_WRITE_BEHIND_SECONDS", default=0.0 if EMBEDDED else 0.2)
# A header set by a TLS-terminating proxy with the verified client certificate's issuer DN
# (e.g. nginx `$ssl_client_i_dn`); empty disables certificate authentication.
SYNC_CLIENT_CERT_HEADER = env.str("SYNC_CLIENT_CERT_HEADER", default="")
# Sync rate limits (syncapi.ratelimit), "<number>/<s|min|hour|day>", empty disables: per machine
# (the machine id with the credential it presents) and per client address (NUM_PROXIES). A Mac
# makes ~4 requests per sync every 10 minutes, ~25 for a clean sync of 20,000 rules, one per 50
# events of a backlog; many Macs can share a NAT address. Counted in each web process
# ("memory://") or fleet-wide in Redis ("redis://host:6379/2": a round trip per request).
SYNC_RATE_LIMIT_PER_MACHINE = _rate(
    "SYNC_RATE_LIMIT_PER_MACHINE", env.str("SYNC_RATE_LIMIT_PER_MACHINE", default="600/min")
)
SYNC_RATE_LIMIT_PER_ADDRESS = _rate(
    "SYNC_RATE_LIMIT_PER_ADDRESS", env.str("SYNC_RATE_LIMIT_PER_ADDRESS", default="6000/min")
)
SYNC_RATE_LIMIT_STORAGE = env.str("SYNC_RATE_LIMIT_STORAGE", default="memory://")
if not re.match(r"(memory://$|redis://|rediss://|unix://)", SYNC_RATE_LIMIT_STORAGE):
    raise ImproperlyConfigured(
        "SYNC_RATE_LIMIT_STORAGE must be memory:// or a redis://, rediss:// or unix:// URL."
    )

# --- Sign-in lockout (django-axes, accounts.lockout) -------------------------------------------
# SIGNIN_LOCKOUT_FAILURES failed sign-ins for one user name from one address lock that pair
# out, and SIGNIN_LOCKOUT_ADDRESS_FAILURES from one address (any user names) lock the address,
# for SIGNIN_LOCKOUT_MINUTES after the last failure; the right password is refused meanwhile.
# 0 disables the lockout (or the per-address part).
SIGNIN_LOCKOUT_FAILURES = env.int("SIGNIN_LOCKOUT_FAILURES", default=5)
SIGNIN_LOCKOUT_ADDRESS_FAILURES = env.int("SIGNIN_LOCKOUT_ADDRESS_FAILURES", default=30)
SIGNIN_LOCKOUT_MINUTES = env.int("SIGNIN_LOCKOUT_MINUTES", default=15)
if SIGNIN_LOCKOUT_FAILURES < 0 or SIGNIN_LOCKOUT_ADDRESS_FAILURES < 0 or SIGNIN_LOCKOUT_MINUTES < 1:
    raise ImproperlyConfigured(
        "SIGNIN_LOCKOUT_FAILURES and SIGNIN_LOCKOUT_ADDRESS_FAILURES must be 0 or more, "
        "SIGNIN_LOCKOUT_MINUTES 1 or more."
    )
AXES_ENABLED = SIGNIN_LOCKOUT_FAILURES > 0
# Callables reading the SIGNIN_LOCKOUT_* settings at each use.
AXES_FAILURE_LIMIT = "accounts.lockout.failure_limit"
AXES_COOLOFF_TIME = "accounts.lockout.cool_off"
# Per user name *and* address: by name alone anyone could lock an admin out. The per-address
# limit is added by the handler (accounts.lockout.SignInLockoutHandler).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "accounts.lockout.SignInLockoutHandler"
AXES_CLIENT_IP_CALLABLE = "santaadmin.clientaddr.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout neither extend it nor write anything.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Sign-ins are in the audit trail; axes keeps only the failure counters.
AXES_DISABLE_ACCESS_LOG = True
AXES_ENABLE_ADMIN = False  # accounts.admin shows the counters with an audited "unlock" action
AXES_VERBOSE = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},  # every sign-in at INFO; failures and lockouts stay
    },
}
