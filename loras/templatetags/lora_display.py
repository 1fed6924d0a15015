"""Display helpers for LoRA pages."""

import json
import re

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from loras.hashes import HASH_LABELS, metadata_claim
from loras.lora_inspect import family_label
from loras.recommended import summary as recommended_summary
from loras.selectors import human_size

register = template.Library()


register.filter("base_model_label", family_label)
register.filter("recommended_summary", recommended_summary)  # "4 steps, guidance 1"


@register.filter
def lora_hashes(lora) -> list[tuple[str, str]]:
    """(label, value) for each hash of the file, "" when not computed yet."""
    return [(label, getattr(lora, field)) for field, label in HASH_LABELS.items()]


@register.filter
def hash_claim(lora) -> tuple[str, bool] | None:
    """What the file's metadata claims its hash is, and whether the computed AutoV3 agrees."""
    return metadata_claim(lora.header_metadata or {}, lora.autov3)


@register.filter
def pretty_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def field_label(key: str) -> str:
    """A metadata key as a label ("learning_rate" → "Learning rate")."""
    return key.replace("_", " ").capitalize()


@register.filter
def field_value(value: object) -> str:
    """A metadata value as text: mappings as "key: value" pairs, lists comma-separated."""
    if isinstance(value, dict):
        return ", ".join(f"{key}: {item}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


@register.filter(needs_autoescape=True)
def soft_breaks(text: str, autoescape: bool = True) -> str:
    """Let long file-like names ("golden_hour_high_noise") wrap after _ - . instead of mid-word."""
    escape = conditional_escape if autoescape else str
    return mark_safe(re.sub(r"([_.\-])", r"\1<wbr>", escape(text)))


@register.filter
def file_size(size: int) -> str:
    """A size in the words of the server's upload messages ("5.8 MiB"), which the upload dialog repeats."""
    return human_size(size)
