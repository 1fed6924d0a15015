"""Paths 2 and 3: the bytes are on this machine (an upload through the app, a server import)."""

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from django.conf import settings

from loras.hashes import FileHashes, HashingReader
from loras.models import LoRA, Status
from loras.selectors import human_size
from loras.services.rows import create_lora_row, save_row_or_delete_object
from loras.services.validation import (
    LORA_EXTENSION,
    LoRAOptions,
    check_app_upload_size,
    check_declared_file,
    inspect_stored_header,
    lora_object_key,
    require_uploader,
)
from lorasite.errors import InvalidInput
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role, Workspace
from workspaces.quota import quota_check_stored, quota_check_upload
from workspaces.services import require_role

logger = logging.getLogger(__name__)


def _store_and_hash(key: str, path: Path) -> FileHashes:
    """Copy the file to storage and return its hashes, reading it once: a second pass over a 5 GiB file
    would double a request that must end within the web worker's timeout."""
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        get_object_store().save_stream(key, reader)
    return reader.hasher.result()


def _local_read_range(path: Path) -> Callable[[int, int], bytes]:
    def read_range(offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    return read_range


def lora_ingest_local_file(
    *, actor: Membership, path: Path, filename: str, options: LoRAOptions = LoRAOptions()
) -> LoRA:
    """Ingest a file that is on this machine: an upload through the app (Django's temporary file)
    or a server-path import. The header checks and the duplicate check answer here (422, 409); the
    file is read once more, to store and hash it in one pass. The row is `processing` until the
    `lora_ingest` task has computed its coverage."""
    from loras.services.dispatch import lora_ingest_after_commit, raise_if_queue_refused

    require_uploader(actor)
    size = path.stat().st_size
    check_declared_file(filename=filename, size=size)
    quota_check_upload(workspace=actor.workspace, size=size)
    inspection = inspect_stored_header(_local_read_range(path), size=size, filename=filename)
    key = lora_object_key(workspace_id=actor.workspace_id, filename=filename)
    # The hashes are known once the bytes are stored; a duplicate is refused then (under the workspace lock)
    # and its copy deleted.
    hashes = _store_and_hash(key, path)

    ingest = None

    def create() -> LoRA:
        nonlocal ingest
        lora = create_lora_row(
            actor=actor,
            filename=filename,
            key=key,
            size=size,
            inspection=inspection,
            options=options,
            hashes=hashes,
            status=Status.PROCESSING,
        )
        quota_check_stored(workspace=actor.workspace, size=size)
        ingest = lora_ingest_after_commit(lora.id)
        return lora

    lora = save_row_or_delete_object(key, create)
    logger.info(
        "LoRA %s stored as '%s' v%s (%s, %s)", lora.id, lora.name, lora.version, lora.base_model, human_size(size)
    )
    raise_if_queue_refused(ingest, lora)  # the row and its object stay: beat queues the ingest later
    return lora


def workspace_import_roots(workspace: Workspace) -> list[Path]:
    """This workspace's import folders, `<dir>/<workspace slug>/` for each of LORASITE_IMPORT_DIRS: a
    workspace's admins import what an operator put there for that workspace, never another's files."""
    return [Path(os.path.realpath(Path(directory) / workspace.slug)) for directory in settings.LORASITE_IMPORT_DIRS]


def resolve_import_path(*, workspace: Workspace, file_path: str) -> Path:
    """The real path of `file_path`, relative to one of the workspace's import folders. Absolute paths, `..`
    and symlinks that lead outside the folder are refused; no message names a server directory."""
    roots = workspace_import_roots(workspace)
    if not roots:
        raise InvalidInput("Server imports are disabled on this site.", errors={"file_path": ["Imports are off."]})
    relative = PurePosixPath(file_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise InvalidInput(
            "Give the file's path relative to this workspace's import folder (e.g. 'styles/a.safetensors').",
            errors={"file_path": ["A relative path inside the workspace's import folder, without '..'."]},
        )
    for root in roots:
        real = Path(os.path.realpath(root / relative))
        # An escape (a symlink out of the folder) and a missing file answer alike: no probing of the server's disk.
        if real.is_relative_to(root) and real.is_file() and os.access(real, os.R_OK):
            return real
    raise InvalidInput(
        f"'{file_path}' is not a readable file in this workspace's import folder.",
        errors={"file_path": ["No such file in the workspace's import folder."]},
    )


def lora_import_server_file(*, actor: Membership, file_path: str, options: LoRAOptions = LoRAOptions()) -> LoRA:
    require_role(membership=actor, minimum=Role.ADMIN, action="import LoRAs from the server")
    real = resolve_import_path(workspace=actor.workspace, file_path=file_path)
    # Copy into the library; the original stays where it is, untouched.
    return lora_ingest_local_file(actor=actor, path=real, filename=Path(file_path).name, options=options)


def lora_ingest_uploaded_file(*, actor: Membership, uploaded_file, options: LoRAOptions = LoRAOptions()) -> LoRA:
    """Through the app: Django has streamed the body to a temporary file (small uploads stay in
    memory and are spilled here), so memory stays flat whatever the size."""
    check_app_upload_size(uploaded_file.size)
    if hasattr(uploaded_file, "temporary_file_path"):
        return lora_ingest_local_file(
            actor=actor, path=Path(uploaded_file.temporary_file_path()), filename=uploaded_file.name, options=options
        )
    with tempfile.NamedTemporaryFile(suffix=LORA_EXTENSION) as spill:
        for chunk in uploaded_file.chunks():
            spill.write(chunk)
        spill.flush()
        return lora_ingest_local_file(actor=actor, path=Path(spill.name), filename=uploaded_file.name, options=options)
