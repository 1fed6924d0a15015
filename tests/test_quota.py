"""Deleting a workspace or a job removes its objects after the purge grace; the per-workspace storage quota is
enforced on every ingest path and on generation, and shown on the workspace pages."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from generation.models import GenerationJob, JobStatus
from loras import services as lora_services
from loras.models import LoRA
from lorasite.object_store import get_object_store
from tests.lora_files import write_lora
from workspaces import services as workspace_services
from workspaces.models import Role, StoragePurge
from workspaces.quota import workspace_storage_usage

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


def after_grace() -> timezone.datetime:
    return timezone.now() + timedelta(days=settings.LORASITE_PURGE_AFTER_DAYS, minutes=1)


def put(key: str, data: bytes = b"x") -> str:
    get_object_store().save_stream(key, io.BytesIO(data))
    return key


def finished_job(workspace, user, *, status: str = JobStatus.SUCCEEDED, output_bytes: int = 3) -> GenerationJob:
    job = GenerationJob.objects.create(
        workspace=workspace,
        created_by=user,
        model_key=WAN,
        model_name="Wan demo",
        kind="video",
        prompt="a cat",
        status=status,
    )
    if status == JobStatus.SUCCEEDED:
        prefix = f"workspaces/{workspace.id}/outputs/{job.id}/"
        job.output_key = put(prefix + "output.mp4", b"v" * output_bytes)
        job.poster_key = put(prefix + "poster.png", b"p")
        job.save()
    return job


def job_url(workspace, job) -> str:
    return f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/"


class TestWorkspaceDeletion:
    def test_its_loras_outputs_and_posters_go_after_the_grace(self, api, workspace, owner, s3_keys, tmp_path):
        with open(write_lora(tmp_path / "style.safetensors", seed=31), "rb") as handle:
            assert (
                api.post(
                    f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart"
                ).status_code
                == 201
            )
        job = finished_job(workspace, owner)
        prefix = f"workspaces/{workspace.id}/"
        stored = s3_keys(prefix)
        assert len(stored) == 3 and job.output_key in stored and job.poster_key in stored

        assert api.delete(f"/api/v1/workspaces/{workspace.slug}/").status_code == 204
        assert workspace_services.storage_purge_due() == 0  # within the grace: kept
        # Orphan cleanup (unreferenced LoRA files after a day) leaves them to the purge's grace too.
        lora_services.lora_storage_cleanup(now=timezone.now() + timedelta(days=2))
        assert s3_keys(prefix) == stored

        assert workspace_services.storage_purge_due(now=after_grace()) == 3
        assert s3_keys(prefix) == [] and not StoragePurge.objects.exists()


class TestJobDeletion:
    def test_a_member_deletes_their_own_finished_job_and_its_objects_follow(
        self, workspace, member_of, client_for, s3_keys
    ):
        member = member_of(Role.MEMBER)
        job = finished_job(workspace, member)
        prefix = f"workspaces/{workspace.id}/outputs/{job.id}/"
        response = client_for(member).delete(job_url(workspace, job))
        assert response.status_code == 204
        assert not GenerationJob.objects.filter(id=job.id).exists()
        assert len(s3_keys(prefix)) == 2  # the grace
        workspace_services.storage_purge_due(now=after_grace())
        assert s3_keys(prefix) == []
        assert client_for(member).delete(job_url(workspace, job)).status_code == 404

    def test_members_delete_only_their_own_admins_any(self, workspace, member_of, client_for):
        author, other, admin = member_of(Role.MEMBER), member_of(Role.MEMBER), member_of(Role.ADMIN)
        job = finished_job(workspace, author, status=JobStatus.FAILED)
        assert client_for(other).delete(job_url(workspace, job)).status_code == 403
        assert client_for(member_of(Role.VIEWER)).delete(job_url(workspace, job)).status_code == 403
        assert client_for(admin).delete(job_url(workspace, job)).status_code == 204

    @pytest.mark.parametrize("status", [JobStatus.RUNNING, JobStatus.QUEUED])
    def test_an_unfinished_job_is_409(self, workspace, owner, api, status):
        job = finished_job(workspace, owner, status=status)
        response = api.delete(job_url(workspace, job))
        assert response.status_code == 409 and "cancel it" in response.json()["message"]
        assert GenerationJob.objects.filter(id=job.id).exists() and not StoragePurge.objects.exists()

    def test_another_workspaces_job_is_404(self, workspace, owner, outsider, client_for):
        job = finished_job(workspace, owner)
        assert client_for(outsider).delete(job_url(workspace, job)).status_code == 404


class TestQuota:
    def test_usage_counts_loras_outputs_and_open_uploads(self, api, workspace, owner, tmp_path):
        path = write_lora(tmp_path / "a.safetensors", seed=32)
        with open(path, "rb") as handle:
            api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
        finished_job(workspace, owner, output_bytes=10)
        api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", {"filename": "b.safetensors", "size": 1000})
        assert workspace_storage_usage(workspace=workspace).used_bytes == path.stat().st_size + 10 + 1 + 1000

    def test_measured_outputs_are_summed_without_asking_the_bucket(self, workspace, owner, monkeypatch):
        """Jobs the worker measured count their recorded sizes; only jobs from before sizes were measured (empty)
        make the meter list the bucket."""
        measured = finished_job(workspace, owner, output_bytes=10)
        GenerationJob.objects.filter(id=measured.id).update(output_bytes=11)  # as job_succeed records it
        GenerationJob.objects.create(workspace=workspace, model_key=WAN, kind="video", output_bytes=0)  # no output

        def no_listing():
            raise AssertionError("the bucket was listed")

        monkeypatch.setattr("workspaces.quota.get_object_store", no_listing)
        assert workspace_storage_usage(workspace=workspace).used_bytes == 11
        monkeypatch.undo()
        finished_job(workspace, owner, output_bytes=5)  # not measured: its 5 + 1 bytes are read from the bucket
        assert workspace_storage_usage(workspace=workspace).used_bytes == 11 + 6

    def test_multipart_start_is_refused_with_the_declared_size(self, api, workspace, owner):
        finished_job(workspace, owner, output_bytes=500)
        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=1000):
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", {"filename": "b.safetensors", "size": 600}
            )
        assert response.status_code == 413
        body = response.json()
        assert body["code"] == "storage_quota_exceeded"
        assert body["used_bytes"] == 501 and body["limit_bytes"] == 1000
        assert "501 bytes of 1000 bytes used" in body["message"]

    def test_through_the_app_and_import_are_refused_and_leave_nothing(self, api, workspace, s3_keys, tmp_path):
        imports = tmp_path / "imports"
        (imports / workspace.slug).mkdir(parents=True)
        path = write_lora(imports / workspace.slug / "a.safetensors", seed=33)
        workspace.storage_quota_bytes = path.stat().st_size - 1  # the workspace's own limit wins
        workspace.save()
        with open(path, "rb") as handle:
            response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
        assert response.status_code == 413 and response.json()["code"] == "storage_quota_exceeded"
        with override_settings(LORASITE_IMPORT_DIRS=[str(imports)]):
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/import/", {"file_path": "a.safetensors"}, format="json"
            )
        assert response.status_code == 413
        assert not LoRA.objects.exists() and s3_keys(f"workspaces/{workspace.id}/") == []

    def test_generation_is_refused_when_full(self, api, workspace, owner, demo_models):
        finished_job(workspace, owner, output_bytes=99)
        body = {"model": WAN, "prompt": "a cat"}
        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=100):
            response = api.post(f"/api/v1/workspaces/{workspace.slug}/generations/", body, format="json")
        assert response.status_code == 409
        assert response.json()["used_bytes"] == 100 and response.json()["limit_bytes"] == 100
        assert GenerationJob.objects.count() == 1

    def test_zero_is_unlimited(self, workspace):
        workspace.storage_quota_bytes = 0
        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=10):
            usage = workspace_storage_usage(workspace=workspace)
        assert not usage.limited and usage.label == "0 bytes used (no limit)"

    def test_workspace_pages_show_usage(self, client, owner, workspace):
        client.force_login(owner)
        finished_job(workspace, owner, output_bytes=1023)
        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=50 * 1024**3):
            for page in (f"/w/{workspace.slug}/loras/", f"/w/{workspace.slug}/jobs/", f"/w/{workspace.slug}/members/"):
                assert "1 KiB of 50 GiB used" in client.get(page).content.decode(), page


def test_pages_survive_storage_being_down(client, owner, workspace, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from lorasite import object_store

    class DownStore:
        def list(self, prefix):
            raise EndpointConnectionError(endpoint_url="http://storage")

    finished_job(workspace, owner)
    monkeypatch.setattr(object_store, "get_object_store", lambda: DownStore())
    monkeypatch.setattr("workspaces.quota.get_object_store", lambda: DownStore())
    client.force_login(owner)
    page = client.get(f"/w/{workspace.slug}/members/")
    assert page.status_code == 200 and "Storage use unavailable" in page.content.decode()


def test_no_limit_means_no_counting(api, workspace, monkeypatch):
    def refuse(**kwargs):
        raise AssertionError("usage counted without a limit")

    monkeypatch.setattr("workspaces.quota.workspace_storage_usage", refuse)
    body = {"filename": "b.safetensors", "size": 1000}
    assert api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body).status_code == 201


def test_through_the_app_is_refused_from_its_content_length(api, workspace, monkeypatch):
    def unread(**kwargs):
        raise AssertionError("the body was read")

    monkeypatch.setattr(lora_services, "lora_ingest_uploaded_file", unread)
    body = io.BytesIO(b"\0" * (2 * 1024 * 1024))
    body.name = "big.safetensors"
    workspace.storage_quota_bytes = 1024
    workspace.save()
    response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": body}, format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "storage_quota_exceeded"
