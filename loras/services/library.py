"""Edits, soft delete, restore, purge and storage cleanup of LoRAs already in the library."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.scaleout import loras_prefetch
from loras import recommended
from loras.models import Expert, LoRA, LoRAUpload, Status
from loras.services.pairs import pair_action_for_delete, pair_delete_for, pair_of
from loras.services.rows import resolve_name_version
from loras.services.uploads import discard_upload
from loras.services.validation import clean_list, require_editor
from loras.training import training_record_clean
from lorasite.errors import Conflict, InvalidInput, NotFound
from lorasite.object_store import get_object_store
from lorasite.validators import refuse_bidi_controls
from workspaces.models import Membership
from workspaces.services import storage_purge_pending_prefixes

EDITABLE_FIELDS = {
    "name",
    "version",
    "description",
    "tags",
    "trigger_words",
    "preferred_weight",
    "expert",
    "is_active",
    "recommended_settings",
    "is_distill",
    "training",
}


@transaction.atomic
def lora_update(*, actor: Membership, lora: LoRA, **changes) -> LoRA:
    require_editor(actor, lora)
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    lora = LoRA.objects.select_for_update().get(id=lora.id)
    activated = changes.get("is_active") is True and not lora.is_active
    for field in ("tags", "trigger_words"):
        if field in changes:
            changes[field] = clean_list(changes[field], field=field)
    for field in ("name", "version"):
        if field in changes:
            refuse_bidi_controls(changes[field], field=field)
            changes[field] = changes[field].strip()
    if "training" in changes:
        changes["training"] = training_record_clean(changes["training"])
    if "recommended_settings" in changes:
        changes["recommended_settings"] = recommended.clean_settings(
            changes["recommended_settings"], family=lora.base_model
        )
    for field, value in changes.items():
        setattr(lora, field, value)
    if "expert" in changes and (pair := pair_of(lora)) is not None:
        role = Expert.HIGH if pair.high_id == lora.id else Expert.LOW
        if lora.expert != role:
            raise Conflict(
                f"'{lora.name}' is the {Expert(role).label.lower()} half of the pair '{pair.name}'; unpair it to "
                "change its expert.",
                errors={"expert": ["Set by its pair."]},
                pair_id=pair.id,
            )
    lora.full_clean(validate_constraints=False)
    clash = (
        LoRA.objects.alive()
        .exclude(status=Status.FAILED)
        .exclude(id=lora.id)
        .filter(workspace_id=lora.workspace_id, name=lora.name, version=lora.version)
        .exists()
    )
    if clash:
        raise Conflict(
            f"'{lora.name}' version {lora.version} already exists in this workspace.",
            errors={"name": ["This name and version are taken."]},
        )
    lora.save()
    if activated:  # "activating an adapter pre-loads it": its workers fetch it before a job needs it
        loras_prefetch(loras=[lora])
    return lora


@transaction.atomic
def lora_soft_delete(*, actor: Membership, lora: LoRA, pair_action: str | None = None) -> list[int]:
    """Hidden from lists and new jobs at once; jobs keep their reference; beat purges the object
    after LORASITE_PURGE_AFTER_DAYS. A half of a pair needs `pair_action` ("unpair" or "delete_both",
    see `pairs.pair_action_for_delete`). Returns the ids deleted."""
    require_editor(actor, lora)
    lora_ids = pair_action_for_delete(actor=actor, lora=lora, pair_action=pair_action)
    if lora_soft_delete_many(lora_ids=lora_ids) != len(lora_ids):
        raise NotFound("LoRA not found.")
    return lora_ids


def lora_soft_delete_many(*, lora_ids: list[int]) -> int:
    """Soft-delete without a role check: for the member-checked services and staff in the admin. The pairs
    the LoRAs are halves of go with them."""
    now = timezone.now()
    pair_delete_for(lora_ids=lora_ids)
    return LoRA.objects.filter(id__in=lora_ids, deleted_at__isnull=True).update(deleted_at=now, updated_at=now)


def lora_set_active_many(*, lora_ids: list[int], active: bool) -> int:
    """Staff action in the admin: (de)activate LoRAs in any workspace."""
    return LoRA.objects.filter(id__in=lora_ids).update(is_active=active, updated_at=timezone.now())


@transaction.atomic
def lora_restore(*, lora: LoRA) -> LoRA:
    """Admin action: undo a soft delete whose object is not purged yet."""
    if lora.purged_at:
        raise Conflict(f"'{lora.name}' was purged on {lora.purged_at:%Y-%m-%d}; its file is gone.")
    name, version = resolve_name_version(workspace_id=lora.workspace_id, name=lora.name, version=lora.version)
    lora.name, lora.version, lora.deleted_at = name, version, None
    lora.save(update_fields=["name", "version", "deleted_at", "updated_at"])
    return lora


def lora_purge_deleted(*, now=None) -> int:
    """Delete the storage objects of LoRAs soft-deleted longer than LORASITE_PURGE_AFTER_DAYS (file and preview)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.LORASITE_PURGE_AFTER_DAYS)
    store = get_object_store()
    purged = 0
    for lora in LoRA.objects.filter(deleted_at__lt=cutoff, purged_at__isnull=True):
        for key in filter(None, (lora.file.name, lora.preview_key, lora.preview_thumb_key)):
            store.delete(key)
        LoRA.objects.filter(id=lora.id).update(
            purged_at=now, file="", preview_key="", preview_thumb_key="", preview_kind="", preview_job=None
        )
        purged += 1
    return purged


def lora_storage_cleanup(*, now=None) -> dict[str, int]:
    """Abort multipart uploads past their expiry, and remove objects under workspaces/*/loras/ and */previews/
    that no row references once they are older than LORASITE_ORPHAN_GRACE_SECONDS."""
    now = now or timezone.now()
    store = get_object_store()
    report = {"uploads_aborted": 0, "orphans_deleted": 0}
    for upload_id in LoRAUpload.objects.filter(expires_at__lt=now).values_list("id", flat=True):
        with transaction.atomic():
            # One that a `complete` holds is being finished, not abandoned.
            upload = LoRAUpload.objects.select_for_update(skip_locked=True).filter(id=upload_id).first()
            if upload is not None:
                discard_upload(upload)
                report["uploads_aborted"] += 1
    grace = now - timedelta(seconds=settings.LORASITE_ORPHAN_GRACE_SECONDS)
    open_keys = set(LoRAUpload.objects.values_list("object_key", flat=True))
    for pending in store.multipart_pending():
        if pending.key not in open_keys and pending.initiated < grace:
            store.multipart_abort(pending.key, pending.upload_id)
            report["uploads_aborted"] += 1
    referenced = set(LoRA.objects.exclude(file="").values_list("file", flat=True)) | open_keys
    # A preview's objects are written before its row names them (loras/previews.py): a crash between leaves orphans.
    for keys in LoRA.objects.exclude(preview_key="").values_list("preview_key", "preview_thumb_key"):
        referenced.update(keys)
    # A deleted workspace's files keep the purge grace (workspaces.services.storage_purge_due removes them).
    awaiting_purge = storage_purge_pending_prefixes()
    for stored in store.list("workspaces/"):
        if stored.key.startswith(awaiting_purge):
            continue
        in_lora_folders = "/loras/" in stored.key or "/previews/" in stored.key
        if in_lora_folders and stored.key not in referenced and stored.modified < grace:
            store.delete(stored.key)
            report["orphans_deleted"] += 1
    return report
