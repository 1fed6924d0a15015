"""Comparing LoRAs side by side (usually versions of one name): metadata, training headline, metrics, and for the
ratings a significance verdict.

The ratings test is Mann–Whitney U (two-sided, α = 0.05) with the normal approximation, the tie correction and a
continuity correction of ½ — what scipy's `mannwhitneyu(..., method="asymptotic")` computes — done here in plain
Python from the 1–5 histograms (`loras.metrics`), so no rating row is read. Below MIN_RATINGS on either side the
verdict is "not enough ratings yet" rather than a p-value that means little. With more than two LoRAs, each is
tested against the best-rated one."""

import math
from dataclasses import dataclass

from loras.metrics import UsageFigures, lora_usage
from loras.models import LoRA
from loras.training import training_headline
from lorasite.errors import InvalidInput, NotFound
from workspaces.models import Workspace

ALPHA = 0.05
MIN_RATINGS = 5
MAX_COMPARED = 4
TEST_NAME = "Mann–Whitney U test (two-sided, normal approximation with tie correction)"


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample
    z: float
    p: float


def mann_whitney_u(first: tuple[int, ...], second: tuple[int, ...]) -> MannWhitney:
    """Mann–Whitney U of two samples given as counts per value (here: ratings with 1…5 stars)."""
    n1, n2 = sum(first), sum(second)
    if not n1 or not n2:
        raise ValueError("Both samples need at least one value.")
    total = n1 + n2
    rank_sum, below, ties = 0.0, 0, 0
    for count1, count2 in zip(first, second, strict=True):
        tied = count1 + count2
        rank_sum += count1 * (below + (tied + 1) / 2)  # the average rank of a run of equal values
        below += tied
        ties += tied**3 - tied
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:  # every value equal: no evidence either way
        return MannWhitney(u=u, z=0.0, p=1.0)
    distance = max(abs(u - mean) - 0.5, 0.0)
    z = math.copysign(distance / math.sqrt(variance), u - mean)
    return MannWhitney(u=u, z=z, p=math.erfc(abs(z) / math.sqrt(2)))


@dataclass(frozen=True)
class Verdict:
    text: str  # "Better (p = 0.012)", "No significant difference (p = 0.41)", "Not enough ratings yet"
    significant: bool
    p: float | None


def rating_verdict(lora: UsageFigures, best: UsageFigures) -> Verdict:
    if lora.rating_count < MIN_RATINGS or best.rating_count < MIN_RATINGS:
        return Verdict(f"Not enough ratings yet (at least {MIN_RATINGS} each)", False, None)
    result = mann_whitney_u(best.histogram, lora.histogram)
    if result.p < ALPHA:
        return Verdict(f"Significantly lower (p = {result.p:.3f})", True, result.p)
    return Verdict(f"No significant difference (p = {result.p:.3f})", False, result.p)


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
