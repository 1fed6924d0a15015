"""Image-to-video: the input image upload (every bad file class is a 400 naming why, leaving nothing behind), the
job's params.image checked against the model, the resize modes, and the demo Wan 2.2 I2V-A14B pipeline end to end
in the worker with a high- and a low-noise LoRA."""

import io

import numpy as np
import pytest
import requests
import torch
from diffusers import WanImageToVideoPipeline
from django.conf import settings
from django.test import override_settings
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from generation import services, worker
from generation.inputs import IMAGE_FITS, image_fit_to
from generation.model_registry import lora_fit_problem, lora_variants, lora_wan_variants, model_get
from generation.models import GenerationInput, GenerationJob, JobStatus
from generation.recipes import services as recipe_services
from generation.selectors import job_output_urls, lora_choices
from loras import services as lora_services
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

I2V = "wan22-i2v-a14b-demo"
T2V = "wan22-a14b-demo"
TI2V = "wan-ti2v-demo"


@pytest.fixture(autouse=True)
def worker_environment(demo_models, tmp_path):
    with override_settings(LORASITE_WORKER_CACHE_DIR=tmp_path / "cache"):
        worker.lora_cache.cache_clear()
        yield
    worker.lora_cache.cache_clear()


def image_bytes(image_format: str = "PNG", size: tuple[int, int] = (40, 30), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    for x in range(size[0] // 2):  # a left half of another colour, so the fit modes differ visibly
        for y in range(size[1]):
            image.putpixel((x, y), (20, 40, 220))
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def upload(api, workspace, data: bytes, name: str = "input.png"):
    file = io.BytesIO(data)
    file.name = name
    return api.post(f"/api/v1/workspaces/{workspace.slug}/generations/inputs/", {"file": file}, format="multipart")


def create(api, workspace, model: str = I2V, **params):
    return api.post(
        f"/api/v1/workspaces/{workspace.slug}/generations/",
        {"model": model, "prompt": "a cat", "params": {"seed": 1, **params}},
        format="json",
    )


@pytest.mark.parametrize(
    "image_format, content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_upload_stores_the_image_under_the_workspace_inputs(api, workspace, s3_keys, image_format, content_type):
    response = upload(api, workspace, image_bytes(image_format))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["width"], body["height"], body["content_type"]) == (40, 30, content_type)
    row = GenerationInput.objects.get(id=body["id"], workspace=workspace)
    assert row.key.startswith(f"workspaces/{workspace.id}/inputs/") and s3_keys(row.key) == [row.key]


def truncated_png() -> bytes:
    data = image_bytes("PNG", size=(64, 64))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"not an image at all, just text", "not an image"),
        (image_bytes("GIF"), "GIF images are not accepted"),
        (image_bytes("BMP"), "BMP images are not accepted"),
        (truncated_png(), "truncated"),
    ],
    ids=["not-an-image", "gif", "bmp", "truncated"],
)
def test_a_bad_file_is_a_400_naming_why_and_leaves_nothing(api, workspace, s3_keys, data, needle):
    response = upload(api, workspace, data)
    assert response.status_code == 400
    assert needle in response.json()["message"]
    assert not GenerationInput.objects.exists() and s3_keys(f"workspaces/{workspace.id}/inputs/") == []


def test_too_many_pixels_is_a_400(api, workspace, s3_keys):
    with override_settings(LORASITE_INPUT_IMAGE_MAX_PIXELS=1000):
        response = upload(api, workspace, image_bytes(size=(40, 30)))
    assert response.status_code == 400 and "1,200 pixels" in response.json()["message"]
    assert not GenerationInput.objects.exists() and s3_keys(f"workspaces/{workspace.id}/inputs/") == []


def test_a_decompression_bomb_is_a_400(api, workspace, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own guard, below the setting's limit
    response = upload(api, workspace, image_bytes(size=(40, 30)))
    assert response.status_code == 400 and "too many pixels" in response.json()["message"]


def test_too_large_is_a_413(api, workspace):
    with override_settings(LORASITE_INPUT_IMAGE_MAX_BYTES=100):
        response = upload(api, workspace, image_bytes())
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_a_viewer_cannot_upload(workspace, member_of, client_for):
    response = upload(client_for(member_of(Role.VIEWER)), workspace, image_bytes())
    assert response.status_code == 403


def test_the_job_checks_the_image_against_the_model(api, workspace):
    image_id = upload(api, workspace, image_bytes()).json()["id"]
    missing = create(api, workspace)
    assert missing.status_code == 400 and "params.image" in missing.json()["errors"]
    for model in (T2V, "flux-demo"):
        refused = create(api, workspace, model=model, image=image_id)
        assert refused.status_code == 400 and "does not take an input image" in refused.json()["message"]
    bad_fit = create(api, workspace, image=image_id, image_fit="stretch")
    assert bad_fit.status_code == 400 and "params.image_fit" in bad_fit.json()["errors"]
    assert not GenerationJob.objects.exists()

    ok = create(api, workspace, image=image_id, image_fit="fit")
    assert ok.status_code == 201, ok.json()
    job = GenerationJob.objects.get(id=ok.json()["id"])
    assert job.input_id == image_id
    assert job.params["image_fit"] == "fit" and job.params["image_key"] == GenerationInput.objects.get().key


def test_another_workspace_upload_is_404(api, workspace, client_for):
    other = WorkspaceFactory()
    stranger = client_for(MembershipFactory(workspace=other, role=Role.OWNER).user)
    foreign_id = upload(stranger, other, image_bytes()).json()["id"]
    response = create(api, workspace, image=foreign_id)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert upload(stranger, workspace, image_bytes()).status_code == 404  # not a member here
    assert not GenerationJob.objects.exists()


@pytest.mark.parametrize("fit", IMAGE_FITS)
def test_every_fit_gives_the_exact_resolution(fit):
    source = Image.open(io.BytesIO(image_bytes(size=(40, 30))))
    fitted = image_fit_to(source, width=32, height=48, fit=fit)
    assert fitted.size == (32, 48) and fitted.mode == "RGB"
    corner = fitted.getpixel((0, 0))
    if fit == "fit":  # letterboxed: black bars above and below
        assert corner == (0, 0, 0)
    else:  # stretched or cropped: the image reaches the corner
        assert corner != (0, 0, 0)


# --- the worker, end to end on the demo Wan 2.2 I2V-A14B -------------------------------------------------------


@pytest.fixture
def actor(workspace, owner):
    return workspace.memberships.get(user=owner)


def ready_lora(actor, tmp_path, name: str, seed: int):
    path = write_lora(tmp_path / f"{name}.safetensors", family="wan-demo", blocks=2, seed=seed, std=0.3)
    return ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name=name))


def first_frame(job: GenerationJob) -> np.ndarray:
    poster = requests.get(job_output_urls(job=job)["poster_url"], timeout=30).content
    return np.asarray(Image.open(io.BytesIO(poster)).convert("RGB")).astype(np.float32)


def run(actor, image_id: int, loras=(), **params) -> GenerationJob:
    job = services.generation_create(
        actor=actor,
        model=I2V,
        prompt="a cat",
        params={"seed": 1, "steps": 2, "image": image_id, **params},
        loras=[services.LoRARequest(lora_id=lora.id, weight=1.0, expert=expert) for lora, expert in loras],
    )
    worker.execute_job(str(job.id), worker_name="test@worker")
    job.refresh_from_db()
    return job


def test_worker_runs_the_i2v_demo_from_the_image_with_a_high_and_a_low_noise_lora(
    api, workspace, actor, tmp_path, monkeypatch
):
    # Left half blue, right half red, 40×30; fitted into 48×32 it is the pipeline's first frame. (The demo's random
    # VAE encodes any two images to nearly the same latents, so the first frame is checked where the pipeline
    # receives it rather than in the output.)
    image_id = upload(api, workspace, image_bytes(color=(230, 20, 20))).json()["id"]
    high, low = ready_lora(actor, tmp_path, "high", 1), ready_lora(actor, tmp_path, "low", 2)
    received = []
    prepare_latents = WanImageToVideoPipeline.prepare_latents

    def spy(self, image, *args, **kwargs):
        received.append(image.detach().clone())
        return prepare_latents(self, image, *args, **kwargs)

    monkeypatch.setattr(WanImageToVideoPipeline, "prepare_latents", spy)

    base = run(actor, image_id, width=48, height=32, image_fit="fill")
    assert base.status == JobStatus.SUCCEEDED, base.error
    assert base.output_key.endswith("output.mp4") and base.poster_key.endswith("poster.png")
    (first,) = received
    assert first.shape == (1, 3, 32, 48)
    rgb = (first[0].permute(1, 2, 0).numpy() + 1) * 127.5  # the pipeline's [-1, 1] back to 0–255
    assert np.allclose(rgb[16, 2], (20, 40, 220), atol=8) and np.allclose(rgb[16, 45], (230, 20, 20), atol=8)

    # Each expert's LoRA changes the video, and both together differently again: both experts ran with theirs.
    frames = {"base": first_frame(base)}
    stacks = {"high": [(high, "high")], "low": [(low, "low")], "both": [(high, "high"), (low, "low")]}
    for name, loras in stacks.items():
        with_loras = run(actor, image_id, loras=loras, width=48, height=32, image_fit="fill")
        assert with_loras.status == JobStatus.SUCCEEDED, with_loras.error
        frames[name] = first_frame(with_loras)
    assert list(with_loras.job_loras.values_list("expert", flat=True)) == ["high", "low"]
    names = list(frames)
    for index, name in enumerate(names):
        for other in names[index + 1 :]:
            assert np.abs(frames[name] - frames[other]).max() > 0, (name, other)

    retried = services.generation_retry(actor=actor, job=with_loras)
    assert retried.input_id == image_id and retried.params["image_key"] == with_loras.params["image_key"]


# --- which LoRAs fit which variant -------------------------------------------------------------------------------


def i2v_lora(actor, tmp_path, name: str = "i2v-only"):
    """A demo Wan LoRA that also adapts the patch embedding as I2V reads it: 36 channels (Conv3d, kernel 1×2×2)."""
    path = write_lora(tmp_path / f"{name}.safetensors", family="wan-demo", blocks=2, seed=7, std=0.3)
    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    generator = torch.Generator().manual_seed(7)
    tensors["transformer.patch_embedding.lora_A.weight"] = torch.randn(4, 36, 1, 2, 2, generator=generator).half()
    tensors["transformer.patch_embedding.lora_B.weight"] = torch.randn(24, 4, 1, 1, 1, generator=generator).half()
    save_file(tensors, str(path), metadata={"format": "pt"})
    return ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name=name))


def test_an_i2v_lora_fits_i2v_only_and_a_t2v_lora_fits_both(actor, tmp_path):
    t2v_lora, only_i2v = ready_lora(actor, tmp_path, "t2v", 3), i2v_lora(actor, tmp_path)
    assert only_i2v.status == "ready", only_i2v.error
    assert only_i2v.module_shapes["transformer"]["patch_embedding"] == [36, 24]
    assert lora_variants(only_i2v.module_shapes) == ("i2v",)
    assert lora_variants(t2v_lora.module_shapes) == ("t2v", "i2v")
    assert lora_wan_variants(family="flux-demo", module_shapes=t2v_lora.module_shapes) == []
    assert lora_fit_problem(only_i2v.module_shapes, model_get(I2V)) is None
    problem = lora_fit_problem(only_i2v.module_shapes, model_get(T2V))
    assert problem == "it is an image-to-video LoRA (patch_embedding): requires Wan 2.2 I2V-A14B (demo)"
    assert "requires Wan 2.2 I2V-A14B" in lora_fit_problem(only_i2v.module_shapes, model_get("wan22-t2v-a14b"))


def test_the_i2v_only_lora_is_refused_on_t2v_and_listed_as_such_in_the_picker(api, workspace, actor, tmp_path):
    only_i2v, t2v_lora = i2v_lora(actor, tmp_path), ready_lora(actor, tmp_path, "t2v", 3)
    lora_url = f"/api/v1/workspaces/{workspace.slug}/loras/"
    assert api.get(f"{lora_url}{only_i2v.id}/").json()["wan_variants"] == ["i2v"]
    assert api.get(f"{lora_url}{t2v_lora.id}/").json()["wan_variants"] == ["t2v", "i2v"]
    response = api.post(
        f"/api/v1/workspaces/{workspace.slug}/generations/",
        {"model": T2V, "prompt": "a cat", "loras": [{"lora_id": only_i2v.id}]},
        format="json",
    )
    assert response.status_code == 400 and "requires Wan 2.2 I2V-A14B (demo)" in response.json()["message"]
    picker = {choice.lora.id: choice.problem for choice in lora_choices(workspace=workspace, model=model_get(T2V))}
    assert "requires Wan 2.2 I2V-A14B (demo)" in picker[only_i2v.id]
    assert not any(choice.problem for choice in lora_choices(workspace=workspace, model=model_get(I2V)))


def test_both_directions_through_the_real_demo_pipelines(api, workspace, actor, tmp_path):
    """A T2V LoRA runs on the I2V demo (the worker test above), an I2V-only LoRA too — its patch-embedding layer
    really loads there, changing the video — while the T2V pipeline could not take that layer at all."""
    only_i2v = i2v_lora(actor, tmp_path)
    image_id = upload(api, workspace, image_bytes()).json()["id"]
    base = run(actor, image_id)
    job = run(actor, image_id, loras=[(only_i2v, "both")])
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert np.abs(first_frame(base) - first_frame(job)).max() > 0
    t2v_pipe = worker.PIPELINES.get(
        T2V, path=settings.LORASITE_MODELS_DIR / T2V, pipeline_class=model_get(T2V).pipeline_class
    )
    assert t2v_pipe.transformer.patch_embedding.in_channels == 16  # the 36-channel LoRA layer has nowhere to go


# --- the Generate page's form ------------------------------------------------------------------------------------


def generate_form(**overrides) -> dict:
    return {
        "model": I2V,
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "resolution": "32x32",
        "num_frames": "5",
        "fps": "8",
        "steps": "2",
        "guidance": "3.5",
        "guidance_2": "3.5",
        "seed": "1",
        "image_fit": "fit",
        **overrides,
    }


def test_the_generate_page_takes_the_image_for_i2v_only(client, api, workspace, owner):
    client.force_login(owner)
    page = f"/w/{workspace.slug}/generate/"
    assert "data-input-image" in client.get(page, {"model": I2V}).content.decode()
    assert "data-input-image" not in client.get(page, {"model": T2V}).content.decode()

    missing = client.post(page, generate_form())
    assert missing.status_code == 400 and "Required for this model." in missing.content.decode()
    image_id = upload(api, workspace, image_bytes()).json()["id"]
    queued = client.post(page, generate_form(image=str(image_id)))
    assert queued.status_code == 302
    job = GenerationJob.objects.get()
    assert (job.input_id, job.params["image_fit"]) == (image_id, "fit")
    job_page = client.get(f"/w/{workspace.slug}/jobs/{job.id}/").content.decode()
    assert "Input image · fit" in job_page


def test_ti2v_takes_an_image_optionally(api, workspace, actor, monkeypatch):
    """TI2V-5B (the single-expert demo, per-token timesteps): without an image a text-to-video job, with one the
    image path diffusers keeps in WanImageToVideoPipeline, over the same loaded modules."""
    image_id = upload(api, workspace, image_bytes(color=(230, 20, 20))).json()["id"]
    received = []
    prepare_latents = WanImageToVideoPipeline.prepare_latents

    def spy(self, image, *args, **kwargs):
        received.append((self.config.expand_timesteps, tuple(image.shape)))
        return prepare_latents(self, image, *args, **kwargs)

    monkeypatch.setattr(WanImageToVideoPipeline, "prepare_latents", spy)
    jobs = {}
    for name, params in {"text": {}, "image": {"image": image_id}}.items():
        job = services.generation_create(
            actor=actor, model=TI2V, prompt="a cat", params={"seed": 1, "steps": 2, **params}
        )
        worker.execute_job(str(job.id), worker_name="test@worker")
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED, job.error
        jobs[name] = job
    assert received == [(True, (1, 3, 32, 32))]  # only the job with an image took the image path
    assert jobs["image"].input_id == image_id and jobs["text"].input_id is None
    assert np.abs(first_frame(jobs["text"]) - first_frame(jobs["image"])).max() > 0


def test_a_recipe_from_an_i2v_job_keeps_its_image(api, workspace, actor):
    image_id = upload(api, workspace, image_bytes()).json()["id"]
    job = services.generation_create(
        actor=actor, model=I2V, prompt="a cat", params={"seed": 1, "image": image_id, "image_fit": "fit"}
    )
    GenerationJob.objects.filter(id=job.id).update(status=JobStatus.SUCCEEDED)
    job.refresh_from_db()
    recipe = recipe_services.recipe_from_job(actor=actor, job=job)
    assert (recipe.params["image"], recipe.params["image_fit"]) == (image_id, "fit")
    again = recipe_services.recipe_run(actor=actor, recipe=recipe)
    assert again.input_id == image_id and again.params["image_key"] == job.params["image_key"]
