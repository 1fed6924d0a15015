"""Path 1: direct to storage, multipart. The client sends parts to signed URLs; `complete` assembles them."""

import logging
import math
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from lorasite.errors import InvalidInput, NotFound
from lorasite.object_store import get_object_store
from loras.models import LoRA, LoRAUpload, Status
from loras.services.rows import new_lora
from loras.services.validation import LoRAOptions, check_declared_file, inspect_stored_header, lora_object_key, require_uploader
from workspaces.models import Membership, Role
from workspaces.services import require_role

logger = logging.getLogger(__name__)

S3_MAX_PARTS = 10_000


def part_size_for(size: int) -> int:
    configured = settings.LORASITE_UPLOAD_PART_BYTES
    return max(configured, math.ceil(size / S3_MAX_PARTS))


def upload_part_count(upload: LoRAUpload) -> int:
    return max(1, math.ceil(upload.size / upload.part_size))


@transaction.atomic
def lora_upload_start(*, actor: Membership, filename: str, size: int, options: LoRAOptions = LoRAOptions()) -> LoRAUpload:
    require_uploader(actor)
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


def discard_upload(upload: LoRAUpload) -> None:
    store = get_object_store()
    try:
        store.multipart_abort(upload.object_key, upload.storage_upload_id)
    except Exception:  # already completed or aborted in storage: nothing left to abort
        logger.info("multipart upload %s was already closed", upload.id)
    store.delete(upload.object_key)
    LoRAUpload.objects.filter(id=upload.id).delete()


def lora_upload_abort(*, actor: Membership, upload_id: uuid.UUID) -> None:
    discard_upload(_get_open_upload(actor, upload_id))


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
        discard_upload(upload)
        raise InvalidInput(f"Storage refused to assemble the parts: {error}", errors={"parts": [str(error)]}) from None
    try:
        size = store.size(key)
        if size != upload.size:
            raise InvalidInput(f"The upload declared {upload.size} bytes but {size} arrived.", errors={"parts": ["Size mismatch."]})
        inspection = inspect_stored_header(lambda o, n: store.read_range(key, o, n), size=size, filename=upload.original_filename)
        options = LoRAOptions(**{k: tuple(v) if k == "tags" else v for k, v in upload.options.items()})
        with transaction.atomic():
            lora = new_lora(
                actor=actor, filename=upload.original_filename, key=key, size=size, inspection=inspection,
                options=options, sha256="", status=Status.PROCESSING,
            )
            upload.delete()
            lora_ingest.delay_on_commit(lora.id)
    except BaseException:
        discard_upload(upload)
        raise
    return lora
