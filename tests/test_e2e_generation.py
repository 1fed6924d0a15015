"""End to end with a real Celery worker process on the real Redis broker and the S3 API server:
API → queue → worker → output in storage → presigned URL fetch; and cancel."""

import time

import pytest
import requests

from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for(api, url: str, *, until, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(url).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting; last state: {body}"
        time.sleep(0.25)


def test_api_to_worker_to_presigned_output(celery_worker, workspace, member_of, client_for, tmp_path, s3_keys):
    api = client_for(member_of(Role.OWNER))
    base = f"/api/v1/workspaces/{workspace.slug}"
    ids = []
    for name, marker in (("style", "high_noise"), ("detail", "low_noise")):
        path = write_lora(
            tmp_path / f"{name}_{marker}.safetensors", family="wan-demo", blocks=2, std=0.3, seed=len(ids)
        )
        with open(path, "rb") as handle:
            created = api.post(f"{base}/loras/", {"file": handle, "name": name}, format="multipart")
        assert created.status_code == 201, created.json()
        ids.append(created.json()["id"])
    for lora_id in ids:
        # Uploads answer `processing`; the worker's ingest task maps the keys with diffusers and marks them ready.
        ready = wait_for(api, f"{base}/loras/{lora_id}/", until=lambda lora: lora["status"] != "processing")
        assert ready["status"] == "ready", ready["error"]
    response = api.post(
        f"{base}/generations/",
        {
            "model": "wan22-a14b-demo",
            "prompt": "a lighthouse at dusk",
            "loras": [
                {"lora_id": ids[0], "weight": 0.8, "expert": "high"},
                {"lora_id": ids[1], "weight": 0.6, "expert": "low"},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    job = wait_for(
        api,
        f"{base}/generations/{response.json()['id']}/",
        until=lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 100 and job["timings"]["inference"] > 0
    assert "X-Amz-Expires=" in job["output_url"]
    video = requests.get(job["output_url"], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert requests.get(job["poster_url"], timeout=30).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"workspaces/{workspace.id}/outputs/{job['id']}/output.mp4" in s3_keys(f"workspaces/{workspace.id}/outputs/")
    used = api.get(f"{base}/loras/{ids[0]}/").json()
    assert used["use_count"] == 1 and used["last_used_at"]


def test_cancel_end_to_end(celery_worker, workspace, member_of, client_for):
    api = client_for(member_of(Role.OWNER))
    base = f"/api/v1/workspaces/{workspace.slug}"
    job_id = api.post(
        f"{base}/generations/",
        {"model": "wan22-a14b-demo", "prompt": "slow", "params": {"steps": 10, "num_frames": 9}},
        format="json",
    ).json()["id"]
    assert api.post(f"{base}/generations/{job_id}/cancel/").status_code == 200
    job = wait_for(api, f"{base}/generations/{job_id}/", until=lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "cancelled" and job["output_url"] is None
