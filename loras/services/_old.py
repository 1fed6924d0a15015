"""Writes for the LoRA library: the three ingest paths, edits, soft delete, purge and cleanup.

Every path ends in the same pipeline: validate what the client declared (extension, size), read
only the safetensors header to decide it is a LoRA and what for, deduplicate by sha256, store the
object, then create the row as `processing`. Storage comes first and the row second; when the row
cannot be written the object is deleted, so a failure leaves nothing behind. The `lora_ingest` task
then finishes every path the same way (`lora_finish_ingest`): hash when not yet known, deduplicate,
and compute the coverage with diffusers' own key converters — which needs torch, so it never runs in
the web process. A file diffusers would load nothing of becomes `failed` with the reason.
"""

import hashlib
import logging
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from lorasite.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, PermissionDenied, Unprocessable
from lorasite.object_store import get_object_store
from loras.filenames import extension_of, sanitize_filename
from loras.lora_inspect import FAMILIES, LoraInspection, NotALoRA, detect_family, inspect_lora
from loras.models import Expert, LoRA, LoRAUpload, Status
from loras.safetensors_header import HeaderError, read_header
from workspaces.models import Membership, Role
from workspaces.services import require_role

logger = logging.getLogger(__name__)

LORA_EXTENSION = ".safetensors"
PICKLE_EXTENSIONS = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
HASH_CHUNK = 8 * 1024 * 1024
S3_MAX_PARTS = 10_000


@dataclass(frozen=True)
class LoRAOptions:
    """What the user may say about a new LoRA; everything else is read from the file."""

    name: str = ""
    version: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    expert: str = ""
    preferred_weight: float | None = None


# --- validation ---------------------------------------------------------------------------------


def check_declared_file(*, filename: str, size: int | None) -> None:
    """Refuse by name and declared size before a byte is accepted."""
    extension = extension_of(filename)
    if extension in PICKLE_EXTENSIONS:
        raise InvalidInput(
            f"'{filename}' is a pickle checkpoint ({extension}). Pickle files can run code when loaded, so lorasite "
            "only stores .safetensors. Convert it on a trusted machine: "
            "python -c \"import torch, safetensors.torch as st; "
            "st.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')\"",
            errors={"file": ["Pickle formats (.ckpt, .pt, .bin) are not accepted; convert to .safetensors."]},
        )
    if extension != LORA_EXTENSION:
        raise InvalidInput(
            f"'{filename}' is not a .safetensors file.",
            errors={"file": ["Only .safetensors files are accepted."]},
        )
    if size is None:
        return
    if size < 1:
        raise Unprocessable("This is not a LoRA: the file is empty.", errors={"file": ["The file is empty."]})
    limit = settings.LORASITE_MAX_LORA_BYTES
    if size > limit:
        raise PayloadTooLarge(
            f"The file is {_human(size)}; the limit is {_human(limit)} (LORASITE_MAX_LORA_BYTES).",
            errors={"size": [f"Larger than the {_human(limit)} limit."]},
        )


def inspect_stored_header(read_range: Callable[[int, int], bytes], *, size: int, filename: str) -> LoraInspection:
    """Parse and inspect the header with ranged reads only; a bad file becomes a 422 naming the problem."""
    try:
        header = read_header(read_range, file_size=size)
        return inspect_lora(header, filename=filename, read_range=read_range)
    except HeaderError as error:
        raise Unprocessable(f"This is not a valid safetensors file: {error}", errors={"file": [str(error)]}) from None
    except NotALoRA as error:
        raise Unprocessable(str(error), errors={"file": [str(error)]}) from None


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    raise AssertionError("unreachable")


def lora_object_key(*, workspace_id: int, filename: str) -> str:
    # The path is ours, never the user's: a fresh uuid directory and a sanitized name.
    return f"workspaces/{workspace_id}/loras/{uuid.uuid4().hex}/{sanitize_filename(filename)}"


def _require_uploader(actor: Membership) -> None:
    require_role(membership=actor, minimum=Role.MEMBER, action="upload LoRAs")


def _require_editor(actor: Membership, lora: LoRA) -> None:
    if actor.has_role(Role.ADMIN) or (actor.has_role(Role.MEMBER) and lora.created_by_id == actor.user_id):
        return
    require_role(membership=actor, minimum=Role.ADMIN, action="change LoRAs uploaded by someone else")


def _existing_duplicate(workspace_id: int, sha256: str) -> LoRA | None:
    return (
        LoRA.objects.alive().filter(workspace_id=workspace_id, sha256=sha256).exclude(status=Status.FAILED).first()
    )


def _duplicate_conflict(existing: LoRA) -> Conflict:
    return Conflict(
        f"This file is already in the workspace as '{existing.name}' version {existing.version} (id {existing.id}).",
        errors={"file": ["Same content as an existing LoRA."]},
        existing_lora_id=existing.id,
    )


def _clean_list(values, *, field: str, max_items: int = 50, max_length: int = 64) -> list[str]:
    cleaned: list[str] = []
    for value in values or []:
        text = " ".join(str(value).split())
        if not text:
            continue
        if len(text) > max_length:
            raise InvalidInput(f"A {field[:-1]} is longer than {max_length} characters.", errors={field: [f"'{text[:20]}…' is too long."]})
        if text.lower() not in {c.lower() for c in cleaned}:
            cleaned.append(text)
    if len(cleaned) > max_items:
        raise InvalidInput(f"At most {max_items} {field}.", errors={field: [f"At most {max_items} {field}."]})
    return cleaned


def _resolve_name_version(*, workspace_id: int, name: str, version: str) -> tuple[str, str]:
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


def _default_name(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name
    return (stem[: -len(LORA_EXTENSION)] if stem.lower().endswith(LORA_EXTENSION) else stem)[:100] or "LoRA"


def _new_lora(*, actor: Membership, filename: str, key: str, size: int, inspection: LoraInspection, options: LoRAOptions, sha256: str, status: str) -> LoRA:
    name, version = _resolve_name_version(
        workspace_id=actor.workspace_id, name=(options.name or _default_name(filename)).strip(), version=options.version.strip()
    )
    trigger_words = inspection.trigger_words
    lora = LoRA(
        workspace_id=actor.workspace_id,
        name=name,
        version=version,
        original_filename=filename[:255],
        file=key,
        file_size=size,
        sha256=sha256,
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
        tags=_clean_list(options.tags, field="tags"),
        description=options.description,
        preferred_weight=1.0 if options.preferred_weight is None else options.preferred_weight,
        created_by_id=actor.user_id,
    )
    lora.full_clean(validate_constraints=False)
    lora.save()
    return lora


def _save_row_or_delete_object(key: str, create: Callable[[], LoRA]) -> LoRA:
    """Storage first, then the row; the object is deleted when the row cannot be written."""
    try:
        with transaction.atomic():
            return create()
    except IntegrityError as error:
        get_object_store().delete(key)
        if "sha256" in str(error):
            raise Conflict("This file was uploaded twice at the same time; it is in the library once.") from None
        raise Conflict("Another LoRA with this name and version was saved at the same moment; try again.") from None
    except BaseException:
        get_object_store().delete(key)
        raise


# --- path 2 and 3: the bytes are on this machine (through the app, server import) ----------------


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_read_range(path: Path) -> Callable[[int, int], bytes]:
    def read_range(offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    return read_range


def lora_ingest_local_file(*, actor: Membership, path: Path, filename: str, options: LoRAOptions = LoRAOptions()) -> LoRA:
    """Ingest a file that is on this machine: an upload through the app (Django's temporary file)
    or a server-path import. The header checks, hash and duplicate check answer here (422, 409);
    the row is `processing` until the `lora_ingest` task has computed its coverage."""
    from loras.tasks import lora_ingest

    _require_uploader(actor)
    size = path.stat().st_size
    check_declared_file(filename=filename, size=size)
    inspection = inspect_stored_header(_local_read_range(path), size=size, filename=filename)
    sha256 = _sha256_of_file(path)
    existing = _existing_duplicate(actor.workspace_id, sha256)
    if existing:
        raise _duplicate_conflict(existing)
    key = lora_object_key(workspace_id=actor.workspace_id, filename=filename)
    get_object_store().save_file(key, path)

    def create() -> LoRA:
        lora = _new_lora(
            actor=actor, filename=filename, key=key, size=size, inspection=inspection, options=options,
            sha256=sha256, status=Status.PROCESSING,
        )
        lora_ingest.delay_on_commit(lora.id)
        return lora

    lora = _save_row_or_delete_object(key, create)
    logger.info("LoRA %s stored as '%s' v%s (%s, %s)", lora.id, lora.name, lora.version, lora.base_model, _human(size))
    return lora


def resolve_import_path(file_path: str) -> Path:
    """The real path of a server file inside one of LORASITE_IMPORT_DIRS; `..` and symlinks that
    lead outside are refused."""
    allowed = [Path(d).resolve() for d in settings.LORASITE_IMPORT_DIRS]
    if not allowed:
        raise InvalidInput("Server imports are disabled: LORASITE_IMPORT_DIRS is empty.", errors={"file_path": ["Imports are disabled."]})
    real = Path(os.path.realpath(file_path))
    if not any(real.is_relative_to(directory) for directory in allowed):
        raise InvalidInput(
            f"'{file_path}' is outside the import directories ({', '.join(map(str, allowed))}).",
            errors={"file_path": ["Outside the allowed import directories."]},
        )
    if not real.is_file():
        raise InvalidInput(f"'{file_path}' does not exist or is not a file.", errors={"file_path": ["No such file."]})
    return real


def lora_import_server_file(*, actor: Membership, file_path: str, options: LoRAOptions = LoRAOptions()) -> LoRA:
    require_role(membership=actor, minimum=Role.ADMIN, action="import LoRAs from the server")
    real = resolve_import_path(file_path)
    # Copy into the library; the original stays where it is, untouched.
    return lora_ingest_local_file(actor=actor, path=real, filename=Path(file_path).name, options=options)


# --- path 1: direct to storage, multipart ---------------------------------------------------------


def part_size_for(size: int) -> int:
    configured = settings.LORASITE_UPLOAD_PART_BYTES
    return max(configured, math.ceil(size / S3_MAX_PARTS))


def upload_part_count(upload: LoRAUpload) -> int:
    return max(1, math.ceil(upload.size / upload.part_size))


@transaction.atomic
def lora_upload_start(*, actor: Membership, filename: str, size: int, options: LoRAOptions = LoRAOptions()) -> LoRAUpload:
    _require_uploader(actor)
    check_declared_file(filename=filename, size=size)
    key = lora_object_key(workspace_id=actor.workspace_id, filename=filename)
    store = get_object_store()
    storage_upload_id = store.multipart_create(key)
    upload = LoRAUpload(
        workspace_id=actor.workspace_id,
        created_by_id=actor.user_id,
        original_filename=filename[:255],
        object_key=key,
        storage_upload_id=storage_upload_id,
        size=size,
        part_size=part_size_for(size),
        options={k: v for k, v in vars(options).items() if v not in ("", (), None)},
        expires_at=timezone.now() + timedelta(seconds=settings.LORASITE_UPLOAD_EXPIRY_SECONDS),
    )
    try:
        upload.full_clean()
        upload.save()
    except BaseException:
        store.multipart_abort(key, storage_upload_id)
        raise
    return upload


def upload_part_urls(upload: LoRAUpload) -> list[dict]:
    """Fresh signed URLs for every part (a client resuming after an hour asks again)."""
    store = get_object_store()
    expires_in = settings.LORASITE_SIGNED_URL_SECONDS
    return [
        {"part_number": n, "url": store.multipart_part_url(upload.object_key, upload.storage_upload_id, n, expires_in=expires_in)}
        for n in range(1, upload_part_count(upload) + 1)
    ]


def _get_open_upload(actor: Membership, upload_id: uuid.UUID) -> LoRAUpload:
    try:
        upload = LoRAUpload.objects.get(id=upload_id, workspace_id=actor.workspace_id)
    except LoRAUpload.DoesNotExist:
        raise NotFound("Upload not found (it was completed, aborted or has expired).") from None
    if upload.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="finish someone else's upload")
    return upload


def lora_upload_refresh(*, actor: Membership, upload_id: uuid.UUID) -> LoRAUpload:
    return _get_open_upload(actor, upload_id)


def _discard_upload(upload: LoRAUpload) -> None:
    store = get_object_store()
    try:
        store.multipart_abort(upload.object_key, upload.storage_upload_id)
    except Exception:  # already completed or aborted in storage: nothing left to abort
        logger.info("multipart upload %s was already closed", upload.id)
    store.delete(upload.object_key)
    LoRAUpload.objects.filter(id=upload.id).delete()


def lora_upload_abort(*, actor: Membership, upload_id: uuid.UUID) -> None:
    _discard_upload(_get_open_upload(actor, upload_id))


def lora_upload_complete(*, actor: Membership, upload_id: uuid.UUID, parts: list[dict]) -> LoRA:
    """Close the multipart upload, decide from the header alone, and create the row as
    `processing`; the `lora_ingest` task hashes the object and marks it ready or failed.

    A wrong part list is a 400 that keeps the upload open for a corrected retry; once storage has
    the object, any failure deletes the object and the upload so that nothing is left behind."""
    from loras.tasks import lora_ingest

    upload = lora_upload_refresh(actor=actor, upload_id=upload_id)
    expected = upload_part_count(upload)
    numbers = sorted(part["part_number"] for part in parts)
    if numbers != list(range(1, expected + 1)):
        raise InvalidInput(
            f"Expected parts 1 to {expected}, got {numbers[:10]}{'…' if len(numbers) > 10 else ''}.",
            errors={"parts": [f"Send every part number from 1 to {expected} exactly once."]},
        )
    store = get_object_store()
    key = upload.object_key
    try:
        store.multipart_complete(key, upload.storage_upload_id, [(p["part_number"], p["etag"]) for p in sorted(parts, key=lambda p: p["part_number"])])
    except Exception as error:
        _discard_upload(upload)
        raise InvalidInput(f"Storage refused to assemble the parts: {error}", errors={"parts": [str(error)]}) from None
    try:
        size = store.size(key)
        if size != upload.size:
            raise InvalidInput(f"The upload declared {upload.size} bytes but {size} arrived.", errors={"parts": ["Size mismatch."]})
        inspection = inspect_stored_header(lambda o, n: store.read_range(key, o, n), size=size, filename=upload.original_filename)
        options = LoRAOptions(**{k: tuple(v) if k == "tags" else v for k, v in upload.options.items()})
        with transaction.atomic():
            lora = _new_lora(
                actor=actor, filename=upload.original_filename, key=key, size=size, inspection=inspection,
                options=options, sha256="", status=Status.PROCESSING,
            )
            upload.delete()
            lora_ingest.delay_on_commit(lora.id)
    except BaseException:
        _discard_upload(upload)
        raise
    return lora


def lora_finish_ingest(*, lora_id: int) -> LoRA:
    """The ingest task's work for every path: hash (multipart uploads only), deduplicate, compute the coverage,
    and mark the LoRA ready, or failed with the reason (its stored copy deleted)."""
    lora = LoRA.objects.get(id=lora_id)
    if lora.status != Status.PROCESSING:
        return lora
    store = get_object_store()
    sha256 = lora.sha256 or _sha256_of_stored(store, lora.file.name)
    coverage, refusal = _coverage_or_refusal(store, lora)
    with transaction.atomic():
        lora = LoRA.objects.select_for_update().get(id=lora_id)
        if lora.status != Status.PROCESSING:
            return lora
        existing = _existing_duplicate(lora.workspace_id, sha256)
        if existing and existing.id != lora.id:
            refusal = _duplicate_conflict(existing).message
        if refusal:
            # Nothing useless is kept: the copy goes, the row stays as the explanation.
            key = lora.file.name
            lora.status, lora.file, lora.sha256, lora.error = Status.FAILED, "", sha256, refusal
            lora.save(update_fields=["status", "file", "sha256", "error", "updated_at"])
            transaction.on_commit(lambda: store.delete(key))
            return lora
        lora.sha256, lora.status, lora.error = sha256, Status.READY, ""
        update_fields = ["sha256", "status", "error", "updated_at"]
        if coverage is not None:
            lora.coverage, lora.module_shapes = coverage, coverage.pop("module_shapes")
            lora.base_model = _family_from_converted(lora.module_shapes) or lora.base_model
            update_fields += ["coverage", "module_shapes", "base_model"]
        lora.save(update_fields=update_fields)
    return lora


def lora_fail_ingest(*, lora_id: int, reason: str) -> None:
    """The ingest task failed unexpectedly: the row becomes `failed` with the reason (only from `processing`) and
    its stored copy is deleted, as for a refused file."""
    with transaction.atomic():
        lora = LoRA.objects.select_for_update().filter(id=lora_id, status=Status.PROCESSING).first()
        if lora is None:
            return
        key = lora.file.name
        lora.status, lora.file, lora.error = Status.FAILED, "", reason[:2000]
        lora.save(update_fields=["status", "file", "error", "updated_at"])
        if key:
            transaction.on_commit(lambda: get_object_store().delete(key))


def _sha256_of_stored(store, key: str) -> str:
    digest = hashlib.sha256()
    with store.open_stream(key) as stream:
        for chunk in iter(lambda: stream.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _coverage_or_refusal(store, lora: LoRA) -> tuple[dict | None, str]:
    """(coverage, "") or (None, why diffusers would load nothing of it); (None, "") for families without a loader."""
    # Worker-only: torch and diffusers are imported here, never by the web process.
    from generation.model_registry import model_registry
    from generation.runtime.lora_keys import ARCHITECTURES, CoverageError, lora_coverage, model_layers

    key = lora.file.name
    header = read_header(lambda offset, length: store.read_range(key, offset, length), file_size=lora.file_size)
    tensors = {t.name: (t.dtype, t.shape) for t in header.tensors.values()}
    if lora.base_model == "unknown":
        # No family to refuse for; what a loader makes of it still lets the fit check see its layers.
        for architecture in ARCHITECTURES:
            try:
                coverage = lora_coverage(tensors, family=architecture)
            except CoverageError:
                continue
            if coverage and coverage["mapped"]:
                return coverage, ""
        return None, ""
    family = FAMILIES.get(lora.base_model, lora.base_model)
    models = [
        model
        for model in model_registry().values()
        if model.enabled and lora.base_model in model.families and (model.path / "transformer/config.json").is_file()
    ]
    # The layers of the family's models whose weights this worker has; without any, only the conversion is checked.
    layers = {"transformer": set().union(*(model_layers(m.path / "transformer") for m in models))} if models else None
    try:
        coverage = lora_coverage(tensors, family=lora.base_model, layers=layers)
    except CoverageError as error:
        return None, f"This LoRA cannot be loaded into a {family} pipeline: {error}."
    if coverage is not None and not coverage["mapped"]:
        target = " or ".join(m.display_name for m in models) if models else f"a {family} pipeline"
        ignored = ", ".join(sorted(coverage["ignored"])) or "none"
        return None, (
            f"None of its {coverage['tensors']} tensors map to a layer of {target} (diffusers ignores them: {ignored})."
        )
    return coverage, ""


def _family_from_converted(module_shapes: dict[str, dict[str, list[int]]]) -> str | None:
    """The family read again from diffusers' converted denoiser names; None when they do not tell."""
    denoiser = {**module_shapes.get("transformer", {}), **module_shapes.get("unet", {})}
    family, _ = detect_family({module: tuple(shape) for module, shape in denoiser.items()})
    return None if family == "unknown" else family


# --- edits, delete, purge, cleanup ---------------------------------------------------------------


EDITABLE_FIELDS = {"name", "version", "description", "tags", "trigger_words", "preferred_weight", "expert", "is_active"}


@transaction.atomic
def lora_update(*, actor: Membership, lora: LoRA, **changes) -> LoRA:
    _require_editor(actor, lora)
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    lora = LoRA.objects.select_for_update().get(id=lora.id)
    for field in ("tags", "trigger_words"):
        if field in changes:
            changes[field] = _clean_list(changes[field], field=field)
    for field in ("name", "version"):
        if field in changes:
            changes[field] = changes[field].strip()
    for field, value in changes.items():
        setattr(lora, field, value)
    lora.full_clean(validate_constraints=False)
    clash = (
        LoRA.objects.alive().exclude(status=Status.FAILED).exclude(id=lora.id)
        .filter(workspace_id=lora.workspace_id, name=lora.name, version=lora.version).exists()
    )
    if clash:
        raise Conflict(
            f"'{lora.name}' version {lora.version} already exists in this workspace.",
            errors={"name": ["This name and version are taken."]},
        )
    lora.save()
    return lora


@transaction.atomic
def lora_soft_delete(*, actor: Membership, lora: LoRA) -> None:
    """Hidden from lists and new jobs at once; jobs keep their reference; beat purges the object
    after LORASITE_PURGE_AFTER_DAYS."""
    _require_editor(actor, lora)
    if not lora_soft_delete_many(lora_ids=[lora.id]):
        raise NotFound("LoRA not found.")


def lora_soft_delete_many(*, lora_ids: list[int]) -> int:
    """Soft-delete without a role check: for the member-checked service above and staff in the admin."""
    now = timezone.now()
    return LoRA.objects.filter(id__in=lora_ids, deleted_at__isnull=True).update(deleted_at=now, updated_at=now)


def lora_set_active_many(*, lora_ids: list[int], active: bool) -> int:
    """Staff action in the admin: (de)activate LoRAs in any workspace."""
    return LoRA.objects.filter(id__in=lora_ids).update(is_active=active, updated_at=timezone.now())


@transaction.atomic
def lora_restore(*, lora: LoRA) -> LoRA:
    """Admin action: undo a soft delete whose object is not purged yet."""
    if lora.purged_at:
        raise Conflict(f"'{lora.name}' was purged on {lora.purged_at:%Y-%m-%d}; its file is gone.")
    name, version = _resolve_name_version(workspace_id=lora.workspace_id, name=lora.name, version=lora.version)
    lora.name, lora.version, lora.deleted_at = name, version, None
    lora.save(update_fields=["name", "version", "deleted_at", "updated_at"])
    return lora


def lora_purge_deleted(*, now=None) -> int:
    """Delete the storage objects of LoRAs soft-deleted longer than LORASITE_PURGE_AFTER_DAYS."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.LORASITE_PURGE_AFTER_DAYS)
    store = get_object_store()
    purged = 0
    for lora in LoRA.objects.filter(deleted_at__lt=cutoff, purged_at__isnull=True):
        if lora.file.name:
            store.delete(lora.file.name)
        LoRA.objects.filter(id=lora.id).update(purged_at=now, file="")
        purged += 1
    return purged


def lora_storage_cleanup(*, now=None) -> dict[str, int]:
    """Abort multipart uploads past their expiry, and remove objects under workspaces/*/loras/
    that no row references once they are older than LORASITE_ORPHAN_GRACE_SECONDS."""
    now = now or timezone.now()
    store = get_object_store()
    report = {"uploads_aborted": 0, "orphans_deleted": 0}
    for upload in LoRAUpload.objects.filter(expires_at__lt=now):
        _discard_upload(upload)
        report["uploads_aborted"] += 1
    grace = now - timedelta(seconds=settings.LORASITE_ORPHAN_GRACE_SECONDS)
    open_keys = set(LoRAUpload.objects.values_list("object_key", flat=True))
    for pending in store.multipart_pending():
        if pending.key not in open_keys and pending.initiated < grace:
            store.multipart_abort(pending.key, pending.upload_id)
            report["uploads_aborted"] += 1
    referenced = set(LoRA.objects.exclude(file="").values_list("file", flat=True)) | open_keys
    for stored in store.list("workspaces/"):
        if "/loras/" in stored.key and stored.key not in referenced and stored.modified < grace:
            store.delete(stored.key)
            report["orphans_deleted"] += 1
    return report


def lora_ingest_uploaded_file(*, actor: Membership, uploaded_file, options: LoRAOptions = LoRAOptions()) -> LoRA:
    """Through the app: Django has streamed the body to a temporary file (small uploads stay in
    memory and are spilled here), so memory stays flat whatever the size."""
    import tempfile

    if hasattr(uploaded_file, "temporary_file_path"):
        return lora_ingest_local_file(actor=actor, path=Path(uploaded_file.temporary_file_path()), filename=uploaded_file.name, options=options)
    with tempfile.NamedTemporaryFile(suffix=LORA_EXTENSION) as spill:
        for chunk in uploaded_file.chunks():
            spill.write(chunk)
        spill.flush()
        return lora_ingest_local_file(actor=actor, path=Path(spill.name), filename=uploaded_file.name, options=options)


# --- permissions as the dashboard shows them ------------------------------------------------------


def lora_can_upload(*, actor: Membership) -> bool:
    """Whether the page offers the upload button: the same rule the upload paths enforce."""
    try:
        _require_uploader(actor)
    except PermissionDenied:
        return False
    return True


def lora_can_edit(*, actor: Membership, lora: LoRA) -> bool:
    """Whether the page offers edit and delete controls: the same rule `lora_update` enforces."""
    try:
        _require_editor(actor, lora)
    except PermissionDenied:
        return False
    return True


def human_size(size: int) -> str:
    """A size as the server's messages word it ("5 GiB"), so that pages and messages agree."""
    return _human(size)
