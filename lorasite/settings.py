"""lorasite settings.

Everything comes from the environment, with embedded defaults that need nothing external:
SQLite under var/, local file storage under var/media, and a filesystem Celery broker under
var/broker that works across processes without a server. Production sets DATABASE_URL,
CELERY_BROKER_URL=redis://…, LORASITE_STORAGE=s3 and friends (see README and .env.example).
"""

import math
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        number = float(value) if value else default
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.")
    return number


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LORASITE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded defaults (SQLite, media, broker) live here


def is_real_secret_key(key: str) -> bool:
    """Django's own --deploy criteria (security.W009), plus the placeholder .env.example ships."""
    return len(key) >= 50 and len(set(key)) >= 5 and not key.startswith(("django-insecure-", "change-me"))


# Production is the default: a deploy that forgets DJANGO_DEBUG must not run in debug with a known key (local
# signed URLs would be forgeable). `make run` turns development mode on explicitly (DJANGO_DEBUG=1).
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not DEBUG and not is_real_secret_key(SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to a real key (50+ random characters, not the example's placeholder) "
        "when DJANGO_DEBUG is off. For development set DJANGO_DEBUG=1 (what `make run` does)."
    )
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-development-only-key-never-used-with-debug-off"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files served from here, not a CDN: the API docs work offline and are pinned with the app.
    "drf_spectacular_sidecar",
    "django_htmx",
    "storages",
    "workspaces",
    "loras",
    "generation",
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
    "django_htmx.middleware.HtmxMiddleware",
    "lorasite.middleware.NotFoundMiddleware",
    "lorasite.middleware.ServiceFailureMiddleware",
]

ROOT_URLCONF = "lorasite.urls"
WSGI_APPLICATION = "lorasite.wsgi.application"

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

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the Celery worker share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttling) ---------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files and storage ---------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "media/"

# Signed URLs (S3 presigned or the app's own signed endpoints) never live longer than this.
LORASITE_SIGNED_URL_SECONDS = min(env_int("LORASITE_SIGNED_URL_SECONDS", 3600), 3600)
LORASITE_STORAGE = env_str("LORASITE_STORAGE", "local")
if LORASITE_STORAGE == "s3":
    AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
    if not AWS_STORAGE_BUCKET_NAME:
        raise ImproperlyConfigured("AWS_STORAGE_BUCKET_NAME must be set when LORASITE_STORAGE=s3.")
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "us-east-1"),
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE") or None,
            "signature_version": "s3v4",
            # Objects are private; every read goes through a presigned URL that expires.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": LORASITE_SIGNED_URL_SECONDS,
            "file_overwrite": False,
        },
    }
elif LORASITE_STORAGE == "local":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": "/" + MEDIA_URL},
    }
else:
    raise ImproperlyConfigured(f"LORASITE_STORAGE must be 'local' or 's3', not {LORASITE_STORAGE!r}.")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests answer 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["lorasite.api.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "lorasite.pagination.PageNumberPagination",
    "PAGE_SIZE": 24,
    "EXCEPTION_HANDLER": "lorasite.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth_token": env_str("LORASITE_AUTH_THROTTLE", "10/minute"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "lorasite API",
    "DESCRIPTION": "Workspaces, LoRA library and generation jobs. Authenticate with `Authorization: Token <key>` "
    "(POST /api/v1/auth/token/) or a browser session.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "lorasite.api.document_common_errors"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Choice sets that share a field name with another set (a pair half's `role`, a job's `status`) get a name of
    # their own here instead of a hash suffix (drf_spectacular.W001, which `check --deploy` fails on).
    "ENUM_NAME_OVERRIDES": {
        "WorkspaceRoleEnum": "workspaces.models.Role.choices",
        "LoRAStatusEnum": "loras.models.Status.choices",
    },
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
    for _folder in ("queue", "control", "processed"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"),)
# Generation jobs go to one queue per model, `gpu.<model key>` (generation/queues.py), named when
# each job is sent; Celery creates such a queue where it is first published or consumed.
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the database, not in a result backend
CELERY_TIMEZONE = TIME_ZONE
# Long GPU tasks: acknowledge after the work, take one task at a time, and requeue a task whose
# worker died — the task itself counts attempts and fails the job past LORASITE_TASK_MAX_ATTEMPTS.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("LORASITE_TASK_SOFT_TIME_LIMIT", 1800)
CELERY_TASK_TIME_LIMIT = env_int("LORASITE_TASK_TIME_LIMIT", 1900)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("LORASITE_TASK_TIME_LIMIT must be above LORASITE_TASK_SOFT_TIME_LIMIT.")
LORASITE_TASK_MAX_ATTEMPTS = env_int("LORASITE_TASK_MAX_ATTEMPTS", 2)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # An unacknowledged task is redelivered after the visibility timeout: keep it above the hard
    # limit, or a healthy long job would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
# A LoRA `processing` this long after its ingest message was sent is failed by beat: longer than a run, the
# broker's redelivery of a lost worker's message (after the visibility timeout), that second run and 5 minutes.
LORASITE_INGEST_STUCK_SECONDS = env_int("LORASITE_INGEST_STUCK_SECONDS", 2 * CELERY_TASK_TIME_LIMIT + 600 + 300)
# A row still waiting this long after the broker took its message is re-sent when its queue is empty (the
# message was lost with the broker's data: lorasite/queueing.py).
LORASITE_RESEND_AFTER_SECONDS = env_int("LORASITE_RESEND_AFTER_SECONDS", 600)
CELERY_BEAT_SCHEDULE = {
    "lora-storage-cleanup": {"task": "loras.tasks.lora_storage_cleanup", "schedule": 15 * 60},
    "lora-purge-deleted": {"task": "loras.tasks.lora_purge_deleted", "schedule": 60 * 60},
    "storage-purge-due": {"task": "workspaces.tasks.storage_purge_due", "schedule": 60 * 60},
    # Rows whose message the broker refused (it was down) or lost are sent again once it is back.
    "generation-redispatch": {"task": "generation.tasks.generation_redispatch", "schedule": 60},
    "lora-ingest-sweep": {"task": "loras.tasks.lora_ingest_sweep", "schedule": 60},
    "generation-recover-stalled": {"task": "generation.tasks.generation_recover_stalled", "schedule": 60},
    # Jobs routed to a worker that died before taking them go to their model's shared queue.
    "generation-reroute": {"task": "generation.tasks.generation_reroute", "schedule": 15},
    "usage-counters-rebuild": {"task": "generation.tasks.usage_counters_rebuild", "schedule": 24 * 3600},
}

# --- LoRA library ---------------------------------------------------------------------------
LORASITE_MAX_LORA_BYTES = env_int("LORASITE_MAX_LORA_BYTES", 5 * 1024**3)
# Uploads through the app cross one request (stored and hashed in one pass) that must end within gunicorn's
# timeout; larger files use the multipart upload. 2 GiB takes ~100 s at 20 MB/s to storage: lower it on slower links.
LORASITE_MAX_APP_UPLOAD_BYTES = env_int("LORASITE_MAX_APP_UPLOAD_BYTES", 2 * 1024**3)
# Direct-to-storage multipart: part size (S3 needs ≥ 5 MiB except the last part, ≤ 10,000 parts)
# and how long an unfinished upload is kept before beat aborts it.
LORASITE_UPLOAD_PART_BYTES = max(env_int("LORASITE_UPLOAD_PART_BYTES", 16 * 1024**2), 5 * 1024**2)
LORASITE_UPLOAD_EXPIRY_SECONDS = env_int("LORASITE_UPLOAD_EXPIRY_SECONDS", 24 * 3600)
LORASITE_PURGE_AFTER_DAYS = env_int("LORASITE_PURGE_AFTER_DAYS", 7)
LORASITE_ORPHAN_GRACE_SECONDS = env_int("LORASITE_ORPHAN_GRACE_SECONDS", 24 * 3600)
# Server directories that owners and admins may import LoRA files from (comma-separated); each workspace reads
# only its own folder in them, <dir>/<workspace slug>/.
LORASITE_IMPORT_DIRS = env_list("LORASITE_IMPORT_DIRS")
# Bytes of LoRAs + job outputs a workspace may hold (0: no limit); a workspace's own storage_quota_bytes wins.
LORASITE_WORKSPACE_QUOTA_BYTES = env_int("LORASITE_WORKSPACE_QUOTA_BYTES", 0)
if LORASITE_WORKSPACE_QUOTA_BYTES < 0:
    raise ImproperlyConfigured("LORASITE_WORKSPACE_QUOTA_BYTES must be 0 (no limit) or a number of bytes.")

# --- Generation -----------------------------------------------------------------------------
# Base-model weights are local diffusers directories (nothing is downloaded at run time); demo
# models are built here by `manage.py build_demo_models`. LORASITE_MODELS_FILE (YAML) overrides
# or adds registry entries: see generation/model_registry.py and the README.
LORASITE_MODELS_DIR = Path(env_str("LORASITE_MODELS_DIR", str(VAR_DIR / "models")))
LORASITE_MODELS_FILE = env_str("LORASITE_MODELS_FILE")
LORASITE_MAX_LORAS_PER_JOB = 5
# Input images of image-to-video jobs (generation/inputs.py): bytes of the upload and pixels once decoded.
LORASITE_INPUT_IMAGE_MAX_BYTES = env_int("LORASITE_INPUT_IMAGE_MAX_BYTES", 20 * 1024**2)
LORASITE_INPUT_IMAGE_MAX_PIXELS = env_int("LORASITE_INPUT_IMAGE_MAX_PIXELS", 40_000_000)
# A sweep or A/B test queues one job per cell or pair; this bounds what one click can put on the GPUs.
LORASITE_SWEEP_MAX_CELLS = env_int("LORASITE_SWEEP_MAX_CELLS", 36)
LORASITE_ABTEST_MAX_JOBS = env_int("LORASITE_ABTEST_MAX_JOBS", 100)  # prompts × seeds × 2
# GPU worker: local LoRA cache (bytes) and what happens to adapters after a job:
# "cache" (default) keeps recently used ones loaded but inactive; "unload" removes them.
LORASITE_WORKER_CACHE_DIR = Path(env_str("LORASITE_WORKER_CACHE_DIR", str(VAR_DIR / "lora-cache")))
LORASITE_WORKER_CACHE_BYTES = env_int("LORASITE_WORKER_CACHE_BYTES", 50 * 1024**3)
LORASITE_LORA_RESIDENCY = env_str("LORASITE_LORA_RESIDENCY", "cache")
if LORASITE_LORA_RESIDENCY not in ("unload", "cache"):
    raise ImproperlyConfigured("LORASITE_LORA_RESIDENCY must be 'unload' or 'cache'.")
LORASITE_RESIDENT_ADAPTERS = env_int("LORASITE_RESIDENT_ADAPTERS", 8)
LORASITE_RESIDENT_ADAPTER_BYTES = env_int("LORASITE_RESIDENT_ADAPTER_BYTES", 4 * 1024**3)
# "fused" (default) merges a job's LoRAs into the base weights for the job (no per-step cost) and copies the
# pristine weights back after it; "unfused" computes the LoRA branches at every step.
LORASITE_LORA_APPLY = env_str("LORASITE_LORA_APPLY", "fused")
if LORASITE_LORA_APPLY not in ("fused", "unfused"):
    raise ImproperlyConfigured("LORASITE_LORA_APPLY must be 'fused' or 'unfused'.")
# Converted LoRA tensors kept in host RAM per pipeline, so an adapter evicted from the GPU reloads without its
# file (0 disables).
LORASITE_HOST_TIER_BYTES = env_int("LORASITE_HOST_TIER_BYTES", 8 * 1024**3)
if LORASITE_HOST_TIER_BYTES < 0:
    raise ImproperlyConfigured("LORASITE_HOST_TIER_BYTES must be 0 or more.")
# Host memory (pinned on CUDA) per pipeline for the pristine copies of base weights that fused LoRAs merge into; a job
# whose merge would need more runs its LoRAs unfused instead (slower steps, same output). 0: never fuse.
LORASITE_FUSED_BACKUP_BYTES = env_int("LORASITE_FUSED_BACKUP_BYTES", 64 * 1024**3)
if LORASITE_FUSED_BACKUP_BYTES < 0:
    raise ImproperlyConfigured("LORASITE_FUSED_BACKUP_BYTES must be 0 or more.")
# The models a GPU worker serves (comma-separated keys; empty: every enabled model whose weights
# are present). It consumes exactly their queues: `python manage.py gpu_worker`.
LORASITE_WORKER_MODELS = env_list("LORASITE_WORKER_MODELS")
# Device memory the placement planner plans for (bytes); 0: torch.cuda.mem_get_info()'s total on a GPU worker,
# unlimited ("cpu" placement) without one. Set it to plan for another card, or to test the planner on a CPU.
LORASITE_GPU_MEMORY_BYTES = env_int("LORASITE_GPU_MEMORY_BYTES", 0)
if LORASITE_GPU_MEMORY_BYTES < 0:
    raise ImproperlyConfigured("LORASITE_GPU_MEMORY_BYTES must be 0 (detect) or a number of bytes.")

# --- Scale-out across GPU workers (generation/routing.py, generation/worker_registry.py) -----
# Each GPU worker announces itself every HEARTBEAT seconds in a record that lives TTL seconds: a worker gone
# longer than the TTL is dead, and beat re-routes the jobs waiting in its own queue.
LORASITE_WORKER_HEARTBEAT_SECONDS = env_int("LORASITE_WORKER_HEARTBEAT_SECONDS", 10)
LORASITE_WORKER_TTL_SECONDS = env_int("LORASITE_WORKER_TTL_SECONDS", 30)
if LORASITE_WORKER_TTL_SECONDS <= LORASITE_WORKER_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("LORASITE_WORKER_TTL_SECONDS must exceed LORASITE_WORKER_HEARTBEAT_SECONDS.")
# Affinity routing: on (default), a job goes to the worker that already holds its LoRAs, each LoRA placed on at most
# K workers, none of them taking more than LOAD_FACTOR times the mean backlog nor more than BACKLOG_BOUND jobs
# waiting or running (generation/routing.py): all of them at that cap, the job goes to the model's shared queue.
LORASITE_ROUTING = env_bool("LORASITE_ROUTING", True)
LORASITE_ROUTING_K = env_int("LORASITE_ROUTING_K", 2)
LORASITE_ROUTING_LOAD_FACTOR = env_float("LORASITE_ROUTING_LOAD_FACTOR", 2.5)
LORASITE_ROUTING_BACKLOG_BOUND = env_int("LORASITE_ROUTING_BACKLOG_BOUND", 6)
if LORASITE_ROUTING_K < 1 or LORASITE_ROUTING_LOAD_FACTOR < 1 or LORASITE_ROUTING_BACKLOG_BOUND < 1:
    raise ImproperlyConfigured(
        "LORASITE_ROUTING_K, LORASITE_ROUTING_LOAD_FACTOR and LORASITE_ROUTING_BACKLOG_BOUND must be 1 or more."
    )
# Prometheus metrics at /metrics (lorasite/metrics.py); off by default: expose it to the scraper's network only.
LORASITE_METRICS_ENABLED = env_bool("LORASITE_METRICS_ENABLED", False)

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LORASITE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production hardening (manage.py check --deploy is clean with DEBUG off) ----------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /healthz is probed over plain HTTP by the orchestrator.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
