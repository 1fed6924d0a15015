"""Test settings: the real services when they answer, embedded fallbacks otherwise — except in CI
(CI=true), where a missing PostgreSQL or Redis fails the run instead of silently degrading.

Storage is always a real S3 API over HTTP: moto's server, started by a session fixture in
tests/conftest.py on the port chosen here."""

import os
import socket
import tempfile
from pathlib import Path

import psycopg
import redis

# The suite runs in development mode, as it did before DEBUG defaulted to off; os.environ (not a local) so the
# worker processes the suite starts inherit it.
os.environ.setdefault("DJANGO_DEBUG", "1")

from lorasite.settings import *  # noqa: E402, F403
from lorasite.settings import STORAGES  # noqa: E402

CI = os.environ.get("CI", "").lower() == "true"
TEST_DATABASE_URL = os.environ.get("LORASITE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/lorasite")
# Each test session gets its own Redis database and PostgreSQL test database, so that sessions
# running side by side (developers, CI) never consume each other's tasks or drop each other's tables.
TEST_REDIS_URL = os.environ.get("LORASITE_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}")


def _unavailable(service: str, error: Exception) -> None:
    if CI:
        raise RuntimeError(f"CI=true and {service} is not reachable: {error}. CI must run against the real service.")
    print(f"[tests] {service} not reachable ({error}); falling back to an embedded replacement.")


def _postgres_answers() -> bool:
    parsed = dj_database_url.parse(TEST_DATABASE_URL)  # noqa: F405
    try:
        psycopg.connect(
            host=parsed["HOST"], port=parsed["PORT"] or 5432, user=parsed["USER"], dbname="postgres", connect_timeout=3
        ).close()
        return True
    except psycopg.Error as error:
        _unavailable("PostgreSQL", error)
        return False


def _redis_answers() -> bool:
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3).ping()
        return True
    except redis.RedisError as error:
        _unavailable("Redis", error)
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


USING_POSTGRES = _postgres_answers()
if USING_POSTGRES:
    DATABASES = {"default": dj_database_url.parse(TEST_DATABASE_URL)}  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_lorasite_{os.getpid()}"}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

USING_REDIS = _redis_answers()
CELERY_BROKER_URL = TEST_REDIS_URL if USING_REDIS else "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600} if USING_REDIS else {}

VAR_DIR = Path(tempfile.mkdtemp(prefix="lorasite-test-"))
MEDIA_ROOT = VAR_DIR / "media"
LORASITE_MODELS_DIR = VAR_DIR / "models"
LORASITE_WORKER_CACHE_DIR = VAR_DIR / "lora-cache"

MOTO_PORT = int(os.environ.get("LORASITE_TEST_MOTO_PORT") or _free_port())
AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{MOTO_PORT}"
AWS_STORAGE_BUCKET_NAME = "lorasite-test"
S3_TEST_OPTIONS = {
    "bucket_name": AWS_STORAGE_BUCKET_NAME,
    "endpoint_url": AWS_S3_ENDPOINT_URL,
    "region_name": "us-east-1",
    "access_key": "testing",
    "secret_key": "testing",
    "signature_version": "s3v4",
    "default_acl": None,
    "querystring_auth": True,
    "querystring_expire": 3600,
    "file_overwrite": False,
}
LORASITE_STORAGE = "s3"
STORAGES = {**STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": S3_TEST_OPTIONS}}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed: tests create many users
