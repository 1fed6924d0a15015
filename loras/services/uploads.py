"""Path 1: direct to storage, multipart. The client sends parts to signed URLs; `complete` assembles them."""

import logging
import math
import uuid
from datetime import timedelta

from botocore.exceptions import ClientError
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from loras.hashes import NOT_HASHED
from loras.models import LoRA, LoRAUpload, Status
from loras.services.rows import create_lora_row
from loras.services.validation import (
    LoRAOptions,
    check_declared_file,
    inspect_stored_header,
    lora_object_directory,
    lora_object_key,
    require_uploader,
)
from lorasite.errors import ApplicationError, Conflict, InvalidInput, NotFound
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role
from workspaces.quota import quota_check_upload
from workspaces.services import require_role

logger = logging.getLogger(__name__)

S3_MAX_PARTS = 10_000


def part_size_for(size: int) -> int:
    configured = settings.LORASITE_UPLOAD_PART_BYTES
    return max(configured, math.ceil(size / S3_MAX_PARTS))


def upload_part_count(upload: LoRAUpload) -> int:
    return max(1, math.ceil(upload.size / upload.part_size))


def upload_part_bytes(upload: LoRAUpload, part_number: int) -> int:
    """The exact length of one part: `part_size`, the last one the rest; the part URLs bind it."""
    return min(upload.part_size, upload.size - (part_number - 1) * upload.part_size)


@transaction.atomic
def lora_upload_start(
    *, actor: Membership, filename: str, size: int, options: LoRAOptions = LoRAOptions()
) -> LoRAUpload:
    require_uploader(actor)
    check_declared_file(filename=filename, size=size)
    quota_check_upload(workspace=actor.workspace, size=size)  # the declared size, before any byte is sent
    upload_id = uuid.uuid4()
    # The object's directory is the upload's id: a completed upload is found again by its LoRA's key.
    key = lora_object_key(workspace_id=actor.workspace_id, filename=filename, directory=upload_id.hex)
    store = get_object_store()
    storage_upload_id = store.multipart_create(key)
    upload = LoRAUpload(
        id=upload_id,
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
        {
            "part_number": n,
            "url": store.multipart_part_url(
                upload.object_key,
                upload.storage_upload_id,
                n,
                part_bytes=upload_part_bytes(upload, n),
                expires_in=expires_in,
            ),
        }
        for n in range(1, upload_part_count(upload) + 1)
    ]


def _not_open() -> NotFound:
    return NotFound("Upload not found (it was aborted or has expired).")


def _open_upload(actor: Membership, upload_id: uuid.UUID, *, lock: bool) -> LoRAUpload | None:
    """The open upload, locked until the caller's transaction ends when `lock`; None when it is closed."""
    uploads = LoRAUpload.objects.select_for_update() if lock else LoRAUpload.objects
    upload = uploads.filter(id=upload_id, workspace_id=actor.workspace_id).first()
    if upload is not None and upload.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="finish someone else's upload")
    return upload


def _completed_lora(actor: Membership, upload_id: uuid.UUID) -> LoRA | None:
    """The LoRA a completed upload became: its object lives in the directory named by the upload's id."""
    directory = lora_object_directory(workspace_id=actor.workspace_id, directory=uuid.UUID(str(upload_id)).hex)
    lora = LoRA.objects.alive().filter(workspace_id=actor.workspace_id, file__startswith=directory).first()
    if lora is not None and lora.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="finish someone else's upload")
    return lora


def lora_upload_refresh(*, actor: Membership, upload_id: uuid.UUID) -> LoRAUpload:
    upload = _open_upload(actor, upload_id, lock=False)
    if upload is None:
        raise _not_open()
    return upload


def discard_upload(upload: LoRAUpload) -> None:
    """Abort the upload in storage and drop its row; its object is deleted unless a LoRA row names it."""
    store = get_object_store()
    try:
        store.multipart_abort(upload.object_key, upload.storage_upload_id)
    except ClientError:  # already completed or aborted in storage: nothing left to abort
        logger.info("multipart upload %s was already closed", upload.id)
    if not LoRA.objects.filter(file=upload.object_key).exists():
        store.delete(upload.object_key)
    LoRAUpload.objects.filter(id=upload.id).delete()


@transaction.atomic
def lora_upload_abort(*, actor: Membership, upload_id: uuid.UUID) -> None:
    """Abort an open upload. Waits for a `complete` in progress (the row lock); an upload that became a LoRA
    is a 409 naming it, and its object stays."""
    upload = _open_upload(actor, upload_id, lock=True)
    if upload is not None:
        discard_upload(upload)
        return
    lora = _completed_lora(actor, upload_id)
    if lora is None:
        raise _not_open()
    raise Conflict(
        f"This upload is already complete as '{lora.name}' version {lora.version} (id {lora.id}); "
        "delete the LoRA to remove it.",
        existing_lora_id=lora.id,
    )


def _check_part_list(upload: LoRAUpload, parts: list[dict]) -> None:
    expected = upload_part_count(upload)
    numbers = sorted(part["part_number"] for part in parts)
    if numbers != list(range(1, expected + 1)):
        raise InvalidInput(
            f"Expected parts 1 to {expected}, got {numbers[:10]}{'…' if len(numbers) > 10 else ''}.",
            errors={"parts": [f"Send every part number from 1 to {expected} exactly once."]},
        )


def _assemble_and_create(actor: Membership, upload: LoRAUpload, parts: list[dict]) -> LoRA:
    store = get_object_store()
    key = upload.object_key
    ordered = [(p["part_number"], p["etag"]) for p in sorted(parts, key=lambda p: p["part_number"])]
    try:
        store.multipart_complete(key, upload.storage_upload_id, ordered)
    except (ClientError, ValueError) as error:  # a refused part list; storage being down is not caught here
        raise InvalidInput(f"Storage refused to assemble the parts: {error}", errors={"parts": [str(error)]}) from None
    size = store.size(key)
    if size != upload.size:
        raise InvalidInput(
            f"The upload declared {upload.size} bytes but {size} arrived.", errors={"parts": ["Size mismatch."]}
        )
    inspection = inspect_stored_header(
        lambda o, n: store.read_range(key, o, n), size=size, filename=upload.original_filename
    )
    options = LoRAOptions(**{k: tuple(v) if k == "tags" else v for k, v in upload.options.items()})
    return create_lora_row(
        actor=actor,
        filename=upload.original_filename,
        key=key,
        size=size,
        inspection=inspection,
        options=options,
        hashes=NOT_HASHED,  # the ingest task reads the assembled object once for every hash
        status=Status.PROCESSING,
    )


def lora_upload_complete(*, actor: Membership, upload_id: uuid.UUID, parts: list[dict]) -> LoRA:
    """Close the multipart upload, decide from the header alone, and create the row as
    `processing`; the `lora_ingest` task hashes the object and marks it ready or failed.

    The upload row stays locked throughout, so `complete` and `abort` exclude each other; a second
    `complete` answers the LoRA the first made. A wrong part list is a 400 that keeps the upload open
    for a corrected retry; a refused file deletes the object and the upload so that nothing is left
    behind. Storage failing midway keeps the upload open: a retry, an abort or its expiry closes it."""
    from loras.services.dispatch import lora_ingest_after_commit, raise_if_queue_refused

    with transaction.atomic():
        upload = _open_upload(actor, upload_id, lock=True)
        if upload is None:
            lora = _completed_lora(actor, upload_id)
            if lora is None:
                raise _not_open()
            return lora
        _check_part_list(upload, parts)
        try:
            lora = _assemble_and_create(actor, upload, parts)
        except (ApplicationError, DjangoValidationError) as error:
            refusal = error
            discard_upload(upload)  # committed with this transaction; the refusal is raised after it
        else:
            upload.delete()
            ingest = lora_ingest_after_commit(lora.id)
            refusal = None
    if refusal is not None:
        raise refusal
    raise_if_queue_refused(ingest, lora)  # the LoRA is saved `processing`: beat queues its ingest later
    return lora
