"""Recommended settings and distill detection for a LoRA — torch-free, so the web process and the ingest task
share it.

A LoRA's `recommended_settings` is a dict with any of `steps`, `guidance`, `guidance_2` and `shift`, plus an
optional `model` (a registry key) that the numbers were meant for. At ingest they are filled from the file's
safetensors metadata (explicit keys such as `steps`/`cfg`/`shift`, then "4 steps, cfg 1" in modelspec usage
hints), and a distill LoRA (lightx2v, Lightning, CausVid, "4steps"…) is detected from its name and metadata.
Both are proposals: the user edits them on the LoRA page or with PATCH.

Training metadata is deliberately not read for these: kohya's `ss_steps` counts training steps, and musubi's
`ss_discrete_flow_shift` is the training sampler's shift, neither of which says how to run the LoRA.
"""

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from generation.model_registry import BaseModel, model_registry
from lorasite.errors import InvalidInput

if TYPE_CHECKING:
    from loras.models import LoRA

SETTING_KEYS = ("steps", "guidance", "guidance_2", "shift")
# Bounds used when no model is named and the LoRA's family fits no model in the registry.
STEPS_RANGE = (1, 200)
GUIDANCE_RANGE = (0.0, 20.0)
SHIFT_RANGE = (0.0, 50.0)

# Exact metadata keys (compared lower-cased, also under a "modelspec." prefix) → setting.
_METADATA_KEYS = {
    "steps": "steps",
    "inference_steps": "steps",
    "num_inference_steps": "steps",
    "recommended_steps": "steps",
    "sample_steps": "steps",
    "cfg": "guidance",
    "cfg_scale": "guidance",
    "guidance": "guidance",
    "guidance_scale": "guidance",
    "recommended_cfg": "guidance",
    "guidance_2": "guidance_2",
    "guidance_scale_2": "guidance_2",
    "cfg_2": "guidance_2",
    "shift": "shift",
    "flow_shift": "shift",
    "sample_shift": "shift",
}
# Free-text metadata that people write usage notes into ("Use 4 steps, CFG 1, shift 5").
_TEXT_KEYS = ("modelspec.usage_hint", "modelspec.description", "description", "usage_hint")
_TEXT_PATTERNS = {
    "steps": re.compile(r"\b(\d{1,3})[\s_-]*steps?\b"),
    "guidance": re.compile(r"\b(?:cfg|guidance)(?:[\s_-]*scale)?\s*[:=]?\s*(\d+(?:\.\d+)?)"),
    "shift": re.compile(r"\b(?:flow[\s_-]*)?shift\s*[:=]?\s*(\d+(?:\.\d+)?)"),
}
# Where a distill LoRA's name shows: the upload's name and file name, and these metadata fields. A step count
# ("4steps") counts in names only; a usage note saying "6 steps" may be about any LoRA.
_NAME_METADATA_KEYS = ("ss_output_name", "modelspec.title")
_NOTE_METADATA_KEYS = ("modelspec.description", "modelspec.usage_hint", "modelspec.tags")
# Words that mark a step-distilled (few-step, no-CFG) LoRA, matched as whole words of the lower-cased name.
DISTILL_WORDS = ("lightx2v", "lightning", "causvid", "distill", "distilled", "lcm", "turbo", "dmd", "dmd2", "hyper")
_STEP_COUNT = re.compile(r"(?<![a-z0-9.])(\d{1,2})[\s_-]*steps?(?![a-z])")
DISTILL_MAX_STEPS = 16  # "4steps" in a name means a distill LoRA; "30 steps" does not
# What a distill LoRA is run with when its name gives no step count: the lightx2v/Lightning defaults.
DISTILL_STEPS = 4
DISTILL_GUIDANCE = 1.0


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


def _name_texts(*, name: str, filename: str, metadata: Mapping[str, str]) -> list[str]:
    return [name, filename, *(str(metadata.get(key, "")) for key in _NAME_METADATA_KEYS)]


def distill_steps(text: str) -> int | None:
    """The step count a name such as "wan2.2_lightx2v_4steps" or "8-step" carries, when it is a distill's."""
    for match in _STEP_COUNT.finditer(text.lower()):
        steps = int(match.group(1))
        if 1 <= steps <= DISTILL_MAX_STEPS:
            return steps
    return None


def detect_distill(*, name: str = "", filename: str = "", metadata: Mapping[str, str] | None = None) -> bool:
    """Whether the name, file name or title metadata mark a step-distilled LoRA (lightx2v, Lightning, CausVid,
    "4steps", "4-step", "distill"…)."""
    metadata = metadata or {}
    names = _name_texts(name=name, filename=filename, metadata=metadata)
    if any(distill_steps(text) is not None for text in names):
        return True
    notes = [str(metadata.get(key, "")) for key in _NOTE_METADATA_KEYS]
    return any(set(_words(text)) & set(DISTILL_WORDS) for text in names + notes)


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None  # NaN and infinities: not a setting


def settings_from_metadata(metadata: Mapping[str, str]) -> dict[str, float | int]:
    """Settings the file's own metadata states: explicit keys first, then usage notes in free text."""
    found: dict[str, float | int] = {}
    for key, value in metadata.items():
        setting = _METADATA_KEYS.get(key.lower().removeprefix("modelspec."))
        number = _number(value)
        if setting and setting not in found and number is not None:
            found[setting] = number
    for key in _TEXT_KEYS:
        text = str(metadata.get(key, "")).lower()
        for setting, pattern in _TEXT_PATTERNS.items():
            match = pattern.search(text)
            if match and setting not in found:
                found[setting] = float(match.group(1))
    if "steps" in found:
        found["steps"] = int(found["steps"])
    return found


def propose(
    *, name: str, filename: str, metadata: Mapping[str, str], two_experts: bool
) -> tuple[dict[str, float | int], bool]:
    """(recommended settings, is_distill) for a new LoRA. A distill LoRA whose metadata says nothing gets the
    steps its name gives (else 4) and guidance 1 — on both experts when its family runs on a two-expert model."""
    settings = settings_from_metadata(metadata)
    is_distill = detect_distill(name=name, filename=filename, metadata=metadata)
    if is_distill:
        named_steps = next(
            filter(None, map(distill_steps, _name_texts(name=name, filename=filename, metadata=metadata))), None
        )
        settings.setdefault("steps", named_steps or DISTILL_STEPS)
        settings.setdefault("guidance", DISTILL_GUIDANCE)
        if two_experts:
            settings.setdefault("guidance_2", DISTILL_GUIDANCE)
    if not two_experts:
        settings.pop("guidance_2", None)
    return settings, is_distill


def summary(settings: Mapping[str, object]) -> str:
    """ "4 steps, guidance 1, guidance 2 1, shift 5" for labels; "" when there are none."""
    parts = []
    if settings.get("steps") is not None:
        parts.append(f"{settings['steps']} steps")
    for key, label in (("guidance", "guidance"), ("guidance_2", "guidance 2"), ("shift", "shift")):
        if settings.get(key) is not None:
            parts.append(f"{label} {settings[key]:g}")
    model = _enabled_models().get(settings.get("model") or "")
    return ", ".join(parts) + (f" (for {model.display_name})" if model and parts else "")


def _enabled_models() -> dict[str, BaseModel]:
    return {key: model for key, model in model_registry().items() if model.enabled}


def _bounds(models: Iterable[BaseModel]) -> tuple[tuple[int, int], tuple[float, float], bool] | None:
    """The widest steps and guidance ranges over `models`, and whether one has two experts; None for none."""
    models = list(models)
    if not models:
        return None
    caps = [model.capabilities for model in models]
    steps = (min(c.steps[0] for c in caps), max(c.steps[1] for c in caps))
    guidance = (min(c.guidance_range[0] for c in caps), max(c.guidance_range[1] for c in caps))
    return steps, guidance, any(model.two_experts for model in models)


def clean_settings(value: object, *, family: str, field: str = "recommended_settings") -> dict:
    """The settings checked and normalised, or InvalidInput naming the key (`recommended_settings.steps`).

    Checked against the capabilities of the model named by `model`, else of every enabled model the LoRA's
    family fits (a setting must suit at least one), else against generic bounds."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object.", errors={field: ["Expected an object of settings."]})
    problems: dict[str, list[str]] = {}
    allowed = ("model", *SETTING_KEYS)
    for key in value:
        if key not in allowed:
            problems[f"{field}.{key}"] = [f"Unknown setting '{key}'; use {', '.join(allowed)}."]
    registry = _enabled_models()
    model_key = value.get("model")
    cleaned: dict = {}
    if model_key not in (None, ""):
        model = registry.get(model_key) if isinstance(model_key, str) else None
        if model is None:
            problems[f"{field}.model"] = [f"'{model_key}' is not a model here; use one of {', '.join(registry)}."]
            bounds = None
        else:
            cleaned["model"] = model_key
            bounds = _bounds([model])
    else:
        bounds = _bounds(m for m in registry.values() if family in m.families)
    steps_range, guidance_range, two_experts = bounds or (STEPS_RANGE, GUIDANCE_RANGE, True)
    for key in SETTING_KEYS:
        raw = value.get(key)
        if raw is None or raw == "":
            continue
        name = f"{field}.{key}"
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or _number(raw) is None:
            problems[name] = [f"{key} must be a number."]
            continue
        if key == "steps":
            low, high = steps_range
            if raw != int(raw) or not low <= raw <= high:
                problems[name] = [f"steps must be a whole number from {low} to {high}."]
                continue
            cleaned[key] = int(raw)
            continue
        if key == "guidance_2" and not two_experts:
            problems[name] = ["guidance_2 is for two-expert models (Wan 2.2 A14B); this LoRA's models have one."]
            continue
        low, high = SHIFT_RANGE if key == "shift" else guidance_range
        if not low <= raw <= high:
            problems[name] = [f"{key} must be from {low:g} to {high:g}."]
            continue
        cleaned[key] = float(raw)
    if problems:
        first = next(iter(problems.values()))[0]
        raise InvalidInput(f"Recommended settings: {first}", errors=problems)
    return cleaned


def apply_proposal(lora: "LoRA") -> list[str]:
    """The ingest hook: propose settings and the distill flag for a LoRA that has none yet (what the user set
    stays). Sets them on `lora` and returns the fields it changed, for `save(update_fields=…)`."""
    if lora.recommended_settings or lora.is_distill:
        return []
    two_experts = any(m.two_experts for m in _enabled_models().values() if lora.base_model in m.families)
    settings, is_distill = propose(
        name=lora.name, filename=lora.original_filename, metadata=lora.header_metadata, two_experts=two_experts
    )
    lora.recommended_settings, lora.is_distill = settings, is_distill
    return ["recommended_settings", "is_distill"]
