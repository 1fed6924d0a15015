"""Safe defaults and tenancy (issue 9): DEBUG off unless asked for, no start without a real key, details for staff."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_KEY = "k" * 20 + "-a-real-production-secret-key-with-enough-entropy-0987654321"
PLACEHOLDER_KEY = "change-me-to-a-long-random-string-of-at-least-fifty-characters-xxxxxxxx"  # .env.example's


def settings_process(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run code under lorasite.settings with only `env`'s Django/lorasite variables (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LORASITE_", "AWS_", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": "lorasite.settings", **env},
    )


def test_debug_defaults_to_off():
    result = settings_process("from django.conf import settings; print(settings.DEBUG)", {"DJANGO_SECRET_KEY": REAL_KEY})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("key", ["", "short-key", "django-insecure-" + "x1y2z3" * 10, PLACEHOLDER_KEY, "a" * 60])
def test_debug_off_without_a_real_key_refuses_to_start(key):
    result = settings_process("import django; django.setup()", {"DJANGO_SECRET_KEY": key} if key else {})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set to a real key" in result.stderr
    assert "DJANGO_DEBUG=1" in result.stderr  # the message says how to develop


def test_development_mode_is_explicit_and_keeps_its_key():
    result = settings_process("from django.conf import settings; print(settings.DEBUG)", {"DJANGO_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_make_run_turns_development_mode_on():
    # PY replaced by a probe: every step of `make run` prints the DJANGO_DEBUG it runs under.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    result = subprocess.run(
        ["make", "run", "STAMP=", "PY=printenv DJANGO_DEBUG; true"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.strip() == "1"]
    assert len(printed) == 4, result.stdout  # migrate, bootstrap_demo, build_demo_models, run_dev


@pytest.fixture
def broker_down(monkeypatch):
    from lorasite.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")


@pytest.mark.django_db
def test_healthz_shows_exception_text_to_staff_only(client, broker_down, django_user_model):
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"] == {"database": "ok", "broker": "failed", "storage": "ok"}
    assert "broker" in anonymous.json()["message"]

    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    client.force_login(staff)
    detailed = client.get("/healthz").json()["checks"]["broker"]
    assert detailed.startswith("failed: ") and len(detailed) > len("failed: ")


@pytest.mark.django_db
def test_models_api_shows_server_paths_to_staff_only(api, owner, client_for):
    models = api.get("/api/v1/models/").json()
    assert models and all("path" not in model for model in models)

    owner.is_staff = True
    owner.save()
    staff_models = client_for(owner).get("/api/v1/models/").json()
    assert all(model["path"] for model in staff_models)
