"""Adapter metrics: how a LoRA's outputs fare, next to the base model's alone.

`lora_metrics(lora)` answers the LoRA page's and the API's figures — generations, succeeded and failed, the average
rating with its count, the 1–5 histogram and when it was last used — and the same figures for the workspace's jobs
on the LoRA's base model (the registry's models of its family) with no LoRA at all, so a page can say
"4.1 ★ (37 ratings) vs 3.2 ★ for the base model (52)". They are read from counters maintained on every job and
rating change (generation/usage.py), so the page costs two indexed row reads whatever the history; a pair's the
same (a job with both halves counted once)."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Sum

from generation.model_registry import model_registry
from generation.models import UsageCounter
from generation.usage import FIGURE_FIELDS, STARS
from loras.models import LoRA, LoRAPair


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


def _figures(row: dict | None) -> UsageFigures:
    """UsageFigures from a counter row's values (the average is the histogram's)."""
    row = row or {}
    histogram = tuple(row.get(f"stars_{stars}") or 0 for stars in STARS)
    count = sum(histogram)
    return UsageFigures(
        generations=row.get("generations") or 0,
        succeeded=row.get("succeeded") or 0,
        failed=row.get("failed") or 0,
        rating_average=sum(stars * n for stars, n in zip(STARS, histogram, strict=True)) / count if count else None,
        rating_count=count,
        histogram=histogram,
        last_used=row.get("last_used"),
    )


def lora_usage(*, lora_ids: Iterable[int]) -> dict[int, UsageFigures]:
    """Each LoRA's own figures, for any number of LoRAs in one query of their counters (a versions list, a page)."""
    lora_ids = list(lora_ids)
    rows = {row["lora_id"]: row for row in UsageCounter.objects.filter(lora_id__in=lora_ids).values()}
    return {lora_id: _figures(rows.get(lora_id)) for lora_id in lora_ids}


def base_model_usage(*, workspace_id: int, family: str) -> tuple[UsageFigures, tuple[str, ...]]:
    """The figures of the workspace's jobs with no LoRA on the registry's models of `family` (their counters summed
    in one query), and those models' display names."""
    models = [model for model in model_registry().values() if model.family == family]
    row = UsageCounter.objects.filter(
        workspace_id=workspace_id, lora=None, pair=None, model_key__in=[model.key for model in models]
    ).aggregate(**{name: Sum(name) for name in FIGURE_FIELDS}, last_used=Max("last_used"))
    return _figures(row), tuple(model.display_name for model in models)


def pair_metrics(*, pair: LoRAPair) -> LoRAMetrics:
    """A pair's figures (the jobs that used either half, a job with both once) against its base model: two queries
    of their counters."""
    row = UsageCounter.objects.filter(pair=pair).values().first()
    base, base_models = base_model_usage(workspace_id=pair.workspace_id, family=pair.high.base_model)
    return LoRAMetrics(lora=_figures(row), base=base, base_models=base_models)


def lora_metrics(*, lora: LoRA) -> LoRAMetrics:
    """The LoRA page's figures: the LoRA's and its base model's, in two queries of their counters."""
    base, base_models = base_model_usage(workspace_id=lora.workspace_id, family=lora.base_model)
    return LoRAMetrics(lora=lora_usage(lora_ids=[lora.id])[lora.id], base=base, base_models=base_models)
