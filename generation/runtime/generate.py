"""Running one generation on a loaded pipeline, with progress reporting and cooperative cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline, WanImageToVideoPipeline, WanPipeline
from PIL import Image


class GenerationCancelled(Exception):
    """should_cancel() returned True; the run stopped between two denoising steps."""


def run_pipeline(
    pipe: DiffusionPipeline,
    *,
    kind: Literal["video", "image"],
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    num_frames: int,
    steps: int,
    guidance: float,
    guidance_2: float | None,
    seed: int,
    on_step: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
    image: Image.Image | None = None,
) -> np.ndarray:
    """Generate and return float32 RGB in [0, 1]: (frames, height, width, 3) for video, (height, width, 3) for image.

    `guidance_2` is the low-noise expert's guidance and only used by two-expert (Wan 2.2 A14B) pipelines; it
    defaults to `guidance` there. `num_frames` is ignored for images. For Flux, `guidance` is the distilled
    guidance scale and `negative_prompt` has no effect (it needs true CFG, which this runtime does not enable).
    `on_step(step, total)` is called after every denoising step; when `should_cancel()` is then true the run
    stops with `GenerationCancelled` instead of finishing (and instead of spending a VAE decode on a result
    nobody wants).

    `image` is the first frame, already at width×height (generation/inputs.py): required by image-to-video
    pipelines, optional for TI2V-5B, refused elsewhere, as diffusers refuses inputs a pipeline does not use.
    """
    if kind not in ("video", "image"):
        raise ValueError(f"kind must be 'video' or 'image', not {kind!r}")
    if isinstance(pipe, WanImageToVideoPipeline) and image is None:
        raise ValueError(f"{type(pipe).__name__} needs an input image")
    loaded = pipe
    if image is not None:
        pipe = _with_image_path(pipe)
    if should_cancel():
        raise GenerationCancelled("cancelled before the first step")

    def on_step_end(pipeline: DiffusionPipeline, step_index: int, timestep: Any, tensors: dict) -> dict:
        on_step(step_index + 1, steps)
        # Raising here rather than setting `pipe._interrupt`: diffusers' interrupt flag skips the remaining
        # steps but still decodes the latents. Every __call__ re-initialises the pipeline's per-run state
        # (`_interrupt`, timesteps, scheduler step index), so the pipeline stays reusable after the exception.
        if should_cancel():
            raise GenerationCancelled(f"cancelled after step {step_index + 1} of {steps}")
        return {}

    # A CPU generator draws the same initial noise whatever device the pipeline runs on, so a seed reproduces
    # across GPU models and in CPU tests.
    common = {
        "prompt": prompt,
        "width": width,
        "height": height,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "generator": torch.Generator(device="cpu").manual_seed(seed),
        "output_type": "np",
        "callback_on_step_end": on_step_end,
    }
    try:
        if kind == "video":
            two_experts = getattr(pipe, "transformer_2", None) is not None and pipe.config.boundary_ratio is not None
            extra = {"guidance_scale_2": guidance_2} if two_experts else {}
            if image is not None:
                extra["image"] = image
            output = pipe(negative_prompt=negative_prompt, num_frames=num_frames, **common, **extra)
            return output.frames[0]
        return pipe(**common).images[0]
    except GenerationCancelled:
        # The exception skipped the pipeline's own final cleanup; with CPU offloading enabled this is what
        # moves the last-used model back off the GPU.
        loaded.maybe_free_model_hooks()  # the loaded pipeline holds the offload hooks, not an image-path view
        raise


def _with_image_path(pipe: DiffusionPipeline) -> WanImageToVideoPipeline:
    """The pipeline that runs `pipe` from an image: itself for I2V; for TI2V-5B (a WanPipeline with per-token
    timesteps, `expand_timesteps`) a WanImageToVideoPipeline over the same modules — where diffusers keeps TI2V's
    image path — so the LoRAs applied and the placement chosen hold. Anything else refuses the image."""
    if isinstance(pipe, WanImageToVideoPipeline):
        return pipe
    if isinstance(pipe, WanPipeline) and pipe.config.get("expand_timesteps") and pipe.transformer_2 is None:
        view = WanImageToVideoPipeline(
            tokenizer=pipe.tokenizer,
            text_encoder=pipe.text_encoder,
            vae=pipe.vae,
            scheduler=pipe.scheduler,
            transformer=pipe.transformer,
            expand_timesteps=True,
        )
        view.set_progress_bar_config(disable=True)
        return view
    raise ValueError(f"{type(pipe).__name__} does not take an input image")
