"""Decide from a safetensors header whether a file is a LoRA, for which model, and how it was trained.

Only the header is needed. The one exception is the value of kohya-style ``.alpha`` scalars, which lives
in the data section: given a ``read_range``, a handful of those few-byte scalars is read, usually in a
single request.

Key formats (``LoraInspection.key_format``):

- ``"diffusers"``: ``lora_A``/``lora_B`` (or the older ``lora.down``/``lora.up``) under a pipeline
  component prefix: ``transformer.``, ``unet.``, ``text_encoder.``, ``text_encoder_2.``.
- ``"peft"``: ``lora_A``/``lora_B`` with no component prefix, or under PEFT's ``base_model.model.``.
- ``"kohya"``: flattened names ``lora_unet_…``, ``lora_te_…``, ``lora_te1_…``, ``lora_te2_…`` with
  ``lora_down``/``lora_up`` and ``.alpha`` (kohya sd-scripts, musubi-tuner).
- ``"comfyui"``: the original model's module names, bare or under ``diffusion_model.``, with
  ``lora_down``/``lora_up`` or ``lora_A``/``lora_B`` (ComfyUI, lightx2v, musubi's ComfyUI export).

``target_modules`` and ``module_shapes`` name modules as the file spells them (the key minus its
``.lora_A.weight``-style suffix). Which model layers they become is diffusers' business: the ingest task runs
diffusers' own key converters on the header (``generation/runtime/lora_keys.py``) and stores the converted names,
and ``detect_family`` reads either spelling.

``hidden_size`` is the width that decided the family: the transformer width for Wan and Flux, the
cross-attention context width (768, 2048) for Stable Diffusion UNets.
"""

import json
import math
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from loras.safetensors_header import SafetensorsHeader, TensorInfo

T = TypeVar("T")

FAMILIES: dict[str, str] = {
    "wan-14b": "Wan 2.1/2.2 14B (A14B)",
    "wan-5b": "Wan 2.2 TI2V-5B",
    "wan-1.3b": "Wan 2.1 1.3B",
    "wan-demo": "Wan demo (tiny)",
    "flux": "FLUX.1",
    "flux-demo": "FLUX demo (tiny)",
    "sdxl": "SDXL",
    "sd15": "SD 1.5",
    "unknown": "Unknown",
}


def family_label(family: str) -> str:
    """The readable name of a detected model family ("wan-14b" → "Wan 2.1/2.2 14B (A14B)"); an unknown key as is."""
    return FAMILIES.get(family, family)


_WAN_FAMILY_BY_WIDTH = {5120: "wan-14b", 3072: "wan-5b", 1536: "wan-1.3b", 24: "wan-demo"}
_FLUX_FAMILY_BY_WIDTH = {3072: "flux", 32: "flux-demo"}
_SD_FAMILY_BY_CONTEXT_WIDTH = {2048: "sdxl", 768: "sd15"}
_SDXL_TEXT_ENCODER_2_WIDTH = 1280  # OpenCLIP ViT-bigG; Flux's second text encoder (T5) is 4096 wide

MAX_TRIGGER_WORDS = 10
# Alpha is normally identical across modules, so a small sample tells it; the caps keep an upload
# check to one tiny ranged read even for LoRAs with hundreds of modules.
_MAX_ALPHA_SAMPLES = 8
_MAX_ALPHA_SPAN_BYTES = 256

# `lora_A`, `lora_down`, `lora.down`, and diffusers' old `to_q_lora.down` all end a pair key.
_PAIR_KEY = re.compile(r"^(?P<module>.+)[._]lora(?P<separator>[._])(?P<part>A|B|down|up)\.weight$")
_KOHYA_MODULE = re.compile(r"^lora_(unet|te\d?)_")
_DOWN_PARTS = {"A", "down"}
# Family detection reads module names in a spelling-neutral form: known prefixes become the component (kohya's
# `lora_te2_` and diffusers' `text_encoder_2.` alike), the rest loses its prefix and every "_" becomes ".", so
# kohya's flattened `blocks_0_self_attn_q`, the original `blocks.0.self_attn.q` and diffusers'
# `blocks.0.attn1.to_q` are all matched by the same probes without a rename table.
_COMPONENT_PREFIXES = (
    ("lora_unet_", ""),
    ("lora_te_", "text.encoder."),
    ("lora_te1_", "text.encoder."),
    ("lora_te2_", "text.encoder.2."),
    ("text_encoder_2.", "text.encoder.2."),
    ("text_encoder.", "text.encoder."),
    ("base_model.model.", ""),
    ("model.diffusion_model.", ""),
    ("diffusion_model.", ""),
    ("transformer.", ""),
    ("unet.", ""),
)
_WAN_LAYOUT = re.compile(r"^blocks\.\d+\.(self\.attn|cross\.attn|attn1|attn2|ffn)\.")
_FLUX_LAYOUT = re.compile(
    r"^((double\.blocks|single\.blocks|single\.transformer\.blocks)\.\d+\."
    r"|transformer\.blocks\.\d+\.(attn|ff|ff\.context)\.)"
)
_SD_UNET_LAYOUT = re.compile(r"^(down\.blocks|up\.blocks|mid\.block|input\.blocks|output\.blocks|middle\.block)\.")
_SD_CONTEXT_PROBE = re.compile(r"\.attn2\.to\.[kv]$")
_TEXT_ENCODER_2_PROBE = re.compile(r"^text\.encoder\.2\..*\.self\.attn\.[qkv]\.proj$")

# (pattern, side): side 0 reads the module's in_features, 1 its out_features; both equal the model width.
# Each pattern takes the original and the diffusers spelling of the same layer.
_WAN_WIDTH_PROBES = (
    (re.compile(r"^blocks\.\d+\.(attn[12]\.to\.q|attn1\.to\.[kv]|(self|cross)\.attn\.q|self\.attn\.[kv])$"), 0),
    (re.compile(r"^blocks\.\d+\.(attn[12]\.to\.out\.0|(self|cross)\.attn\.o)$"), 1),
    (re.compile(r"^blocks\.\d+\.ffn\.(net\.0\.proj|0)$"), 0),
    (re.compile(r"^blocks\.\d+\.ffn\.(net\.2|2)$"), 1),
)
_FLUX_WIDTH_PROBES = (
    (re.compile(r"^double\.blocks\.\d+\.(img|txt)\.attn\.(qkv|proj)$|^single\.blocks\.\d+\.linear1$"), 0),
    (re.compile(r"^double\.blocks\.\d+\.(img|txt)\.mlp\.0$"), 0),
    (re.compile(r"^double\.blocks\.\d+\.(img|txt)\.mlp\.2$|^single\.blocks\.\d+\.linear2$"), 1),
    (re.compile(r"^(single\.)?transformer\.blocks\.\d+\.attn\.(to\.[qkv]|add\.[qkv]\.proj)$"), 0),
    (re.compile(r"^transformer\.blocks\.\d+\.attn\.(to\.out\.0|to\.add\.out)$"), 1),
    (re.compile(r"^transformer\.blocks\.\d+\.ff(\.context)?\.net\.0\.proj$"), 0),
    (re.compile(r"^transformer\.blocks\.\d+\.ff(\.context)?\.net\.2$"), 1),
    (re.compile(r"^single\.transformer\.blocks\.\d+\.proj\.mlp$"), 0),
    (re.compile(r"^single\.transformer\.blocks\.\d+\.proj\.out$"), 1),
)

_EXPERT_METADATA_KEYS = ("ss_output_name", "modelspec.title")
_WEIGHT_FILE_EXTENSION = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin)$", re.IGNORECASE)
# A bare "high"/"low" is a marker only at the end or before a marker-like word, so that a
# "low_poly" or "high_quality" style LoRA is not taken for an expert.
_EXPERT_FOLLOWERS = {None, "noise", "model", "expert", "lora", "high", "low"}
_TRIGGER_METADATA_KEYS = ("modelspec.trigger_phrase", "trigger_phrase", "trigger_words", "trigger_word")


class NotALoRA(Exception):
    """The file is a valid safetensors file but not a usable LoRA; the message says why."""


@dataclass(frozen=True)
class LoraInspection:
    family: str
    expert: str
    rank: int | None
    alpha: float | None
    key_format: str
    tensor_count: int
    dtype: str
    hidden_size: int | None
    metadata: dict[str, str]
    training: dict[str, object]
    trigger_words: list[str]
    target_modules: list[str]
    module_shapes: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class _Pair:
    raw_module: str  # the module part of the key, as the file spells it
    down: TensorInfo
    up: TensorInfo
    style: str  # "A/B", "down/up" or "lora.down"

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def inspect_lora(
    header: SafetensorsHeader, *, filename: str, read_range: Callable[[int, int], bytes] | None = None
) -> LoraInspection:
    """Inspect a parsed header; raise ``NotALoRA`` when it holds no usable LoRA pairs."""
    pairs = _find_pairs(header.tensors)
    if not pairs:
        raise NotALoRA(_no_pairs_message(header.tensors))

    module_shapes = {pair.raw_module: (pair.down.shape[1], pair.up.shape[0]) for pair in pairs}
    family, hidden_size = detect_family(module_shapes)

    metadata = header.metadata
    alpha = _alpha_from_tensors(header, pairs, read_range) if read_range else None
    if alpha is None:
        alpha = _alpha_from_metadata(metadata)

    return LoraInspection(
        family=family,
        expert=_expert_hint(filename, metadata),
        rank=_most_common(p.rank for p in pairs),
        alpha=alpha,
        key_format=_most_common(_pair_format(p) for p in pairs),
        tensor_count=len(header.tensors),
        dtype=_most_common(t.dtype for p in pairs for t in (p.down, p.up)),
        hidden_size=hidden_size,
        metadata=dict(metadata),
        training=_training_summary(metadata),
        trigger_words=_trigger_words(metadata),
        target_modules=sorted(module_shapes, key=_natural_key),
        module_shapes=module_shapes,
    )


def _find_pairs(tensors: dict[str, TensorInfo]) -> list[_Pair]:
    halves: dict[str, dict[str, TensorInfo]] = {}
    styles: dict[str, str] = {}
    for key, tensor in tensors.items():
        match = _PAIR_KEY.match(key)
        if not match:
            continue
        module, part = match["module"], match["part"]
        side = "down" if part in _DOWN_PARTS else "up"
        if side in halves.setdefault(module, {}):
            raise NotALoRA(f"This is not a usable LoRA: the module '{module}' has two {side} weights.")
        halves[module][side] = tensor
        styles[module] = "A/B" if part in ("A", "B") else "lora.down" if match["separator"] == "." else "down/up"

    pairs = []
    for module, sides in halves.items():
        if len(sides) == 1:
            (only,) = sides.values()
            missing = "lora_B/lora_up" if "down" in sides else "lora_A/lora_down"
            raise NotALoRA(f"This is not a usable LoRA: '{only.name}' has no matching {missing} tensor.")
        down, up = sides["down"], sides["up"]
        pair = _Pair(raw_module=module, down=down, up=up, style=styles[module])
        _check_pair_shapes(pair)
        pairs.append(pair)
    return pairs


def _check_pair_shapes(pair: _Pair) -> None:
    down, up = pair.down.shape, pair.up.shape
    if len(down) not in (2, 4, 5) or len(up) != len(down) or 0 in down or 0 in up:
        raise NotALoRA(
            f"This is not a usable LoRA: '{pair.down.name}' has shape {list(down)} and its partner '{pair.up.name}' "
            f"has shape {list(up)}; LoRA weights are non-empty 2-D (linear), 4-D or 5-D (conv) matrices."
        )
    if down[0] != up[1]:
        raise NotALoRA(
            f"This is not a usable LoRA: '{pair.down.name}' has rank {down[0]} (shape {list(down)}) but "
            f"'{pair.up.name}' has rank {up[1]} (shape {list(up)}); the ranks of a pair must match."
        )


def _no_pairs_message(tensors: dict[str, TensorInfo]) -> str:
    count = len(tensors)
    plain_weights = sum(name.endswith((".weight", ".bias")) for name in tensors)
    hint = " — it looks like a full model checkpoint" if plain_weights * 2 >= count else ""
    return (
        f"This is not a LoRA: it has {count} tensor{'s' if count != 1 else ''} but no lora_A/lora_B, "
        f"lora_down/lora_up or lora.down/lora.up pairs{hint}."
    )


def _pair_format(pair: _Pair) -> str:
    module = pair.raw_module
    if _KOHYA_MODULE.match(module):
        return "kohya"
    if module.startswith(("diffusion_model.", "model.diffusion_model.")):
        return "comfyui"
    if module.startswith(("transformer.", "unet.", "text_encoder.", "text_encoder_2.")) or pair.style == "lora.down":
        return "diffusers"
    if module.startswith("base_model.model.") or pair.style == "A/B":
        return "peft"
    return "comfyui"


def _probe_name(raw_module: str) -> str:
    """The spelling-neutral form family detection reads (see _COMPONENT_PREFIXES)."""
    for prefix, component in _COMPONENT_PREFIXES:
        if raw_module.startswith(prefix):
            raw_module = component + raw_module.removeprefix(prefix)
            break
    # diffusers' old attention-processor LoRAs hang off `attn1.processor.to_q`, which is `attn1.to_q`.
    return raw_module.replace(".processor.", ".").replace("_", ".")


def detect_family(module_shapes: dict[str, tuple[int, int]]) -> tuple[str, int | None]:
    """(family, the width that decided it) from module names in any spelling and their (in, out) features.

    The upload check reads the file's own names; the ingest task calls it again with diffusers' converted names.
    """
    shapes = {_probe_name(module): tuple(shape) for module, shape in module_shapes.items()}
    names = list(shapes)
    if any(_WAN_LAYOUT.match(name) for name in names):
        width = _width(shapes, _WAN_WIDTH_PROBES)
        return _WAN_FAMILY_BY_WIDTH.get(width, "unknown"), width
    if any(_FLUX_LAYOUT.match(name) for name in names):
        width = _width(shapes, _FLUX_WIDTH_PROBES)
        return _FLUX_FAMILY_BY_WIDTH.get(width, "unknown"), width
    context = _most_common(
        shape[0] for name, shape in shapes.items() if _SD_UNET_LAYOUT.match(name) and _SD_CONTEXT_PROBE.search(name)
    )
    if context is not None:
        return _SD_FAMILY_BY_CONTEXT_WIDTH.get(context, "unknown"), context
    # No UNet cross-attention targeted: fall back on the text encoders, which differ between SD 1.5
    # (one CLIP, kohya calls it lora_te_) and SDXL (a second, 1280-wide encoder).
    text_encoder_2_widths = {shape[0] for name, shape in shapes.items() if _TEXT_ENCODER_2_PROBE.match(name)}
    if _SDXL_TEXT_ENCODER_2_WIDTH in text_encoder_2_widths:
        return "sdxl", None
    if any(module.startswith("lora_te_") for module in module_shapes):
        return "sd15", None
    return "unknown", None


def _width(shapes: dict[str, tuple[int, ...]], probes: Iterable[tuple[re.Pattern[str], int]]) -> int | None:
    return _most_common(
        shape[side] for name, shape in shapes.items() for pattern, side in probes if pattern.match(name)
    )


def _alpha_from_tensors(
    header: SafetensorsHeader, pairs: list[_Pair], read_range: Callable[[int, int], bytes]
) -> float | None:
    candidates = (header.tensors.get(f"{pair.raw_module}.alpha") for pair in pairs)
    scalars = sorted(
        (t for t in candidates if t and t.dtype in ("F16", "BF16", "F32") and math.prod(t.shape) == 1),
        key=lambda t: t.start,
    )[:_MAX_ALPHA_SAMPLES]
    if not scalars:
        return None
    first, last = scalars[0].start, scalars[-1].end
    if last - first <= _MAX_ALPHA_SPAN_BYTES:
        # safetensors writers group tensors by dtype, so the F32 alphas of an F16 LoRA sit together.
        span = read_range(header.data_start + first, last - first)
        raw_values = [span[t.start - first : t.end - first] for t in scalars]
    else:
        raw_values = [read_range(header.data_start + t.start, t.nbytes) for t in scalars]
    values = [_decode_scalar(raw, tensor.dtype) for raw, tensor in zip(raw_values, scalars, strict=True)]
    return _most_common(value for value in values if value is not None and math.isfinite(value))


def _decode_scalar(raw: bytes, dtype: str) -> float | None:
    expected = 4 if dtype == "F32" else 2
    if len(raw) != expected:
        return None
    if dtype == "BF16":
        # bfloat16 is the upper half of a float32.
        raw = b"\x00\x00" + raw
    (value,) = struct.unpack("<e" if dtype == "F16" else "<f", raw)
    return float(value)


def _alpha_from_metadata(metadata: dict[str, str]) -> float | None:
    for key in ("ss_network_alpha", "lora_alpha"):
        alpha = _to_float(metadata.get(key))
        if alpha is not None:
            return alpha
    # diffusers stores the PEFT config as JSON, with keys prefixed by component ("transformer.lora_alpha").
    config = _load_json(metadata.get("lora_adapter_metadata"))
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "lora_alpha" or key.endswith(".lora_alpha"):
                return _to_float(value)
    return None


def _expert_hint(filename: str, metadata: dict[str, str]) -> str:
    """Which Wan 2.2 A14B expert the LoRA is for, judged from its name: "high", "low" or "both"."""
    texts = [_WEIGHT_FILE_EXTENSION.sub("", filename), *(metadata.get(key, "") for key in _EXPERT_METADATA_KEYS)]
    for text in texts:
        words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text).lower())
        high, low = _has_marker(words, "high"), _has_marker(words, "low")
        if high or low:
            return "both" if high and low else "high" if high else "low"
    return "both"


def _has_marker(words: list[str], marker: str) -> bool:
    for index, word in enumerate(words):
        if word == f"{marker}noise":
            return True
        if word == marker:
            following = next((w for w in words[index + 1 :] if w), None)
            if following in _EXPERT_FOLLOWERS or any(char.isdigit() for char in following or ""):
                return True
    return False


def _training_summary(metadata: dict[str, str]) -> dict[str, object]:
    """Readable training facts from kohya (``ss_*``) and modelspec metadata; unparsable fields are skipped."""
    summary: dict[str, object] = {}
    for key, (label, parse) in _TRAINING_FIELDS.items():
        if label in summary or key not in metadata:
            continue
        value = parse(metadata[key])
        if value is not None:
            summary[label] = value

    dataset_dirs = _load_json(metadata.get("ss_dataset_dirs"))
    if isinstance(dataset_dirs, dict):
        summary["dataset_dirs"] = {
            str(name): {field: _to_int(info.get(field)) for field in ("n_repeats", "img_count")}
            for name, info in dataset_dirs.items()
            if isinstance(info, dict)
        }
    tags = _tag_frequency(metadata)
    if tags:
        summary["distinct_tags"] = len(tags)
        summary["top_tags"] = [{"tag": tag, "count": count} for tag, count in _top_tags(tags, MAX_TRIGGER_WORDS)]
    return summary


def _trigger_words(metadata: dict[str, str]) -> list[str]:
    for key in _TRIGGER_METADATA_KEYS:
        words = _unique(part.strip() for part in metadata.get(key, "").split(","))
        if words:
            return words[:MAX_TRIGGER_WORDS]
    return [tag for tag, _ in _top_tags(_tag_frequency(metadata), MAX_TRIGGER_WORDS)]


def _tag_frequency(metadata: dict[str, str]) -> Counter[str]:
    """Tag counts summed over datasets, from ss_tag_frequency or, in newer kohya files, ss_datasets."""
    # Both hold {image directory: {tag: count}}; ss_datasets nests one such dict in each dataset.
    per_directory = _load_json(metadata.get("ss_tag_frequency"))
    if not isinstance(per_directory, dict):
        datasets = _load_json(metadata.get("ss_datasets"))
        per_directory = {}
        for dataset in datasets if isinstance(datasets, list) else []:
            if isinstance(dataset, dict) and isinstance(dataset.get("tag_frequency"), dict):
                per_directory |= dataset["tag_frequency"]
    counts: Counter[str] = Counter()
    for tags in per_directory.values():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                number = _to_int(count)
                if tag.strip() and number and number > 0:
                    counts[tag.strip()] += number
    return counts


def _top_tags(counts: Counter[str], limit: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


def _unique(words: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for word in words:
        if word and word.lower() not in seen:
            seen.add(word.lower())
            result.append(word)
    return result


def _most_common(values: Iterable[T]) -> T | None:
    counts = Counter(values)
    if not counts:
        return None
    # Ties go to the larger value so the answer does not depend on tensor order.
    return max(counts, key=lambda value: (counts[value], value))


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _load_json(text: str | None) -> object | None:
    if not text:
        return None
    try:
        return json.loads(text, parse_constant=lambda name: None)
    except (ValueError, RecursionError):
        return None


def _to_text(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "None", "null") else value


def _to_int(value: object) -> int | None:
    number = _to_float(value)
    return int(number) if number is not None and number.is_integer() else None


def _to_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _resolution(value: str) -> list[int] | None:
    numbers = [int(n) for n in re.findall(r"\d+", value)]
    return numbers or None


def _timestamp(value: str) -> str | None:
    seconds = _to_float(value)
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds") if seconds is not None else None
    except (OverflowError, OSError, ValueError):
        return None


# metadata key -> (summary label, parser). Where several keys share a label, the first present wins.
_TRAINING_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "ss_sd_model_name": ("base_model", _to_text),
    "ss_base_model_version": ("base_model_version", _to_text),
    "modelspec.architecture": ("architecture", _to_text),
    "modelspec.title": ("title", _to_text),
    "modelspec.author": ("author", _to_text),
    "modelspec.description": ("description", _to_text),
    "ss_output_name": ("output_name", _to_text),
    "ss_network_module": ("network_module", _to_text),
    "ss_network_dim": ("network_dim", _to_int),
    "ss_network_alpha": ("network_alpha", _to_float),
    "ss_network_args": ("network_args", _load_json),
    "ss_steps": ("steps", _to_int),
    "ss_max_train_steps": ("max_steps", _to_int),
    "ss_epoch": ("epoch", _to_int),
    "ss_num_epochs": ("epochs", _to_int),
    "ss_resolution": ("resolution", _resolution),
    "ss_learning_rate": ("learning_rate", _to_float),
    "ss_unet_lr": ("unet_learning_rate", _to_float),
    "ss_text_encoder_lr": ("text_encoder_learning_rate", _to_float),
    "ss_optimizer": ("optimizer", _to_text),
    "ss_lr_scheduler": ("lr_scheduler", _to_text),
    "ss_total_batch_size": ("batch_size", _to_int),
    "ss_batch_size_per_device": ("batch_size", _to_int),
    "ss_gradient_accumulation_steps": ("gradient_accumulation_steps", _to_int),
    "ss_mixed_precision": ("mixed_precision", _to_text),
    "ss_seed": ("seed", _to_int),
    "ss_num_train_images": ("train_images", _to_int),
    "ss_num_reg_images": ("regularization_images", _to_int),
    "ss_noise_offset": ("noise_offset", _to_float),
    "ss_clip_skip": ("clip_skip", _to_int),
    "ss_training_comment": ("comment", _to_text),
    "ss_training_started_at": ("started_at", _timestamp),
    "ss_training_finished_at": ("finished_at", _timestamp),
}
