"""Comparing LoRAs side by side (usually versions of one name): metadata, training headline, metrics, and for the
ratings a significance verdict.

The ratings test is Mann–Whitney U (two-sided, α = 0.05) with the normal approximation, the tie correction and a
continuity correction of ½ — what scipy's `mannwhitneyu(..., method="asymptotic")` computes — from the 1–5
histograms (`loras.metrics`, so no rating row is read), by the one implementation in
generation/experiments/stats.py. Below MIN_RATINGS on either side the verdict is "not enough ratings yet" rather
than a p-value that means little. With more than two LoRAs, each is
tested against the best-rated one."""

from dataclasses import dataclass

from generation.experiments.stats import MannWhitney, mann_whitney_u, significant
from loras.metrics import UsageFigures, lora_usage
from loras.models import LoRA
from loras.training import training_headline
from lorasite.errors import InvalidInput, NotFound
from workspaces.models import Workspace

MIN_RATINGS = 5
MAX_COMPARED = 4
TEST_NAME = "Mann–Whitney U test (two-sided, normal approximation with tie correction)"


def ratings_test(first: tuple[int, ...], second: tuple[int, ...]) -> MannWhitney | None:
    """Mann–Whitney U of two rating histograms (counts of 1…5 stars); None when every rating is the same."""
    return mann_whitney_u(_ratings(first), _ratings(second))


def _ratings(histogram: tuple[int, ...]) -> list[int]:
    return [stars for stars, count in enumerate(histogram, start=1) for _ in range(count)]


@dataclass(frozen=True)
class Verdict:
    text: str  # "Better (p = 0.012)", "No significant difference (p = 0.41)", "Not enough ratings yet"
    significant: bool
    p: float | None


def rating_verdict(lora: UsageFigures, best: UsageFigures) -> Verdict:
    if lora.rating_count < MIN_RATINGS or best.rating_count < MIN_RATINGS:
        return Verdict(f"Not enough ratings yet (at least {MIN_RATINGS} each)", False, None)
    result = ratings_test(best.histogram, lora.histogram)
    p = 1.0 if result is None else result.p_value  # all ratings equal: no evidence either way
    if significant(p):
        return Verdict(f"Significantly lower (p = {p:.3f})", True, p)
    return Verdict(f"No significant difference (p = {p:.3f})", False, p)


@dataclass(frozen=True)
class ComparedLoRA:
    lora: LoRA
    metrics: UsageFigures
    training: dict
    success_rate: float | None  # succeeded ÷ finished (succeeded + failed)
    best_rating: bool
    best_success: bool
    verdict: Verdict | None  # against the best-rated; None for the best-rated itself


def _success_rate(figures: UsageFigures) -> float | None:
    finished = figures.succeeded + figures.failed
    return figures.succeeded / finished if finished else None


def lora_comparison(*, loras: list[LoRA]) -> list[ComparedLoRA]:
    """The LoRAs in the order given, each marked where it is the best (highest average rating, highest success
        rate; nothing is marked on a tie or without data) with its rating verdict against the best-rated — chosen among
    those with at least MIN_RATINGS ratings when any has them."""
    usage = lora_usage(lora_ids=[lora.id for lora in loras])
    # The best-rated is chosen among those with enough ratings to test against, when any has.
    rated = [lora for lora in loras if usage[lora.id].rating_count >= MIN_RATINGS] or [
        lora for lora in loras if usage[lora.id].rating_count
    ]
    averages = sorted((usage[lora.id].rating_average for lora in rated), reverse=True)
    best_rated = None
    if averages and (len(averages) == 1 or averages[0] > averages[1]):
        best_rated = max(rated, key=lambda lora: usage[lora.id].rating_average)
    rates = {lora.id: _success_rate(usage[lora.id]) for lora in loras}
    known = sorted((rate for rate in rates.values() if rate is not None), reverse=True)
    top_rate = known[0] if known and (len(known) == 1 or known[0] > known[1]) else None
    rows = []
    for lora in loras:
        figures = usage[lora.id]
        verdict = None
        if best_rated is not None and lora.id != best_rated.id:
            verdict = rating_verdict(figures, usage[best_rated.id])
        rows.append(
            ComparedLoRA(
                lora=lora,
                metrics=figures,
                training=training_headline(training_metadata=lora.training_metadata, training=lora.training),
                success_rate=rates[lora.id],
                best_rating=best_rated is not None and lora.id == best_rated.id,
                best_success=top_rate is not None and rates[lora.id] == top_rate,
                verdict=verdict,
            )
        )
    return rows


def lora_compare_get(*, workspace: Workspace, lora_ids: list[int]) -> list[LoRA]:
    """2 to MAX_COMPARED alive LoRAs of the workspace, in the order asked; one of another workspace is a 404."""
    unique = list(dict.fromkeys(lora_ids))
    if not 2 <= len(unique) <= MAX_COMPARED:
        raise InvalidInput(
            f"Compare 2 to {MAX_COMPARED} different LoRAs; {len(unique)} given.",
            errors={"ids": [f"2 to {MAX_COMPARED} LoRA ids."]},
        )
    found = {lora.id: lora for lora in LoRA.objects.alive().filter(workspace=workspace, id__in=unique)}
    missing = [lora_id for lora_id in unique if lora_id not in found]
    if missing:
        raise NotFound(f"LoRA {missing[0]} not found.")
    return [found[lora_id] for lora_id in unique]
