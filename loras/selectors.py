"""Reads for the LoRA library, always scoped to one workspace."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Case, OuterRef, Q, QuerySet, Subquery, When
from django.utils import timezone

from generation.model_registry import family_fits, lora_fit_problem, model_registry
from generation.models import JobLoRA, UsageCounter
from loras.filters import LoRAFilterSet
from loras.models import Expert, LoRA, LoRAPair, Status
from loras.pair_names import PairKey, pair_keys, partner_role
from lorasite.errors import ApplicationError, Conflict, InvalidInput, NotFound
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role, Workspace

# What a LoRA's card and API answer show besides its row: who uploaded it and its pair with both halves.
LORA_RELATED = ("created_by", "pair_as_high__low", "pair_as_low__high")


def lora_list(*, workspace: Workspace, filters: Mapping[str, str] | None = None) -> QuerySet[LoRA]:
    """Alive LoRAs of one workspace, filtered and sorted by `LoRAFilterSet` (query-string values).
    One query per page whatever its size: everything shown is a column of the row (tags and trigger
    words are JSON columns). A value that does not validate raises InvalidInput naming its field."""
    queryset = LoRA.objects.alive().filter(workspace=workspace).select_related(*LORA_RELATED)
    filterset = LoRAFilterSet(filters or {}, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidInput(
            "The filters have invalid values.",
            errors={field: list(problems) for field, problems in filterset.errors.items()},
        )
    return filterset.qs


def lora_get(*, workspace: Workspace, lora_id: int) -> LoRA:
    try:
        return LoRA.objects.alive().select_related(*LORA_RELATED).get(id=lora_id, workspace=workspace)
    except LoRA.DoesNotExist:
        raise _not_found_or_dropped_duplicate(workspace=workspace, lora_id=lora_id) from None


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


def with_preview_fallback(queryset: QuerySet[LoRA]) -> QuerySet[LoRA]:
    """Annotate `fallback_thumb_key`: the thumbnail of the LoRA's latest succeeded job, which its usage counter
    keeps (generation/usage.py). A subquery on one row per LoRA, so a page of cards stays one query and costs the
    same whatever the history."""
    latest = UsageCounter.objects.filter(lora_id=OuterRef("id")).values("latest_output__thumb_key")[:1]
    return queryset.annotate(fallback_thumb_key=Subquery(latest))


def lora_library(*, workspace: Workspace, filters: Mapping[str, str] | None = None) -> QuerySet[LoRA]:
    """`lora_list` for the library page's cards: each row also knows the LoRA it duplicates and its preview fallback.
    A pair is one card, its high half's: the low half is left out wherever its high half is listed too."""
    listed = lora_list(workspace=workspace, filters=filters)
    listed = listed.exclude(pair_as_low__high__in=listed.order_by().values("id"))
    return with_preview_fallback(_with_duplicate_of(listed))


def lora_library_get(*, workspace: Workspace, lora_id: int) -> LoRA:
    """One alive LoRA of the workspace as a card or detail page shows it (`duplicate_of_id`, `fallback_thumb_key`)."""
    lora = (
        with_preview_fallback(_with_duplicate_of(LoRA.objects.alive().select_related(*LORA_RELATED)))
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


def lora_dropped_duplicate(*, workspace: Workspace, lora_id: int) -> LoRA | None:
    """An upload the ingest task found to duplicate a LoRA already in the workspace: hidden at once (failed and
    deleted, so it lists nowhere and frees its version), yet its card and API answer still name the original
    (`duplicate_of_id`) for the client polling it."""
    dropped = _with_duplicate_of(
        LoRA.objects.filter(workspace=workspace, id=lora_id, status=Status.FAILED, deleted_at__isnull=False)
    ).first()
    return dropped if dropped is not None and dropped.duplicate_of_id else None


def _not_found_or_dropped_duplicate(*, workspace: Workspace, lora_id: int) -> ApplicationError:
    dropped = lora_dropped_duplicate(workspace=workspace, lora_id=lora_id)
    if dropped is None:
        return NotFound("LoRA not found.")
    return Conflict(
        dropped.error, errors={"file": ["Same content as an existing LoRA."]}, existing_lora_id=dropped.duplicate_of_id
    )


def lora_selection(*, workspace: Workspace, lora_ids: list[int]) -> list[LoRA]:
    """The bulk bar's selection, listed before a delete: NotFound unless every id is an alive LoRA of the workspace
    (what the bulk services answer too)."""
    loras = list(LoRA.objects.alive().filter(workspace=workspace, id__in=lora_ids).order_by("name", "version"))
    if len(loras) != len(set(lora_ids)):
        raise NotFound("LoRA not found.")
    return loras


def lora_tags(*, workspace: Workspace) -> list[str]:
    """Every tag used by the workspace's alive LoRAs, sorted case-insensitively (the tag filter's choices)."""
    tags = {
        tag for row in LoRA.objects.alive().filter(workspace=workspace).values_list("tags", flat=True) for tag in row
    }
    return sorted(tags, key=str.casefold)


def lora_job_uses(*, lora: LoRA, limit: int = 20) -> list[JobLoRA]:
    """The latest generation jobs of the LoRA's workspace that used it, as their JobLoRA snapshots
    (weight and expert as the job had them), newest first. By the snapshot's id, which follows the jobs' creation
    (a job's rows are made with it): an index walk that stops at `limit`, where ordering by the job's time would
    sort the LoRA's whole history."""
    return list(
        JobLoRA.objects.filter(lora_ref=lora.id, job__workspace_id=lora.workspace_id)
        .select_related("job")
        .order_by("-id")[:limit]
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


# --- pairs ------------------------------------------------------------------------------------------


def pair_list(*, workspace: Workspace) -> QuerySet[LoRAPair]:
    """The workspace's pairs with both halves (all alive: deleting a half removes its pair), by name. The Generate
    page offers them as one choice that fills both sections."""
    return LoRAPair.objects.filter(workspace=workspace).select_related("high", "low", "created_by")


def pair_get(*, workspace: Workspace, pair_id: int) -> LoRAPair:
    try:
        return pair_list(workspace=workspace).get(id=pair_id)
    except LoRAPair.DoesNotExist:
        raise NotFound("Pair not found.") from None


class Proposal(NamedTuple):
    partner: LoRA
    role: str  # the role of the LoRA it is proposed for ("high": the partner is the low half)


class PartnerProposals:
    """Which unpaired LoRA each LoRA of a workspace could be paired with: the one LoRA whose file name differs
    from its own only by the opposite expert marker (`loras.pair_names`). Two candidates, or none: no proposal.
    The workspace's names are read once (one query), on the first question."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._index: dict[PairKey, list[LoRA]] | None = None

    def _build(self) -> dict[PairKey, list[LoRA]]:
        index: dict[PairKey, list[LoRA]] = {}
        unpaired = (
            LoRA.objects.alive()
            .filter(workspace=self.workspace, pair_as_high__isnull=True, pair_as_low__isnull=True)
            .exclude(status=Status.FAILED)
            .only("id", "name", "version", "original_filename", "base_model", "expert", "workspace_id")
        )
        for lora in unpaired:
            for key in pair_keys(lora.original_filename):
                index.setdefault(key, []).append(lora)
        return index

    def _candidates(self, lora: LoRA) -> dict[int, Proposal]:
        if self._index is None:
            self._index = self._build()
        return {
            candidate.id: Proposal(partner=candidate, role=role)
            for words, role in pair_keys(lora.original_filename)
            for candidate in self._index.get((words, partner_role(role)), [])
            if candidate.id != lora.id
            and ("unknown" in (candidate.base_model, lora.base_model) or candidate.base_model == lora.base_model)
        }

    def for_lora(self, lora: LoRA) -> Proposal | None:
        if lora.status == Status.FAILED or lora.pair is not None:
            return None
        candidates = list(self._candidates(lora).values())
        # Unsure either way (two files could be this one's partner, or the partner has two): no proposal.
        if len(candidates) != 1 or set(self._candidates(candidates[0].partner)) != {lora.id}:
            return None
        return candidates[0]


def lora_proposed_partner(*, lora: LoRA) -> Proposal | None:
    return PartnerProposals(lora.workspace).for_lora(lora)


# --- the models a LoRA fits -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFit:
    """A base model a LoRA can run on, with the limits a job on it has."""

    key: str
    display_name: str
    kind: str
    resolutions: list[str]  # "1280×720"
    max_frames: int | None
    fps: int | None
    max_duration_seconds: float | None  # max frames / default fps, video models only


def lora_fits(*, lora: LoRA) -> list[ModelFit]:
    """The enabled models the LoRA fits: its family is theirs (or unknown) and its layers fit their blocks
    (`lora_fit_problem`, the check jobs run). Torch-free: the registry is plain data."""
    if lora.status == Status.FAILED:
        return []
    fits = []
    for model in model_registry().values():
        if not model.enabled or not family_fits(lora.base_model, model):
            continue
        if lora_fit_problem(lora.module_shapes, model):
            continue
        capabilities = model.capabilities
        max_frames = max(capabilities.frame_counts) if capabilities.frame_counts else None
        fps = capabilities.default_fps
        fits.append(
            ModelFit(
                key=model.key,
                display_name=model.display_name,
                kind=model.kind,
                resolutions=[f"{width}×{height}" for width, height in capabilities.resolutions],
                max_frames=max_frames,
                fps=fps,
                max_duration_seconds=round(max_frames / fps, 2) if max_frames and fps else None,
            )
        )
    return fits


def lora_generate_query(*, lora: LoRA) -> str:
    """The Generate page's query string that opens the form with this LoRA on the first model it fits — a pair with
    both halves in their sections at the pair's weights (the form's own `lora_id`/`lora_weight`/`lora_expert`)."""
    pair = lora.pair
    if pair is not None:
        rows = [(pair.high, Expert.HIGH, pair.weight_high), (pair.low, Expert.LOW, pair.weight_low)]
    else:
        # "" lets the form place it by its hint: a "both" LoRA goes into both sections.
        rows = [(lora, lora.expert if lora.expert != Expert.BOTH else "", lora.preferred_weight)]
    registry = model_registry()
    fits = sorted(lora_fits(lora=lora), key=lambda fit: not registry[fit.key].weights_present)  # runnable first
    params = [("model", fits[0].key)] if fits else []
    for half, expert, weight in rows:
        params += [("lora_id", half.id), ("lora_weight", f"{weight:g}"), ("lora_expert", expert)]
    return urlencode(params)
