"""Adapter metrics: how a LoRA's outputs fare, next to the base model's alone.

`lora_metrics(lora)` answers the LoRA page's and the API's figures — generations, succeeded and failed, the average
rating with its count, the 1–5 histogram and when it was last used — and the same figures for the workspace's jobs
on the LoRA's base model (the registry's models of its family) with no LoRA at all, so a page can say
"4.1 ★ (37 ratings) vs 3.2 ★ for the base model (52)". Four aggregate queries whatever the history, on indexed
columns (JobLoRA.lora, OutputRating.job, GenerationJob (workspace, model_key)); no job row is loaded."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, F, Max, OuterRef, Q

from generation.model_registry import model_registry
from generation.models import GenerationJob, JobLoRA, JobStatus, OutputRating
from loras.models import LoRA, LoRAPair

STARS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class UsageFigures:
    generations: int
    succeeded: int
    failed: int
    rating_average: float | None  # None without ratings
    rating_count: int
    histogram: tuple[int, ...]  # ratings with 1, 2, 3, 4 and 5 stars
    last_used: datetime | None

    @property
    def rating_label(self) -> str:
        """ "4.1 ★ (37 ratings)", or "no ratings yet"."""
        if not self.rating_count:
            return "no ratings yet"
        return f"{self.rating_average:.1f} ★ ({self.rating_count} rating{'s' if self.rating_count != 1 else ''})"


@dataclass(frozen=True)
class LoRAMetrics:
    lora: UsageFigures
    base: UsageFigures  # the workspace's jobs on the same base model with no LoRA
    base_models: tuple[str, ...]  # display names of the models counted as that base model

    @property
    def headline(self) -> str:
        """ "4.1 ★ (37 ratings) vs 3.2 ★ for the base model (52)"."""
        base = self.base
        if not base.rating_count:
            against = "no ratings yet for the base model"
        else:
            against = f"{base.rating_average:.1f} ★ for the base model ({base.rating_count})"
        if not self.lora.rating_count:
            return f"No ratings yet; {against}"
        return f"{self.lora.rating_label} vs {against}"


_JOB_FIGURES = {
    "generations": Count("job_id", distinct=True),
    "succeeded": Count("job_id", distinct=True, filter=Q(job__status=JobStatus.SUCCEEDED)),
    "failed": Count("job_id", distinct=True, filter=Q(job__status=JobStatus.FAILED)),
    "last_used": Max("job__created_at"),
}


def _histogram_counts() -> dict:
    # Distinct ids: through JobLoRA a LoRA used twice in one job (both experts) would count its ratings twice.
    return {f"stars_{stars}": Count("id", distinct=True, filter=Q(stars=stars)) for stars in STARS}


def _figures(jobs: dict | None, ratings: dict | None) -> UsageFigures:
    """UsageFigures from one row of job counts and one of rating counts per star (the average is the histogram's:
    an Avg over a join would weigh a doubly joined rating twice)."""
    jobs = jobs or {"generations": 0, "succeeded": 0, "failed": 0, "last_used": None}
    histogram = tuple((ratings or {}).get(f"stars_{stars}", 0) for stars in STARS)
    count = sum(histogram)
    return UsageFigures(
        generations=jobs["generations"],
        succeeded=jobs["succeeded"],
        failed=jobs["failed"],
        rating_average=sum(stars * n for stars, n in zip(STARS, histogram, strict=True)) / count if count else None,
        rating_count=count,
        histogram=histogram,
        last_used=jobs["last_used"],
    )


def lora_usage(*, lora_ids: Iterable[int]) -> dict[int, UsageFigures]:
    """Each LoRA's own figures, for any number of LoRAs in two grouped queries (a versions list, a LoRA page)."""
    lora_ids = list(lora_ids)
    jobs = {
        row["lora_id"]: row
        for row in JobLoRA.objects.filter(lora_id__in=lora_ids).values("lora_id").annotate(**_JOB_FIGURES)
    }
    ratings = {
        row["lora_id"]: row
        for row in OutputRating.objects.filter(job__job_loras__lora_id__in=lora_ids)
        .values(lora_id=F("job__job_loras__lora_id"))
        .annotate(**_histogram_counts())
    }
    return {lora_id: _figures(jobs.get(lora_id), ratings.get(lora_id)) for lora_id in lora_ids}


def _jobs_figures(used_in) -> UsageFigures:
    """The figures of the jobs whose ids `used_in` (a subquery) gives, each job once: two aggregate queries."""
    job_row = GenerationJob.objects.filter(id__in=used_in).aggregate(
        generations=Count("id"),
        succeeded=Count("id", filter=Q(status=JobStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=JobStatus.FAILED)),
        last_used=Max("created_at"),
    )
    rating_row = OutputRating.objects.filter(job_id__in=used_in).aggregate(**_histogram_counts())
    return _figures(job_row, rating_row)


def base_model_usage(*, workspace_id: int, family: str) -> tuple[UsageFigures, tuple[str, ...]]:
    """The figures of the workspace's jobs with no LoRA on the registry's models of `family` (two queries), and
    those models' display names."""
    models = [model for model in model_registry().values() if model.family == family]
    without_loras = ~Exists(JobLoRA.objects.filter(job_id=OuterRef("pk")))
    jobs = GenerationJob.objects.filter(
        without_loras, workspace_id=workspace_id, model_key__in=[model.key for model in models]
    )
    return _jobs_figures(jobs.values("id")), tuple(model.display_name for model in models)


def pair_metrics(*, pair: LoRAPair) -> LoRAMetrics:
    """A pair's figures: the jobs that used either half (a job with both counts once), against its base model."""
    used_in = JobLoRA.objects.filter(lora_id__in=[pair.high_id, pair.low_id]).values("job_id")
    base, base_models = base_model_usage(workspace_id=pair.workspace_id, family=pair.high.base_model)
    return LoRAMetrics(lora=_jobs_figures(used_in), base=base, base_models=base_models)


def lora_metrics(*, lora: LoRA) -> LoRAMetrics:
    """The LoRA page's figures: the LoRA's and its base model's, in four aggregate queries."""
    base, base_models = base_model_usage(workspace_id=lora.workspace_id, family=lora.base_model)
    return LoRAMetrics(lora=lora_usage(lora_ids=[lora.id])[lora.id], base=base, base_models=base_models)
