"""Preview tags: what a card, the detail page and a job page show of previews (reads in loras.previews)."""

from django import template

from generation.models import GenerationJob
from loras import previews
from loras.models import LoRA
from workspaces.models import Membership

register = template.Library()


@register.simple_tag
def card_preview(lora: LoRA) -> previews.PreviewView:
    return previews.lora_card_preview(lora=lora)


@register.simple_tag
def detail_preview(lora: LoRA) -> previews.PreviewView:
    return previews.lora_detail_preview(lora=lora)


@register.simple_tag
def preview_targets(membership: Membership, job: GenerationJob) -> list[LoRA]:
    return previews.preview_targets(actor=membership, job=job)
