"""Template tags of the library: a pair's halves, the Generate link and the upload dialog's size limits."""

from django import template
from django.conf import settings

from loras import selectors
from loras.models import Expert, LoRA, LoRAPair

register = template.Library()


@register.filter
def pair_halves(pair: LoRAPair) -> list[tuple[LoRA, str]]:
    """[(high half, "high"), (low half, "low")]."""
    return [(pair.high, Expert.HIGH), (pair.low, Expert.LOW)]


@register.filter
def generate_query(lora: LoRA) -> str:
    return selectors.lora_generate_query(lora=lora)


@register.simple_tag
def max_lora_bytes() -> int:
    """LORASITE_MAX_LORA_BYTES, for the upload dialog wherever a page includes it."""
    return settings.LORASITE_MAX_LORA_BYTES


@register.simple_tag
def max_app_upload_bytes() -> int:
    """LORASITE_MAX_APP_UPLOAD_BYTES: the upload dialog sends a PEFT checkpoint through the app, in one request."""
    return settings.LORASITE_MAX_APP_UPLOAD_BYTES
