"""Applying a job's LoRA adapters to a shared pipeline, and returning it to the base model afterwards.

Each LoRA gets the adapter name `lora_<id>`. Its expert choice routes it: Wan 2.2 A14B "high-noise" LoRAs load
with the pipeline's default (`pipe.transformer`, plus any other component the file has keys for, such as a FLUX
LoRA's `lora_te1_` text-encoder keys), "low-noise" ones into `pipe.transformer_2` (diffusers'
`load_lora_weights(..., load_into_transformer_2=True)`), "both" into each.

Everything below acts on every LoRA-loadable component of the pipeline (`lora_components`), not only the experts.

What diffusers/PEFT do that this module relies on or works around:

* Activation sets, on each PEFT LoRA layer, the scale of every job adapter the layer holds, its active list, and
  its disable flag — what `pipe.set_adapters` + `pipe.enable_lora` do, minus their walk over every module and
  their `requires_grad` resets of every resident adapter (40 ms+ per job with a full cache; see `_activate`).
  A layer holding none of the job's adapters is disabled. The scale is per component, as `set_adapters` takes it
  (`adapter_weights=[{"transformer": 1.0, "transformer_2": 0.5}]`): a "both" LoRA with a `weight_low` scales its
  copy in `transformer_2` by that weight (tests pin this against `set_adapters`).
* apply_mode="fused" then merges the active adapters into the base weights (`fusing.FusedWeights`); a merged
  layer must stay *enabled*: PEFT's forward on a disabled merged layer calls `unmerge()`, which subtracts.
* A disabled, unmerged LoRA layer computes exactly its base layer, which is what lets residency="cache" keep
  adapters loaded between jobs without changing other jobs' outputs (`pipe.set_adapters([])` would raise
  KeyError in diffusers, so "nothing active" is the disable flag).
* PEFT's `delete_adapter` on a layer whose *active* adapter is deleted silently activates another loaded adapter
  in its place; harmless here because unmerged layers are disabled after every job and `apply()` always sets
  the active set explicitly.
* A failed `load_lora_weights` (corrupt file, shape mismatch) can leave some layers of the adapter injected;
  diffusers' own cleanup only covers layers where the adapter was active. The adapter is therefore deleted from
  every component by name after any failure.
* Files are read with `use_safetensors=True`: diffusers otherwise falls back to `torch.load` (pickle), and
  user-uploaded files must never be unpickled. The manager reads a file's bytes once, checks them against the
  spec's SHA-256 (`LoRAChecksumError` on a mismatch: bit rot in a cache that only fingerprints size and mtime) and
  parses those same bytes; only a file carrying diffusers adapter metadata is then loaded by path (see below),
  a second read that the check does not cover.
* On a model stored in fp8 (`storage_dtype: fp8`) PEFT creates LoRA layers in float8; each load converts them to
  the compute dtype with the file's values (`precision`), and LoRAs are applied unfused there (never merged into
  float8 weights).
* apply_mode="fused" stays within `fused_backup_bytes` of pristine backups: a job whose merge would need more is
  applied unfused (`ApplyStats.unfused_reason`).
* `pipe.lora_state_dict(path)` is the parse-and-convert step of `load_lora_weights`; its result, kept in the
  host tier, is what `load_lora_weights(state_dict)` loads without the file. A state dict passed in memory loses
  the file's diffusers adapter metadata (`lora_adapter_metadata`: alpha, rank patterns), so such files are not
  tiered and always load from the file.
* With residency="cache" full, a LoRA that has the same layout as the adapter the cache would evict next takes
  over that adapter's PEFT modules (`slots`: a `copy_` and a rename) instead of a new PEFT injection.
* `unload_lora_weights()` removes the LoRA wrapper layers themselves, restoring the exact base modules.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load as load_safetensors_bytes

from ..lora_keys import with_component_prefix
from ..pipelines import EXPERT_COMPONENTS, expert_modules, fp8_compute_dtype, stored_in_fp8
from .fusing import FusedWeights, MergeKey
from .host_tier import HostTier, StateDict
from .precision import to_compute_dtype
from .slots import recycle, slot_plan

logger = logging.getLogger(__name__)

RESIDENCY_MODES = ("unload", "cache")
APPLY_MODES = ("fused", "unfused")
EXPERT_CHOICES = ("high", "low", "both")
DEFAULT_HOST_TIER_BYTES = 8 * 1024**3
DEFAULT_FUSED_BACKUP_BYTES = 64 * 1024**3
# ApplyStats.unfused_reason when apply_mode="fused" applied a job unfused.
UNFUSED_FP8 = "fp8 storage"
UNFUSED_BACKUP_BOUND = "fused backup bound"


def adapter_name(lora_id: int) -> str:
    return f"lora_{lora_id}"


def lora_components(pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """Every component of `pipe` that `load_lora_weights` can load into: {"transformer": ..., "text_encoder": ...}.

    `_lora_loadable_modules` is diffusers' own per-pipeline list (what its get_list_adapters, delete_adapters and
    unload_lora_weights iterate); diffusers has no public accessor for it (tests pin it against get_list_adapters).
    """
    names = getattr(pipe, "_lora_loadable_modules", None)
    if names is None:
        raise TypeError(f"{type(pipe).__name__} cannot load LoRA adapters")
    return {name: module for name in names if isinstance(module := getattr(pipe, name, None), torch.nn.Module)}


@dataclass(frozen=True)
class AdapterSpec:
    lora_id: int
    display_name: str
    path: Path
    weight: float
    expert: str  # "high" | "low" | "both"; single-expert models only accept "high"
    sha256: str = ""  # when set, the file's bytes are checked against it whenever they are read
    weight_low: float | None = None  # expert "both": the low-noise expert's own weight (`weight` is then high's)

    @property
    def adapter_name(self) -> str:
        return adapter_name(self.lora_id)

    def component_weights(self, components: list[str]) -> dict[str, float]:
        """This adapter's scale in each component, as `pipe.set_adapters` takes per-component weights: the low-noise
        expert (`transformer_2`) gets `weight_low` when there is one, every other component `weight`."""
        low = EXPERT_COMPONENTS["low"]
        return {
            name: self.weight_low if name == low and self.weight_low is not None else self.weight for name in components
        }

    def describe(self) -> str:
        if self.weight_low is None:
            weight = f"weight {self.weight:g}"
        else:
            weight = f"weight {self.weight:g} (high) / {self.weight_low:g} (low)"
        return f"'{self.display_name}' as {self.adapter_name}, {weight}, expert {self.expert}"


class LoRALoadError(RuntimeError):
    """A LoRA file could not be loaded into the model; nothing of it stays loaded."""


class LoRAChecksumError(LoRALoadError):
    """The bytes read from a LoRA's file do not have its SHA-256: the file rotted or was replaced on disk."""

    def __init__(self, spec: AdapterSpec, actual: str) -> None:
        super().__init__(
            f"LoRA '{spec.display_name}' ({spec.adapter_name}): {spec.path} has sha256 {actual}, expected {spec.sha256}"
        )
        self.spec = spec


@dataclass(frozen=True)
class ApplyStats:
    """What the last `apply()` did, for logs and benchmarks.

    sources: adapter name -> "resident" (already on the device), "host_tier" (loaded from host RAM, no file read)
    or "file" (parsed and converted from its file). recycled: the adapters among those that were copied into the
    modules of the adapter the cache would have evicted (`slots`) rather than injected anew. merge: "kept"
    (identical set and weights as the job before: merged weights reused), "merged", "unfused" or "none" (no
    LoRA). unfused_reason: why apply_mode="fused" ran the job "unfused" (UNFUSED_FP8: the model is stored in
    float8; UNFUSED_BACKUP_BOUND: merging would take the pristine backup past `fused_backup_bytes`), else "".
    Seconds are wall time of each phase.
    """

    sources: dict[str, str] = field(default_factory=dict)
    recycled: tuple[str, ...] = ()
    merge: str = "none"
    merged_layers: int = 0
    unfused_reason: str = ""
    load_seconds: float = 0.0
    merge_seconds: float = 0.0


@dataclass(frozen=True)
class _Resident:
    path: Path
    experts: tuple[str, ...]
    nbytes: int


class AdapterManager:
    """Owns the LoRA state of one pipeline: `apply()` before a job, `reset()` after it, whatever its outcome.

    residency="cache" (default): `reset()` keeps up to `max_resident` most recently used adapters (and at most
    `max_resident_bytes` of their weights) loaded but inactive, so a later job using them skips the load.
    residency="unload": `reset()` unloads every adapter, so between jobs the pipeline is exactly the base model.

    apply_mode="fused" (default): the job's adapters are merged into the base weights before inference (no
    per-step LoRA cost) and the pristine weights are copied back by `reset()`; `reset(keep_merged=True)`, for a
    job that succeeded, leaves them merged so that an identical next job (same adapters, files, weights,
    experts) skips both the restore and the merge, while any other next job restores first.
    apply_mode="unfused": PEFT computes the LoRA branches at every step.

    host_tier_bytes: converted LoRA state dicts kept in host RAM (pinned on CUDA), so a LoRA evicted from the
    device reloads without reading its file again; 0 disables the tier.

    fused_backup_bytes: the bound on host memory for pristine copies of merged-into base weights (`fusing`); a job
    needing more runs unfused. A model stored in fp8 always runs its LoRAs unfused.

    Keep one manager per pipeline for the life of the process: it is the only record of what is resident.
    """

    def __init__(
        self,
        pipe: DiffusionPipeline,
        *,
        residency: str = "cache",
        max_resident: int = 8,
        max_resident_bytes: int = 4 * 1024**3,
        apply_mode: str = "fused",
        host_tier_bytes: int = DEFAULT_HOST_TIER_BYTES,
        fused_backup_bytes: int = DEFAULT_FUSED_BACKUP_BYTES,
    ) -> None:
        if residency not in RESIDENCY_MODES:
            raise ValueError(f"residency must be one of {RESIDENCY_MODES}, not {residency!r}")
        if apply_mode not in APPLY_MODES:
            raise ValueError(f"apply_mode must be one of {APPLY_MODES}, not {apply_mode!r}")
        self.pipe = pipe
        self.residency = residency
        self.max_resident = max_resident
        self.max_resident_bytes = max_resident_bytes
        self.apply_mode = apply_mode
        self._experts = expert_modules(pipe)
        self._components = lora_components(pipe)
        on_cuda = any(p.is_cuda for module in self._components.values() for p in module.parameters())
        self.host_tier = HostTier(max_bytes=host_tier_bytes, pin_memory=on_cuda)
        self._fused = FusedWeights(pin_memory=on_cuda, max_backup_bytes=fused_backup_bytes)
        self._fp8 = any(stored_in_fp8(module) for module in self._experts.values())
        if self._fp8 and apply_mode == "fused":
            logger.info(
                "The transformers are stored in float8: LoRAs will be applied unfused (a merge would round "
                "their deltas to float8)"
            )
        # Least recently used first.
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self._active: list[str] = []
        # component name -> {module path: PEFT LoRA layer}; found again after each load, delete or unload.
        self._layers: dict[str, dict[str, BaseTunerLayer]] | None = None
        self.last_apply_stats = ApplyStats()
        self._take_over()

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active)

    @property
    def resident_adapters(self) -> list[str]:
        return list(self._resident)

    def warm(self, *, path: Path, sha256: str = "") -> bool:
        """Read and convert a LoRA file into the host tier without loading it onto the device (a prefetch between
        jobs), so that the first job using it copies it from host memory; True when the tier keeps it (it fits, and
        the file carries no adapter metadata that only loading the file applies)."""
        if self.host_tier.get(path) is None:
            self._read(
                AdapterSpec(lora_id=0, display_name=path.name, path=path, weight=1.0, expert="high", sha256=sha256)
            )
        return self.host_tier.get(path) is not None

    @property
    def resident_files(self) -> dict[str, Path]:
        """Adapter name -> the file it was loaded from, least recently used first (the worker's heartbeat)."""
        return {name: resident.path for name, resident in list(self._resident.items())}

    @property
    def merged_adapters(self) -> list[str]:
        """Adapters whose deltas are in the base weights right now (kept after `reset(keep_merged=True)`)."""
        return list(self._fused.names)

    @property
    def pristine_backup_bytes(self) -> int:
        """Host bytes holding the pristine base weights of every layer ever merged into."""
        return self._fused.backup_bytes

    def apply(self, specs: list[AdapterSpec]) -> None:
        """Load (or reuse) every adapter and activate them with their weights (merged, with apply_mode="fused").

        On any failure the pipeline is reset before the error propagates, so no adapter is left active.
        """
        if self._active:
            raise RuntimeError("apply() called while a previous job's adapters are active; reset() after every job")
        self._validate(specs)
        key = _merge_key(specs)
        names = [spec.adapter_name for spec in specs]
        if self._fused.merged and self._fused.key == key:
            for name in names:
                self._resident.move_to_end(name)
            self._active = names
            self.last_apply_stats = ApplyStats(sources=dict.fromkeys(names, "resident"), merge="kept")
            logger.info("Keeping the merged weights of %s", ", ".join(spec.describe() for spec in specs))
            return
        try:
            if self._fused.merged:
                self.reset()  # another set than the one merged: back to the base weights first
            started = time.perf_counter()
            recycled: list[str] = []
            sources = {spec.adapter_name: self._ensure_loaded(spec, set(names), recycled) for spec in specs}
            loaded = time.perf_counter()
            merge, merged_layers, unfused_reason = "none", 0, ""
            if specs:
                self._activate({spec.adapter_name: spec.component_weights(list(self._components)) for spec in specs})
                merge = "unfused"
                if self.apply_mode == "fused":
                    unfused_reason = self._unfused_reason(names)
                    if not unfused_reason:
                        merged_layers = self._fused.merge(self._tuner_layers(), names, key)
                        merge = "merged"
                self._active = names
            self.last_apply_stats = ApplyStats(
                sources=sources,
                recycled=tuple(recycled),
                merge=merge,
                merged_layers=merged_layers,
                unfused_reason=unfused_reason,
                load_seconds=loaded - started,
                merge_seconds=time.perf_counter() - loaded,
            )
        except BaseException:
            self.reset()
            raise
        for spec in specs:
            logger.info("Active LoRA %s (%s, %s)", spec.describe(), sources[spec.adapter_name], merge)

    def _unfused_reason(self, names: list[str]) -> str:
        """Why this job cannot be merged (checked before any layer is touched), or "" where it can."""
        if self._fp8:
            return UNFUSED_FP8
        extra = self._fused.extra_backup_bytes(self._tuner_layers(), names)
        if self._fused.backup_bytes + extra > self._fused.max_backup_bytes:
            logger.warning(
                "Applying %s unfused: merging needs %d more bytes of pristine backup on top of %d, over the bound "
                "of %d (LORASITE_FUSED_BACKUP_BYTES)",
                ", ".join(sorted(names)),
                extra,
                self._fused.backup_bytes,
                self._fused.max_backup_bytes,
            )
            return UNFUSED_BACKUP_BOUND
        return ""

    def reset(self, *, keep_merged: bool = False) -> None:
        """Leave no adapter active; call after every job (success, failure, cancellation, time limit).

        Merged weights are copied back to the base weights unless `keep_merged` (pass it only after a job that
        succeeded). Raises only if the pipeline's state could not be restored: the caller must then stop using
        this pipeline.
        """
        self._active = []
        if self._fused.merged and not keep_merged:
            self._fused.restore()
        kept = set(self._fused.names)
        for layer in self._tuner_layers():
            if not layer.merged:
                layer._disable_adapters = True
        if self.residency == "unload":
            for name in [name for name in self._resident if name not in kept]:
                self._delete(name)
        else:
            self._evict_beyond_limits(kept)
        if not self._resident:
            # Also removes the wrapper layers and any remains of a failed load: exactly the base model again.
            self.pipe.unload_lora_weights()
            self._layers = None

    def _take_over(self) -> None:
        """Adapters loaded by anyone else are unknown to this manager (and would clash with its names): unload them.

        Layers another manager left merged (it was dropped without `reset()`) have no pristine copy here, so PEFT's
        `unmerge()` subtracts their deltas: the base model again up to rounding, not bitwise.
        """
        merged = [layer for layer in self._tuner_layers() if layer.merged]
        for layer in merged:
            layer.unmerge()
        if merged:
            logger.warning("Unmerged %d LoRA layers left merged by a previous manager (not bitwise)", len(merged))
        self.pipe.unload_lora_weights()
        self._layers = None

    def _tuner_layers(self) -> list[BaseTunerLayer]:
        """The PEFT LoRA layers of every LoRA-loadable component."""
        return [layer for layers in self._layers_by_path().values() for layer in layers.values()]

    def _layers_by_path(self) -> dict[str, dict[str, BaseTunerLayer]]:
        if self._layers is None:
            self._layers = {
                name: {path: m for path, m in component.named_modules() if isinstance(m, BaseTunerLayer)}
                for name, component in self._components.items()
            }
        return self._layers

    def _activate(self, weights: dict[str, dict[str, float]]) -> None:
        """Make exactly these adapters active in every layer that holds them, scaled by their weight in the layer's
        component: `weights` is {adapter name: {component name: weight}}.

        What `pipe.set_adapters` + `pipe.enable_lora` do, without their cost: both walk every module of
        every component and reset `requires_grad` of every resident adapter in every layer, which made
        a reused adapter cost 40 ms+ with the cache full (bench/adapters.py). Setting the scale, the
        active list and the disable flag directly touches only the LoRA layers and is flat in the number
        of resident adapters. These are PEFT's own layer attributes (peft is pinned; the residency tests
        compare this against freshly loaded pipelines bitwise).
        """
        for component, layers in self._layers_by_path().items():
            for layer in layers.values():
                present = [name for name in weights if name in layer.lora_A]
                if present:
                    for name in present:
                        layer.set_scale(name, weights[name][component])
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
            if spec.weight_low is not None and spec.expert != "both":
                raise ValueError(f"LoRA {spec.describe()}: weight_low is for expert both (one weight per expert)")
            missing = [expert for expert in self._targets(spec.expert) if expert not in self._experts]
            if missing:
                raise ValueError(f"LoRA {spec.describe()} targets the {missing[0]} expert, which this model lacks")

    @staticmethod
    def _targets(expert: str) -> tuple[str, ...]:
        return ("high", "low") if expert == "both" else (expert,)

    def _ensure_loaded(self, spec: AdapterSpec, job_names: set[str], recycled: list[str]) -> str:
        """Make the adapter resident; returns where it came from: "resident", "host_tier" or "file".

        Appends its name to `recycled` when it took over the modules of the adapter the cache would evict next.
        """
        name = spec.adapter_name
        targets = self._targets(spec.expert)
        resident = self._resident.get(name)
        if resident is not None and resident.path == spec.path and resident.experts == targets:
            self._resident.move_to_end(name)
            logger.info("Reusing resident LoRA %s", spec.describe())
            return "resident"
        if resident is not None:
            # Same LoRA id, but another file version or other experts than when it was loaded.
            self._delete(name)
        source = "host_tier"
        try:
            weights: StateDict | str | None = self.host_tier.get(spec.path)
            state_dict = weights
            if weights is None:
                source = "file"
                weights, state_dict = self._read(spec)
        except LoRAChecksumError:
            raise
        except Exception as error:
            raise self._load_error(spec, targets[0], error) from error
        if isinstance(weights, dict) and self._recycle(spec, targets, weights, job_names):
            recycled.append(name)
            logger.info("Loaded LoRA %s from the %s into a recycled slot", spec.describe(), source.replace("_", " "))
            return source
        for expert in targets:
            self._load_into(spec, expert, weights, state_dict)
        nbytes = sum(_adapter_nbytes(component, name) for component in self._components.values())
        self._resident[name] = _Resident(path=spec.path, experts=targets, nbytes=nbytes)
        logger.info("Loaded LoRA %s from the %s (%d bytes)", spec.describe(), source.replace("_", " "), nbytes)
        return source

    def _read(self, spec: AdapterSpec) -> tuple[StateDict | str, StateDict]:
        """What to load the file from: its converted state dict (kept in the host tier when it fits), or its path
        where only the file carries everything needed (diffusers adapter metadata, see the module docstring); and
        the converted state dict itself. The file is read once; its bytes are checked against `spec.sha256`."""
        path = spec.path
        data = path.read_bytes()
        if spec.sha256 and (actual := hashlib.sha256(data).hexdigest()) != spec.sha256.lower():
            raise LoRAChecksumError(spec, actual)
        tensors = load_safetensors_bytes(data)
        # Bare module names (PEFT, native Wan keys) get the prefix diffusers needs, as the ingest coverage did.
        prefix = with_component_prefix(list(tensors))
        source = {prefix + key: value for key, value in tensors.items()} if prefix else tensors
        reader = type(self.pipe).lora_state_dict
        if "return_alphas" in inspect.signature(reader).parameters:
            # FLUX-style readers pop `.alpha` tensors out of the state dict; put them back so that loading the
            # dict extracts them again, exactly as loading the file does.
            state_dict, alphas = reader(source, use_safetensors=True, return_alphas=True)
            state_dict = {**state_dict, **(alphas or {})}
        else:
            state_dict = reader(source, use_safetensors=True)
        if _has_adapter_metadata(data):
            return str(path), state_dict
        return self.host_tier.put(path, state_dict), state_dict

    def _recycle(self, spec: AdapterSpec, targets: tuple[str, ...], state_dict: StateDict, job_names: set[str]) -> bool:
        """Copy `state_dict` into the modules of the adapter the cache would evict next, if the cache is full and
        that adapter has exactly this layout in exactly these experts (see `slots`); False where it cannot."""
        candidates = [name for name in self._resident if name not in job_names]
        if self.residency != "cache" or not candidates:
            return False
        slot = candidates[0]
        resident = self._resident[slot]
        total = sum(entry.nbytes for entry in self._resident.values())
        if len(self._resident) < self.max_resident and total + resident.nbytes <= self.max_resident_bytes:
            return False  # room for one more: keep the other adapter resident too
        target_ids = {id(self._experts[expert]) for expert in targets}
        if resident.experts != targets or any(
            slot in getattr(component, "peft_config", {})
            for component in self._components.values()
            if id(component) not in target_ids
        ):
            return False
        prefix = getattr(self.pipe, "transformer_name", "transformer")
        layers = self._layers_by_path()
        plans = {
            expert: slot_plan(layers[EXPERT_COMPONENTS[expert]], slot, state_dict, prefix=prefix) for expert in targets
        }
        if any(plan is None for plan in plans.values()):
            return False
        for expert, plan in plans.items():
            recycle(self._experts[expert], plan, slot=slot, name=spec.adapter_name)
        del self._resident[slot]
        self._resident[spec.adapter_name] = _Resident(path=spec.path, experts=targets, nbytes=resident.nbytes)
        logger.info("Evicted resident LoRA %s (its modules now hold %s)", slot, spec.adapter_name)
        return True

    def _load_into(self, spec: AdapterSpec, expert: str, weights: StateDict | str, state_dict: StateDict) -> None:
        name = spec.adapter_name
        module = self._experts[expert]
        self._layers = None  # loading wraps more layers
        options = {"adapter_name": name, "use_safetensors": True}
        if isinstance(weights, dict):
            # Copy the host tier's tensors into new parameters: with diffusers' default low_cpu_mem_usage they would
            # *become* the parameters wherever the layer lives on the CPU, and recycling a slot writes into those.
            options["low_cpu_mem_usage"] = False
        if expert == "low":
            options["load_into_transformer_2"] = True
        try:
            self.pipe.load_lora_weights(weights, **options)
            # diffusers only warns when no key of the file matches the transformer, and loads nothing.
            if name not in getattr(module, "peft_config", {}):
                raise ValueError(f"the file has no LoRA weights for {EXPERT_COMPONENTS[expert]}")
            if self._fp8:
                self._keep_compute_dtype(spec, expert, state_dict)
        except Exception as error:
            self._delete(name)
            raise self._load_error(spec, expert, error) from error

    def _keep_compute_dtype(self, spec: AdapterSpec, expert: str, state_dict: StateDict) -> None:
        """The new adapter's float8 LoRA tensors in this expert, in the compute dtype with the file's values."""
        module = self._experts[expert]
        self._layers = None
        converted, unsourced = to_compute_dtype(
            self._layers_by_path()[EXPERT_COMPONENTS[expert]],
            spec.adapter_name,
            state_dict,
            prefix=getattr(self.pipe, "transformer_name", "transformer"),
            dtype=fp8_compute_dtype(),
        )
        if unsourced:
            logger.info(
                "LoRA %s: %d of its %d tensors in the %s had no value in the state dict (kept as loaded)",
                spec.describe(),
                unsourced,
                converted,
                self._expert_label(expert),
            )
        if converted:
            # Group offloading with streams keeps pinned copies of every parameter, taken when diffusers re-applied
            # it after the load, i.e. of the float8 ones: re-apply it (what diffusers itself does after a LoRA load;
            # a private helper, diffusers has no public one). A no-op without group offloading.
            _maybe_remove_and_reapply_group_offloading(module)

    def _load_error(self, spec: AdapterSpec, expert: str, error: BaseException) -> LoRALoadError:
        return LoRALoadError(
            f"LoRA '{spec.display_name}' ({spec.adapter_name}) could not be loaded into the "
            f"{self._expert_label(expert)}: {_compact(error)}"
        )

    def _expert_label(self, expert: str) -> str:
        if len(self._experts) == 1:
            return "transformer"
        return {"high": "high-noise expert", "low": "low-noise expert"}[expert]

    def _delete(self, name: str) -> None:
        self.pipe.delete_adapters(name)
        self._resident.pop(name, None)
        self._layers = None

    def _evict_beyond_limits(self, kept: set[str]) -> None:
        """Evict least recently used adapters beyond the count and byte bounds, never one that is merged."""
        while True:
            over = len(self._resident) > self.max_resident or (
                sum(resident.nbytes for resident in self._resident.values()) > self.max_resident_bytes
            )
            evictable = [name for name in self._resident if name not in kept]
            if not over or not evictable:
                return
            self._delete(evictable[0])
            logger.info("Evicted resident LoRA %s", evictable[0])


def _merge_key(specs: list[AdapterSpec]) -> MergeKey:
    return tuple(
        sorted((spec.adapter_name, str(spec.path), float(spec.weight), spec.weight_low, spec.expert) for spec in specs)
    )


def _has_adapter_metadata(data: bytes) -> bool:
    """Whether a safetensors file's `__metadata__` holds diffusers' LoRA adapter metadata (alpha, rank patterns).

    The safetensors layout: an 8-byte little-endian header length, then the JSON header; safetensors has no public
    reader of metadata from bytes, and the bytes are all the manager reads.
    """
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    return bool((header.get("__metadata__") or {}).get(LORA_ADAPTER_METADATA_KEY))


def _compact(error: BaseException) -> str:
    # PyTorch's state-dict errors span many lines; job records and logs want one bounded line.
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _adapter_nbytes(module: torch.nn.Module, name: str) -> int:
    # PEFT parameter names carry the adapter name as a path segment: "...to_q.lora_A.lora_12.weight".
    marker = f".{name}."
    return sum(p.numel() * p.element_size() for key, p in module.named_parameters() if marker in key)
