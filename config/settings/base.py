"""Settings, all from environment variables; with no DATABASE_URL / CELERY_BROKER_URL the embedded
PostgreSQL (with pgvector) and the embedded Redis broker are started or reattached (config/embedded.py)."""

from __future__ import annotations

import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import embedded

BASE_DIR = embedded.PROJECT_ROOT


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# SECRET_KEY signs the admin's sessions. Production (DEBUG off with a real DATABASE_URL, as docker/ runs,
# or RECSYS_REQUIRE_SECRET_KEY set) refuses to start without a real one: missing, short, or the example
# file's placeholder. A local setup (the embedded PostgreSQL: `make run`, the tests) gets a random key,
# generated once into the local data folder.
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
PLACEHOLDER_SECRET_KEYS = {"change-me-to-a-long-random-string"}
if not SECRET_KEY or SECRET_KEY in PLACEHOLDER_SECRET_KEYS or len(SECRET_KEY) < 32:
    if not DEBUG and (os.environ.get("DATABASE_URL") or env_bool("RECSYS_REQUIRE_SECRET_KEY", False)):
        raise ImproperlyConfigured(
            "SECRET_KEY is missing, too short (under 32 characters) or the example's placeholder; set it "
            "to a random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = embedded.local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "core",
    "tenants",
    "catalog",
    "events",
    "recommendations",
    "outcomes",
    "operations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.observability.RequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.observability.AdminActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# --- database -----------------------------------------------------------------------------------
DATABASE_NAME = os.environ.get("RECSYS_DATABASE_NAME", "recsys")
# Row-level security (core/tenancy.py) binds the application only when its role neither owns the tables nor
# is a superuser. "app" (the default: servers, workers, commands) connects as the application's role;
# "owner" as the tables' owner, for migrations (manage.py picks it for migrate) and the tests' own process,
# which creates the test database. With DATABASE_URL, DATABASE_OWNER_URL is the owner's (when unset,
# DATABASE_URL serves both); DATABASE_APP_ROLE names the role the migrations grant the tables to.
DATABASE_ROLE = os.environ.get("RECSYS_DATABASE_ROLE", "app")
if DATABASE_ROLE not in embedded.ROLES:
    raise ImproperlyConfigured(f"RECSYS_DATABASE_ROLE is 'app' or 'owner', not {DATABASE_ROLE!r}")
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE", embedded.APP_ROLE)
if os.environ.get("DATABASE_URL"):
    url = os.environ["DATABASE_URL"]
    if DATABASE_ROLE == "owner":
        url = os.environ.get("DATABASE_OWNER_URL") or url
    DATABASES = {"default": dj_database_url.parse(url)}
    EMBEDDED_POSTGRES = False
else:
    DATABASES = {"default": {**embedded.ensure_postgres(DATABASE_NAME, DATABASE_ROLE)}}  # type: ignore[typeddict-item]
    EMBEDDED_POSTGRES = True
DATABASES["default"]["ENGINE"] = "core.db"  # Django's PostgreSQL backend that sends the tenancy scope
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("CONN_MAX_AGE", "60"))
# A query of a web request that runs longer than this is cancelled (503 `query_timeout`); workers are not
# bound by it (config/wsgi.py sets a default for the web processes only). Unset or 0: no limit.
REQUEST_STATEMENT_TIMEOUT_MS = int(os.environ.get("REQUEST_STATEMENT_TIMEOUT_MS") or 0)
if REQUEST_STATEMENT_TIMEOUT_MS:
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c statement_timeout={REQUEST_STATEMENT_TIMEOUT_MS}"
    )
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The hot paths' statements prepared on each connection with a generic plan (core/db/base.py). Off ("0")
# behind a pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21, or
# without max_prepared_statements): they then run as plain statements, planned every time.
DATABASE_PREPARED_STATEMENTS = os.environ.get("DATABASE_PREPARED_STATEMENTS", "1") != "0"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- celery -------------------------------------------------------------------------------------
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
    EMBEDDED_BROKER = False
else:
    CELERY_BROKER_URL = embedded.ensure_broker()
    EMBEDDED_BROKER = True
# The cache of answers that do not depend on the shopper (core/answer_cache.py): the broker's Redis
# unless ANSWER_CACHE_URL says otherwise ("" turns it off).
ANSWER_CACHE_URL = os.environ.get(
    "ANSWER_CACHE_URL",
    CELERY_BROKER_URL.replace("redis+socket://", "unix://") if CELERY_BROKER_URL.startswith("redis") else "",
)
# "1": ANSWER_CACHE_URL is a node of a Redis Cluster (its keys are hash-tagged by store shard)
ANSWER_CACHE_CLUSTER = os.environ.get("ANSWER_CACHE_CLUSTER", "0") == "1"
CELERY_RESULT_BACKEND = None  # task state lives in TrainingRun rows, never in a result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Serving (recommendations/serving/state.py): each model version is written once to this folder and
# memory-mapped by every web process of the host; loaded models and catalogs are evicted by bytes.
MODEL_CACHE_DIR = os.environ.get("MODEL_CACHE_DIR") or str(embedded.LOCAL_DIR / "models")
SERVING_MODEL_BYTES = int(os.environ.get("SERVING_MODEL_MB") or 1024) * 1024 * 1024
SERVING_CATALOG_BYTES = int(os.environ.get("SERVING_CATALOG_MB") or 512) * 1024 * 1024
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 10}
CELERY_TIMEZONE = "UTC"
# Queues by kind of work, so that workers scale independently (docker/compose.yaml runs one worker per
# kind; `make run` starts one worker on all of them).
CELERY_TASK_QUEUES_USED = ("default", "train", "train-global", "maintenance")
CELERY_TASK_ROUTES = {
    "recommendations.tasks.train_store_task": {"queue": "train"},
    "recommendations.tasks.train_global_task": {"queue": "train-global"},
    "recommendations.tasks.model_replay_task": {"queue": "train"},
    "recommendations.tasks.schedule_training_task": {"queue": "maintenance"},
    "recommendations.tasks.recover_training_runs_task": {"queue": "maintenance"},
    "tenants.tasks.store_erase_task": {"queue": "maintenance"},
    "outcomes.tasks.impressions_drain_task": {"queue": "maintenance"},
    "outcomes.tasks.outcomes_rollup_task": {"queue": "maintenance"},
    "events.tasks.events_maintain_task": {"queue": "maintenance"},
}
# Events past a store's retention_days are written here as Parquet, then leave PostgreSQL (events/archive.py):
# a local folder by default, or any URL fsspec reaches (s3://bucket/prefix with s3fs installed, gs://, ...).
EVENT_ARCHIVE_URL = os.environ.get("EVENT_ARCHIVE_URL") or str(embedded.LOCAL_DIR / "archive")
# A resent event_id is a duplicate for this many days after the first was received (events_eventkey).
EVENT_ID_WINDOW_DAYS = int(os.environ.get("EVENT_ID_WINDOW_DAYS") or 30)
# `manage.py train_global --engine spark`: the cluster (local[*]: this machine), and a folder it reads
# where the job's inputs are staged (an export of the recent events, the small tables)
SPARK_MASTER = os.environ.get("SPARK_MASTER") or "local[*]"
SPARK_STAGING_URL = os.environ.get("SPARK_STAGING_URL") or str(embedded.LOCAL_DIR / "spark")
# the driver's heap (in local mode the executors' too; the JVM is started with it)
SPARK_DRIVER_MEMORY = os.environ.get("SPARK_DRIVER_MEMORY") or "4g"
CELERY_BEAT_SCHEDULE = {
    # each store's own interval (StoreSettings.retrain_interval_hours) decides; this only looks
    "retrain-due-stores": {"task": "recommendations.tasks.schedule_training_task", "schedule": 600.0},
    # every answer served is an impression: drained from Redis into PostgreSQL within seconds
    "drain-impressions": {"task": "outcomes.tasks.impressions_drain_task", "schedule": 5.0},
    # clicks, add-to-carts and purchases credited to the answers shown, into the daily figures
    "rollup-outcomes": {"task": "outcomes.tasks.outcomes_rollup_task", "schedule": 10.0},
    # the events' partitions made ahead of time, events past retention archived, old event ids pruned
    "maintain-events": {"task": "events.tasks.events_maintain_task", "schedule": 3600.0},
    "recover-lost-training-runs": {
        "task": "recommendations.tasks.recover_training_runs_task",
        "schedule": 60.0,
    },
}
# A running training run's worker writes a heartbeat this often; a run whose heartbeat is older than
# TRAINING_STALE_SECONDS lost its worker: the redelivered task, or the periodic recovery, takes it over.
TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("TRAINING_HEARTBEAT_SECONDS", "10"))
TRAINING_STALE_SECONDS = float(os.environ.get("TRAINING_STALE_SECONDS", "60"))
# a run that has been claimed this many times (lost workers and transient errors) fails for good
TRAINING_MAX_ATTEMPTS = int(os.environ.get("TRAINING_MAX_ATTEMPTS", "8"))
# The attribution rollup reads events received at least this long ago: a request still storing its
# events (its statements time out after REQUEST_STATEMENT_TIMEOUT_MS) has committed by then.
OUTCOMES_ROLLUP_LAG_SECONDS = float(os.environ.get("OUTCOMES_ROLLUP_LAG_SECONDS", "30"))
# Every answer served is recorded as an impression (outcomes/). Off ("0"): none are, so analytics and
# experiment results see no impressions; for a deployment that does not want outcome tracking, and for
# measuring what recording costs (bench/serve.py --impressions).
RECORD_IMPRESSIONS = os.environ.get("RECORD_IMPRESSIONS", "1") != "0"
# "0": serve every version without its ranking stage (the first stage alone), whatever it learned
RANKING_STAGE = os.environ.get("RANKING_STAGE", "1") != "0"
CELERY_BEAT_SCHEDULE_FILENAME = str(embedded.LOCAL_DIR / "celerybeat-schedule")
# Schedules live in the database, editable from the admin (Periodic tasks); the entries above are
# written there when beat starts.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- i18n / static ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".local" / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- API ----------------------------------------------------------------------------------------
MAX_BATCH_ROWS = 10_000
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024  # 10,000 products with descriptions fit
# Limits a store gets unless the operator sets its own (tenants.models.Store; 0 means none): requests
# per second per API key as a token bucket in Redis (a key may burst to RATE_LIMIT_BURST at once), the
# products a catalog may hold, the events stored per UTC day.
RATE_LIMIT_PER_SECOND = int(os.environ.get("RATE_LIMIT_PER_SECOND", "100"))
RATE_LIMIT_BURST = int(os.environ.get("RATE_LIMIT_BURST", "200"))
MAX_PRODUCTS = int(os.environ.get("MAX_PRODUCTS", "5000000"))
MAX_EVENTS_PER_DAY = int(os.environ.get("MAX_EVENTS_PER_DAY", "20000000"))

REST_FRAMEWORK = {
    # Merchant endpoints get their authentication from tenants.authentication.StoreScopedAPIView;
    # anything else is closed unless it says otherwise.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.json.OrjsonParser"],
    "DEFAULT_RENDERER_CLASSES": ["core.json.OrjsonRenderer"],
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Recommendations API",
    "DESCRIPTION": (
        "Multi-tenant recommendation backend. Every call is scoped to the store of the API key "
        "(`Authorization: Bearer <key>`). Errors are `{code, message, details}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.add_error_responses",
    ],
}

# Structured JSON logs (LOG_FORMAT=json, the default) carry the request id and the store of every line.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.observability.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(store)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(store)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
