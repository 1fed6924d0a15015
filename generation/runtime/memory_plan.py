"""How much device memory a base model needs, and where its components should live: the placement planner.

Plain Python, no torch, no Django: the web process uses it for the Generate page's and the job API's estimates,
the worker to choose a placement before it loads anything, `manage.py gpu_plan` and `bench/planner.py` to print it.

**Component bytes.** For a model whose weights are on disk, each component's parameter count comes from the
safetensors headers in its folder (`diffusion_pytorch_model*.safetensors` / `model*.safetensors`, through their
index json when sharded); no tensor is read. For a shipped model whose weights are absent, the published
parameter counts declared in its registry entry (`BaseModel.component_params`) stand in; every figure says which
("headers" or "declared"). Bytes are counted at the dtype the component runs in on a GPU, whatever the file
stores: transformers and text encoders bf16 (2 bytes/param), the Wan VAE fp32 (4 bytes/param, as diffusers' Wan
examples load it), the Flux VAE bf16. `storage_dtype: fp8` stores the transformers' weights in float8 (1 byte/param,
diffusers layerwise casting, computed in bf16); the few layers diffusers keeps in bf16 (norms, embeddings) and the
LoRA layers are ignored in that figure.

**Activation reserve** (bytes beyond the weights while one component runs), for the model's largest capability
(largest resolution x most frames), two phases that never overlap:

- denoising: ``tokens x (ACTIVATION_HIDDEN_COPIES x hidden + ffn) x 2`` bytes (bf16), with
  ``tokens = latent_frames x (height / (vae_scale x 2)) x (width / (vae_scale x 2))`` (2x2 patches), plus 512 text
  tokens for Flux; ``latent_frames = (frames - 1) / 4 + 1`` for Wan, 1 for images. Attention runs through SDPA's
  memory-efficient kernels on CUDA, so there is no tokens-squared term. Classifier-free guidance in diffusers' Wan
  pipeline runs the two branches one after the other, so batch 1.
- VAE decode: ``decode_frames x height x width x vae_decode_channels x ACTIVATION_VAE_COPIES x vae dtype bytes``
  (Wan decodes one latent frame, i.e. 4 video frames, at a time) plus the decoded video in fp32
  (``frames x height x width x 3 x 4``).

The constants are estimates, NOT yet calibrated on a GPU (no GPU was available when this was written): calibrate
them against `torch.cuda.max_memory_allocated()` and change them here. `DEVICE_OVERHEAD_BYTES` covers the CUDA
context, cuBLAS workspaces and allocator fragmentation.

**Placements**, fastest first; the planner picks the first whose estimated peak fits the device:

- ``gpu``: every component on the device: peak = all weights + the larger phase reserve.
- ``model_offload`` (`enable_model_cpu_offload`): one component on the device at a time (for A14B one expert):
  peak = max over components of (its weights + its phase reserve).
- ``group_offload`` (`enable_group_offload`, block level, CUDA streams): a component's top-level blocks move one
  at a time, the next one prefetched, so peak = max over components of (non-block weights + 2 x largest block +
  its phase reserve). Components without top-level block lists (text encoders, VAEs) move whole, as diffusers
  does.
- ``sequential`` (`enable_sequential_cpu_offload`): one leaf module at a time: peak = largest tensor + reserve.
  For declared sizes the largest block stands in for the largest tensor (an over-estimate).
- ``cpu``: no accelerator and no `LORASITE_GPU_MEMORY_BYTES`: everything stays in host memory; the peak shown is
  what ``gpu`` would need.

`placement:` in `LORASITE_MODELS_FILE` forces one (it is used even when the estimate says it does not fit: the
estimate is conservative and the operator may know better; the plan then says ``fits: no``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loras.safetensors_header import HeaderError, read_header_from_path

if TYPE_CHECKING:
    from generation.model_registry import BaseModel

GiB = 1024**3

PLACEMENTS = ("gpu", "model_offload", "group_offload", "sequential")  # fastest first
CPU_PLACEMENT = "cpu"
STORAGE_DTYPES = ("bf16", "fp8")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp8": 1}

# Activation estimate constants (see the module docstring); to be calibrated on a GPU.
ACTIVATION_HIDDEN_COPIES = 6  # hidden-sized bf16 tensors alive at once in a block (residual, norm, q, k, v, out)
ACTIVATION_VAE_COPIES = 4  # full-resolution feature maps alive at once in the VAE decoder's last stage
FLUX_TEXT_TOKENS = 512
WAN_FRAMES_PER_LATENT = 4
DEVICE_OVERHEAD_BYTES = 1 * GiB

# LoRA cost estimate: host-to-device copy speed of a pinned-memory-less PCIe 4.0 x16 transfer, conservatively.
ASSUMED_LOAD_BANDWIDTH_BYTES_PER_S = 8 * 10**9

_WEIGHT_FILES = ("diffusion_pytorch_model", "model")
# A top-level ModuleList child (`blocks.3.…`, `single_transformer_blocks.0.…`): what block-level group offload moves.
_TOP_LEVEL_BLOCK = re.compile(r"^([A-Za-z_]+)\.(\d+)\.")


class MemoryPlanError(ValueError):
    """The model's components cannot be sized (no weights and nothing declared, unreadable headers)."""


class PlacementError(MemoryPlanError):
    """No placement fits the device; the message names the GiB needed and available."""


@dataclass(frozen=True)
class ComponentSize:
    name: str  # pipeline component: transformer, transformer_2, text_encoder, vae…
    params: int
    dtype: str  # compute dtype on a GPU: "bf16" | "fp32"
    storage_dtype: str  # dtype its weights are kept in: dtype, or "fp8" under layerwise casting
    source: str  # "headers" | "declared"
    largest_block_params: int  # largest top-level block (0: the component moves whole under group offload)
    block_params: int  # all top-level blocks together
    largest_tensor_params: int

    @property
    def nbytes(self) -> int:
        return self.params * DTYPE_BYTES[self.storage_dtype]

    @property
    def group_offload_bytes(self) -> int:
        if not self.largest_block_params:
            return self.nbytes
        per_param = DTYPE_BYTES[self.storage_dtype]
        return (self.params - self.block_params + 2 * self.largest_block_params) * per_param

    @property
    def sequential_bytes(self) -> int:
        return self.largest_tensor_params * DTYPE_BYTES[self.storage_dtype]


@dataclass(frozen=True)
class Reserve:
    width: int
    height: int
    frames: int
    denoise_bytes: int
    decode_bytes: int

    def for_component(self, name: str) -> int:
        if name.startswith("transformer"):
            return self.denoise_bytes
        if name.startswith("vae"):
            return self.decode_bytes
        return 0  # text encoders: a few hundred tokens, within DEVICE_OVERHEAD_BYTES

    @property
    def largest(self) -> int:
        return max(self.denoise_bytes, self.decode_bytes)


@dataclass(frozen=True)
class Plan:
    model_key: str
    display_name: str
    components: tuple[ComponentSize, ...]
    reserve: Reserve
    peaks: dict[str, int]  # estimated device peak of every placement
    device_bytes: int | None  # None: no accelerator and no LORASITE_GPU_MEMORY_BYTES
    placement: str
    forced: bool

    @property
    def peak_bytes(self) -> int:
        return self.peaks["gpu"] if self.placement == CPU_PLACEMENT else self.peaks[self.placement]

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.peak_bytes <= self.device_bytes

    @property
    def weight_bytes(self) -> int:
        return sum(component.nbytes for component in self.components)

    @property
    def resident_device_bytes(self) -> int:
        """Device bytes the pipeline holds between jobs: its weights when on the device, nothing when offloaded."""
        if self.device_bytes is None:
            return 0
        return self.weight_bytes if self.placement == "gpu" else 0

    @property
    def torch_dtypes(self) -> dict[str, str]:
        """Compute dtype per component ("bf16"/"fp32"), for from_pretrained's dtype dict on a GPU."""
        return {component.name: component.dtype for component in self.components}

    @property
    def storage_dtype(self) -> str:
        return "fp8" if any(c.storage_dtype == "fp8" for c in self.components) else ""

    def describe(self) -> list[str]:
        """The plan as log/console lines: one per component, then placement and peak."""
        device = "no accelerator (host memory)" if self.device_bytes is None else gib(self.device_bytes)
        lines = [f"{self.model_key} ({self.display_name}): device memory {device}"]
        for c in self.components:
            stored = f" stored {c.storage_dtype}" if c.storage_dtype != c.dtype else ""
            lines.append(
                f"  {c.name:<16} {c.params / 1e9:7.3f} B params  {c.dtype}{stored}  {gib(c.nbytes):>10}  ({c.source})"
            )
        r = self.reserve
        lines.append(
            f"  activation reserve at {r.width}x{r.height}"
            + (f", {r.frames} frames" if r.frames > 1 else "")
            + f": denoise {gib(r.denoise_bytes)}, VAE decode {gib(r.decode_bytes)}"
        )
        peaks = ", ".join(f"{name} {gib(peak)}" for name, peak in self.peaks.items())
        how = "forced" if self.forced else "chosen"
        fits = "" if self.fits else " — DOES NOT FIT the estimate"
        lines.append(
            f"  placement {self.placement} ({how}), estimated peak {gib(self.peak_bytes)}{fits}; peaks: {peaks}"
        )
        return lines


def gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.1f} GiB"


# --- component sizes --------------------------------------------------------------------------------------------


def component_dtype(model: BaseModel, component: str) -> str:
    """Compute dtype of a component on a GPU: bf16, except the Wan VAE in fp32 (as diffusers' Wan examples)."""
    if component.startswith("vae") and model.dims.architecture == "wan":
        return "fp32"
    return "bf16"


def _storage_dtype(model: BaseModel, component: str, dtype: str) -> str:
    # Layerwise casting is a diffusers ModelMixin feature: the transformers only (text encoders are transformers'
    # models, the VAE stays exact).
    if model.storage_dtype == "fp8" and component.startswith("transformer"):
        return "fp8"
    return dtype


def component_sizes(model: BaseModel) -> tuple[ComponentSize, ...]:
    """Every weight-bearing component, from the safetensors headers when the weights are on disk, else declared."""
    if model.weights_present:
        counts = _counts_from_headers(model.path)
        source = "headers"
    elif model.component_params:
        counts = {name: _declared_counts(declared) for name, declared in model.component_params.items()}
        source = "declared"
    else:
        raise MemoryPlanError(
            f"Cannot size {model.display_name}: no weights at {model.path} and no component_params declared."
        )
    sizes = []
    for name, (params, largest_block, blocks, largest_tensor) in counts.items():
        dtype = component_dtype(model, name)
        sizes.append(
            ComponentSize(
                name=name,
                params=params,
                dtype=dtype,
                storage_dtype=_storage_dtype(model, name, dtype),
                source=source,
                largest_block_params=largest_block,
                block_params=blocks,
                largest_tensor_params=largest_tensor,
            )
        )
    return tuple(sizes)


def _declared_counts(declared) -> tuple[int, int, int, int]:
    if not declared.blocks:
        return declared.params, 0, 0, declared.params
    largest_block = declared.largest_block_params or math.ceil(declared.params / declared.blocks)
    # All params counted as block params, so the non-block part is never negative; largest tensor unknown.
    return declared.params, largest_block, declared.params, largest_block


def _counts_from_headers(model_dir: Path) -> dict[str, tuple[int, int, int, int]]:
    """{component: (params, largest top-level block, all block params, largest tensor)} from headers only."""
    index = json.loads((model_dir / "model_index.json").read_text())
    counts = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        files = _weight_files(model_dir / name)
        if files is None:
            continue  # tokenizer, scheduler: no weights
        block_params: dict[tuple[str, int], int] = {}
        params = largest_tensor = 0
        for file in files:
            try:
                header = read_header_from_path(file)
            except (HeaderError, OSError) as error:
                raise MemoryPlanError(f"Cannot read the safetensors header of {file}: {error}") from error
            for tensor_name, tensor in header.tensors.items():
                count = math.prod(tensor.shape)
                params += count
                largest_tensor = max(largest_tensor, count)
                match = _TOP_LEVEL_BLOCK.match(tensor_name)
                if match:
                    block = (match.group(1), int(match.group(2)))
                    block_params[block] = block_params.get(block, 0) + count
        counts[name] = (params, max(block_params.values(), default=0), sum(block_params.values()), largest_tensor)
    return counts


def _weight_files(component_dir: Path) -> list[Path] | None:
    if not component_dir.is_dir():
        return None
    for stem in _WEIGHT_FILES:
        index = component_dir / f"{stem}.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return [component_dir / file for file in sorted(set(weight_map.values()))]
        single = component_dir / f"{stem}.safetensors"
        if single.is_file():
            return [single]
    if any(component_dir.glob("*.bin")) or any(component_dir.glob("*.pt*")):
        raise MemoryPlanError(f"{component_dir} has weights but no safetensors files; only safetensors can be sized.")
    return None


# --- activation reserve ---------------------------------------------------------------------------------------


def largest_capability(model: BaseModel) -> tuple[int, int, int]:
    """(width, height, frames) of the most demanding job the model accepts."""
    width, height = max(model.capabilities.resolutions, key=lambda size: size[0] * size[1])
    frames = max(model.capabilities.frame_counts, default=1)
    return width, height, frames


def activation_reserve(model: BaseModel, *, width: int, height: int, frames: int) -> Reserve:
    dims = model.dims
    side = model.vae_scale * 2  # latent pixels per side, then 2x2 patches
    if model.kind == "video":
        latent_frames = (frames - 1) // WAN_FRAMES_PER_LATENT + 1
        decode_frames = min(frames, WAN_FRAMES_PER_LATENT)
        text_tokens = 0
    else:
        latent_frames, decode_frames, text_tokens = 1, 1, FLUX_TEXT_TOKENS
    tokens = latent_frames * math.ceil(height / side) * math.ceil(width / side) + text_tokens
    denoise = tokens * (ACTIVATION_HIDDEN_COPIES * dims.hidden + dims.ffn) * DTYPE_BYTES["bf16"]
    vae_bytes = DTYPE_BYTES[component_dtype(model, "vae")]
    decode = decode_frames * height * width * model.vae_decode_channels * ACTIVATION_VAE_COPIES * vae_bytes
    decode += frames * height * width * 3 * DTYPE_BYTES["fp32"]
    return Reserve(width=width, height=height, frames=frames, denoise_bytes=denoise, decode_bytes=decode)


def placement_peaks(components: tuple[ComponentSize, ...], reserve: Reserve) -> dict[str, int]:
    """Estimated device peak of each placement (see the module docstring for each formula)."""

    def worst(bytes_of) -> int:
        return max(bytes_of(c) + reserve.for_component(c.name) for c in components)

    return {
        "gpu": sum(c.nbytes for c in components) + reserve.largest + DEVICE_OVERHEAD_BYTES,
        "model_offload": worst(lambda c: c.nbytes) + DEVICE_OVERHEAD_BYTES,
        "group_offload": worst(lambda c: c.group_offload_bytes) + DEVICE_OVERHEAD_BYTES,
        "sequential": worst(lambda c: c.sequential_bytes) + DEVICE_OVERHEAD_BYTES,
    }


def plan(model: BaseModel, device_bytes: int | None) -> Plan:
    """The fastest placement whose estimated peak fits `device_bytes` (None: no accelerator, placement "cpu").

    Raises PlacementError, naming the GiB needed and available, when none fits and none is forced."""
    components = component_sizes(model)
    width, height, frames = largest_capability(model)
    reserve = activation_reserve(model, width=width, height=height, frames=frames)
    peaks = placement_peaks(components, reserve)

    def make(placement: str, forced: bool) -> Plan:
        return Plan(
            model_key=model.key,
            display_name=model.display_name,
            components=components,
            reserve=reserve,
            peaks=peaks,
            device_bytes=device_bytes,
            placement=placement,
            forced=forced,
        )

    if model.placement:
        return make(model.placement, True)
    if device_bytes is None:
        return make(CPU_PLACEMENT, False)
    for placement in PLACEMENTS:
        if peaks[placement] <= device_bytes:
            return make(placement, False)
    frames_text = f", {frames} frames" if frames > 1 else ""
    raise PlacementError(
        f"{model.display_name} does not fit this device: it needs at least {peaks['sequential'] / GiB:.1f} GiB "
        f"(sequential offload at {width}x{height}{frames_text}) but {device_bytes / GiB:.1f} GiB is available."
    )


# --- what a job's LoRAs add -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoRACost:
    apply_mode: str  # how the worker applies it: the configured mode, except "unfused" on a model stored in fp8
    adapter_bytes: int  # the adapter weights at bf16
    extra_device_bytes: int  # on the device beyond the base model while the LoRA's expert runs
    extra_host_bytes: int  # fused: a host backup of the base weights the LoRA touches
    load_seconds: float

    def as_dict(self) -> dict:
        return {
            "apply_mode": self.apply_mode,
            "adapter_bytes": self.adapter_bytes,
            "extra_device_bytes": self.extra_device_bytes,
            "extra_host_bytes": self.extra_host_bytes,
            "load_seconds": round(self.load_seconds, 3),
        }


def lora_cost(
    *,
    file_size: int,
    file_dtype: str,
    module_shapes: dict[str, list[int]],
    placement: str,
    apply_mode: str,
    experts: int = 1,
    storage_dtype: str = "",
) -> LoRACost:
    """Estimated cost of one LoRA under `placement` and `apply_mode` ("fused" | "unfused").

    Adapter bytes: the file's size rescaled to bf16 (adapters are cast to the transformer's dtype on load).
    Unfused, the adapter sits next to the layers it targets: on the device while its expert is there (always under
    gpu/cpu, only while its expert runs when offloaded, the moved group's share under group/sequential — counted
    whole here, an upper bound). Fused, the delta is merged into the base weights: no extra device memory after
    loading, but the touched base weights (in x out per module, bf16) are kept on the host to restore them.
    Without an accelerator (placement "cpu") everything counts as host memory. `experts`: how many experts the LoRA
    is loaded into (2 for "both" on a two-expert model), each holding its own copy.
    `module_shapes`: {module: [in, out]} of every layer the LoRA targets. A model with `storage_dtype` "fp8" runs
    its LoRAs unfused whatever `apply_mode` says (merging would round the deltas to float8), so it is costed so.
    Load time: bytes / ASSUMED_LOAD_BANDWIDTH_BYTES_PER_S (fused: the backup too).
    """
    file_bytes_per_param = {"F32": 4, "F16": 2, "BF16": 2}.get((file_dtype or "").upper(), 2)
    adapter_bytes = file_size * DTYPE_BYTES["bf16"] // file_bytes_per_param * experts
    if apply_mode not in ("fused", "unfused"):
        raise ValueError(f"apply_mode must be 'fused' or 'unfused', not {apply_mode!r}")
    if storage_dtype == "fp8":
        apply_mode = "unfused"
    if apply_mode == "fused":
        touched = sum(math.prod(shape) for shape in module_shapes.values()) * DTYPE_BYTES["bf16"] * experts
        device, host, moved = 0, touched, adapter_bytes + touched
    else:
        device, host, moved = adapter_bytes, 0, adapter_bytes
    if placement == CPU_PLACEMENT:
        device = 0  # no accelerator: everything is host memory
        host += adapter_bytes
    return LoRACost(
        apply_mode=apply_mode,
        adapter_bytes=adapter_bytes,
        extra_device_bytes=device,
        extra_host_bytes=host,
        load_seconds=moved / ASSUMED_LOAD_BANDWIDTH_BYTES_PER_S,
    )
