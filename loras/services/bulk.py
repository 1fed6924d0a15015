"""Bulk actions on the library's selected LoRAs: tag, untag, activate, deactivate, delete.

All or nothing: every id must be an alive LoRA of the caller's workspace (else 404, nothing changed) that the
caller may edit (else 403, nothing changed); then one transaction changes them all."""

from django.db import transaction
from django.utils import timezone

from loras.models import LoRA
from loras.services.library import lora_soft_delete_many
from loras.services.validation import clean_list, require_editor
from lorasite.errors import InvalidInput, NotFound
from workspaces.models import Membership

BULK_UPDATE_ACTIONS = ("tag", "untag", "activate", "deactivate")
MAX_BULK_IDS = 500


def _selected(actor: Membership, lora_ids: list[int]) -> list[LoRA]:
    ids = list(dict.fromkeys(lora_ids))
    if not ids:
        raise InvalidInput("Select at least one LoRA.", errors={"ids": ["Empty."]})
    if len(ids) > MAX_BULK_IDS:
        raise InvalidInput(f"At most {MAX_BULK_IDS} LoRAs at once.", errors={"ids": [f"{len(ids)} given."]})
    loras = list(
        LoRA.objects.alive().select_for_update().filter(workspace_id=actor.workspace_id, id__in=ids).order_by("id")
    )
    if len(loras) != len(ids):
        missing = sorted(set(ids) - {lora.id for lora in loras})
        raise NotFound(f"LoRA not found: {', '.join(map(str, missing))}.", errors={"ids": ["Not in this workspace."]})
    for lora in loras:
        require_editor(actor, lora)
    return loras


@transaction.atomic
def lora_bulk_update(*, actor: Membership, lora_ids: list[int], action: str, tags: list[str] | None = None) -> int:
    """Apply `action` to every selected LoRA; `tags` for tag/untag. Returns how many LoRAs changed."""
    if action not in BULK_UPDATE_ACTIONS:
        raise InvalidInput(
            f"Unknown action '{action}'.", errors={"action": [f"One of {', '.join(BULK_UPDATE_ACTIONS)}."]}
        )
    tags = clean_list(tags or [], field="tags")
    if action in ("tag", "untag") and not tags:
        raise InvalidInput("Name at least one tag.", errors={"tags": ["Empty."]})
    loras = _selected(actor, lora_ids)
    now, changed = timezone.now(), []
    for lora in loras:
        if action in ("activate", "deactivate"):
            value = action == "activate"
            if lora.is_active != value:
                lora.is_active = value
                changed.append(lora)
            continue
        if action == "tag":  # clean_list drops case-insensitive repeats and keeps the 50-tag limit
            new_tags = clean_list([*lora.tags, *tags], field="tags")
        else:
            new_tags = [tag for tag in lora.tags if tag.casefold() not in {t.casefold() for t in tags}]
        if new_tags != lora.tags:
            lora.tags = new_tags
            changed.append(lora)
    for lora in changed:
        lora.updated_at = now
    LoRA.objects.bulk_update(changed, ["is_active", "tags", "updated_at"])
    return len(changed)


@transaction.atomic
def lora_bulk_delete(*, actor: Membership, lora_ids: list[int]) -> int:
    """Soft-delete every selected LoRA. A pair with one half selected is unpaired; its other half stays."""
    loras = _selected(actor, lora_ids)
    return lora_soft_delete_many(lora_ids=[lora.id for lora in loras])
