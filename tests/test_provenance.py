"""Provenance in outputs and "What made this?": the PNG text chunks (A1111 `parameters` + lorasite JSON) and the
MP4 comment the encoder writes, the worker writing them for real jobs, the job API and page showing the same dict,
and reading an uploaded PNG back defensively (bad files 400, big ones 413, another workspace 404)."""

import hashlib
import json
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image

from generation import selectors, services, worker
from generation.models import GenerationJob, JobLoRA, JobStatus
from generation.provenance import job_provenance, parameters_text, png_text_chunks, read_png_provenance
from generation.runtime.encode import write_mp4, write_png
from tests.factories import LoRAFactory, MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db


def make_job(workspace, loras=(), *, kind="image", model_key="flux-demo", prompt="a lighthouse, <lora:Ink:0.7>"):
    job = GenerationJob.objects.create(
        workspace=workspace,
        model_key=model_key,
        model_name="FLUX demo" if model_key == "flux-demo" else "Wan 2.2 A14B demo",
        kind=kind,
        prompt=prompt,
        negative_prompt="blurry",
        params={"width": 64, "height": 64, "steps": 4, "guidance": 3.5, "seed": 7}
        | ({"num_frames": 5, "fps": 8, "guidance_2": 3.0} if kind == "video" else {}),
        status=JobStatus.SUCCEEDED,
    )
    for position, (lora, weight, expert, weight_low) in enumerate(loras):
        JobLoRA.objects.create(
            job=job,
            lora=lora,
            position=position,
            lora_ref=lora.id,
            name=lora.name,
            version=lora.version,
            sha256=lora.sha256,
            file_key=lora.file.name,
            file_size=lora.file_size,
            weight=weight,
            weight_low=weight_low,
            expert=expert,
        )
    return job


def png_bytes(provenance=None) -> bytes:
    """An output PNG as the encoder writes it (a plain one without provenance)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.png"
        write_png(np.zeros((8, 8, 3), dtype=np.uint8), path, provenance=provenance)
        return path.read_bytes()


def mp4_comment(path: Path) -> dict:
    """The MP4's `comment` tag as ffmpeg reads it back, parsed as JSON."""
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    comment = next(line for line in probe.splitlines() if line.startswith("comment="))
    # ffmetadata escapes = ; # \ and newlines with a backslash.
    value = comment[len("comment=") :].replace("\\=", "=").replace("\\;", ";").replace("\\#", "#")
    return json.loads(value.replace("\\\\", "\\"))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(*chunks: bytes) -> bytes:
    """A minimal PNG (a 1×1 image) with extra chunks before IEND."""
    plain = png_bytes()
    return plain[:-12] + b"".join(chunks) + plain[-12:]


def hashed_lora(workspace, name: str):
    sha256 = hashlib.sha256(name.encode()).hexdigest()
    return LoRAFactory(workspace=workspace, name=name, sha256=sha256, autov2=sha256[:10])


@pytest.fixture
def loras(workspace):
    return [hashed_lora(workspace, "Ink"), hashed_lora(workspace, "Neon glow")]


class TestWriting:
    def test_the_provenance_dict_and_a1111_text(self, workspace, loras):
        job = make_job(workspace, [(loras[0], 0.7, "high", None), (loras[1], 1.0, "both", 0.5)], kind="video")
        provenance = job_provenance(job)
        assert provenance["model"] == {"key": "flux-demo", "name": "FLUX demo"}
        assert provenance["loras"][0] == {
            "name": "Ink",
            "version": loras[0].version,
            "autov2": loras[0].sha256[:10],
            "sha256": loras[0].sha256,
            "expert": "high",
            "weight": 0.7,
        }
        assert provenance["loras"][1]["weight_low"] == 0.5 and "weight_low" not in provenance["loras"][0]
        text = parameters_text(provenance)
        prompt, negative, line = text.split("\n")
        assert prompt == job.prompt and negative == "Negative prompt: blurry"
        assert line.startswith("Steps: 4, CFG scale: 3.5, CFG scale 2: 3.0, Seed: 7, Size: 64x64, Frames: 5, FPS: 8")
        assert f'Lora hashes: "Ink: {loras[0].autov2}, Neon glow: {loras[1].autov2}"' in line

    def test_png_carries_both_text_chunks_even_with_a_non_latin_prompt(self, workspace, loras, tmp_path):
        job = make_job(workspace, [(loras[0], 0.7, "high", None)], prompt="灯台 at dusk")
        path = tmp_path / "out.png"
        write_png(np.zeros((8, 8, 3), dtype=np.uint8), path, provenance=job_provenance(job))
        with Image.open(path) as image:
            assert image.text["parameters"] == parameters_text(job_provenance(job))
            assert json.loads(image.text["lorasite"]) == job_provenance(job)
        assert set(png_text_chunks(path.read_bytes())) == {"parameters", "lorasite"}

    def test_mp4_carries_the_comment(self, workspace, loras, tmp_path):
        job = make_job(workspace, [(loras[0], 0.7, "high", None)], kind="video")
        path = tmp_path / "out.mp4"
        write_mp4(np.zeros((3, 16, 16, 3), dtype=np.uint8), path, fps=8, provenance=job_provenance(job))
        assert mp4_comment(path) == job_provenance(job)

    def test_without_provenance_nothing_is_added(self, tmp_path):
        path = tmp_path / "plain.png"
        write_png(np.zeros((4, 4, 3), dtype=np.uint8), path)
        assert png_text_chunks(path.read_bytes()) == {}


class TestTheWorkerWritesIt:
    @pytest.fixture(autouse=True)
    def worker_environment(self, demo_models, tmp_path):
        with override_settings(LORASITE_WORKER_CACHE_DIR=tmp_path / "cache"):
            worker.lora_cache.cache_clear()
            yield
        worker.lora_cache.cache_clear()

    def test_an_image_job_output_carries_its_provenance_and_the_api_shows_it(self, api, owner, workspace, tmp_path):
        actor = workspace.memberships.get(user=owner)
        lora = ingest_ready(actor=actor, path=write_lora(tmp_path / "ink.safetensors", family="flux-demo", blocks=1))
        job = services.generation_create(
            actor=actor,
            model="flux-demo",
            prompt="a lighthouse",
            params={"seed": 1},
            loras=[services.LoRARequest(lora_id=lora.id, weight=0.6)],
        )
        worker.execute_job(str(job.id), worker_name="test@worker")
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED, job.error
        output = requests.get(selectors.job_output_urls(job=job)["output_url"], timeout=30).content
        carried = json.loads(png_text_chunks(output)["lorasite"])
        assert carried["loras"][0]["autov2"] == lora.autov2 and carried["loras"][0]["weight"] == 0.6
        body = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/").json()
        assert body["provenance"] == carried

        read = api.post(
            f"/api/v1/workspaces/{workspace.slug}/provenance/",
            {"file": SimpleUploadedFile("out.png", output, "image/png")},
            format="multipart",
        )
        assert read.status_code == 200, read.json()
        assert read.json()["loras"][0]["lora_id"] == lora.id and read.json()["missing"] == []

    def test_a_video_job_mp4_carries_its_provenance_with_both_weights(self, owner, workspace, tmp_path):
        actor = workspace.memberships.get(user=owner)
        path = write_lora(tmp_path / "motion.safetensors", family="wan-demo", blocks=2)
        lora = ingest_ready(actor=actor, path=path)
        job = services.generation_create(
            actor=actor,
            model="wan22-a14b-demo",
            prompt="a boat",
            params={"seed": 1},
            loras=[services.LoRARequest(lora_id=lora.id, weight=0.9, expert="both", weight_low=0.4)],
        )
        worker.execute_job(str(job.id), worker_name="test@worker")
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED, job.error
        video = tmp_path / "output.mp4"
        video.write_bytes(requests.get(selectors.job_output_urls(job=job)["output_url"], timeout=30).content)
        carried = mp4_comment(video)
        assert carried == job_provenance(job)
        assert carried["loras"][0] | {"weight": 0.9, "weight_low": 0.4, "expert": "both"} == carried["loras"][0]


def provenance_url(workspace) -> str:
    return f"/api/v1/workspaces/{workspace.slug}/provenance/"


def post_png(api, workspace, data: bytes, name: str = "out.png"):
    return api.post(
        provenance_url(workspace), {"file": SimpleUploadedFile(name, data, "image/png")}, format="multipart"
    )


class TestWhatMadeThis:
    def test_a_lorasite_png_gives_the_recipe_with_its_loras_matched(self, api, workspace, loras, demo_models):
        gone = hashed_lora(workspace, "Gone")
        job = make_job(
            workspace, [(loras[0], 0.7, "high", None), (loras[1], 1.0, "both", 0.5), (gone, 0.3, "low", None)]
        )
        provenance = job_provenance(job)
        gone.delete()  # uploaded elsewhere, or deleted since: reported missing
        response = post_png(api, workspace, png_bytes(provenance))
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["source"] == "lorasite"
        # The model as this site names it now.
        assert body["model"] == {"key": "flux-demo", "name": "FLUX (demo)", "available": True}
        assert body["prompt"] == job.prompt and body["negative_prompt"] == "blurry"
        assert body["params"] == job.params
        found = {lora["name"]: (lora["lora_id"], lora["matched_by"]) for lora in body["loras"]}
        assert found == {"Ink": (loras[0].id, "sha256"), "Neon glow": (loras[1].id, "sha256"), "Gone": (None, "")}
        assert body["loras"][1]["weight_low"] == 0.5
        assert body["missing"] == ["Gone"]
        url = body["generate_url"]
        assert url.startswith(f"/w/{workspace.slug}/generate/?model=flux-demo")
        assert f"lora_id={loras[0].id}" in url and "lora_id=None" not in url

    def test_an_a1111_png_is_matched_by_autov2_and_reads_weights_from_the_prompt(self, api, workspace, loras):
        text = (
            "portrait, <lora:Ink:0.65>\nNegative prompt: lowres\n"
            f"Steps: 28, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 832x1216, Model: someModel, "
            f'Lora hashes: "Ink: {loras[0].autov2.upper()}, Elsewhere: 0123456789"'
        )
        response = post_png(api, workspace, png_with(chunk(b"tEXt", b"parameters\0" + text.encode("latin-1"))))
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["source"] == "a1111" and body["model"] == {"key": "", "name": "someModel", "available": False}
        assert body["params"] == {"steps": 28, "guidance": 7.0, "seed": 42, "width": 832, "height": 1216}
        assert body["prompt"] == "portrait, <lora:Ink:0.65>" and body["negative_prompt"] == "lowres"
        assert [(lora["lora_id"], lora["matched_by"], lora["weight"]) for lora in body["loras"]] == [
            (loras[0].id, "autov2", 0.65),
            (None, "", None),
        ]
        assert body["missing"] == ["Elsewhere"] and body["generate_url"] == ""

    def test_a_same_named_lora_with_other_content_is_marked_by_name_only(self, api, workspace, loras):
        entry = {"name": "Ink", "autov2": "ffffffffff", "sha256": "", "expert": "", "weight": 1}
        data = png_with(chunk(b"iTXt", b"lorasite\0\0\0\0\0" + json.dumps({"loras": [entry]}).encode()))
        (lora,) = post_png(api, workspace, data).json()["loras"]
        assert (lora["lora_id"], lora["matched_by"]) == (loras[0].id, "name")

    def test_another_workspaces_loras_are_never_matched(self, client_for, workspace, loras):
        other = WorkspaceFactory()
        stranger = MembershipFactory(workspace=other, role=Role.VIEWER).user  # viewers may read recipes
        provenance = job_provenance(make_job(workspace, [(loras[0], 0.7, "high", None)]))
        body = post_png(client_for(stranger), other, png_bytes(provenance)).json()
        assert body["loras"][0]["lora_id"] is None and body["missing"] == ["Ink"]

    def test_another_workspace_is_404(self, client_for, workspace):
        stranger = MembershipFactory(workspace=WorkspaceFactory(), role=Role.OWNER).user
        assert post_png(client_for(stranger), workspace, png_bytes()).status_code == 404

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            (b"GIF89a not a png", "not a PNG"),
            (png_bytes()[:-20], "truncated"),
            (png_bytes()[:20] + b"\xff" + png_bytes()[21:], "CRC"),
            (png_bytes(), "no generation parameters"),
            (png_with(chunk(b"tEXt", b"lorasite\0{not json")), "not valid JSON"),
            (png_with(chunk(b"tEXt", b"lorasite\0[1, 2]")), "does not hold"),
            (png_with(chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * 10_000_000))), "larger than"),
            (png_with(chunk(b"zTXt", b"parameters\0\0not zlib")), "corrupt"),
            (png_with(chunk(b"tEXt", b"no keyword separator")), "keyword"),
        ],
    )
    def test_bad_files_are_a_400_naming_the_problem(self, api, workspace, data, problem):
        response = post_png(api, workspace, data)
        assert response.status_code == 400
        assert problem in response.json()["message"] and "file" in response.json()["errors"]

    def test_hostile_values_are_type_checked(self):
        hostile = {
            "prompt": ["not", "text"],
            "params": {"steps": "DROP TABLE", "seed": 3, "flag": True},
            "loras": ["x", {"name": 5, "autov2": "zz<script>", "weight": "1", "weight_low": False}],
        }
        recipe = read_png_provenance(png_with(chunk(b"tEXt", b"lorasite\0" + json.dumps(hostile).encode())))
        assert recipe["prompt"] == "" and recipe["params"] == {"seed": 3}
        assert recipe["loras"] == [{"name": "", "autov2": "", "sha256": "", "expert": "", "weight": None}]

    def test_a_missing_file_is_400_and_a_huge_one_413(self, api, workspace, monkeypatch):
        response = api.post(provenance_url(workspace), {}, format="multipart")
        assert response.status_code == 400 and "file" in response.json()["errors"]
        monkeypatch.setattr(selectors, "PROVENANCE_MAX_BYTES", 10)
        assert post_png(api, workspace, png_bytes()).status_code == 413


class TestPages:
    def test_the_job_page_shows_the_provenance(self, client, owner, workspace, loras):
        job = make_job(workspace, [(loras[0], 0.7, "high", None)])
        client.force_login(owner)
        page = client.get(f"/w/{workspace.slug}/jobs/{job.id}/").content.decode()
        assert "Provenance" in page and loras[0].autov2 in page and "Lora hashes:" in page

    def test_what_made_this_page_reads_a_png_and_reports_a_bad_one(self, client, owner, workspace, loras):
        client.force_login(owner)
        url = f"/w/{workspace.slug}/what-made-this/"
        page = client.get(url)
        assert page.status_code == 200 and b"What made this?" in page.content
        provenance = job_provenance(make_job(workspace, [(loras[0], 0.7, "high", None)]))
        result = client.post(url, {"file": SimpleUploadedFile("out.png", png_bytes(provenance), "image/png")})
        content = result.content.decode()
        assert result.status_code == 200 and "Open in Generate" in content and f"/loras/{loras[0].id}/" in content
        bad = client.post(url, {"file": SimpleUploadedFile("x.png", b"nope", "image/png")})
        assert bad.status_code == 400 and "This is not a PNG image." in bad.content.decode()
        assert client.post(url, {}).status_code == 400

    def test_another_workspaces_page_is_404(self, client, workspace):
        stranger = MembershipFactory(workspace=WorkspaceFactory(), role=Role.OWNER).user
        client.force_login(stranger)
        assert client.get(f"/w/{workspace.slug}/what-made-this/").status_code == 404
