"""Previews: upload (image or video, checked by decoding), "Use as preview" from a job, removal — each leaving no
orphan object — the card's fallback to the last job's thumbnail in one query for the grid, thumbnails only in
grids, auto preview jobs at low priority, and 404 for everything of another workspace."""

import io
import re
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from generation import services as generation_services
from generation import worker_registry
from generation.models import GenerationJob, JobLoRA, JobPurpose, JobStatus
from generation.runtime.encode import write_mp4
from generation.thumbnails import THUMB_MAX_SIDE
from generation.usage import usage_counters_rebuild
from loras import previews
from loras.models import LoRA, Status
from lorasite.object_store import get_object_store
from tests.factories import MembershipFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

DEMO = "wan22-a14b-demo"


def image_bytes(size=(640, 400), image_format="PNG", color=(200, 40, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=image_format)
    return out.getvalue()


def mp4_bytes(tmp_path: Path) -> bytes:
    frames = np.zeros((5, 64, 96, 3), dtype=np.uint8)
    frames[:, :, :48] = (30, 160, 220)
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, fps=8)
    return path.read_bytes()


def upload(data: bytes, name: str = "preview.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def make_lora(workspace, user=None, **fields) -> LoRA:
    key = uuid.uuid4().hex
    values = {
        "name": f"LoRA {key[:6]}",
        "original_filename": "style.safetensors",
        "file": f"workspaces/{workspace.id}/loras/{key}/style.safetensors",
        "file_size": 1024,
        "sha256": key * 2,
        "status": Status.READY,
        "base_model": "wan-demo",
        "created_by": user,
    }
    return LoRA.objects.create(workspace=workspace, **{**values, **fields})


def make_job(workspace, lora, *, kind="image", status=JobStatus.SUCCEEDED, thumb=True, tmp_path=None):
    """A finished job that used `lora`, with its objects stored as the worker stores them (sizes not measured)."""
    job = GenerationJob.objects.create(
        workspace=workspace,
        model_key=DEMO,
        model_name="Wan demo",
        kind=kind,
        prompt="a cat",
        params={"width": 32, "height": 32, "steps": 1, "guidance": 1.0, "seed": 0},
        status=status,
        finished_at=timezone.now(),
    )
    JobLoRA.objects.create(
        job=job,
        lora=lora,
        position=0,
        lora_ref=lora.id,
        name=lora.name,
        version=lora.version,
        sha256=lora.sha256,
        file_key=lora.file.name,
        file_size=lora.file_size,
        weight=1.0,
        expert="high",
    )
    if status == JobStatus.SUCCEEDED:
        store, prefix = get_object_store(), generation_services.job_output_prefix(job)
        if kind == "video":
            job.output_key, job.poster_key = prefix + "output.mp4", prefix + "poster.png"
            store.save_stream(job.output_key, io.BytesIO(mp4_bytes(tmp_path)))
            store.save_stream(job.poster_key, io.BytesIO(image_bytes((96, 64))))
        else:
            job.output_key = prefix + "output.png"
            store.save_stream(job.output_key, io.BytesIO(image_bytes((512, 512))))
        if thumb:
            job.thumb_key = prefix + "thumb.webp"
            store.save_stream(job.thumb_key, io.BytesIO(image_bytes((320, 320), "WEBP")))
        job.save()
    usage_counters_rebuild(workspace_id=workspace.id)  # the rows were written directly, not by the services
    return job


def url(workspace, lora) -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/preview/"


def preview_keys(s3_keys, lora) -> list[str]:
    return sorted(s3_keys(f"workspaces/{lora.workspace_id}/previews/{lora.id}/"))


def fetch(absolute_url: str) -> bytes:
    import requests

    response = requests.get(absolute_url, timeout=30)
    assert response.status_code == 200
    return response.content


@pytest.fixture
def lora(workspace, owner):
    return make_lora(workspace, owner, name="Anime")


class TestUpload:
    def test_an_image_becomes_the_preview_with_a_small_webp_thumbnail(self, api, workspace, lora, s3_keys):
        response = api.put(url(workspace, lora), {"file": upload(image_bytes((1200, 800)))}, format="multipart")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["kind"] == "image" and body["source"] == "upload" and body["job_id"] is None
        keys = preview_keys(s3_keys, lora)
        assert len(keys) == 2 and keys[0].endswith("/preview.png") and keys[1].endswith("/thumb.webp")
        with Image.open(io.BytesIO(fetch(body["thumb_url"]))) as thumb:
            assert thumb.format == "WEBP" and max(thumb.size) == THUMB_MAX_SIDE and thumb.size == (320, 213)
        assert fetch(body["url"]) == image_bytes((1200, 800))
        assert api.get(url(workspace, lora)).json()["kind"] == "image"

    @pytest.mark.parametrize("image_format,extension", [("JPEG", "jpg"), ("WEBP", "webp")])
    def test_jpeg_and_webp_are_accepted(self, api, workspace, lora, s3_keys, image_format, extension):
        data = image_bytes((100, 60), image_format)
        response = api.put(url(workspace, lora), {"file": upload(data, "x.bin")}, format="multipart")
        assert response.status_code == 200, response.json()
        assert preview_keys(s3_keys, lora)[0].endswith(f"/preview.{extension}")  # from the bytes, not the name

    def test_a_video_becomes_the_preview_with_its_first_frame_as_thumbnail(
        self, api, workspace, lora, s3_keys, tmp_path
    ):
        data = mp4_bytes(tmp_path)
        response = api.put(url(workspace, lora), {"file": upload(data, "clip.mp4", "video/mp4")}, format="multipart")
        assert response.status_code == 200, response.json()
        assert response.json()["kind"] == "video"
        assert [key.rsplit("/", 1)[-1] for key in preview_keys(s3_keys, lora)] == ["preview.mp4", "thumb.webp"]
        with Image.open(io.BytesIO(fetch(response.json()["thumb_url"]))) as thumb:
            assert thumb.size == (96, 64)
            assert thumb.convert("RGB").getpixel((10, 30))[2] > 150  # the blue half of the first frame

    @pytest.mark.parametrize(
        "data,problem",
        [
            (b"", "The file is empty."),
            (b"just some text, not an image", "This is not a PNG, JPEG or WebP image or an MP4 or WebM video."),
            (b"GIF89a" + b"\0" * 40, "This is not a PNG, JPEG or WebP image"),
            (image_bytes()[:60], "could not be decoded as an image"),
            (b"\0\0\0\x18ftypmp42" + b"\0" * 200, "could not be decoded as an MP4 video"),
            (b"\x1a\x45\xdf\xa3" + b"\x01" * 200, "could not be decoded as an WEBM video"),
        ],
        ids=["empty", "text", "gif", "truncated-png", "broken-mp4", "broken-webm"],
    )
    def test_bad_files_are_refused_naming_the_problem_and_nothing_is_stored(
        self, api, workspace, lora, s3_keys, data, problem
    ):
        response = api.put(url(workspace, lora), {"file": upload(data)}, format="multipart")
        assert response.status_code == 400
        assert problem in response.json()["message"] and response.json()["errors"]["file"]
        assert preview_keys(s3_keys, lora) == []
        lora.refresh_from_db()
        assert lora.preview_key == lora.preview_thumb_key == lora.preview_kind == ""

    def test_too_large_and_missing_files(self, api, workspace, lora, s3_keys, monkeypatch):
        monkeypatch.setattr(previews, "PREVIEW_IMAGE_MAX_BYTES", 1000)
        response = api.put(url(workspace, lora), {"file": upload(image_bytes())}, format="multipart")
        assert response.status_code == 413 and "limited to 1000 bytes" in response.json()["message"]
        assert api.put(url(workspace, lora), {}, format="multipart").json()["errors"]["file"]
        assert preview_keys(s3_keys, lora) == []

    def test_replacing_and_removing_delete_the_old_objects(self, api, workspace, lora, s3_keys, tmp_path):
        api.put(url(workspace, lora), {"file": upload(image_bytes())}, format="multipart")
        first = preview_keys(s3_keys, lora)
        with TestCase.captureOnCommitCallbacks(execute=True):  # the old objects go once the row is committed
            api.put(url(workspace, lora), {"file": upload(mp4_bytes(tmp_path), "a.mp4")}, format="multipart")
        second = preview_keys(s3_keys, lora)
        assert len(second) == 2 and not set(first) & set(second)
        with TestCase.captureOnCommitCallbacks(execute=True):
            assert api.delete(url(workspace, lora)).status_code == 204
        assert preview_keys(s3_keys, lora) == []
        assert api.get(url(workspace, lora)).json() == {
            "kind": None,
            "source": None,
            "url": None,
            "thumb_url": None,
            "job_id": None,
            "expires_at": None,
        }

    def test_a_failed_row_write_leaves_no_object(self, api, workspace, lora, s3_keys, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("database gone")

        monkeypatch.setattr(LoRA, "save", broken)
        with pytest.raises(RuntimeError):
            api.put(url(workspace, lora), {"file": upload(image_bytes())}, format="multipart")
        assert preview_keys(s3_keys, lora) == []

    def test_webm_is_accepted(self, api, workspace, lora, s3_keys, tmp_path):
        import imageio_ffmpeg

        path = tmp_path / "clip.webm"
        writer = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=8, codec="libvpx", ffmpeg_log_level="error")
        writer.send(None)
        for _ in range(4):
            writer.send(np.full((48, 64, 3), 120, dtype=np.uint8))
        writer.close()
        response = api.put(
            url(workspace, lora), {"file": upload(path.read_bytes(), "c.webm", "video/webm")}, format="multipart"
        )
        assert response.status_code == 200, response.json()
        assert [key.rsplit("/", 1)[-1] for key in preview_keys(s3_keys, lora)] == ["preview.webm", "thumb.webp"]

    def test_without_a_video_decoder_a_video_is_kept_without_a_poster(
        self, api, workspace, lora, s3_keys, tmp_path, monkeypatch
    ):
        """The slim web image has no ffmpeg: the card then lets the browser show the first frame."""
        monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import` raises ImportError
        response = api.put(url(workspace, lora), {"file": upload(mp4_bytes(tmp_path), "a.mp4")}, format="multipart")
        assert response.status_code == 200 and response.json()["thumb_url"] is None
        assert [key.rsplit("/", 1)[-1] for key in preview_keys(s3_keys, lora)] == ["preview.mp4"]

    def test_beat_removes_preview_objects_no_row_names(self, api, workspace, lora, s3_keys, settings):
        from loras.services import lora_storage_cleanup

        api.put(url(workspace, lora), {"file": upload(image_bytes())}, format="multipart")
        kept = preview_keys(s3_keys, lora)
        stray = f"workspaces/{workspace.id}/previews/{lora.id}/{uuid.uuid4().hex}/preview.png"
        get_object_store().save_stream(stray, io.BytesIO(b"left by a crash"))
        settings.LORASITE_ORPHAN_GRACE_SECONDS = 0
        assert lora_storage_cleanup(now=timezone.now() + timedelta(seconds=5))["orphans_deleted"] >= 1
        assert preview_keys(s3_keys, lora) == kept


class TestFromJob:
    def test_a_succeeded_job_output_is_copied_as_the_preview(self, api, workspace, lora, s3_keys, tmp_path):
        job = make_job(workspace, lora, kind="video", tmp_path=tmp_path)
        response = api.post(url(workspace, lora), {"job_id": str(job.id)}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json() | {"url": None, "thumb_url": None, "expires_at": None} == {
            "kind": "video",
            "source": "job",
            "url": None,
            "thumb_url": None,
            "job_id": str(job.id),
            "expires_at": None,
        }
        assert [key.rsplit("/", 1)[-1] for key in preview_keys(s3_keys, lora)] == ["preview.mp4", "thumb.webp"]
        # Copies: deleting the job (its outputs purged later) leaves the preview intact.
        assert fetch(response.json()["url"])[4:8] == b"ftyp"

    def test_a_job_from_before_thumbnails_gets_one_made(self, api, workspace, lora, s3_keys):
        job = make_job(workspace, lora, thumb=False)
        response = api.post(url(workspace, lora), {"job_id": str(job.id)}, format="json")
        assert response.status_code == 200
        with Image.open(io.BytesIO(fetch(response.json()["thumb_url"]))) as thumb:
            assert thumb.format == "WEBP" and thumb.size == (320, 320)

    def test_bad_jobs(self, api, workspace, owner, lora, s3_keys):
        other_lora = make_lora(workspace, owner, name="Other")
        unrelated = make_job(workspace, other_lora)
        response = api.post(url(workspace, lora), {"job_id": str(unrelated.id)}, format="json")
        assert response.status_code == 400 and "did not use 'Anime'" in response.json()["message"]
        failed = make_job(workspace, lora, status=JobStatus.FAILED)
        assert api.post(url(workspace, lora), {"job_id": str(failed.id)}, format="json").status_code == 409
        assert api.post(url(workspace, lora), {"job_id": str(uuid.uuid4())}, format="json").status_code == 404
        assert api.post(url(workspace, lora), {"job_id": "nope"}, format="json").status_code == 400
        foreign_workspace = WorkspaceFactory()
        foreign_job = make_job(foreign_workspace, make_lora(foreign_workspace))
        assert api.post(url(workspace, lora), {"job_id": str(foreign_job.id)}, format="json").status_code == 404
        assert preview_keys(s3_keys, lora) == []


class TestAccess:
    def test_another_workspaces_lora_is_404_for_every_method(self, api, owner):
        foreign = WorkspaceFactory()
        lora = make_lora(foreign)
        path = url(foreign, lora)
        assert api.get(path).status_code == 404
        assert api.put(path, {"file": upload(image_bytes())}, format="multipart").status_code == 404
        assert api.delete(path).status_code == 404
        MembershipFactory(workspace=foreign, user=owner, role=Role.VIEWER)
        own_path = f"/api/v1/workspaces/{foreign.slug}/loras/{make_lora(WorkspaceFactory()).id}/preview/"
        assert api.get(own_path).status_code == 404

    def test_viewers_read_and_members_change_only_their_own(self, workspace, owner, lora, member_of, client_for):
        viewer = client_for(member_of(Role.VIEWER))
        assert viewer.get(url(workspace, lora)).status_code == 200
        assert viewer.put(url(workspace, lora), {"file": upload(image_bytes())}, format="multipart").status_code == 403
        member = member_of(Role.MEMBER)
        as_member = client_for(member)
        assert as_member.delete(url(workspace, lora)).status_code == 403
        own = make_lora(workspace, member, name="Mine")
        assert (
            as_member.put(url(workspace, own), {"file": upload(image_bytes())}, format="multipart").status_code == 200
        )


def urls_in(html: str) -> list[str]:
    return re.findall(r'(?:src|poster)="([^"]+)"', html.replace("&amp;", "&"))


def key_of(signed_url: str) -> str:
    """The object key a signed S3 URL reads (the suite's storage is S3: the key is the path after the bucket)."""
    return urlparse(signed_url).path.split(f"/{settings.AWS_STORAGE_BUCKET_NAME}/", 1)[1]


class TestCards:
    def test_card_falls_back_to_the_last_jobs_thumbnail_then_a_placeholder(self, client, workspace, owner):
        client.force_login(owner)
        with_job, bare = make_lora(workspace, owner, name="Used"), make_lora(workspace, owner, name="Unused")
        make_job(workspace, with_job)
        latest = make_job(workspace, with_job)
        make_job(workspace, with_job, status=JobStatus.FAILED)
        html = client.get(f"/w/{workspace.slug}/loras/").content.decode()

        def card_of(lora) -> str:
            start = html.index(f'id="lora-{lora.id}"')
            return html[start : html.index("</article>", start)]

        card = card_of(with_job)
        assert 'data-preview-source="fallback"' in card
        assert [key_of(found) for found in urls_in(card)] == [latest.thumb_key]
        assert 'class="lora-preview empty"' in card_of(bare) and "<img" not in card_of(bare)

    def test_a_grid_of_50_loads_thumbnails_only_in_one_query_per_page(self, client, workspace, owner, tmp_path):
        client.force_login(owner)
        loras = [make_lora(workspace, owner, name=f"L{i:02d}") for i in range(50)]
        jobs = {lora.id: make_job(workspace, lora) for lora in loras[:40]}
        for lora in loras[:10]:  # ten with a preview of their own, two of them videos
            previews.lora_preview_upload(
                actor=workspace.memberships.get(user=owner), lora=lora, uploaded_file=upload(image_bytes())
            )
        for lora in loras[10:12]:
            job = make_job(workspace, lora, kind="video", tmp_path=tmp_path)
            previews.lora_preview_from_job(actor=workspace.memberships.get(user=owner), lora=lora, job_id=job.id)
        full_size = {job.output_key for job in GenerationJob.objects.all()} | set(
            LoRA.objects.exclude(preview_kind="video").exclude(preview_key="").values_list("preview_key", flat=True)
        )
        hover_videos = set(LoRA.objects.filter(preview_kind="video").values_list("preview_key", flat=True))
        seen: set[str] = set()
        counts = []
        for page in (1, 2, 3):
            with CaptureQueriesContext(connection) as queries:
                response = client.get(f"/w/{workspace.slug}/loras/?page={page}&ordering=name")
            assert response.status_code == 200
            counts.append(len(queries))
            html = response.content.decode()
            for signed in urls_in(html):
                if "/static/" in signed:
                    continue
                key = key_of(signed)
                assert key not in full_size
                assert key.endswith("/thumb.webp") or key in hover_videos, key
                seen.add(key)
            assert html.count('preload="none"') == html.count("<video")
        assert counts[0] == counts[1] == counts[2] and counts[0] < 20, counts  # 24, 24 and 2 cards
        assert len(seen) == 40 + 2  # 40 thumbnails (10 + 2 own, 28 fallbacks) and the 2 videos
        assert jobs  # the fallbacks came from these


class TestJobPage:
    def test_use_as_preview_buttons_for_each_lora_of_a_succeeded_job(self, client, workspace, owner, lora, s3_keys):
        client.force_login(owner)
        job = make_job(workspace, lora)
        page = client.get(f"/w/{workspace.slug}/jobs/{job.id}/").content.decode()
        assert "Use as preview for Anime" in page
        response = client.post(f"/w/{workspace.slug}/loras/{lora.id}/preview/from-job/", {"job_id": str(job.id)})
        assert response.status_code == 302 and response.url == f"/w/{workspace.slug}/jobs/{job.id}/"
        lora.refresh_from_db()
        assert lora.preview_job_id == job.id and len(preview_keys(s3_keys, lora)) == 2
        assert "Already the preview of Anime" in client.get(f"/w/{workspace.slug}/jobs/{job.id}/").content.decode()
        failed = make_job(workspace, lora, status=JobStatus.FAILED)
        assert "Use as preview" not in client.get(f"/w/{workspace.slug}/jobs/{failed.id}/").content.decode()

    def test_detail_page_upload_and_remove(self, client, workspace, owner, lora, s3_keys):
        client.force_login(owner)
        detail = f"/w/{workspace.slug}/loras/{lora.id}/"
        assert "Upload preview" in client.get(detail).content.decode()
        response = client.post(detail + "preview/", {"file": upload(image_bytes())})
        assert response.status_code == 302 and response.url == detail + "#preview"
        page = client.get(detail).content.decode()
        assert "Uploaded preview." in page and "Remove preview" in page
        bad = client.post(detail + "preview/", {"file": upload(b"nope")}, follow=True).content.decode()
        assert "The preview was not changed: This is not a PNG" in bad
        with TestCase.captureOnCommitCallbacks(execute=True):
            client.post(detail + "preview/remove/")
        assert preview_keys(s3_keys, lora) == []


@pytest.fixture
def served(monkeypatch, demo_models, settings):
    """The demo models' weights are built and a live worker serves them all. Routing off: the jobs go to the model's
    shared queue whatever live worker (the suite's own) holds their LoRAs (tests/test_routing.py)."""
    monkeypatch.setattr(worker_registry, "models_served", lambda: {"wan22-a14b-demo", "wan-ti2v-demo", "flux-demo"})
    settings.LORASITE_ROUTING = False


@pytest.fixture
def sent(monkeypatch):
    from generation.tasks import generation_run

    calls = []
    monkeypatch.setattr(generation_run, "apply_async", lambda *args, **kwargs: calls.append(kwargs))
    return calls


class TestAutoPreview:
    @pytest.fixture(autouse=True)
    def auto_on(self, workspace):
        workspace.auto_preview = True
        workspace.save()

    def test_a_ready_lora_queues_the_cheapest_job_at_low_priority(self, workspace, owner, served, sent):
        lora = make_lora(workspace, owner, name="Neon", trigger_words=["neon", "glow"])
        with TestCase.captureOnCommitCallbacks(execute=True):
            job = previews.auto_preview_queue(lora_id=lora.id)
        assert job.purpose == JobPurpose.PREVIEW and job.model_key == "wan-ti2v-demo"  # one expert: cheapest
        assert job.prompt == "neon, glow" and job.created_by == owner
        assert job.params | {"guidance": None} == {
            "width": 32,
            "height": 32,
            "steps": 1,
            "num_frames": 5,
            "fps": 8,
            "seed": 0,
            "guidance": None,
        }
        assert sent == [{"args": [str(job.id)], "queue": "gpu.wan-ti2v-demo", "priority": 9}]
        assert previews.auto_preview_queue(lora_id=lora.id) is None  # one per LoRA

    def test_recommended_settings_are_used(self, workspace, owner, served, sent):
        lora = make_lora(workspace, owner, recommended_settings={"steps": 4, "guidance": 1.0})
        job = previews.auto_preview_queue(lora_id=lora.id)
        assert job.params["steps"] == 4 and job.params["guidance"] == 1.0 and job.prompt == lora.name

    def test_skipped_and_logged_when_no_worker_serves_a_compatible_model(
        self, workspace, owner, monkeypatch, demo_models, sent, caplog
    ):
        monkeypatch.setattr(worker_registry, "models_served", lambda: {"flux-demo"})
        lora = make_lora(workspace, owner)
        with caplog.at_level("INFO", logger="loras.previews"):
            assert previews.auto_preview_queue(lora_id=lora.id) is None
        assert "no live worker serves a model it fits" in caplog.text
        assert not GenerationJob.objects.exists() and sent == []

    def test_skipped_when_the_workspace_turned_it_off(self, workspace, owner, served, sent):
        workspace.auto_preview = False
        workspace.save()
        assert previews.auto_preview_queue(lora_id=make_lora(workspace, owner).id) is None
        assert sent == []

    def test_ingest_queues_it_and_its_output_becomes_the_preview(self, workspace, owner, served, sent, tmp_path):
        from loras import services as lora_services
        from tests.ingest import ingest_ready
        from tests.lora_files import write_lora

        path = write_lora(tmp_path / "neon.safetensors", seed=3, family="wan-demo", blocks=1)
        lora = ingest_ready(actor=workspace.memberships.get(user=owner), path=path, options=lora_services.LoRAOptions())
        job = GenerationJob.objects.get(purpose=JobPurpose.PREVIEW)
        assert job.job_loras.get().lora_ref == lora.id
        # The worker runs it and reports success (its objects stored as the worker stores them).
        GenerationJob.objects.filter(id=job.id).update(status=JobStatus.RUNNING)
        stored = make_job(workspace, lora, kind="video", tmp_path=tmp_path)
        with TestCase.captureOnCommitCallbacks(execute=True):
            generation_services.job_succeed(
                job_id=str(job.id),
                output_key=stored.output_key,
                poster_key=stored.poster_key,
                thumb_key=stored.thumb_key,
                timings={},
            )
        lora.refresh_from_db()
        assert lora.preview_job_id == job.id and lora.preview_kind == "video"
        assert lora.use_count == 0 and lora.last_used_at is None  # a preview is not a use

    def test_a_preview_the_user_set_meanwhile_wins(self, workspace, owner, lora, served, sent, s3_keys):
        job = previews.auto_preview_queue(lora_id=lora.id)
        previews.lora_preview_upload(
            actor=workspace.memberships.get(user=owner), lora=lora, uploaded_file=upload(image_bytes())
        )
        mine = preview_keys(s3_keys, lora)
        GenerationJob.objects.filter(id=job.id).update(status=JobStatus.RUNNING)
        stored = make_job(workspace, lora)
        with TestCase.captureOnCommitCallbacks(execute=True):
            generation_services.job_succeed(
                job_id=str(job.id), output_key=stored.output_key, poster_key="", thumb_key=stored.thumb_key, timings={}
            )
        lora.refresh_from_db()
        assert lora.preview_job_id is None and preview_keys(s3_keys, lora) == mine

    def test_preview_jobs_are_hidden_from_the_default_jobs_list(self, api, workspace, owner, lora, served, sent):
        job = previews.auto_preview_queue(lora_id=lora.id)
        listed = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/").json()["results"]
        assert listed == []
        previews_listed = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/?purpose=preview").json()
        assert [item["id"] for item in previews_listed["results"]] == [str(job.id)]
        assert previews_listed["results"][0]["purpose"] == "preview"
        assert api.get(f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/").status_code == 200


class TestWorkspaceSetting:
    def test_admins_turn_auto_preview_off_members_cannot(self, workspace, owner, member_of, client_for):
        path = f"/api/v1/workspaces/{workspace.slug}/"
        admin = client_for(member_of(Role.ADMIN))
        response = admin.patch(path, {"auto_preview": True}, format="json")
        assert response.status_code == 200 and response.json()["auto_preview"] is True
        assert client_for(member_of(Role.MEMBER)).patch(path, {"auto_preview": False}, format="json").status_code == 403
        assert admin.patch(path, {"auto_preview": "maybe"}, format="json").status_code == 400
        workspace.refresh_from_db()
        assert workspace.auto_preview is True

    def test_the_settings_page_switch(self, client, workspace, owner, member_of):
        client.force_login(owner)
        page = client.get(f"/w/{workspace.slug}/settings/").content.decode()
        assert "Auto preview" in page and 'aria-checked="false"' in page  # the suite's workspaces start with it off
        response = client.post(f"/w/{workspace.slug}/previews/auto/", {"auto_preview": "true"}, follow=True)
        assert "Auto preview is on." in response.content.decode()
        workspace.refresh_from_db()
        assert workspace.auto_preview is True
        viewer = member_of(Role.VIEWER)
        client.force_login(viewer)
        assert "Admins and owners change it." in client.get(f"/w/{workspace.slug}/settings/").content.decode()
        response = client.post(f"/w/{workspace.slug}/previews/auto/", {"auto_preview": "false"}, follow=True)
        workspace.refresh_from_db()
        assert workspace.auto_preview is True and "Only a workspace admin or above" in response.content.decode()
