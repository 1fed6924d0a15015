"""Paths 2 and 3: the bytes are on this machine (an upload through the app, a server import)."""

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from lorasite.errors import InvalidInput
from lorasite.object_store import get_object_store
from loras.models import LoRA, Status
from loras.selectors import human_size
from loras.services.rows import duplicate_conflict, existing_duplicate, new_lora, save_row_or_delete_object
from loras.services.validation import (
    LORA_EXTENSION, LoRAOptions, check_declared_file, inspect_stored_header, lora_object_key, require_uploader,
)
from workspaces.models import Membership, Role
from workspaces.services import require_role

logger = logging.getLogger(__name__)

HASH_CHUNK = 8 * 1024 * 1024


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

    require_uploader(actor)
    size = path.stat().st_size
    check_declared_file(filename=filename, size=size)
    inspection = inspect_stored_header(_local_read_range(path), size=size, filename=filename)
    sha256 = _sha256_of_file(path)
    existing = existing_duplicate(actor.workspace_id, sha256)
    if existing:
        raise duplicate_conflict(existing)
    key = lora_object_key(workspace_id=actor.workspace_id, filename=filename)
    get_object_store().save_file(key, path)

    def create() -> LoRA:
        lora = new_lora(
            actor=actor, filename=filename, key=key, size=size, inspection=inspection, options=options,
            sha256=sha256, status=Status.PROCESSING,
        )
        lora_ingest.delay_on_commit(lora.id)
        return lora

    lora = save_row_or_delete_object(key, create)
    logger.info("LoRA %s stored as '%s' v%s (%s, %s)", lora.id, lora.name, lora.version, lora.base_model, human_size(size))
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


def lora_ingest_uploaded_file(*, actor: Membership, uploaded_file, options: LoRAOptions = LoRAOptions()) -> LoRA:
    """Through the app: Django has streamed the body to a temporary file (small uploads stay in
    memory and are spilled here), so memory stays flat whatever the size."""
    if hasattr(uploaded_file, "temporary_file_path"):
        return lora_ingest_local_file(actor=actor, path=Path(uploaded_file.temporary_file_path()), filename=uploaded_file.name, options=options)
    with tempfile.NamedTemporaryFile(suffix=LORA_EXTENSION) as spill:
        for chunk in uploaded_file.chunks():
            spill.write(chunk)
        spill.flush()
        return lora_ingest_local_file(actor=actor, path=Path(spill.name), filename=uploaded_file.name, options=options)
