"""Bulk actions on the library's selected LoRAs: tag, untag, activate, deactivate, delete, add to a recipe.

All or nothing: every id must be an alive LoRA of the caller's workspace (else 404, nothing changed) that the
caller may edit (else 403, nothing changed; adding to a recipe changes the recipe only, whose service checks the
role); then one transaction changes them all."""

from django.db import transaction
from django.utils import timezone

from generation.recipes.selectors import recipe_get
from generation.recipes.services import recipe_update
from generation.services import LoRARequest
from loras.models import Expert, LoRA
from loras.services.library import lora_soft_delete_many
from loras.services.validation import clean_list, require_editor
from lorasite.errors import InvalidInput, NotFound
from workspaces.models import Membership

BULK_UPDATE_ACTIONS = ("tag", "untag", "activate", "deactivate")
MAX_BULK_IDS = 500


def _selected(actor: Membership, lora_ids: list[int], *, editing: bool = True) -> list[LoRA]:
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
    for lora in loras if editing else ():
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


@transaction.atomic
def lora_bulk_add_to_recipe(*, actor: Membership, lora_ids: list[int], recipe_id: int) -> int:
    """Append the selected LoRAs the recipe does not have yet, each at its preferred weight and its own expert hint;
    a half of a pair in its role at the pair's weight. The recipe service checks the result as it checks any edit
    (at most the job limit of LoRAs, each fitting the recipe's model): every problem in one refusal, nothing
    changed. Returns how many LoRAs were added."""
    loras = _selected(actor, lora_ids, editing=False)  # the recipe changes, not the LoRAs
    recipe = recipe_get(workspace=actor.workspace, recipe_id=recipe_id)
    current = [
        LoRARequest(lora_id=entry.lora_ref, weight=entry.weight, expert=entry.expert, weight_low=entry.weight_low)
        for entry in recipe.recipe_loras.all()
    ]
    present = {request.lora_id for request in current}
    added = [_recipe_request(lora) for lora in loras if lora.id not in present]
    if added:
        recipe_update(actor=actor, recipe=recipe, loras=[*current, *added])
    return len(added)


def _recipe_request(lora: LoRA) -> LoRARequest:
    pair = lora.pair
    if pair is None:
        return LoRARequest(lora_id=lora.id, weight=lora.preferred_weight)
    if pair.high_id == lora.id:
        return LoRARequest(lora_id=lora.id, weight=pair.weight_high, expert=Expert.HIGH)
    return LoRARequest(lora_id=lora.id, weight=pair.weight_low, expert=Expert.LOW)
