"""The LoRA row every ingest path ends in: duplicates, name and version, and storage-first-then-row."""

from collections.abc import Callable
from pathlib import Path

from django.db import IntegrityError, transaction

from loras.hashes import FileHashes
from loras.lora_inspect import LoraInspection
from loras.models import LoRA, Status
from loras.services.validation import LORA_EXTENSION, LoRAOptions, clean_list
from lorasite.errors import Conflict
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Workspace


def existing_duplicate(workspace_id: int, sha256: str) -> LoRA | None:
    return LoRA.objects.alive().filter(workspace_id=workspace_id, sha256=sha256).exclude(status=Status.FAILED).first()


def duplicate_conflict(existing: LoRA) -> Conflict:
    return Conflict(
        f"This file is already in the workspace as '{existing.name}' version {existing.version} (id {existing.id}).",
        errors={"file": ["Same content as an existing LoRA."]},
        existing_lora_id=existing.id,
    )


def resolve_name_version(*, workspace_id: int, name: str, version: str) -> tuple[str, str]:
    """A new name starts at version 1; a known name gets the next version; a name and version that
    both exist get a suffixed name, `name (2)` — never an overwrite, never a dead end."""
    alive = LoRA.objects.alive().filter(workspace_id=workspace_id).exclude(status=Status.FAILED)
    if not version:
        versions = list(alive.filter(name=name).values_list("version", flat=True))
        numbers = [int(v) for v in versions if v.isdigit()]
        return name, str(max(numbers, default=len(versions)) + 1) if versions else "1"
    if not alive.filter(name=name, version=version).exists():
        return name, version
    counter = 2
    while alive.filter(name=f"{name} ({counter})", version=version).exists():
        counter += 1
    return f"{name} ({counter})", version


def default_name(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name
    return (stem[: -len(LORA_EXTENSION)] if stem.lower().endswith(LORA_EXTENSION) else stem)[:100] or "LoRA"


def new_lora(
    *,
    actor: Membership,
    filename: str,
    key: str,
    size: int,
    inspection: LoraInspection,
    options: LoRAOptions,
    hashes: FileHashes,
    status: str,
) -> LoRA:
    name, version = resolve_name_version(
        workspace_id=actor.workspace_id,
        name=(options.name or default_name(filename)).strip(),
        version=options.version.strip(),
    )
    trigger_words = inspection.trigger_words
    lora = LoRA(
        workspace_id=actor.workspace_id,
        name=name,
        version=version,
        original_filename=filename[:255],
        file=key,
        file_size=size,
        **hashes.as_fields(),
        status=status,
        base_model=inspection.family,
        expert=options.expert or inspection.expert,
        rank=inspection.rank,
        alpha=inspection.alpha,
        key_format=inspection.key_format,
        tensor_count=inspection.tensor_count,
        dtype=inspection.dtype,
        header_metadata=inspection.metadata,
        training_metadata=inspection.training,
        module_shapes={},  # diffusers' converted names, from the ingest task
        trigger_words=trigger_words,
        tags=clean_list(options.tags, field="tags"),
        description=options.description,
        training=options.training,
        preferred_weight=1.0 if options.preferred_weight is None else options.preferred_weight,
        created_by_id=actor.user_id,
    )
    lora.full_clean(validate_constraints=False)
    lora.save()
    return lora


def create_lora_row(
    *,
    actor: Membership,
    filename: str,
    key: str,
    size: int,
    inspection: LoraInspection,
    options: LoRAOptions,
    hashes: FileHashes,
    status: str,
) -> LoRA:
    """`new_lora` in a savepoint under the workspace row's lock (held to the end of the caller's transaction):
    concurrent uploads to one workspace resolve their name, version and duplicate one after the other, so
    each gets its own version and one content is stored once. A refusal leaves the caller's transaction usable."""
    try:
        with transaction.atomic():
            Workspace.objects.select_for_update().filter(id=actor.workspace_id).exists()
            if hashes.sha256 and (existing := existing_duplicate(actor.workspace_id, hashes.sha256)):
                raise duplicate_conflict(existing)
            return new_lora(
                actor=actor,
                filename=filename,
                key=key,
                size=size,
                inspection=inspection,
                options=options,
                hashes=hashes,
                status=status,
            )
    except IntegrityError as error:  # a row written outside the lock (an edit, a restore) took the slot
        if "sha256" in str(error):
            raise Conflict("This file was uploaded twice at the same time; it is in the library once.") from None
        raise Conflict("Another LoRA with this name and version was saved at the same moment; try again.") from None


def save_row_or_delete_object(key: str, create: Callable[[], LoRA]) -> LoRA:
    """Storage first, then the row; the object is deleted when the row cannot be written."""
    try:
        with transaction.atomic():
            return create()
    except BaseException:
        get_object_store().delete(key)
        raise
