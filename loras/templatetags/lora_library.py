"""Template filters of the library's cards: a pair's halves and the Generate link."""

from django import template

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
