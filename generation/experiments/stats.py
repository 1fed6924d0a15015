"""Statistics for comparisons, in pure Python (the web process has no scipy): the Wilson score interval for a
proportion, the two-sided exact binomial test, and the Mann–Whitney U test (normal approximation with the tie
correction and a continuity correction; the exact distribution when the samples are tiny and untied).

Every function answers plain floats so pages and the API show the same numbers."""

import math
from collections import Counter
from dataclasses import dataclass
from functools import cache

ALPHA = 0.05
Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile
EXACT_MWU_MAX = 8  # both samples at most this large and no ties: the exact U distribution (small enough to count)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> Interval | None:
    """The Wilson score interval for successes/trials (95 % by default); None without trials. Unlike the normal
    interval it stays inside [0, 1] and is sensible at 0 or all successes."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, not {successes}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(low=max(0.0, centre - half), high=min(1.0, centre + half))


def _binomial_pmf(k: int, n: int, p: float) -> float:
    # In logs so n in the thousands neither overflows nor underflows to a wrong zero too early.
    if p == 0.0:
        return 1.0 if k == 0 else 0.0
    if p == 1.0:
        return 1.0 if k == n else 0.0
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    return math.exp(log)


def binomial_test(successes: int, trials: int, *, p: float = 0.5) -> float | None:
    """Two-sided exact binomial test p-value (as scipy.stats.binomtest): the probability, under success rate `p`,
    of an outcome no more likely than the one seen. None without trials."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, not {successes}")
    observed = _binomial_pmf(successes, trials, p)
    # A relative tolerance so outcomes exactly as likely as the observed one (the symmetric side) count.
    limit = observed * (1 + 1e-7)
    total = sum(pmf for k in range(trials + 1) if (pmf := _binomial_pmf(k, trials, p)) <= limit)
    return min(1.0, total)


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample: the number of (x, y) pairs with x > y, ties counting one half
    p_value: float
    method: str  # "exact" or "normal"


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@cache
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many arrangements of n1 x's and n2 y's give each U = 0 … n1·n2 (the exact null distribution)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    # U(n1, n2) = U(n1-1, n2) + n2 when the largest value is an x, else U(n1, n2-1).
    with_x = _u_counts(n1 - 1, n2)
    with_y = _u_counts(n1, n2 - 1)
    counts = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_x):
        counts[u + n2] += c
    for u, c in enumerate(with_y):
        counts[u] += c
    return tuple(counts)


def mann_whitney_u(x: list[float], y: list[float]) -> MannWhitney | None:
    """Two-sided Mann–Whitney U test of x against y; None when either sample is empty or every value is tied."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return None
    ranks = _ranks(list(x) + list(y))
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    tied = len(set(x) | set(y)) < n
    if not tied and n1 <= EXACT_MWU_MAX and n2 <= EXACT_MWU_MAX:
        counts = _u_counts(n1, n2)
        total = sum(counts)
        u_low = min(u1, n1 * n2 - u1)
        tail = sum(counts[: int(u_low) + 1]) / total
        return MannWhitney(u=u1, p_value=min(1.0, 2 * tail), method="exact")
    tie_term = sum(t**3 - t for t in Counter(ranks).values())
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return None
    mean = n1 * n2 / 2
    z = (abs(u1 - mean) - 0.5) / math.sqrt(variance)  # continuity correction, as scipy's default
    p = math.erfc(max(z, 0.0) / math.sqrt(2))
    return MannWhitney(u=u1, p_value=min(1.0, p), method="normal")


def significant(p_value: float | None, *, alpha: float = ALPHA) -> bool:
    return p_value is not None and p_value < alpha
