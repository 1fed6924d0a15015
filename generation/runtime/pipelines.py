"""Loading base-model pipelines once per worker process, and naming their denoising experts."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FluxPipeline, WanPipeline

logger = logging.getLogger(__name__)

# Pipeline classes a base model may name. An explicit allow-list rather than an import path taken from the
# database, so a row in the model table can never make the worker import arbitrary code.
PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "WanPipeline": WanPipeline,
    "FluxPipeline": FluxPipeline,
}

# Which pipeline component holds each expert. Wan 2.2 A14B runs `transformer` while the timestep is at or above
# its boundary (high noise) and `transformer_2` below it (low noise); single-expert models only have "high".
EXPERT_COMPONENTS: dict[str, str] = {"high": "transformer", "low": "transformer_2"}


def expert_modules(pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """{"high": pipe.transformer, "low": pipe.transformer_2} for two-expert models, {"high": ...} otherwise."""
    experts = {}
    for expert, component in EXPERT_COMPONENTS.items():
        module = getattr(pipe, component, None)
        if module is not None:
            experts[expert] = module
    return experts


def runtime_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def runtime_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory on GPUs and is what Wan and Flux are trained in; CPUs (tests, demo) stay in fp32, where
    # bf16 matmuls are slow and results less reproducible.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class PipelineRegistry:
    """Keeps each base model's pipeline loaded for the life of the worker process.

    Loading a real model takes tens of seconds and many GiB, so it happens on first use and never again; jobs
    then differ only by the LoRA adapters applied to the shared pipeline.
    """

    def __init__(self) -> None:
        self._pipelines: dict[str, DiffusionPipeline] = {}
        # Celery runs tasks one at a time per process, but a thread pool would otherwise load a model twice.
        self._lock = threading.Lock()

    def get(self, key: str, *, path: Path, pipeline_class: str) -> DiffusionPipeline:
        with self._lock:
            pipe = self._pipelines.get(key)
            if pipe is None:
                pipe = self._load(path, pipeline_class)
                self._pipelines[key] = pipe
            return pipe

    def loaded_keys(self) -> list[str]:
        with self._lock:
            return list(self._pipelines)

    @staticmethod
    def _load(path: Path, pipeline_class: str) -> DiffusionPipeline:
        try:
            cls = PIPELINE_CLASSES[pipeline_class]
        except KeyError:
            raise ValueError(
                f"Unsupported pipeline class {pipeline_class!r}; expected one of {sorted(PIPELINE_CLASSES)}"
            ) from None
        device = runtime_device()
        dtype = runtime_dtype(device)
        logger.info("Loading %s from %s on %s (%s)", pipeline_class, path, device, dtype)
        # local_files_only: base models are provisioned on disk; a typo must fail, not reach for the Hub.
        pipe = cls.from_pretrained(path, dtype=dtype, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)
