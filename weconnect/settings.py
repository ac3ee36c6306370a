"""Settings, read from the environment (12-factor). Every variable is listed in README.md."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import unquote

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from weconnect.env import (
    env_bool,
    env_broker_url,
    env_choice,
    env_database,
    env_float,
    env_http_url,
    env_int,
    env_list,
    env_redis_url,
    env_str,
    env_timezone,
    is_amqp,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("WECONNECT_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set unless DEBUG=true")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "executions",
    "monitoring",
]

MIDDLEWARE = [
    "weconnect.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT (admin, Swagger UI sidecar) from gunicorn; there is no other static server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "weconnect.urls"
WSGI_APPLICATION = "weconnect.wsgi.application"
ASGI_APPLICATION = "weconnect.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Without DATABASE_URL, an SQLite file under var/ in WAL mode with immediate transactions and a
# busy timeout, so that the web process and several worker processes can all write to it.
_SQLITE_DEFAULT = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": str(VAR_DIR / "weconnect.sqlite3"),
    "OPTIONS": {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    },
}
DATABASES = {"default": env_database("DATABASE_URL", _SQLITE_DEFAULT)}
# django-environ passes an unknown scheme (foo://) through as the ENGINE; refuse it here so the
# message names the variable instead of failing later on the first query.
if "." not in DATABASES["default"]["ENGINE"]:
    raise ImproperlyConfigured(
        f"DATABASE_URL has an unsupported scheme: {DATABASES['default']['ENGINE']!r}"
    )
# A socket directory written the libpq way (postgres://user@%2Frun%2Fpostgresql/db) comes back
# from django-environ still percent-encoded; psycopg needs the plain path.
if DATABASES["default"].get("HOST", "").lower().startswith("%2f"):
    DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 600, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A database that accepts connections and never answers must not hang a worker or a
    # health probe forever.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    )
# Behind a pooler in transaction mode (PgBouncer's pool_mode = transaction) a server connection
# changes hands at every commit: no server-side cursors and no prepared statements, which would
# outlive the transaction that made them. Migrations go to PostgreSQL directly.
DATABASE_POOLER = env_choice("DATABASE_POOLER", "none", ("none", "session", "transaction"))
if (
    DATABASE_POOLER == "transaction"
    and DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3"
):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
# Server-side parameter binding lets psycopg prepare a statement on a connection after it has
# run it DATABASE_PREPARE_THRESHOLD times (parse and plan once, not at every hop). Not behind a
# pooler in transaction mode, where a prepared statement would outlive its server connection.
DATABASE_SERVER_SIDE_BINDING = env_bool("DATABASE_SERVER_SIDE_BINDING", True)
if (
    DATABASE_SERVER_SIDE_BINDING
    and DATABASE_POOLER != "transaction"
    and DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3"
):
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = env_int(
        "DATABASE_PREPARE_THRESHOLD", 2, minimum=0
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Request limits -----------------------------------------------------------------------
# Bodies over this size answer 413 before anything parses them (weconnect.middleware).
WECONNECT_MAX_REQUEST_BYTES = env_int("WECONNECT_MAX_REQUEST_BYTES", 2 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = WECONNECT_MAX_REQUEST_BYTES

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header turns unauthenticated requests into 401s.
        "executions.api.authentication.PrefixCheckingTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only, checked for what jsonb cannot store and for nesting (executions/api/parsers.py);
    # form bodies would bypass those checks.
    "DEFAULT_PARSER_CLASSES": ["executions.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "executions.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "executions.api.errors.exception_handler",
}
# /api/schema/ and /api/docs/ answer without authentication only when this is true (the
# default with DEBUG); otherwise they need a token or a session like every other endpoint.
WECONNECT_PUBLIC_API_DOCS = env_bool("WECONNECT_PUBLIC_API_DOCS", DEBUG)
SPECTACULAR_SETTINGS = {
    "SERVE_PERMISSIONS": ["weconnect.permissions.APIDocsPermission"],
    "TITLE": "WeConnect API",
    "DESCRIPTION": "Workflow definitions, executions and their node runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Redis and Celery ---------------------------------------------------------------------
REDIS_URL = env_redis_url("REDIS_URL", "redis://127.0.0.1:6379/0")
# Every Redis key WeConnect itself writes starts with this prefix (locks, counters).
WECONNECT_KEY_PREFIX = env_str("WECONNECT_KEY_PREFIX", "wc:")
WECONNECT_QUEUE = env_str("WECONNECT_QUEUE", "weconnect")
# Queues by role: node runs on one, everything else (recovery, deadline checks, wakes, scheduled
# triggers, sweeps, retention) on the other, so upkeep never waits behind a backlog of node runs.
WECONNECT_WORKFLOW_QUEUE = env_str("WECONNECT_WORKFLOW_QUEUE", f"{WECONNECT_QUEUE}-workflow")
WECONNECT_NODE_QUEUE = env_str("WECONNECT_NODE_QUEUE", f"{WECONNECT_QUEUE}-node")
if WECONNECT_WORKFLOW_QUEUE == WECONNECT_NODE_QUEUE:
    raise ImproperlyConfigured("WECONNECT_WORKFLOW_QUEUE and WECONNECT_NODE_QUEUE must differ")
# Redis redelivers an unacknowledged message after this many seconds; node time limits must
# stay below it, and no countdown is ever longer than WECONNECT_MAX_ETA_SECONDS.
WECONNECT_VISIBILITY_TIMEOUT = env_int("WECONNECT_VISIBILITY_TIMEOUT", 3600, minimum=60)
WECONNECT_MAX_ETA_SECONDS = env_int("WECONNECT_MAX_ETA_SECONDS", 60, minimum=0)
if WECONNECT_MAX_ETA_SECONDS * 2 > WECONNECT_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "WECONNECT_MAX_ETA_SECONDS must be at most half of WECONNECT_VISIBILITY_TIMEOUT"
    )
WECONNECT_MAX_NODE_TIMEOUT = WECONNECT_VISIBILITY_TIMEOUT // 2
# A running node run whose lease (heartbeat) is older than this is taken as lost.
WECONNECT_LEASE_SECONDS = env_int("WECONNECT_LEASE_SECONDS", 30, minimum=3)
WECONNECT_HEARTBEAT_SECONDS = env_float(
    "WECONNECT_HEARTBEAT_SECONDS", max(1.0, WECONNECT_LEASE_SECONDS / 3), minimum=0.5
)
# A node run queued this long without starting is dispatched again by the recovery task.
WECONNECT_REDISPATCH_AFTER_SECONDS = env_int("WECONNECT_REDISPATCH_AFTER_SECONDS", 30, minimum=1)
WECONNECT_MAX_REASSIGNMENTS = env_int("WECONNECT_MAX_REASSIGNMENTS", 3, minimum=0)
WECONNECT_RECOVERY_INTERVAL_SECONDS = env_int("WECONNECT_RECOVERY_INTERVAL_SECONDS", 10, minimum=1)
WECONNECT_RECOVERY_BATCH = env_int("WECONNECT_RECOVERY_BATCH", 500, minimum=1)
# Every worker runs the recovery pass itself when the last pass (Beat's or a worker's) is older
# than this many seconds: Beat hung or missing never leaves lost work unrepaired. 0 turns it off.
WECONNECT_RECOVERY_FALLBACK_SECONDS = env_int(
    "WECONNECT_RECOVERY_FALLBACK_SECONDS",
    max(60, WECONNECT_RECOVERY_INTERVAL_SECONDS * 6),
    minimum=0,
)
# Extra modules that register node types of your own (dotted paths, comma separated).
WECONNECT_NODE_MODULES = env_list("WECONNECT_NODE_MODULES")
WECONNECT_MAX_OUTPUT_BYTES = env_int("WECONNECT_MAX_OUTPUT_BYTES", 1024 * 1024, minimum=1024)
# A pure node's message carries its run's input and its execution's context when they fit in
# this many bytes (of JSON), so its task need not read them first; 0 turns it off.
WECONNECT_CARRY_MAX_BYTES = env_int("WECONNECT_CARRY_MAX_BYTES", 8192, minimum=0)
# Upkeep: the six-hourly stale sweep and the daily retention pass (monitoring/sweeps.py).
WECONNECT_STALE_AFTER = env_int("WECONNECT_STALE_AFTER", 24 * 3600, minimum=60)
WECONNECT_RETENTION_DAYS = env_int("WECONNECT_RETENTION_DAYS", 30, minimum=1)
WECONNECT_SWEEP_BATCH = env_int("WECONNECT_SWEEP_BATCH", 500, minimum=1)
# A rate-limited node whose limit cannot be checked (Redis unreachable) waits this many
# seconds and tries again, rather than running unchecked.
WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY = env_float(
    "WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY", 1.0, minimum=0.1, maximum=60
)
# Functions the `python` node type may call (dotted paths, comma separated); code never comes
# from the API, only from this list.
WECONNECT_PYTHON_NODES = env_list("WECONNECT_PYTHON_NODES")
# How deep sub-workflows may nest (a workflow calling itself stops here).
WECONNECT_MAX_SUBWORKFLOW_DEPTH = env_int("WECONNECT_MAX_SUBWORKFLOW_DEPTH", 5, minimum=0)
# A waiting sub_workflow node also looks at its child this often, should a wake-up be missed.
WECONNECT_SUBWORKFLOW_POLL_SECONDS = env_int("WECONNECT_SUBWORKFLOW_POLL_SECONDS", 30, minimum=1)
# The longest list a for_each node runs a child workflow over.
WECONNECT_MAX_ITEMS = env_int("WECONNECT_MAX_ITEMS", 10_000, minimum=1)
# A synchronous webhook waits on a finish notification and also looks at the database this
# often, should a notification be lost.
WECONNECT_WEBHOOK_POLL_SECONDS = env_float(
    "WECONNECT_WEBHOOK_POLL_SECONDS", 1.0, minimum=0.05, maximum=30
)
# Events are kept this many seconds, so a wait that begins after its event arrived still
# resumes (executions/events/); the event retention pass deletes older ones.
WECONNECT_EVENT_RETENTION = env_int("WECONNECT_EVENT_RETENTION", 24 * 3600, minimum=0)
# The address users reach this server at: resume links ({{ execution.resume_url }}) are
# built on it, since a node run has no request to take the host from.
WECONNECT_PUBLIC_URL = env_http_url(
    "WECONNECT_PUBLIC_URL", "http://" + env_str("WEB_BIND", "127.0.0.1:8000")
)

# The broker: Redis (the default, the same server as REDIS_URL) or RabbitMQ (amqp://), which
# Celery recommends for production. Redis stays in use for locks and counters either way.
CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", REDIS_URL)
BROKER_IS_AMQP = is_amqp(CELERY_BROKER_URL)
# Celery's Django fixup closes the database connection around every task unless this is set;
# workers then keep theirs for this many tasks (weconnect/celery.py replaces a broken one).
CELERY_DB_REUSE_MAX = env_int("WECONNECT_WORKER_DB_REUSE_MAX", 1000, minimum=0)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
# Routing, not dispatch code, decides the queue: node runs to the node queue, any other task
# (including what Beat sends) to the default, the workflow queue.
CELERY_TASK_DEFAULT_QUEUE = WECONNECT_WORKFLOW_QUEUE
CELERY_TASK_ROUTES = {"weconnect.run_node": {"queue": WECONNECT_NODE_QUEUE}}
CELERY_TASK_ACKS_LATE = True
# A node run's successors are sent from its task: they take its message's priority.
CELERY_TASK_INHERIT_PARENT_PRIORITY = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("WECONNECT_PREFETCH_MULTIPLIER", 1, minimum=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("WECONNECT_TASK_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
if BROKER_IS_AMQP:
    # Durable quorum queues (replicated on a RabbitMQ cluster, and the only kind that keeps
    # a message's delivery count); countdowns ride RabbitMQ's native delayed delivery, which
    # needs topic exchanges. A dead consumer's unacknowledged messages come back at once.
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    # The role queues (CELERY_TASK_ROUTES) are created on first use: the same kind, or a
    # countdown would fall back to a worker-held ETA, which quorum queues cannot prefetch around.
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": WECONNECT_VISIBILITY_TIMEOUT,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        # Message priorities (engine/dispatch.py): Redis has none, so kombu keeps one list per
        # step of a queue (`<queue>`, `<queue>\x06\x163`, ...) and its BRPOP names the lists
        # lowest step first, so a message in a lower step is always taken first. Stated here
        # because dispatch.PRIORITY_VALUES relies on these steps.
        "priority_steps": [0, 3, 6, 9],
    }
    # A prefix for every key the broker writes (queues, the unacked hash), to share a Redis.
    if env_str("WECONNECT_BROKER_KEY_PREFIX"):
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env_str("WECONNECT_BROKER_KEY_PREFIX")
# Publishing never blocks a request for long: a message that cannot be sent is recovered
# from the database by the recovery task once the broker is back.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_SOFT_TIME_LIMIT = 600
CELERY_TASK_TIME_LIMIT = 660

# --- Monitoring ---------------------------------------------------------------------------
# When set, /monitoring/metrics needs it (Authorization: Bearer <token> or ?token=) and
# /monitoring/health answers only {"status": ...} without it. Failure details and worker names
# need it (or a staff user) in any case (monitoring/access.py).
WECONNECT_MONITORING_TOKEN = env_str("WECONNECT_MONITORING_TOKEN")
# Each health probe gives up after this long; the whole health answer after the budget.
WECONNECT_HEALTH_PROBE_TIMEOUT = env_float(
    "WECONNECT_HEALTH_PROBE_TIMEOUT", 0.5, minimum=0.05, maximum=5
)
WECONNECT_HEALTH_BUDGET = env_float("WECONNECT_HEALTH_BUDGET", 0.9, minimum=0.1, maximum=10)
# Public health calls share one probe result for this long (per web process): any number of
# callers costs one probe. 0 probes on every call.
WECONNECT_HEALTH_CACHE_SECONDS = env_float(
    "WECONNECT_HEALTH_CACHE_SECONDS", 1.5, minimum=0, maximum=60
)
# Beat is reported silent when the recovery task's last run (PeriodicTask.last_run_at, which
# Beat writes back every 3 minutes) is older than this many seconds.
WECONNECT_BEAT_SILENT_AFTER = env_int(
    "WECONNECT_BEAT_SILENT_AFTER", 180 + WECONNECT_RECOVERY_INTERVAL_SECONDS * 3, minimum=1
)

# --- Credentials and outbound HTTP (docs/security.md) -------------------------------------
# Fernet keys, comma separated: the first encrypts, every one decrypts (rotation). Without any,
# DEBUG derives a development key from SECRET_KEY; otherwise using a credential fails, naming
# this variable, and `manage.py check --deploy` reports it.
WECONNECT_ENCRYPTION_KEYS = env_list("WECONNECT_ENCRYPTION_KEYS")
for _key in WECONNECT_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "WECONNECT_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes; make one with Fernet.generate_key())"
        ) from None
# Cloud metadata and link-local addresses are always refused; this also refuses loopback and
# private ranges. ALLOW / DENY are CIDR lists; the longest matching prefix wins (ties: DENY).
WECONNECT_HTTP_DENY_PRIVATE = env_bool("WECONNECT_HTTP_DENY_PRIVATE", False)
WECONNECT_HTTP_ALLOW = env_list("WECONNECT_HTTP_ALLOW")
WECONNECT_HTTP_DENY = env_list("WECONNECT_HTTP_DENY")
for _name in ("WECONNECT_HTTP_ALLOW", "WECONNECT_HTTP_DENY"):
    for _cidr in globals()[_name]:
        try:
            ipaddress.ip_network(_cidr, strict=False)
        except ValueError as _exc:
            raise ImproperlyConfigured(f"{_name}: {_cidr!r} is not an IP network: {_exc}") from None
WECONNECT_HTTP_MAX_REDIRECTS = env_int("WECONNECT_HTTP_MAX_REDIRECTS", 5, minimum=0, maximum=20)

# --- Logging ------------------------------------------------------------------------------
WECONNECT_LOG_FORMAT = env_choice("WECONNECT_LOG_FORMAT", "text", ("text", "json"))
WECONNECT_LOG_LEVEL = env_choice(
    "WECONNECT_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "weconnect.logging.TextFormatter"},
        "json": {"()": "weconnect.logging.JsonFormatter"},
    },
    "filters": {
        # Credential values a node run used never reach a log line (docs/security.md).
        "redact_secrets": {"()": "executions.credentials.redaction.RedactingFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": WECONNECT_LOG_FORMAT,
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "weconnect": {"handlers": ["console"], "level": WECONNECT_LOG_LEVEL, "propagate": False},
        "celery": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}

# --- Security for non-DEBUG deployments ---------------------------------------------------
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Only behind a proxy that sets X-Forwarded-Proto itself (and drops a client's): trusted from
# anyone, the header lets a plain-HTTP client pass as HTTPS (secure cookies, https:// URLs).
WECONNECT_TRUST_PROXY_SSL_HEADER = env_bool("WECONNECT_TRUST_PROXY_SSL_HEADER", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if WECONNECT_TRUST_PROXY_SSL_HEADER else None
)

# Engine upkeep driven by Beat (stored in django-celery-beat's tables, editable in the admin).
CELERY_BEAT_SCHEDULE = {
    "weconnect-recovery": {
        "task": "weconnect.recovery",
        "schedule": float(WECONNECT_RECOVERY_INTERVAL_SECONDS),
        "options": {"expires": WECONNECT_RECOVERY_INTERVAL_SECONDS * 3},
    },
    # Events older than WECONNECT_EVENT_RETENTION are deleted (reads ignore them already).
    "weconnect-event-retention": {
        "task": "weconnect.event_retention",
        "schedule": 600.0,
        "options": {"expires": 1200},
    },
}

# --- Admin (the run inspector) ---------------------------------------------------------------
# Where the admin links an execution's Celery tasks (Flower's /task/<id> pages).
WECONNECT_FLOWER_URL = env_str("WECONNECT_FLOWER_URL", "http://127.0.0.1:5555").rstrip("/")
# How often a running execution's admin page refreshes itself (milliseconds).
WECONNECT_ADMIN_REFRESH_MS = env_int("WECONNECT_ADMIN_REFRESH_MS", 1500, minimum=200)
