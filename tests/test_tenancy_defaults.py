"""Safe defaults and tenancy (issue 9): DEBUG off unless asked for, no start without a real key, details for staff."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from loras.models import LoRA
from tests.factories import UserFactory, WorkspaceFactory
from tests.lora_files import write_lora
from workspaces.models import Workspace

ROOT = Path(__file__).resolve().parent.parent
REAL_KEY = "k" * 20 + "-a-real-production-secret-key-with-enough-entropy-0987654321"
PLACEHOLDER_KEY = "change-me-to-a-long-random-string-of-at-least-fifty-characters-xxxxxxxx"  # .env.example's


def settings_process(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run code under lorasite.settings with only `env`'s Django/lorasite variables (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LORASITE_", "AWS_", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": "lorasite.settings", **env},
    )


def test_debug_defaults_to_off():
    result = settings_process(
        "from django.conf import settings; print(settings.DEBUG)", {"DJANGO_SECRET_KEY": REAL_KEY}
    )
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


def test_make_run_turns_development_mode_on(tmp_path):
    # The Python make runs is a probe that prints its arguments and the DJANGO_DEBUG it runs under; VENV points
    # at a scratch folder so the install stamp is not touched in the real one.
    probe = tmp_path / "python"
    probe.write_text('#!/bin/sh\necho "$* DJANGO_DEBUG=${DJANGO_DEBUG:-unset}"\n')
    probe.chmod(0o755)
    (tmp_path / "venv").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    result = subprocess.run(
        ["make", "run", f"VENV={tmp_path / 'venv'}", f"PY={probe}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("manage.py ")]
    assert [step.split()[1] for step in steps] == ["migrate", "bootstrap_demo", "build_demo_models", "run_dev"]
    assert all(step.endswith(" DJANGO_DEBUG=1") for step in steps), steps


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


@pytest.mark.django_db
class TestImportScoping:
    """Server imports read only `<import dir>/<workspace slug>/`, and no answer names a server directory."""

    @pytest.fixture
    def import_root(self, tmp_path):
        root = tmp_path / "server-imports"
        root.mkdir()
        with override_settings(LORASITE_IMPORT_DIRS=[str(root)]):
            yield root

    @staticmethod
    def post_import(client, workspace, file_path: str):
        return client.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/import/", {"file_path": file_path}, format="json"
        )

    def test_a_new_workspace_cannot_copy_the_shared_or_another_workspaces_files(self, import_root, client_for):
        other = WorkspaceFactory()
        (import_root / other.slug).mkdir()
        theirs = write_lora(import_root / other.slug / "theirs.safetensors", seed=21)
        shared = write_lora(import_root / "shared.safetensors", seed=22)
        # The reported attack: any user creates a workspace, becomes its owner and asks for files by path.
        attacker = client_for(UserFactory())
        mine = attacker.post("/api/v1/workspaces/", {"name": "Mine"}, format="json").json()
        mine_workspace = Workspace.objects.get(slug=mine["slug"])
        (import_root / mine_workspace.slug).mkdir()
        (import_root / mine_workspace.slug / "link.safetensors").symlink_to(theirs)
        candidates = [
            str(theirs),
            str(shared),
            f"../{other.slug}/theirs.safetensors",
            "../shared.safetensors",
            "link.safetensors",
            "theirs.safetensors",
            "",
        ]
        for candidate in candidates:
            response = self.post_import(attacker, mine_workspace, candidate)
            assert response.status_code == 400, candidate
            assert str(import_root) not in response.content.decode(), candidate
        assert not LoRA.objects.exists()

    def test_the_workspaces_own_folder_imports(self, import_root, workspace, owner, client_for):
        (import_root / workspace.slug / "styles").mkdir(parents=True)
        write_lora(import_root / workspace.slug / "styles" / "anime.safetensors", seed=23)
        response = self.post_import(client_for(owner), workspace, "styles/anime.safetensors")
        assert response.status_code == 201, response.json()
        assert response.json()["original_filename"] == "anime.safetensors"

    def test_no_message_names_the_import_directories(self, import_root, workspace, owner, client_for):
        api = client_for(owner)
        for candidate in ("/etc/passwd", "missing.safetensors", "../x.safetensors"):
            body = self.post_import(api, workspace, candidate).content.decode()
            assert str(import_root) not in body and "LORASITE_IMPORT_DIRS" not in body, body
        with override_settings(LORASITE_IMPORT_DIRS=[]):
            body = self.post_import(api, workspace, "a.safetensors").json()
        assert body["message"] == "Server imports are disabled on this site."


@pytest.mark.django_db
def test_a_job_for_a_model_without_weights_does_not_name_the_server_path(api, workspace, settings):
    response = api.post(
        f"/api/v1/workspaces/{workspace.slug}/generations/",
        {"model": "wan22-t2v-a14b", "prompt": "a cat"},
        format="json",
    )
    assert response.status_code == 400
    message = response.json()["errors"]["model"][0]
    assert "not installed on this server" in message and str(settings.LORASITE_MODELS_DIR) not in message
