"""Template helpers for the GPU workers: the LoRA page's "where it is" part and the operator page's words."""

import time

from django import template

from generation.worker_selectors import TIER_LABELS, ModelWhere, lora_whereabouts
from loras.models import LoRA
from loras.selectors import lora_fits

register = template.Library()


@register.simple_tag
def lora_where(lora: LoRA) -> list[ModelWhere] | None:
    """For templates/loras/_where.html: the models the LoRA fits, each with the workers where it already is."""
    return lora_whereabouts(lora=lora, model_keys=[fit.key for fit in lora_fits(lora=lora)])


@register.filter
def tier_label(tier: str) -> str:
    """'resident on' -> 'Resident': a tier's name as a badge."""
    return TIER_LABELS[tier].removesuffix(" on").removesuffix(" at").capitalize()


@register.filter
def percent(fraction: float) -> str:
    return f"{fraction:.0%}"


@register.filter
def seconds_ago(unix_time: float) -> str:
    return f"{max(0, round(time.time() - unix_time))} s ago"
