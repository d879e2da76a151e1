"""Settings shared by every environment. Everything that differs in production comes from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from config.queues import Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [part.strip() for part in value.split(",") if part.strip()]


INSECURE_SECRET_KEY = "django-insecure-arbiter-local-only"
SECRET_KEY = os.environ.get("SECRET_KEY", INSECURE_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Where files live: the SQLite database, the filesystem broker, exports, models and training runs.
DATA_DIR = Path(os.environ.get("ARBITER_DATA_DIR", BASE_DIR / "var"))
ARTIFACTS_DIR = Path(os.environ.get("ARBITER_ARTIFACTS_DIR", DATA_DIR / "artifacts"))
EXPORTS_DIR = Path(os.environ.get("ARBITER_EXPORTS_DIR", ARTIFACTS_DIR / "exports"))
RUNS_DIR = Path(os.environ.get("ARBITER_RUNS_DIR", ARTIFACTS_DIR / "runs"))
DATA_DIR.mkdir(parents=True, exist_ok=True)
MODELS_DIR = Path(os.environ.get("ARBITER_MODELS_DIR", Path.home() / ".cache" / "arbiter" / "models"))

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
    "feedback",
    "inference",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
    }
]


def database_from_env(url: str) -> dict:
    config = dj_database_url.parse(url, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN,
        # so two transactions never deadlock upgrading a read lock; the timeout waits for it.
        config["CONN_MAX_AGE"] = 0 if config["NAME"] == ":memory:" else config["CONN_MAX_AGE"]
        # Django's backend, converting each statement's placeholders once (config/backends/sqlite3/base.py).
        config["ENGINE"] = "config.backends.sqlite3"
        config["OPTIONS"] = {
            "timeout": float(os.environ.get("SQLITE_BUSY_TIMEOUT", "30")),
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA cache_size=-32000;"
            ),
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # psycopg prepares a statement on the server after this many runs on a connection. Only the hot path's
        # statements can be prepared (feedback/db.py: they bind parameters on the server; the ORM's cursor binds
        # on the client and never prepares). DB_PREPARED_STATEMENTS=0 for a pooler in transaction mode.
        if os.environ.get("DB_PREPARED_STATEMENTS", "1") != "0":
            config.setdefault("OPTIONS", {})["prepare_threshold"] = int(
                os.environ.get("DB_PREPARE_THRESHOLD", "5")
            )
    return config


DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'arbiter.sqlite3'}")
DATABASES = {"default": database_from_env(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "feedback.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "feedback.api_schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "feedback.api_support.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "feedback.api_support.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["feedback.api_support.UserThrottle", "feedback.api_support.AnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("API_THROTTLE_USER", "1200/min"),
        "anon": os.environ.get("API_THROTTLE_ANON", "120/min"),
        "login": os.environ.get("API_THROTTLE_LOGIN", "20/min"),
    },
}
# Token -> user lookups are cached in each process this long (a revoked token works at most this long).
API_TOKEN_CACHE_SECONDS = float(os.environ.get("API_TOKEN_CACHE_SECONDS", "60"))
# Memberships checked for annotating (next) are cached per process this long (feedback/policies.py; 0 = off).
API_MEMBERSHIP_CACHE_SECONDS = float(os.environ.get("API_MEMBERSHIP_CACHE_SECONDS", "5"))
# benchmarks/annotate_load.py: the no-database ceiling endpoints, and an X-SQL-Statements header per answer.
ARBITER_BENCH_ENDPOINTS = env_bool("ARBITER_BENCH_ENDPOINTS", False)
if env_bool("ARBITER_COUNT_SQL", False):
    MIDDLEWARE = ["feedback.middleware.StatementCounter", *MIDDLEWARE]
SPECTACULAR_SETTINGS = {
    "TITLE": "Arbiter API",
    "DESCRIPTION": "Collect human judgements of model outputs and train the next model on them.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: served by the app, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: the filesystem broker needs no server; Redis or RabbitMQ in production.
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = (
    {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    # Redis redelivers an unacknowledged task after this long: longer than any training run.
    else {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(24 * 3600)))}
)
if CELERY_BROKER_URL.startswith("filesystem"):
    for _folder in ("queue", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = Queue.DEFAULT.value
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Fixed bookkeeping; training schedules are rows edited in the admin (django-celery-beat).
CELERY_BEAT_SCHEDULE = {
    "leases-reclaim-expired": {"task": "feedback.tasks.leases_reclaim_expired", "schedule": 60.0},
    "annotators-flag-all": {"task": "feedback.tasks.annotators_flag_all", "schedule": 600.0},
    # Runs left running by a dead GPU worker go back to the queue and resume from their checkpoint.
    "training-runs-recover": {"task": "training.tasks.training_runs_recover", "schedule": 300.0},
}
CELERY_TIMEZONE = TIME_ZONE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
