"""Loading base-model pipelines in the placement their memory plan chose, keeping the ones that fit the device,
and naming their denoising experts."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FluxPipeline, WanImageToVideoPipeline, WanPipeline
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

from generation.runtime.memory_plan import CPU_PLACEMENT, Plan, gib

logger = logging.getLogger(__name__)

# Pipeline classes a base model may name. An explicit allow-list rather than an import path taken from the
# database, so a row in the model table can never make the worker import arbitrary code.
PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "WanPipeline": WanPipeline,
    "WanImageToVideoPipeline": WanImageToVideoPipeline,
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


TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def device_memory_bytes(override: int = 0) -> int | None:
    """What the planner plans for: `override` (LORASITE_GPU_MEMORY_BYTES) when set, else the CUDA device's total
    memory, else None (no accelerator: nothing to place, everything stays in host memory)."""
    if override:
        return override
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1]
    return None


def runtime_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory on GPUs and is what Wan and Flux are trained in; CPUs (tests, demo) stay in fp32, where
    # bf16 matmuls are slow and results less reproducible.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# What `storage_dtype: fp8` stores the transformers' weights in (diffusers' layerwise casting upcasts per layer).
FP8_STORAGE_DTYPE = torch.float8_e4m3fn


def fp8_compute_dtype() -> torch.dtype:
    """The dtype fp8-stored layers compute in on this machine (and the one LoRA layers on them must hold)."""
    return runtime_dtype(runtime_device())


def stored_in_fp8(module: torch.nn.Module) -> bool:
    """Whether any of the module's parameters is stored in float8 (`storage_dtype: fp8`)."""
    return any(parameter.dtype == FP8_STORAGE_DTYPE for parameter in module.parameters())


def pipeline_dtypes(plan: Plan | None, device: torch.device) -> torch.dtype | dict[str, torch.dtype]:
    """`from_pretrained`'s dtype: the plan's per-component dtypes on a GPU (Wan VAE fp32, the rest bf16); fp32 for
    everything on a CPU, like runtime_dtype."""
    if plan is None or device.type != "cuda":
        return runtime_dtype(device)
    return {"default": torch.bfloat16, **{name: TORCH_DTYPES[dtype] for name, dtype in plan.torch_dtypes.items()}}


def weight_nbytes(pipe: DiffusionPipeline) -> int:
    """Bytes of every parameter and buffer of the pipeline's modules, as stored (fp8 under layerwise casting)."""
    return sum(
        tensor.numel() * tensor.element_size()
        for module in pipe.components.values()
        if isinstance(module, torch.nn.Module)
        for tensor in (*module.parameters(), *module.buffers())
    )


@dataclass
class _Loaded:
    pipe: DiffusionPipeline
    plan: Plan | None
    nbytes: int  # weights as loaded, measured

    @property
    def resident_device_bytes(self) -> int:
        return self.plan.resident_device_bytes if self.plan is not None else 0


class PipelineRegistry:
    """Keeps the base models' pipelines loaded across jobs, as many as fit the device.

    Loading a real model takes tens of seconds and many GiB, so a pipeline stays loaded after its first job; jobs
    then differ only by the LoRA adapters applied to it. Before a job runs on a model, the least recently used other
    pipelines are evicted until the device holds what the kept ones keep on it between jobs (their weights when
    placed on the GPU, nothing when offloaded) plus this model's estimated peak. A pipeline loaded without a plan
    (tests, tools) is never accounted for and never evicts anything.

    `on_evict(key)` is called after a pipeline is dropped, evicted or not, so whoever keeps per-pipeline state (the
    worker's AdapterManagers) can forget it.
    """

    def __init__(self, *, on_evict: Callable[[str], None] | None = None) -> None:
        self._pipelines: OrderedDict[str, _Loaded] = OrderedDict()  # least recently used first
        self._on_evict = on_evict
        # Celery runs tasks one at a time per process, but a thread pool would otherwise load a model twice.
        self._lock = threading.RLock()

    def get(self, key: str, *, path: Path, pipeline_class: str, plan: Plan | None = None) -> DiffusionPipeline:
        with self._lock:
            loaded = self._pipelines.get(key)
            if plan is not None:
                self._make_room(key, plan)
            if loaded is None:
                loaded = self._load(path, pipeline_class, plan)
                self._pipelines[key] = loaded
            self._pipelines.move_to_end(key)
            return loaded.pipe

    def drop(self, key: str) -> int:
        """Forget a pipeline (a no-op for one not loaded) and free its memory; the bytes of weights released."""
        with self._lock:
            loaded = self._pipelines.pop(key, None)
            if loaded is None:
                return 0
            placement = loaded.plan.placement if loaded.plan is not None else "unplanned"
            nbytes = loaded.nbytes
            del loaded
            gc.collect()  # pipelines hold reference cycles (hooks, PEFT layers): free them now, not eventually
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                logger.info(
                    "Dropped pipeline %s (%s): %s of weights freed; %s still allocated on the device",
                    key,
                    placement,
                    gib(nbytes),
                    gib(torch.cuda.memory_allocated()),
                )
            else:
                logger.info("Dropped pipeline %s (%s): %s of weights freed", key, placement, gib(nbytes))
        if self._on_evict is not None:
            self._on_evict(key)
        return nbytes

    def loaded_keys(self) -> list[str]:
        """Least recently used first."""
        with self._lock:
            return list(self._pipelines)

    def _make_room(self, key: str, plan: Plan) -> None:
        if plan.device_bytes is None:
            return
        while True:
            others = [other for other in self._pipelines if other != key]
            kept = sum(self._pipelines[other].resident_device_bytes for other in others)
            if not others or kept + plan.peak_bytes <= plan.device_bytes:
                return
            victim = others[0]
            logger.info(
                "Evicting pipeline %s: %s needs %s at peak, %s is held by other pipelines, device has %s",
                victim,
                key,
                gib(plan.peak_bytes),
                gib(kept),
                gib(plan.device_bytes),
            )
            self.drop(victim)

    @staticmethod
    def _load(path: Path, pipeline_class: str, plan: Plan | None) -> _Loaded:
        try:
            cls = PIPELINE_CLASSES[pipeline_class]
        except KeyError:
            raise ValueError(
                f"Unsupported pipeline class {pipeline_class!r}; expected one of {sorted(PIPELINE_CLASSES)}"
            ) from None
        device = runtime_device()
        placement = plan.placement if plan is not None else CPU_PLACEMENT
        if placement == "sequential" and device.type != "cuda":
            # accelerate's leaf-level offload to the same CPU it offloads from fails inside accelerate.
            raise ValueError("The sequential placement needs a CUDA device.")
        dtype = pipeline_dtypes(plan, device)
        logger.info("Loading %s from %s on %s (%s, placement %s)", pipeline_class, path, device, dtype, placement)
        # local_files_only: base models are provisioned on disk; a typo must fail, not reach for the Hub.
        pipe = cls.from_pretrained(path, dtype=dtype, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        if plan is not None and plan.storage_dtype == "fp8":
            _store_transformers_in_fp8(pipe, compute_dtype=fp8_compute_dtype())
        nbytes = weight_nbytes(pipe)  # before offload hooks can move weights to the meta device
        _apply_placement(pipe, placement, device)
        return _Loaded(pipe=pipe, plan=plan, nbytes=nbytes)


def _store_transformers_in_fp8(pipe: DiffusionPipeline, *, compute_dtype: torch.dtype) -> None:
    for module in expert_modules(pipe).values():
        # Passing the pattern replaces diffusers' default, so repeat it and the model's own, then leave out the LoRA
        # layers: they are added later and must compute in full precision (adapters/precision.py keeps them so).
        skip = (*DEFAULT_SKIP_MODULES_PATTERN, *(module._skip_layerwise_casting_patterns or ()), "lora")
        module.enable_layerwise_casting(
            storage_dtype=FP8_STORAGE_DTYPE, compute_dtype=compute_dtype, skip_modules_pattern=skip
        )


def _apply_placement(pipe: DiffusionPipeline, placement: str, device: torch.device) -> None:
    if placement in ("gpu", CPU_PLACEMENT):
        pipe.to(device)
    elif placement == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif placement == "group_offload":
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=device.type == "cuda",
        )
    elif placement == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        raise ValueError(f"Unknown placement {placement!r}")
