"""Per-workspace storage quota: the bytes of its LoRAs, its jobs' outputs and its open multipart uploads.

The limit is the workspace's `storage_quota_bytes` when set, else LORASITE_WORKSPACE_QUOTA_BYTES; 0 means no
limit. Uploads are refused before any byte is stored (a multipart upload at its start, with the declared size)
with 413, and a job is refused with 409 while the workspace is at or over its limit; both name used and limit.
Only what rows still name counts: a deleted LoRA or job frees its bytes at once, though beat removes the
objects only after the purge grace.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from generation.models import GenerationJob
from loras.models import LoRA, LoRAUpload, Status
from loras.selectors import human_size
from lorasite.errors import Conflict, PayloadTooLarge
from lorasite.object_store import get_object_store
from workspaces.models import Workspace


class StorageQuotaExceeded(PayloadTooLarge):
    code = "storage_quota_exceeded"


class StorageQuotaFull(Conflict):
    code = "storage_quota_exceeded"


@dataclass(frozen=True)
class StorageUsage:
    used_bytes: int
    limit_bytes: int  # 0: no limit

    @property
    def limited(self) -> bool:
        return self.limit_bytes > 0

    @property
    def fraction(self) -> float:
        return min(self.used_bytes / self.limit_bytes, 1.0) if self.limited else 0.0

    @property
    def label(self) -> str:
        """ "12.3 GiB of 50 GiB used", as the dashboard and the errors word it."""
        if not self.limited:
            return f"{human_size(self.used_bytes)} used (no limit)"
        return f"{human_size(self.used_bytes)} of {human_size(self.limit_bytes)} used"


def workspace_quota_limit(workspace: Workspace) -> int:
    if workspace.storage_quota_bytes is not None:
        return workspace.storage_quota_bytes
    return settings.LORASITE_WORKSPACE_QUOTA_BYTES


def _output_bytes(workspace_id: int) -> int:
    """The bytes of the outputs and posters the workspace's job rows name: the sizes the workers measured, summed
    off an index (GenerationJob's job_workspace_output_bytes), plus, for outputs stored before sizes were measured,
    what the bucket says of those objects."""
    jobs = GenerationJob.objects.filter(workspace_id=workspace_id).order_by()  # unordered: the index above serves
    measured = jobs.aggregate(total=Sum("output_bytes"))["total"] or 0
    unmeasured = set()
    for output_key, poster_key in (
        jobs.filter(output_bytes__isnull=True).exclude(output_key="").values_list("output_key", "poster_key")
    ):
        unmeasured.update(key for key in (output_key, poster_key) if key)
    if not unmeasured:
        return measured
    listed = get_object_store().list(f"workspaces/{workspace_id}/outputs/")
    return measured + sum(stored.size for stored in listed if stored.key in unmeasured)


def workspace_storage_usage(*, workspace: Workspace) -> StorageUsage:
    # Failed rows' copies are dropped by ingest; deleted ones leave with the purge.
    loras = (
        LoRA.objects.filter(workspace_id=workspace.id, deleted_at__isnull=True)
        .exclude(file="")
        .exclude(status=Status.FAILED)
    )
    lora_bytes = loras.aggregate(total=Sum("file_size"))["total"] or 0
    # An open multipart upload holds its declared size, so parallel uploads cannot overshoot together.
    open_uploads = LoRAUpload.objects.filter(workspace_id=workspace.id, expires_at__gt=timezone.now())
    upload_bytes = open_uploads.aggregate(total=Sum("size"))["total"] or 0
    return StorageUsage(
        used_bytes=lora_bytes + upload_bytes + _output_bytes(workspace.id), limit_bytes=workspace_quota_limit(workspace)
    )


def _quota_exceeded(size: int, usage: StorageUsage) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"This file ({human_size(size)}) does not fit in the workspace's storage quota: {usage.label}. "
        "Delete LoRAs or jobs, or ask an operator for a larger quota.",
        errors={"size": ["Over the workspace's storage quota."]},
        used_bytes=usage.used_bytes,
        limit_bytes=usage.limit_bytes,
    )


def quota_check_upload(*, workspace: Workspace, size: int) -> None:
    """413 when `size` more bytes would take the workspace over its limit.

    Inside a transaction the workspace row stays locked to its end, so that uploads started side by side are
    counted one after the other: the caller's open upload (or row) is saved before the next one counts."""
    if not workspace_quota_limit(workspace):
        return  # no limit: nothing to count (and no storage listing that could fail)
    if transaction.get_connection().in_atomic_block:
        Workspace.objects.select_for_update().filter(id=workspace.id).exists()
    usage = workspace_storage_usage(workspace=workspace)
    if usage.used_bytes + size > usage.limit_bytes:
        raise _quota_exceeded(size, usage)


def quota_check_stored(*, workspace: Workspace, size: int) -> None:
    """For a file stored before its row (an upload through the app): called in the transaction that wrote the
    row, under the workspace lock, so that files stored side by side cannot overshoot the limit together; 413
    (and the caller deletes the copy) when the workspace is now over it. The first check, before storing,
    only spares the upload of a file that cannot fit."""
    if not workspace_quota_limit(workspace):
        return
    Workspace.objects.select_for_update().filter(id=workspace.id).exists()
    usage = workspace_storage_usage(workspace=workspace)  # the new row counts already
    if usage.used_bytes > usage.limit_bytes:
        raise _quota_exceeded(size, StorageUsage(used_bytes=usage.used_bytes - size, limit_bytes=usage.limit_bytes))


def quota_check_generation(*, workspace: Workspace) -> None:
    """409 while the workspace is at or over its limit: a job's output would add to it."""
    if not workspace_quota_limit(workspace):
        return
    usage = workspace_storage_usage(workspace=workspace)
    if usage.used_bytes >= usage.limit_bytes:
        raise StorageQuotaFull(
            f"The workspace's storage is full ({usage.label}); delete LoRAs or jobs before generating.",
            used_bytes=usage.used_bytes,
            limit_bytes=usage.limit_bytes,
        )
