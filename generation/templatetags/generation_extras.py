"""Display helpers for the generation pages."""

import json

from django import template
from django.template.defaultfilters import filesizeformat

from generation.forms import expert_warning, recommended_params
from generation.model_registry import BaseModel
from generation.models import weights_label
from loras import recommended
from loras.lora_inspect import family_label
from loras.models import LoRA

register = template.Library()

# The worker's phases in the order they happen (seconds each, in job.timings).
PHASES = {
    "queue_wait": "Queue wait",
    "model_load": "Model load",
    "download": "LoRA download",
    "adapter_load": "Adapter load",
    "inference": "Inference",
    "encode": "Encode",
    "upload": "Upload",
    "adapter_unload": "Adapter unload",
}
EXPERT_LABELS = {"high": "High noise", "low": "Low noise", "both": "Both experts"}


@register.filter
def phase_timings(timings: dict) -> list[tuple[str, float]]:
    """(label, seconds) for each phase the job went through; phases a newer worker adds come last."""
    known = [(label, timings[key]) for key, label in PHASES.items() if key in timings]
    return known + [(key.replace("_", " ").capitalize(), value) for key, value in timings.items() if key not in PHASES]


@register.filter
def expert_label(expert: str) -> str:
    return EXPERT_LABELS.get(expert, expert)


register.filter("family_label", family_label)


@register.filter
def weights(entry) -> str:
    """A LoRA entry's weights (a JobLoRA, a RecipeLoRA or a provenance dict), worded by `weights_label`."""
    get = entry.get if isinstance(entry, dict) else lambda name: getattr(entry, name, None)
    return weights_label(get("weight"), get("weight_low"))


register.filter("expert_warning", expert_warning)


@register.filter
def recommended_for(lora: LoRA | str, model: BaseModel) -> dict[str, float]:
    """forms.recommended_params; {} for the blank row generate.js copies (no LoRA yet)."""
    return recommended_params(lora, model) if isinstance(lora, LoRA) else {}


@register.filter
def settings_summary(settings: dict) -> str:
    """loras.recommended.summary: "4 steps, guidance 1"."""
    return recommended.summary(settings)


@register.filter
def to_json(value: object) -> str:
    """For data- attributes that generate.js parses (autoescaping makes it attribute-safe)."""
    return json.dumps(value)


@register.filter
def lora_cost_label(cost: dict | None) -> str:
    """selectors.lora_cost_estimate as a short phrase for the LoRA picker, e.g. "est. +152.6 MB on the GPU, ~0.02 s
    to load"."""
    if not cost:
        return ""
    load = f"~{cost['load_seconds']:.2g} s to load"
    if cost["extra_device_bytes"]:
        return f"est. +{filesizeformat(cost['extra_device_bytes'])} on the GPU, {load}"
    if cost["extra_host_bytes"]:
        return f"est. no extra GPU memory (merged), {filesizeformat(cost['extra_host_bytes'])} host backup, {load}"
    return f"est. no extra GPU memory, {load}"
