"""Reads for the LoRA library, always scoped to one workspace."""

from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, OuterRef, Q, QuerySet, Subquery, When
from django.utils import timezone

from generation.models import JobLoRA
from loras.filters import LoRAFilterSet
from loras.models import LoRA, Status
from lorasite.errors import InvalidInput, NotFound
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role, Workspace


def lora_list(*, workspace: Workspace, filters: Mapping[str, str] | None = None) -> QuerySet[LoRA]:
    """Alive LoRAs of one workspace, filtered and sorted by `LoRAFilterSet` (query-string values).
    One query per page whatever its size: everything shown is a column of the row (tags and trigger
    words are JSON columns). A value that does not validate raises InvalidInput naming its field."""
    queryset = LoRA.objects.alive().filter(workspace=workspace).select_related("created_by")
    filterset = LoRAFilterSet(filters or {}, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidInput(
            "The filters have invalid values.",
            errors={field: list(problems) for field, problems in filterset.errors.items()},
        )
    return filterset.qs


def lora_get(*, workspace: Workspace, lora_id: int) -> LoRA:
    try:
        return LoRA.objects.alive().select_related("created_by").get(id=lora_id, workspace=workspace)
    except LoRA.DoesNotExist:
        raise NotFound("LoRA not found.") from None


def lora_versions(*, workspace: Workspace, name: str) -> QuerySet[LoRA]:
    return LoRA.objects.alive().filter(workspace=workspace, name=name).order_by("created_at", "id")


def lora_download_url(*, lora: LoRA) -> tuple[str, datetime]:
    """A signed URL for this one object, valid at most LORASITE_SIGNED_URL_SECONDS (≤ 1 hour)."""
    if not lora.file.name:
        raise NotFound(f"'{lora.name}' has no stored file (it failed ingest or was purged).")
    expires_in = settings.LORASITE_SIGNED_URL_SECONDS
    url = get_object_store().download_url(lora.file.name, filename=lora.original_filename, expires_in=expires_in)
    return url, timezone.now() + timedelta(seconds=expires_in)


# --- dashboard pages ------------------------------------------------------------------------------


def _with_duplicate_of(queryset: QuerySet[LoRA]) -> QuerySet[LoRA]:
    """Annotate `duplicate_of_id`: for a LoRA that failed because its content is already in the
    workspace (the ingest task keeps the hash on the failed row), the LoRA that holds the content.
    A subquery, so a page of cards stays one query."""
    holder = (
        LoRA.objects.alive()
        .filter(workspace_id=OuterRef("workspace_id"), sha256=OuterRef("sha256"))
        .exclude(status=Status.FAILED)
        .exclude(id=OuterRef("id"))
        .values("id")[:1]
    )
    return queryset.annotate(
        duplicate_of_id=Case(When(Q(status=Status.FAILED) & ~Q(sha256=""), then=Subquery(holder)), default=None)
    )


def lora_library(*, workspace: Workspace, filters: Mapping[str, str] | None = None) -> QuerySet[LoRA]:
    """`lora_list` for the library page's cards: each row also knows the LoRA it duplicates."""
    return _with_duplicate_of(lora_list(workspace=workspace, filters=filters))


def lora_library_get(*, workspace: Workspace, lora_id: int) -> LoRA:
    """One alive LoRA of the workspace as a card or detail page shows it (with `duplicate_of_id`)."""
    lora = (
        _with_duplicate_of(LoRA.objects.alive().select_related("created_by"))
        .filter(id=lora_id, workspace=workspace)
        .first()
    )
    if lora is None:
        raise NotFound("LoRA not found.")
    return lora


def lora_same_weights(*, lora: LoRA, limit: int = 10) -> list[LoRA]:
    """The workspace's other LoRAs with this one's tensor data (AutoV3) under another sha256: the same weights
    with other metadata (a re-saved or re-described file). Reported, never refused: the metadata may matter."""
    if not lora.autov3:
        return []
    return list(
        LoRA.objects.alive()
        .filter(workspace_id=lora.workspace_id, autov3=lora.autov3)
        .exclude(status=Status.FAILED)
        .exclude(id=lora.id)
        .exclude(sha256=lora.sha256)
        .order_by("created_at", "id")[:limit]
    )


def lora_tags(*, workspace: Workspace) -> list[str]:
    """Every tag used by the workspace's alive LoRAs, sorted case-insensitively (the tag filter's choices)."""
    tags = {
        tag for row in LoRA.objects.alive().filter(workspace=workspace).values_list("tags", flat=True) for tag in row
    }
    return sorted(tags, key=str.casefold)


def lora_job_uses(*, lora: LoRA, limit: int = 20) -> list[JobLoRA]:
    """The latest generation jobs of the LoRA's workspace that used it, as their JobLoRA snapshots
    (weight and expert as the job had them), newest first."""
    return list(
        JobLoRA.objects.filter(lora_ref=lora.id, job__workspace_id=lora.workspace_id)
        .select_related("job")
        .order_by("-job__created_at", "position")[:limit]
    )


# --- what the pages offer and how they word sizes --------------------------------------------------


def lora_can_upload(*, actor: Membership) -> bool:
    """Whether the page offers the upload button; the upload services enforce the same rule."""
    return actor.has_role(Role.MEMBER)


def lora_can_edit(*, actor: Membership, lora: LoRA) -> bool:
    """Whether the page offers edit and delete controls; `lora_update` and `lora_soft_delete` enforce the same rule."""
    return actor.has_role(Role.ADMIN) or (actor.has_role(Role.MEMBER) and lora.created_by_id == actor.user_id)


def human_size(size: int) -> str:
    """A size as the server's messages word it ("5 GiB"), so that pages and messages agree."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    raise AssertionError("unreachable")
