"""Display helpers for the generation pages."""

from django import template

from loras.lora_inspect import FAMILIES

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


@register.filter
def family_label(family: str) -> str:
    return FAMILIES.get(family, family)
