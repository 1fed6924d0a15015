"""The comparison statistics against hand-computed values (and scipy 1.17's, computed once off-line)."""

import math

import pytest

from generation.experiments import stats


def test_wilson_interval_hand_computed():
    # 8 of 10: p = 0.8, z² = 3.8415; centre = (0.8 + 0.19207) / 1.38415 = 0.71675,
    # half = 1.96 · sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658 → 0.4902 … 0.9433 (statsmodels' wilson too).
    interval = stats.wilson_interval(8, 10)
    assert interval.low == pytest.approx(0.490162, abs=1e-6)
    assert interval.high == pytest.approx(0.943318, abs=1e-6)


def test_wilson_interval_edges_stay_inside_0_1():
    assert stats.wilson_interval(0, 10).low == 0.0
    assert stats.wilson_interval(0, 10).high == pytest.approx(0.277533, abs=1e-6)
    assert stats.wilson_interval(10, 10).low == pytest.approx(0.722467, abs=1e-6)
    assert stats.wilson_interval(10, 10).high <= 1.0
    assert stats.wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (7, 10, 0.5, 352 / 1024),  # 2 · (C(10,7) + C(10,8) + C(10,9) + C(10,10)) / 2¹⁰
        (9, 10, 0.5, 22 / 1024),  # 2 · (10 + 1) / 2¹⁰
        (0, 5, 0.5, 2 / 32),
        (5, 10, 0.5, 1.0),
        (3, 10, 0.2, 0.429574656),  # asymmetric: scipy.stats.binomtest
        (60, 100, 0.5, 0.0568879336),
        (520, 1000, 0.5, 0.2174482932),
    ],
)
def test_binomial_test_two_sided(k, n, p, expected):
    assert stats.binomial_test(k, n, p=p) == pytest.approx(expected, rel=1e-8)


def test_binomial_test_without_trials():
    assert stats.binomial_test(0, 0) is None


def test_mann_whitney_exact_for_tiny_untied_samples():
    # All of x below all of y: U = 0, and 1 of C(6,3) = 20 arrangements is that extreme on each side → p = 0.1.
    result = stats.mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert (result.u, result.method) == (0.0, "exact")
    assert result.p_value == pytest.approx(0.1)
    result = stats.mann_whitney_u([1, 4, 6, 8], [2, 3, 5, 7, 9])
    assert result.u == 9.0
    assert result.p_value == pytest.approx(0.9047619048)


def test_mann_whitney_normal_with_ties():
    # Ranks of [1,2,2,3,4] in the pooled sample: 1, 3, 3, 5.5, 8 → R1 = 20.5, U1 = 20.5 − 15 = 5.5.
    # Ties: {2×3, 3×2, 4×3} → Σ(t³−t) = 24+6+24 = 54; σ² = 25/12 · (11 − 54/90) = 21.667; mean 12.5;
    # z = (7 − 0.5) / 4.6547 = 1.3964 → p = 0.16259.
    x, y = [1, 2, 2, 3, 4], [2, 3, 4, 4, 5]
    result = stats.mann_whitney_u(x, y)
    assert (result.u, result.method) == (5.5, "normal")
    assert result.p_value == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(6.5 / math.sqrt(2 * 65 / 3)))), rel=1e-9)
    assert result.p_value == pytest.approx(0.1625868507, rel=1e-8)


def test_mann_whitney_star_ratings():
    a = [5, 4, 4, 3, 5, 5, 2, 4, 5, 3, 4, 5]
    b = [3, 3, 2, 4, 1, 3, 2, 3, 4, 2]
    result = stats.mann_whitney_u(a, b)
    assert result.u == 100.5
    assert result.p_value == pytest.approx(0.0066216621, rel=1e-8)
    assert stats.significant(result.p_value)


def test_mann_whitney_degenerate_samples():
    assert stats.mann_whitney_u([], [1, 2]) is None
    assert stats.mann_whitney_u([5, 5, 5], [5, 5]) is None  # all tied: no evidence either way
    assert not stats.significant(None)
