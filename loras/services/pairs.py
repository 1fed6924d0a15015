"""Pairs: a high-noise and a low-noise LoRA of one workspace bound into one library item.

Pairing is always the user's explicit act (a proposal is only shown, `loras.selectors.lora_proposed_partner`).
Pairing sets each half's expert to its role, and a paired LoRA's expert cannot be changed away from it; a half
that is deleted takes its pair with it (`pair_action` below), so no pair ever points at a deleted LoRA."""

from django.db import transaction
from django.db.models import Q

from generation.usage import usage_pair_created
from loras import recommended
from loras.models import Expert, LoRA, LoRAPair, Status
from loras.pair_names import pair_name
from loras.services.validation import require_editor
from lorasite.errors import Conflict, InvalidInput, NotFound
from lorasite.validators import refuse_bidi_controls
from workspaces.models import Membership

PAIR_ACTIONS = ("unpair", "delete_both")
EDITABLE_PAIR_FIELDS = {"name", "weight_high", "weight_low", "recommended_settings"}


def pair_of(lora: LoRA) -> LoRAPair | None:
    return LoRAPair.objects.select_related("high", "low").filter(Q(high=lora) | Q(low=lora)).first()


def _check_half(lora: LoRA, role: str, actor: Membership) -> None:
    if lora.workspace_id != actor.workspace_id or lora.deleted_at is not None:
        raise NotFound("LoRA not found.")
    require_editor(actor, lora)
    if lora.status == Status.FAILED:
        raise InvalidInput(f"'{lora.name}' failed ingest; it cannot be paired.", errors={role: ["A failed LoRA."]})
    if lora.expert not in (role, Expert.BOTH):
        raise InvalidInput(
            f"'{lora.name}' is a {lora.get_expert_display().lower()} LoRA; it cannot be the "
            f"{Expert(role).label.lower()} half of a pair.",
            errors={role: [f"Its expert is {lora.expert}."]},
        )
    existing = pair_of(lora)
    if existing is not None:
        raise Conflict(
            f"'{lora.name}' is already a half of the pair '{existing.name}'; unpair it first.",
            errors={role: ["Already paired."]},
            pair_id=existing.id,
        )


@transaction.atomic
def pair_create(
    *,
    actor: Membership,
    high: LoRA,
    low: LoRA,
    name: str = "",
    weight_high: float | None = None,
    weight_low: float | None = None,
) -> LoRAPair:
    """Pair `high` and `low` (each must be the caller's to edit, unpaired, not failed, of that expert or "both").
    The name defaults to the high half's without its marker, the weights to each half's preferred weight."""
    if high.id == low.id:
        raise InvalidInput("A pair needs two different LoRAs.", errors={"low": ["The same LoRA as high."]})
    # Locked in id order, so two requests pairing the same LoRAs cannot deadlock.
    locked = {
        lora.id: lora for lora in LoRA.objects.select_for_update().filter(id__in=[high.id, low.id]).order_by("id")
    }
    high, low = locked.get(high.id, high), locked.get(low.id, low)
    _check_half(high, Expert.HIGH, actor)
    _check_half(low, Expert.LOW, actor)
    if "unknown" not in (high.base_model, low.base_model) and high.base_model != low.base_model:
        raise InvalidInput(
            f"'{high.name}' is for {high.base_model} and '{low.name}' for {low.base_model}; a pair's halves are for "
            "one model.",
            errors={"low": ["Another base model."]},
        )
    for lora, role in ((high, Expert.HIGH), (low, Expert.LOW)):
        if lora.expert != role:
            lora.expert = role
            lora.save(update_fields=["expert", "updated_at"])
    name = (name or pair_name(high.name)).strip()
    refuse_bidi_controls(name, field="name")
    pair = LoRAPair(
        workspace_id=actor.workspace_id,
        name=name,
        high=high,
        low=low,
        weight_high=high.preferred_weight if weight_high is None else weight_high,
        weight_low=low.preferred_weight if weight_low is None else weight_low,
        created_by_id=actor.user_id,
    )
    pair.full_clean()
    pair.save()
    usage_pair_created(pair=pair)
    return pair


def _require_pair_editor(actor: Membership, pair: LoRAPair) -> None:
    if pair.workspace_id != actor.workspace_id:
        raise NotFound("Pair not found.")
    require_editor(actor, pair.high)
    require_editor(actor, pair.low)


@transaction.atomic
def pair_update(*, actor: Membership, pair: LoRAPair, **changes) -> LoRAPair:
    _require_pair_editor(actor, pair)
    unknown = set(changes) - EDITABLE_PAIR_FIELDS
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    pair = LoRAPair.objects.select_for_update().select_related("high", "low").get(id=pair.id)
    if "name" in changes:
        refuse_bidi_controls(changes["name"], field="name")
        changes["name"] = changes["name"].strip()
    if "recommended_settings" in changes:
        changes["recommended_settings"] = recommended.clean_settings(
            changes["recommended_settings"], family=pair.high.base_model
        )
    for field, value in changes.items():
        setattr(pair, field, value)
    pair.full_clean()
    pair.save()
    return pair


@transaction.atomic
def pair_delete(*, actor: Membership, pair: LoRAPair) -> None:
    """Unpair: the pair goes, both LoRAs stay in the library as they are."""
    _require_pair_editor(actor, pair)
    LoRAPair.objects.filter(id=pair.id).delete()


def pair_delete_for(*, lora_ids: list[int]) -> int:
    """Remove the pairs these LoRAs are halves of (they are being deleted)."""
    deleted, _ = LoRAPair.objects.filter(Q(high_id__in=lora_ids) | Q(low_id__in=lora_ids)).delete()
    return deleted


def pair_action_for_delete(*, actor: Membership, lora: LoRA, pair_action: str | None) -> list[int]:
    """The LoRAs deleting `lora` deletes: itself, and its partner with `delete_both`. A paired LoRA needs the
    caller to say what happens to the pair (409 naming it otherwise)."""
    pair = pair_of(lora)
    if pair is None:
        return [lora.id]
    if pair_action not in PAIR_ACTIONS:
        raise Conflict(
            f"'{lora.name}' is a half of the pair '{pair.name}': delete both halves (pair=delete_both) or delete "
            "this half and unpair (pair=unpair).",
            errors={"pair": [f"Choose one of: {', '.join(PAIR_ACTIONS)}."]},
            pair_id=pair.id,
        )
    if pair_action == "unpair":
        return [lora.id]
    partner = pair.low if pair.high_id == lora.id else pair.high
    require_editor(actor, partner)
    return [lora.id, partner.id]
