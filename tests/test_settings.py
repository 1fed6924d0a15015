"""Settings come from the environment with embedded defaults; production settings pass --deploy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "x" * 20 + "-production-secret-key-with-enough-entropy-1234567890",
    "DJANGO_ALLOWED_HOSTS": "lorasite.example.com",
}


def _without(env, *names: str) -> dict[str, str]:
    # The browser tests allow sync ORM calls beside Playwright's loop; a production check must not inherit that.
    return {k: v for k, v in env.items() if k not in names}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "LORASITE_", "AWS_", "DATABASE_URL", "CELERY_"))
    }
    # Development mode unless the test says otherwise (DEBUG defaults to off).
    env = {**clean, "DJANGO_SETTINGS_MODULE": "lorasite.settings", "DJANGO_DEBUG": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_json(env: dict[str, str], *names: str) -> dict:
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_defaults_need_nothing_external():
    values = settings_json({}, "DATABASES", "CELERY_BROKER_URL", "STORAGES", "DEBUG")
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert values["DATABASES"]["default"]["NAME"].endswith("var/db.sqlite3")
    assert values["CELERY_BROKER_URL"] == "filesystem://"
    assert values["STORAGES"]["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert values["STORAGES"]["default"]["OPTIONS"]["location"].endswith("var/media")


def test_production_environment_is_read():
    env = {
        **PRODUCTION_ENV,
        "DATABASE_URL": "postgres://u:p@db:5432/lorasite",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "LORASITE_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": "bucket",
        "AWS_S3_ENDPOINT_URL": "http://minio:9000",
        "LORASITE_TASK_TIME_LIMIT": "2000",
    }
    values = settings_json(env, "DATABASES", "CELERY_BROKER_URL", "STORAGES", "CELERY_BROKER_TRANSPORT_OPTIONS")
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert values["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    options = values["STORAGES"]["default"]["OPTIONS"]
    assert values["STORAGES"]["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    assert options["endpoint_url"] == "http://minio:9000" and options["bucket_name"] == "bucket"
    assert options["file_overwrite"] is False and options["querystring_auth"] is True
    assert options["default_acl"] is None and options["querystring_expire"] <= 3600
    # The visibility timeout must exceed the hard time limit, or long jobs are delivered twice.
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] > 2000


def test_signed_url_lifetime_is_capped_at_an_hour():
    assert (
        settings_json({"LORASITE_SIGNED_URL_SECONDS": "86400"}, "LORASITE_SIGNED_URL_SECONDS")[
            "LORASITE_SIGNED_URL_SECONDS"
        ]
        == 3600
    )


@pytest.mark.parametrize(
    "env,message",
    [
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY must be set"),
        ({"LORASITE_STORAGE": "s3"}, "AWS_STORAGE_BUCKET_NAME must be set"),
        ({"LORASITE_STORAGE": "ftp"}, "LORASITE_STORAGE must be 'local' or 's3'"),
        ({"LORASITE_TASK_SOFT_TIME_LIMIT": "100", "LORASITE_TASK_TIME_LIMIT": "50"}, "must be above"),
    ],
)
def test_bad_configuration_fails_loudly(env, message):
    result = run_python("import django; django.setup()", env)
    assert result.returncode != 0
    assert message in result.stderr


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**_without(os.environ, "DJANGO_ALLOW_ASYNC_UNSAFE"), **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_celery_configuration_for_long_gpu_tasks():
    from django.conf import settings

    from lorasite.celery import app

    # GPU queues (gpu.<model key>) are created where they are used: tests/test_worker_queues.py.
    assert [q.name for q in app.conf.task_queues] == ["default"]
    assert app.conf.task_create_missing_queues is True
    assert app.conf.task_default_queue == "default"
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    assert settings.LORASITE_TASK_MAX_ATTEMPTS >= 1


def test_the_web_process_never_imports_torch():
    """URLs, views, API, admin and the GPU task module load without torch: only the worker needs it."""
    code = (
        "import sys, django; django.setup();"
        "import lorasite.urls, generation.tasks, generation.apis, generation.pages, loras.apis, lorasite.wsgi;"
        "from django.test import Client; Client().get('/healthz');"
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    result = run_python(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
