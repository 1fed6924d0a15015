"""Writes for the LoRA library: the three ingest paths, edits, soft delete, purge and cleanup.

Every path ends in the same pipeline: validate what the client declared (extension, size), read
only the safetensors header to decide it is a LoRA and what for, deduplicate by sha256, store the
object, then create the row as `processing`. Storage comes first and the row second; when the row
cannot be written the object is deleted, so a failure leaves nothing behind. The `lora_ingest` task
then finishes every path the same way (`lora_finish_ingest`): hash when not yet known, deduplicate,
and compute the coverage with diffusers' own key converters — which needs torch, so it never runs in
the web process. A file diffusers would load nothing of becomes `failed` with the reason.

One module per concern: `validation` (what a client may send and do), `rows` (the LoRA row every path
ends in), `ingest` (bytes on this machine), `uploads` (multipart, direct to storage), `processing` (the
ingest task), `library` (edits, delete, purge, cleanup), `pairs` (high/low pairs), `bulk` (the library's
multi-select actions) and `peft_checkpoint` (a PEFT adapter_config.json + adapter_model.safetensors, or a .zip).
Callers import from here.
"""

from loras.services.bulk import BULK_UPDATE_ACTIONS, lora_bulk_add_to_recipe, lora_bulk_delete, lora_bulk_update
from loras.services.ingest import (
    lora_import_server_file,
    lora_ingest_local_file,
    lora_ingest_uploaded_file,
    resolve_import_path,
)
from loras.services.library import (
    EDITABLE_FIELDS,
    lora_purge_deleted,
    lora_restore,
    lora_set_active_many,
    lora_soft_delete,
    lora_soft_delete_many,
    lora_storage_cleanup,
    lora_update,
)
from loras.services.pairs import PAIR_ACTIONS, pair_create, pair_delete, pair_update
from loras.services.peft_checkpoint import lora_register_peft
from loras.services.processing import lora_fail_ingest, lora_finish_ingest, lora_rehash
from loras.services.uploads import (
    S3_MAX_PARTS,
    lora_upload_abort,
    lora_upload_complete,
    lora_upload_refresh,
    lora_upload_start,
    part_size_for,
    upload_part_count,
    upload_part_urls,
)
from loras.services.validation import (
    LORA_EXTENSION,
    PICKLE_EXTENSIONS,
    LoRAOptions,
    check_app_upload_size,
    check_declared_file,
    inspect_stored_header,
    lora_object_key,
)

__all__ = [
    "BULK_UPDATE_ACTIONS",
    "PAIR_ACTIONS",
    "lora_bulk_add_to_recipe",
    "lora_bulk_delete",
    "lora_bulk_update",
    "pair_create",
    "pair_delete",
    "pair_update",
    "EDITABLE_FIELDS",
    "LORA_EXTENSION",
    "PICKLE_EXTENSIONS",
    "S3_MAX_PARTS",
    "LoRAOptions",
    "check_app_upload_size",
    "check_declared_file",
    "inspect_stored_header",
    "lora_fail_ingest",
    "lora_finish_ingest",
    "lora_import_server_file",
    "lora_ingest_local_file",
    "lora_ingest_uploaded_file",
    "lora_object_key",
    "lora_purge_deleted",
    "lora_rehash",
    "lora_register_peft",
    "lora_restore",
    "lora_set_active_many",
    "lora_soft_delete",
    "lora_soft_delete_many",
    "lora_storage_cleanup",
    "lora_update",
    "lora_upload_abort",
    "lora_upload_complete",
    "lora_upload_refresh",
    "lora_upload_start",
    "part_size_for",
    "resolve_import_path",
    "upload_part_count",
    "upload_part_urls",
]
