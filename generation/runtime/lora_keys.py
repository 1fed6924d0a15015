"""What diffusers makes of a LoRA file's keys: its own converters, run on meta tensors built from the header.

`lora_coverage` hands a state dict of meta tensors (names and shapes from the safetensors header, no weights
read) to the pipeline's own `lora_state_dict` classmethod — the conversion `load_lora_weights` runs — and
reports which of the file's tensors end up as LoRA weights of which pipeline component, which are dropped
and why, and the converted modules' (in, out) features. So what the library accepts is what diffusers loads.
Given the layer names of the family's models (`model_layers`: the model class built on the meta device from
its config), weights for layers no such model has are reported as ignored, as PEFT skips them. A converter
that looks at values (kohya FLUX's sparsity test of fused qkv) runs on zeros instead; the keys that come out
and their (in, out) features do not depend on the values.

`with_component_prefix` is the one step lorasite adds before diffusers, for loading and for coverage alike:
diffusers only loads keys under a component (`transformer.`) or a known format prefix (`diffusion_model.`,
`lora_unet_`), so a file of bare module names (PEFT's `save_pretrained` of a transformer, native Wan keys)
gets the prefix its names call for.

Plain Python with torch and diffusers: imported by the GPU worker and, lazily, by the LoRA ingest task.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import diffusers
import torch
from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin, WanLoraLoaderMixin
from safetensors import safe_open
from safetensors.torch import load_file

# Family (LoRA.base_model vocabulary) prefix -> the pipeline's LoRA loader, whose `lora_state_dict` converts.
_LOADERS = {"wan": WanLoraLoaderMixin, "flux": FluxLoraLoaderMixin}
ARCHITECTURES = tuple(_LOADERS)
_LORA_TARGET_TYPES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_KNOWN_PREFIXES = (
    "transformer.",
    "transformer_2.",
    "text_encoder.",
    "text_encoder_2.",
    "unet.",
    "diffusion_model.",
    "model.diffusion_model.",
    "base_model.model.",
    "lora_unet_",
    "lora_te",
    "lora_transformer_",
)
# Original Wan module names (what `_convert_non_diffusers_wan_lora_to_diffusers` reads after `diffusion_model.`).
_ORIGINAL_WAN_NAME = re.compile(r"^(blocks\.\d+\.(self_attn|cross_attn|ffn\.\d)|head\.head|text_embedding|time_)")
_LORA_WEIGHT = re.compile(r"^(?P<module>.+)\.lora_(?P<side>A|B)\.weight$")
# Why a tensor diffusers drops was dropped, by a marker in its name; anything else is "not converted".
_DROP_REASONS = (("dora_scale", "dora_scale"), (".diff_b", "diff_b"), (".diff", "diff"), (".alpha", "alpha"))


class CoverageError(ValueError):
    """diffusers cannot convert the file's keys; the message says what it objected to."""


def with_component_prefix(keys: Sequence[str]) -> str:
    """The prefix to put before every key so diffusers loads the file: "" when the keys already carry one."""
    if not keys or any(key.startswith(_KNOWN_PREFIXES) for key in keys):
        return ""
    return "diffusion_model." if any(_ORIGINAL_WAN_NAME.match(key) for key in keys) else "transformer."


def prefixed_state_dict(path: Path) -> dict[str, torch.Tensor] | None:
    """The file's tensors with the prefix diffusers needs, or None when its keys already carry one (load the file
    itself then, which also keeps diffusers' adapter metadata). Only the header is read to decide."""
    with safe_open(str(path), framework="pt") as handle:
        prefix = with_component_prefix(list(handle.keys()))
    if not prefix:
        return None
    return {prefix + key: value for key, value in load_file(str(path)).items()}


class _Traced(torch.Tensor):
    """A meta tensor that remembers which file tensors it was made from, through diffusers' reshapes and scales."""

    sources: frozenset[str] = frozenset()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        result = super().__torch_function__(func, types, args, kwargs or {})
        outputs = [t for t in (result if isinstance(result, (list, tuple)) else (result,)) if isinstance(t, _Traced)]
        if outputs:  # torch.split and chunk return tuples
            inputs = [*args, *(kwargs or {}).values()]
            flat = [t for a in inputs for t in (a if isinstance(a, (list, tuple)) else (a,))]
            sources = frozenset().union(*(t.sources for t in flat if isinstance(t, _Traced)))
            for output in outputs:
                output.sources = sources
        return result


def _traced(name: str, dtype: str, shape: Sequence[int], *, device: str) -> torch.Tensor:
    torch_dtype = _DTYPES.get(dtype, torch.float32)
    if not shape:
        # Scalars (kohya `.alpha`) are read with `.item()`, which meta tensors refuse; the value only scales
        # weights, it never changes which keys come out.
        base = torch.ones((), dtype=torch_dtype if torch_dtype.is_floating_point else torch.float32)
    else:
        base = torch.zeros(tuple(shape), dtype=torch_dtype, device=device)
    tensor = base.as_subclass(_Traced)
    tensor.sources = frozenset({name})
    return tensor


def lora_coverage(
    tensors: Mapping[str, tuple[str, Sequence[int]]],
    *,
    family: str,
    layers: Mapping[str, Collection[str]] | None = None,
) -> dict | None:
    """Coverage of a file given as {tensor name: (safetensors dtype, shape)}; None for a family without a loader.

    `family` is a LoRA family ("wan-14b", "flux-demo") or an architecture of ARCHITECTURES ("wan", "flux").
    `layers`, when known, maps a component to the module names its models have (`model_layers`): converted
    weights of other modules are what PEFT skips as unexpected keys, so they count as ignored ("no such layer").

    Returns {"tensors", "mapped", "components": {component: tensor count}, "ignored": {reason: count},
    "ignored_tensors": [[name, reason], ...] (the first 20), "module_shapes": {component: {module: [in, out]}}}
    where module_shapes holds every converted module, present in `layers` or not.
    Raises CoverageError when diffusers refuses the keys.
    """
    loader = _LOADERS.get(family.split("-")[0])
    if loader is None:
        return None
    diffusers_logger = logging.getLogger("diffusers")
    level = diffusers_logger.level
    diffusers_logger.setLevel(logging.ERROR)  # its DoRA warning is reported as coverage instead
    try:
        try:
            converted = _convert(loader, tensors, device="meta")
        except RuntimeError as error:  # NotImplementedError included: what meta tensors raise for data access
            if "meta" not in str(error):
                raise
            # A converter that looks at values (kohya FLUX's sparsity test of fused qkv) cannot run on meta
            # tensors; zeros take one of its branches, and which keys come out and their in/out features are
            # the same in both.
            converted = _convert(loader, tensors, device="cpu")
    except Exception as error:  # diffusers' converters raise ValueError, KeyError, IndexError on unknown layouts
        raise CoverageError(f"diffusers cannot convert its keys ({type(error).__name__}: {_compact(error)})") from None
    finally:
        diffusers_logger.setLevel(level)
    if isinstance(converted, tuple):  # loaders that also return network alphas
        converted = converted[0]
    # load_lora_weights' own format check, which refuses the whole file.
    not_lora = sorted(source for key, value in converted.items() if "lora" not in key for source in value.sources)
    if not_lora:
        raise CoverageError(
            f"diffusers refuses it: {len(not_lora)} tensor(s) are not LoRA weights after conversion, "
            f"e.g. '{not_lora[0]}'"
        )

    loadable = set(loader._lora_loadable_modules)
    components: dict[str, set[str]] = {}
    module_shapes: dict[str, dict[str, list[int]]] = {}
    mapped: set[str] = set()
    absent: set[str] = set()
    halves: dict[tuple[str, str], dict[str, Sequence[int]]] = {}
    for key, value in converted.items():
        component, _, rest = key.partition(".")
        match = _LORA_WEIGHT.match(rest)
        if component not in loadable:
            continue
        sources = getattr(value, "sources", frozenset())
        if match:  # every converted module is kept: the job-time fit check judges them against each model
            halves.setdefault((component, match["module"]), {})[match["side"]] = tuple(value.shape)
        if layers is not None and component in layers and rest.split(".lora_")[0] not in layers[component]:
            absent |= sources
            continue
        mapped |= sources
        components.setdefault(component, set()).update(sources)
    for (component, module), sides in halves.items():
        if "A" in sides and "B" in sides:
            # A is (rank, in, *kernel): its dim 1 is the in-features of a linear layer and the in-channels of a conv.
            module_shapes.setdefault(component, {})[module] = [sides["A"][1], sides["B"][0]]

    # Alphas are folded into the weights (read with .item()), so they count as mapped with their module.
    mapped_modules = {_module_of(name) for name in mapped}
    absent_modules = {_module_of(name) for name in absent}
    for name in tensors:
        if name.endswith(".alpha") and name not in mapped:
            if name.removesuffix(".alpha") in mapped_modules:
                mapped.add(name)
                module = name.removesuffix(".alpha")
                owner = next(c for c, names in components.items() if module in {_module_of(n) for n in names})
                components[owner].add(name)
            elif name.removesuffix(".alpha") in absent_modules:
                absent.add(name)
    ignored = [
        (name, "no such layer" if name in absent else _drop_reason(name)) for name in tensors if name not in mapped
    ]
    return {
        "tensors": len(tensors),
        "mapped": len(mapped),
        "components": {component: len(names) for component, names in components.items()},
        "ignored": dict(Counter(reason for _, reason in ignored)),
        "ignored_tensors": [list(item) for item in ignored[:20]],
        "module_shapes": module_shapes,
    }


def _convert(loader: type, tensors: Mapping[str, tuple[str, Sequence[int]]], *, device: str) -> dict:
    prefix = with_component_prefix(list(tensors))
    return loader.lora_state_dict(
        {prefix + name: _traced(name, dtype, shape, device=device) for name, (dtype, shape) in tensors.items()}
    )


@functools.cache
def _model_layers(config_path: str, modified: float) -> frozenset[str]:
    config = json.loads(Path(config_path).read_text())
    model_class = getattr(diffusers, config["_class_name"])
    with torch.device("meta"):  # the architecture only: no weights allocated or read
        model = model_class.from_config(config)
    return frozenset(name for name, module in model.named_modules() if isinstance(module, _LORA_TARGET_TYPES))


def model_layers(component_dir: Path) -> frozenset[str]:
    """The names of the LoRA-targetable layers (linear, conv) of a diffusers model folder, from its config alone."""
    config = component_dir / "config.json"
    return _model_layers(str(config), config.stat().st_mtime)


def _module_of(tensor_name: str) -> str:
    for marker in (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", ".lora.down.", ".lora.up."):
        if marker in tensor_name:
            return tensor_name.split(marker)[0]
    return tensor_name.rsplit(".", 1)[0]


def _drop_reason(name: str) -> str:
    return next((reason for marker, reason in _DROP_REASONS if marker in name), "not converted")


def _compact(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
