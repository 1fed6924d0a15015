"""Auto preview end to end, with a real Celery worker on the real Redis broker and the S3 API server: a LoRA
uploaded to a workspace with auto preview on becomes ready, its preview job runs behind users' jobs on a model
the worker serves, and the job's output becomes the card's preview — a job the default jobs list does not show."""

import time

import pytest
import requests
from PIL import Image

from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for(api, url: str, *, until, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(url).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting; last state: {body}"
        time.sleep(0.25)


def test_a_ready_lora_gets_its_preview_from_an_auto_preview_job(
    celery_worker, workspace, member_of, client_for, tmp_path
):
    workspace.auto_preview = True
    workspace.save()
    api = client_for(member_of(Role.OWNER))
    base = f"/api/v1/workspaces/{workspace.slug}"
    path = write_lora(tmp_path / "neon_high_noise.safetensors", family="wan-demo", blocks=2, std=0.3, seed=7)
    with open(path, "rb") as handle:
        created = api.post(f"{base}/loras/", {"file": handle, "name": "Neon"}, format="multipart")
    assert created.status_code == 201, created.json()
    lora_id = created.json()["id"]
    preview = wait_for(api, f"{base}/loras/{lora_id}/preview/", until=lambda p: p["source"] is not None)
    assert preview["source"] == "job" and preview["kind"] == "video"
    with Image.open(requests.get(preview["thumb_url"], stream=True, timeout=30).raw) as thumb:
        assert thumb.format == "WEBP"
    assert requests.get(preview["url"], timeout=30).content[4:8] == b"ftyp"
    jobs = api.get(f"{base}/generations/?purpose=preview").json()["results"]
    assert [job["id"] for job in jobs] == [preview["job_id"]] and jobs[0]["status"] == "succeeded"
    assert jobs[0]["params"]["steps"] == 1 and jobs[0]["prompt"] == "Neon"
    assert api.get(f"{base}/generations/").json()["count"] == 0
    assert api.get(f"{base}/loras/{lora_id}/").json()["use_count"] == 0
