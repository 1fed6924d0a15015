"""Applying a job's LoRA adapters to a shared pipeline, and returning it to the base model afterwards.

Each LoRA gets the adapter name `lora_<id>` and is loaded only into the expert(s) it targets: Wan 2.2 A14B
"high-noise" LoRAs into `pipe.transformer`, "low-noise" ones into `pipe.transformer_2` (diffusers'
`load_lora_weights(..., load_into_transformer_2=True)`), "both" into each.

What diffusers/PEFT do that this module relies on or works around:

* Activation sets, on each PEFT LoRA layer of both experts, the scale of every job adapter the layer holds,
  its active list, and its disable flag — what `pipe.set_adapters` + `pipe.enable_lora` do, minus their walk
  over every module and their `requires_grad` resets of every resident adapter (40 ms+ per job with a full
  cache; see `_activate`). A layer holding none of the job's adapters is disabled. High-only, low-only and
  "both" adapters are thereby active exactly where they were loaded.
* A disabled LoRA layer computes exactly its base layer, which is what lets residency="cache" keep adapters
  loaded between jobs without changing other jobs' outputs (`pipe.set_adapters([])` would raise KeyError
  in diffusers, so "nothing active" is the disable flag).
* PEFT's `delete_adapter` on a layer whose *active* adapter is deleted silently activates another loaded adapter
  in its place; harmless here because layers are disabled after every job and `apply()` always sets the
  active set explicitly.
* A failed `load_lora_weights` (corrupt file, shape mismatch) can leave some layers of the adapter injected;
  diffusers' own cleanup only covers layers where the adapter was active. The adapter is therefore deleted from
  every component by name after any failure.
* `load_lora_weights` falls back to `torch.load` (pickle) when a file is not valid safetensors; user-uploaded
  files must never be unpickled, so `use_safetensors=True` is always passed.
* `unload_lora_weights()` removes the LoRA wrapper layers themselves, restoring the exact base modules.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from peft.tuners.tuners_utils import BaseTunerLayer

from .pipelines import EXPERT_COMPONENTS, expert_modules

logger = logging.getLogger(__name__)

RESIDENCY_MODES = ("unload", "cache")
EXPERT_CHOICES = ("high", "low", "both")


def adapter_name(lora_id: int) -> str:
    return f"lora_{lora_id}"


@dataclass(frozen=True)
class AdapterSpec:
    lora_id: int
    display_name: str
    path: Path
    weight: float
    expert: str  # "high" | "low" | "both"; single-expert models only accept "high"

    @property
    def adapter_name(self) -> str:
        return adapter_name(self.lora_id)

    def describe(self) -> str:
        return f"'{self.display_name}' as {self.adapter_name}, weight {self.weight:g}, expert {self.expert}"


class LoRALoadError(RuntimeError):
    """A LoRA file could not be loaded into the model; nothing of it stays loaded."""


@dataclass(frozen=True)
class _Resident:
    path: Path
    experts: tuple[str, ...]
    nbytes: int


class AdapterManager:
    """Owns the LoRA state of one pipeline: `apply()` before a job, `reset()` after it, whatever its outcome.

    residency="unload": `reset()` unloads every adapter, so between jobs the pipeline is exactly the base model.
    residency="cache": `reset()` keeps up to `max_resident` most recently used adapters (and at most
    `max_resident_bytes` of their weights) loaded but inactive, so a later job using them skips the load.

    Keep one manager per pipeline for the life of the process: it is the only record of what is resident.
    """

    def __init__(
        self,
        pipe: DiffusionPipeline,
        *,
        residency: str = "unload",
        max_resident: int = 8,
        max_resident_bytes: int = 4 * 1024**3,
    ) -> None:
        if residency not in RESIDENCY_MODES:
            raise ValueError(f"residency must be one of {RESIDENCY_MODES}, not {residency!r}")
        self.pipe = pipe
        self.residency = residency
        self.max_resident = max_resident
        self.max_resident_bytes = max_resident_bytes
        self._experts = expert_modules(pipe)
        # Least recently used first.
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self._active: list[str] = []
        self._layers: list[BaseTunerLayer] | None = None
        # Adapters loaded by anyone else are unknown to this manager (and would clash with its names).
        pipe.unload_lora_weights()

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active)

    @property
    def resident_adapters(self) -> list[str]:
        return list(self._resident)

    def apply(self, specs: list[AdapterSpec]) -> None:
        """Load (or reuse) every adapter and activate them with their weights.

        On any failure the pipeline is reset before the error propagates, so no adapter is left active.
        """
        if self._active:
            raise RuntimeError("apply() called while a previous job's adapters are active; reset() after every job")
        self._validate(specs)
        try:
            for spec in specs:
                self._ensure_loaded(spec)
            if specs:
                self._activate({spec.adapter_name: spec.weight for spec in specs})
                self._active = [spec.adapter_name for spec in specs]
        except BaseException:
            self.reset()
            raise
        for spec in specs:
            logger.info("Active LoRA %s", spec.describe())

    def reset(self) -> None:
        """Leave no adapter active; call after every job (success, failure, cancellation, time limit)."""
        self._active = []
        if self.residency == "cache" and self._resident:
            for layer in self._tuner_layers():
                layer._disable_adapters = True
            self._evict_beyond_limits()
        else:
            self._resident.clear()
        if not self._resident:
            # Also removes the wrapper layers and any remains of a failed load: exactly the base model again.
            self.pipe.unload_lora_weights()
            self._layers = None

    def _tuner_layers(self) -> list[BaseTunerLayer]:
        """The PEFT LoRA layers of every expert, found once after each load, delete or unload."""
        if self._layers is None:
            self._layers = [m for expert in self._experts.values() for m in expert.modules() if isinstance(m, BaseTunerLayer)]
        return self._layers

    def _activate(self, weights: dict[str, float]) -> None:
        """Make exactly these adapters active, with these weights, in every layer that holds them.

        What `pipe.set_adapters` + `pipe.enable_lora` do, without their cost: both walk every module of
        both transformers and reset `requires_grad` of every resident adapter in every layer, which made
        a reused adapter cost 40 ms+ with the cache full (bench/adapters.py). Setting the scale, the
        active list and the disable flag directly touches only the LoRA layers and is flat in the number
        of resident adapters. These are PEFT's own layer attributes (peft is pinned; the residency tests
        compare this against freshly loaded pipelines bitwise).
        """
        for layer in self._tuner_layers():
            present = [name for name in weights if name in layer.lora_A]
            if present:
                for name in present:
                    layer.set_scale(name, weights[name])
                layer._active_adapter = present
            layer._disable_adapters = not present

    def _validate(self, specs: list[AdapterSpec]) -> None:
        seen: set[int] = set()
        for spec in specs:
            if spec.lora_id in seen:
                raise ValueError(f"LoRA {spec.describe()} is listed twice")
            seen.add(spec.lora_id)
            if spec.expert not in EXPERT_CHOICES:
                raise ValueError(f"LoRA {spec.describe()}: expert must be one of {EXPERT_CHOICES}")
            missing = [expert for expert in self._targets(spec.expert) if expert not in self._experts]
            if missing:
                raise ValueError(f"LoRA {spec.describe()} targets the {missing[0]} expert, which this model lacks")

    @staticmethod
    def _targets(expert: str) -> tuple[str, ...]:
        return ("high", "low") if expert == "both" else (expert,)

    def _ensure_loaded(self, spec: AdapterSpec) -> None:
        name = spec.adapter_name
        targets = self._targets(spec.expert)
        resident = self._resident.get(name)
        if resident is not None and resident.path == spec.path and resident.experts == targets:
            self._resident.move_to_end(name)
            logger.info("Reusing resident LoRA %s", spec.describe())
            return
        if resident is not None:
            # Same LoRA id, but another file version or other experts than when it was loaded.
            self._delete(name)
        for expert in targets:
            self._load_into(spec, expert)
        nbytes = sum(_adapter_nbytes(self._experts[expert], name) for expert in targets)
        self._resident[name] = _Resident(path=spec.path, experts=targets, nbytes=nbytes)
        logger.info("Loaded LoRA %s (%d bytes)", spec.describe(), nbytes)

    def _load_into(self, spec: AdapterSpec, expert: str) -> None:
        name = spec.adapter_name
        module = self._experts[expert]
        self._layers = None  # loading wraps more layers
        try:
            if expert == "low":
                self.pipe.load_lora_weights(
                    str(spec.path), adapter_name=name, use_safetensors=True, load_into_transformer_2=True
                )
            else:
                self.pipe.load_lora_weights(str(spec.path), adapter_name=name, use_safetensors=True)
            # diffusers only warns when no key of the file matches the transformer, and loads nothing.
            if name not in getattr(module, "peft_config", {}):
                raise ValueError(f"the file has no LoRA weights for {EXPERT_COMPONENTS[expert]}")
        except Exception as error:
            self._delete(name)
            raise LoRALoadError(
                f"LoRA '{spec.display_name}' ({name}) could not be loaded into the {self._expert_label(expert)}: "
                f"{_compact(error)}"
            ) from error

    def _expert_label(self, expert: str) -> str:
        if len(self._experts) == 1:
            return "transformer"
        return {"high": "high-noise expert", "low": "low-noise expert"}[expert]

    def _delete(self, name: str) -> None:
        self.pipe.delete_adapters(name)
        self._resident.pop(name, None)
        self._layers = None

    def _evict_beyond_limits(self) -> None:
        while self._resident and (
            len(self._resident) > self.max_resident
            or sum(resident.nbytes for resident in self._resident.values()) > self.max_resident_bytes
        ):
            name = next(iter(self._resident))
            self._delete(name)
            logger.info("Evicted resident LoRA %s", name)


def _compact(error: BaseException) -> str:
    # PyTorch's state-dict errors span many lines; job records and logs want one bounded line.
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _adapter_nbytes(module: torch.nn.Module, name: str) -> int:
    # PEFT parameter names carry the adapter name as a path segment: "...to_q.lora_A.lora_12.weight".
    marker = f".{name}."
    return sum(p.numel() * p.element_size() for key, p in module.named_parameters() if marker in key)
