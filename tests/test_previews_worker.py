"""The GPU worker makes each output's thumbnail once, beside it: a WebP ≤ 320 px of the image or the video's
poster, named by the job (`thumb_key`) and served by signed URL — on the demo pipelines, in-process (CPU)."""

import io
from pathlib import Path

import pytest
import requests
from django.test import override_settings
from PIL import Image

from generation import services, worker
from generation.models import JobStatus
from generation.selectors import job_output_urls
from generation.thumbnails import THUMB_MAX_SIDE, write_thumbnail
from workspaces.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def worker_environment(demo_models, tmp_path):
    with override_settings(LORASITE_WORKER_CACHE_DIR=tmp_path / "cache"):
        worker.lora_cache.cache_clear()
        yield
    worker.lora_cache.cache_clear()


@pytest.fixture
def actor(workspace, member_of):
    return workspace.memberships.get(user=member_of(Role.OWNER))


def thumbnail_of(job) -> Image.Image:
    response = requests.get(job_output_urls(job=job)["thumb_url"], timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/webp"
    return Image.open(io.BytesIO(response.content))


@pytest.mark.parametrize("model,params", [("flux-demo", {"width": 64, "height": 64}), ("wan22-a14b-demo", {})])
def test_the_worker_stores_a_thumbnail_beside_each_output(actor, s3_keys, model, params):
    job = services.generation_create(actor=actor, model=model, prompt="a cat", params={"seed": 1, "steps": 1, **params})
    worker.execute_job(str(job.id), worker_name="test@worker")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    prefix = services.job_output_prefix(job)
    assert job.thumb_key == prefix + "thumb.webp" and job.thumb_key in s3_keys(prefix)
    shown = "poster_url" if job.poster_key else "output_url"  # what a <video> shows first, or the image
    source = Image.open(io.BytesIO(requests.get(job_output_urls(job=job)[shown], timeout=30).content))
    thumb = thumbnail_of(job)
    assert thumb.format == "WEBP" and thumb.size == source.size  # small outputs are never enlarged


def test_large_images_are_scaled_to_320_on_the_long_side(tmp_path: Path):
    Image.new("RGB", (1280, 720), (10, 200, 30)).save(tmp_path / "big.png")
    write_thumbnail(tmp_path / "big.png", tmp_path / "thumb.webp")
    with Image.open(tmp_path / "thumb.webp") as thumb:
        assert thumb.format == "WEBP" and thumb.size == (THUMB_MAX_SIDE, 180)
        assert thumb.convert("RGB").getpixel((100, 100))[1] > 180
