import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Page, Paginator
from django.db.models import F, Prefetch, Q, QuerySet
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone

from generation import worker_registry
from generation.model_registry import BaseModel, family_fits, lora_fit_problem, model_as_dict, model_registry
from generation.models import GenerationJob, JobLoRA, JobPurpose, JobStatus
from generation.provenance import ProvenanceError, read_png_provenance
from generation.runtime import memory_plan
from loras.lora_inspect import family_label
from loras.models import LoRA, LoRAPair, Status
from loras.selectors import pair_list
from lorasite.errors import InvalidInput, NotFound, PayloadTooLarge
from lorasite.object_store import get_object_store
from workspaces.models import Workspace


def job_list(
    *, workspace: Workspace, status: str = "", lora_id: int | None = None, purpose: str | None = JobPurpose.USER
) -> QuerySet[GenerationJob]:
    """The workspace's jobs, newest first; by default users' jobs only (auto preview jobs are `purpose="preview"`;
    None: every job)."""
    queryset = (
        GenerationJob.objects.filter(workspace=workspace)
        .select_related("created_by")
        .prefetch_related(Prefetch("job_loras", queryset=JobLoRA.objects.select_related("lora")))
    )
    if purpose is not None:
        queryset = queryset.filter(purpose=purpose)
    if status:
        queryset = queryset.filter(status=status)
    if lora_id is not None:
        queryset = queryset.filter(job_loras__lora_ref=lora_id).distinct()
    return queryset.order_by("-created_at")


def job_get(*, workspace: Workspace, job_id) -> GenerationJob:
    try:
        return job_list(workspace=workspace, purpose=None).get(id=job_id)
    except (GenerationJob.DoesNotExist, ValueError):
        raise NotFound("Job not found.") from None


def model_list() -> list[dict]:
    """The enabled base models, each with `served`: whether a live worker serves it (None: unknown)."""
    served = worker_registry.models_served()
    return [
        {**model_as_dict(model), "served": None if served is None else model.key in served}
        for model in model_registry().values()
        if model.enabled
    ]


def job_waiting_reason(*, job: GenerationJob, served: set[str] | None) -> str:
    """Why a queued job is not being picked up, when that is known; "" otherwise. `served` is
    `worker_registry.models_served()`, read once for a whole page of jobs."""
    if job.status != JobStatus.QUEUED:
        return ""
    if served is None:
        return f"Cannot tell whether a worker serves {job.model_name}: the worker registry is unreachable"
    return "" if job.model_key in served else f"No worker serves {job.model_name} right now"


def job_output_urls(*, job: GenerationJob) -> dict[str, str | datetime | None]:
    """Signed URLs (≤ 1 hour) for the job's output, poster and thumbnail, served inline for the player."""
    if not job.output_key:
        return {"output_url": None, "poster_url": None, "thumb_url": None, "expires_at": None}
    store = get_object_store()
    expires_in = settings.LORASITE_SIGNED_URL_SECONDS
    urls = {
        name: store.download_url(key, filename=key.rsplit("/", 1)[-1], expires_in=expires_in, inline=True)
        if key
        else None
        for name, key in (("output_url", job.output_key), ("poster_url", job.poster_key), ("thumb_url", job.thumb_key))
    }
    return {**urls, "expires_at": timezone.now() + timedelta(seconds=expires_in)}


# --- reads for the dashboard pages ----------------------------------------------------------------


@dataclass(frozen=True)
class LoRAChoice:
    """One LoRA as the Generate page offers it for a model; `problem` says why it cannot be used."""

    lora: LoRA
    problem: str = ""
    cost: dict | None = None  # lora_cost_estimate, for usable ones

    @property
    def usable(self) -> bool:
        return not self.problem


def _lora_problem(lora: LoRA, model: BaseModel) -> str:
    """The same compatibility rules as `services.resolve_loras`, as a short label for the picker."""
    if not family_fits(lora.base_model, model):
        fitting = [m.display_name for m in model_registry().values() if m.enabled and lora.base_model in m.families]
        return "Requires " + (" or ".join(fitting) if fitting else f"a {family_label(lora.base_model)} model")
    misfit = lora_fit_problem(lora.module_shapes, model)
    return f"Does not fit {model.display_name}: {misfit}" if misfit else ""


def lora_choices(*, workspace: Workspace, model: BaseModel) -> list[LoRAChoice]:
    """Ready, active LoRAs of the workspace for the picker: usable ones first, each group most
    recently used first (never-used ones after, newest first)."""
    loras = (
        LoRA.objects.alive()
        .filter(workspace=workspace, status=Status.READY, is_active=True)
        .order_by(F("last_used_at").desc(nulls_last=True), "-created_at", "-id")
    )
    choices = []
    for lora in loras:
        problem = _lora_problem(lora, model)
        # A picked row goes into one expert, the one of its section.
        cost = None if problem else lora_cost_estimate(model=model, file_size=lora.file_size, lora=lora, expert="high")
        choices.append(LoRAChoice(lora=lora, problem=problem, cost=cost))
    return sorted(choices, key=lambda choice: not choice.usable)  # stable: keeps the recency order


@dataclass(frozen=True)
class PairChoice:
    """A LoRA pair as the Generate page offers it on a two-expert model: one pick puts each half into its
    section at the pair's weight. Offered when both halves are usable choices."""

    pair: LoRAPair
    high: LoRAChoice
    low: LoRAChoice


def pair_choices(*, workspace: Workspace, model: BaseModel, choices: list[LoRAChoice]) -> list[PairChoice]:
    if not model.two_experts:
        return []
    usable = {choice.lora.id: choice for choice in choices if choice.usable}
    return [
        PairChoice(pair=pair, high=usable[pair.high_id], low=usable[pair.low_id])
        for pair in pair_list(workspace=workspace)
        if pair.high_id in usable and pair.low_id in usable
    ]


# --- what a LoRA adds on the worker ---------------------------------------------------------------


def model_placement(model: BaseModel) -> str:
    """The placement workers use for `model`, as planned for LORASITE_GPU_MEMORY_BYTES; "" when it fits nowhere.

    The web process cannot see the workers' GPUs: without that setting it assumes the model sits on the GPU."""
    return _planned_placement(
        model.key, settings.LORASITE_GPU_MEMORY_BYTES, str(settings.LORASITE_MODELS_DIR), settings.LORASITE_MODELS_FILE
    )


@functools.lru_cache(maxsize=64)
def _planned_placement(model_key: str, device_bytes: int, models_dir: str, models_file: str) -> str:
    # Cached (the settings are the key): planning reads the safetensors headers of the model's weights.
    if not device_bytes:
        return "gpu"
    try:
        return memory_plan.plan(model_registry()[model_key], device_bytes).placement
    except memory_plan.MemoryPlanError:
        return ""


def lora_cost_estimate(*, model: BaseModel, file_size: int, lora: LoRA | None, expert: str) -> dict | None:
    """Adapter bytes, extra device/host memory and load time of one LoRA on `model` (memory_plan.lora_cost), with
    the placement and apply mode they assume; None when the LoRA row is gone (its shapes with it)."""
    if lora is None:
        return None
    placement = model_placement(model)
    apply_mode = getattr(settings, "LORASITE_LORA_APPLY", "fused")
    cost = memory_plan.lora_cost(
        file_size=file_size,
        file_dtype=lora.dtype,
        module_shapes=lora.flat_module_shapes,
        placement=placement or "gpu",
        apply_mode=apply_mode,
        experts=2 if expert == "both" and model.two_experts else 1,  # "both" loads a copy into each expert
        storage_dtype=model.storage_dtype,
    )
    return {"placement": placement, **cost.as_dict()}  # the cost's apply_mode: "unfused" on an fp8 model


def job_lora_cost(*, job_lora: JobLoRA) -> dict | None:
    """lora_cost_estimate for a LoRA of a job, on the job's model (None when the model left the registry)."""
    model = model_registry().get(job_lora.job.model_key)
    if model is None:
        return None
    return lora_cost_estimate(model=model, file_size=job_lora.file_size, lora=job_lora.lora, expert=job_lora.expert)


@dataclass(frozen=True)
class JobCard:
    """A job with what its pages show besides its row: signed output URLs and its model's shape."""

    job: GenerationJob
    output_url: str | None
    poster_url: str | None
    two_experts: bool
    download_url: str | None = None  # the output as an attachment (the others are served inline)
    waiting_reason: str = ""  # see job_waiting_reason


def _job_card(job: GenerationJob, *, served: set[str] | None, with_download: bool = False) -> JobCard:
    urls = job_output_urls(job=job)
    model = model_registry().get(job.model_key)
    # A model removed from the registry since: the job's own LoRAs still tell whether it had two experts.
    two_experts = model.two_experts if model else any(job_lora.expert == "low" for job_lora in job.job_loras.all())
    download_url = None
    if with_download and job.output_key:
        extension = job.output_key.rsplit(".", 1)[-1]
        download_url = get_object_store().download_url(
            job.output_key, filename=f"lorasite-{job.id}.{extension}", expires_in=settings.LORASITE_SIGNED_URL_SECONDS
        )
    return JobCard(
        job=job,
        output_url=urls["output_url"],
        poster_url=urls["poster_url"],
        two_experts=two_experts,
        download_url=download_url,
        waiting_reason=job_waiting_reason(job=job, served=served),
    )


def _served_if_queued(jobs: list[GenerationJob]) -> set[str] | None:
    """`models_served()` for a page of jobs, asked only when one of them is queued (no other job waits)."""
    return worker_registry.models_served() if any(job.status == JobStatus.QUEUED for job in jobs) else set()


def job_card_get(*, workspace: Workspace, job_id: UUID | str, with_download: bool = False) -> JobCard:
    job = job_get(workspace=workspace, job_id=job_id)
    return _job_card(job, served=_served_if_queued([job]), with_download=with_download)


@dataclass(frozen=True)
class JobCardPage:
    page: Page
    cards: list[JobCard]

    @property
    def queued(self) -> int:
        return sum(card.job.status == JobStatus.QUEUED for card in self.cards)

    @property
    def running(self) -> int:
        return sum(card.job.status == JobStatus.RUNNING for card in self.cards)

    @property
    def live(self) -> bool:
        """Whether a job shown is still queued or running, i.e. whether the page should keep polling."""
        return bool(self.queued or self.running)


def job_card_page(*, workspace: Workspace, page_number: str | int | None, per_page: int = 20) -> JobCardPage:
    page = Paginator(job_list(workspace=workspace), per_page).get_page(page_number)
    jobs = list(page.object_list)
    served = _served_if_queued(jobs)
    return JobCardPage(page=page, cards=[_job_card(job, served=served) for job in jobs])


# --- "What made this?": an output's recipe, matched against the workspace's LoRAs ---------------------------------

PROVENANCE_MAX_BYTES = 32 * 1024 * 1024


def _provenance_lora(workspace: Workspace, entry: dict) -> tuple[LoRA | None, str]:
    """The workspace's LoRA an output names, and by what: its sha256, its AutoV2, else only its name."""
    loras = LoRA.objects.alive().filter(workspace=workspace).exclude(status=Status.FAILED).order_by("-created_at")
    if entry["sha256"] and len(entry["sha256"]) == 64 and (lora := loras.filter(sha256=entry["sha256"]).first()):
        return lora, "sha256"
    autov2 = entry["autov2"]
    # Rows hashed before AutoV2 was stored still have the sha256 it is the start of.
    if len(autov2) == 10 and (lora := loras.filter(Q(autov2=autov2) | Q(sha256__startswith=autov2)).first()):
        return lora, "autov2"
    if entry["name"] and (lora := loras.filter(name=entry["name"]).first()):
        return lora, "name"
    return None, ""


def _generate_query(model_key: str, recipe: dict, loras: list[dict]) -> str:
    """The Generate page's own form fields (model, prompts, LoRA rows) for the recipe's values."""
    query = QueryDict(mutable=True)
    query.update({"model": model_key, "prompt": recipe["prompt"], "negative_prompt": recipe["negative_prompt"]})
    for lora in loras:
        if lora["lora_id"] is None:
            continue
        weight = lora["weight"] if lora["weight"] is not None else lora["preferred_weight"]
        rows = [(lora["expert"], weight)]
        if lora["expert"] == "both":  # the page has a row per expert section
            rows = [("high", weight), ("low", lora.get("weight_low", weight))]
        for expert, row_weight in rows:
            query.appendlist("lora_id", str(lora["lora_id"]))
            query.appendlist("lora_weight", f"{row_weight:g}")
            query.appendlist("lora_expert", expert if expert in ("high", "low") else "")
    return query.urlencode()


def provenance_recipe(*, workspace: Workspace, upload: UploadedFile) -> dict:
    """The recipe an uploaded output PNG carries (generation/provenance.py reads it defensively), with each LoRA
    matched in this workspace (`lora_id`, `matched_by`), those not found listed in `missing`, the model as this
    site knows it and the Generate page's URL for it. Nothing in the file is trusted: a bad file is a 400 naming
    the problem, one over PROVENANCE_MAX_BYTES a 413."""
    if upload.size > PROVENANCE_MAX_BYTES:
        raise PayloadTooLarge(
            f"The image is {upload.size} bytes; the limit is {PROVENANCE_MAX_BYTES // (1024 * 1024)} MiB.",
            errors={"file": ["Too large for an output image."]},
        )
    try:
        recipe = read_png_provenance(upload.read())
    except ProvenanceError as error:
        raise InvalidInput(str(error), errors={"file": [str(error)]}) from None
    registry = {key: model for key, model in model_registry().items() if model.enabled}
    named = recipe["model"]
    model = registry.get(named["key"]) or next(
        (m for m in registry.values() if named["name"] and m.display_name == named["name"]), None
    )
    loras = []
    for entry in recipe["loras"]:
        lora, matched_by = _provenance_lora(workspace, entry)
        loras.append(
            {
                **entry,
                "lora_id": lora.id if lora else None,
                "lora_name": lora.name if lora else "",
                "lora_version": lora.version if lora else "",
                "preferred_weight": lora.preferred_weight if lora else None,
                "matched_by": matched_by,
            }
        )
    return {
        **recipe,
        "model": {
            "key": model.key if model else named["key"],
            "name": model.display_name if model else named["name"],
            "available": bool(model and model.weights_present),
        },
        "loras": loras,
        "missing": [entry["name"] or entry["autov2"] for entry in loras if entry["lora_id"] is None],
        "generate_url": (
            f"{reverse('studio:generate', kwargs={'slug': workspace.slug})}?{_generate_query(model.key, recipe, loras)}"
            if model
            else ""
        ),
    }
