"""The demo Wan pipelines behave like the real model where jobs can tell: a W×H job gives W×H frames, because the
demo VAE compresses 8× spatially like the real Wan VAE (AutoencoderKLWan's default `scale_factor_spatial`)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import inspect  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKLWan, WanPipeline  # noqa: E402

from generation.model_registry import model_registry  # noqa: E402
from generation.runtime.demo_models import DEMO_MANIFEST  # noqa: E402
from generation.runtime.generate import run_pipeline  # noqa: E402

# The default of AutoencoderKLWan's config, which the real Wan 2.1 VAE ships with.
REAL_WAN_SPATIAL_FACTOR = inspect.signature(AutoencoderKLWan.__init__).parameters["scale_factor_spatial"].default


@pytest.mark.parametrize("key", ["wan22-a14b-demo", "wan-ti2v-demo"])
def test_a_job_at_each_demo_resolution_gives_frames_of_that_size(demo_models: dict[str, Path], key: str) -> None:
    folder = demo_models[key]
    assert json.loads((folder / DEMO_MANIFEST).read_text())["pipeline_class"] == "WanPipeline"
    pipe = WanPipeline.from_pretrained(folder)
    assert pipe.vae_scale_factor_spatial == REAL_WAN_SPATIAL_FACTOR == 8
    # The VAE really compresses by that factor (not only its config): 32×32 pixels -> 4×4 latents and back.
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, 1, 32, 32)).latent_dist.mode()
        assert latents.shape[-2:] == (4, 4)
        assert pipe.vae.decode(latents).sample.shape[-2:] == (32, 32)
    for width, height in model_registry()[key].capabilities.resolutions:
        frames = run_pipeline(
            pipe,
            kind="video",
            prompt="a fox",
            negative_prompt="",
            width=width,
            height=height,
            num_frames=5,
            steps=1,
            guidance=4.0,
            guidance_2=3.0 if pipe.transformer_2 is not None else None,
            seed=0,
            on_step=lambda step, total: None,
            should_cancel=lambda: False,
        )
        assert frames.shape == (5, height, width, 3)
