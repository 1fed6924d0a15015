"""Preview tags: what a card, the detail page and a job page show of previews (reads in loras.previews)."""

from django import template

from generation.models import GenerationJob
from loras import previews
from loras.models import LoRA
from workspaces.models import Membership, Role

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


@register.simple_tag
def can_set_auto_preview(membership: Membership) -> bool:
    """Admins and owners change the workspace setting (`workspaces.services.workspace_update` enforces it)."""
    return membership.has_role(Role.ADMIN)
