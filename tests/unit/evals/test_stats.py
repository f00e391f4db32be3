from __future__ import annotations

import pytest

from agentflow_evals.stats import (
    BOOTSTRAP_RESAMPLES,
    accuracy_interval,
    paired_comparison,
    wilson_interval,
)

# The hand computations below use z = 1.959964 (95%), z^2 = 3.841459, and for n = 10:
# z^2 / n = 0.3841459, z^2 / (2n) = 0.1920729, z^2 / (4 n^2) = 0.0096036.
# Wilson: centre = (p + z^2/(2n)) / (1 + z^2/n), half = z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n).


def _rounded(interval: tuple[float, float] | None) -> tuple[float, float]:
    assert interval is not None
    return round(interval[0], 4), round(interval[1], 4)


def test_wilson_seven_of_ten() -> None:
    # centre = (0.7 + 0.1920729) / 1.3841459 = 0.644488
    # half = 1.959964 * sqrt(0.021 + 0.0096036) / 1.3841459 = 1.959964 * 0.174939 / 1.3841459
    #      = 0.247716, so (0.396772, 0.892204)
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
    assert accuracy_interval([1.0] * 7 + [0.0] * 3) == (low, high)


def test_wilson_at_zero_and_full_accuracy_contains_the_accuracy() -> None:
    # At p = 0, centre = half = 0.1920729 / 1.3841459 = 0.138767: the bounds are 0 and
    # 2 * 0.138767 = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533. 10/10 mirrors it.
    low, high = accuracy_interval([0.0] * 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = accuracy_interval([1.0] * 10)
    assert round(low, 4) == 0.7225 and high == 1.0
    # 1/1: the lower bound is 1 - z^2 / (1 + z^2) = 1 - 3.841459 / 4.841459 = 0.206549.
    assert _rounded(wilson_interval(1, 1)) == (0.2065, 1.0)


def test_fractional_scores_use_a_deterministic_bootstrap() -> None:
    # 400 items, half scoring 0.25 and half 0.75 (two of four samples differ): mean 0.5, item
    # standard deviation 0.25, standard error 0.25 / sqrt(400) = 0.0125, so the interval is
    # about 0.5 +- 1.96 * 0.0125 = (0.4755, 0.5245); a Wilson interval for p = 0.5, n = 400
    # would be (0.451, 0.549), twice as wide, because it takes every item for a coin flip.
    scores = [0.25, 0.75] * 200
    low, high = accuracy_interval(scores)
    assert low == pytest.approx(0.4755, abs=0.004)
    assert high == pytest.approx(0.5245, abs=0.004)
    assert accuracy_interval(scores) == (low, high)  # seeded: the same every time
    assert accuracy_interval([0.5] * 10) == (0.5, 0.5)  # every resample has mean 0.5


def test_fractional_interval_stays_in_range_and_holds_the_mean() -> None:
    for scores in ([0.0] * 9 + [0.5], [1.0] * 9 + [0.5], [0.2]):
        low, high = accuracy_interval(scores)
        mean = sum(scores) / len(scores)
        assert 0.0 <= low <= mean <= high <= 1.0


def test_bad_scores_are_errors() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        accuracy_interval([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        accuracy_interval([0.5, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        accuracy_interval([float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        accuracy_interval([1.0], confidence=1.0)


def _runs(*, both: int, only_a: int, only_b: int, neither: int) -> tuple[dict[str, float], ...]:
    """Two binary runs with the given cells of the paired 2x2 table."""
    cells = [(1.0, 1.0)] * both + [(1.0, 0.0)] * only_a + [(0.0, 1.0)] * only_b
    cells += [(0.0, 0.0)] * neither
    a = {f"q{i}": x for i, (x, _) in enumerate(cells)}
    b = {f"q{i}": y for i, (_, y) in enumerate(cells)}
    return a, b


def test_mcnemar_one_against_nine() -> None:
    # 10 discordant pairs, 1 for A and 9 for B: P[X <= 1] for X ~ Bin(10, 1/2) is
    # (C(10,0) + C(10,1)) / 2^10 = 11 / 1024, so p = 2 * 11 / 1024 = 0.021484375.
    # Newcombe with both = neither = 0: phi = (0*0 - 9*1) / sqrt(9*1*1*9) = -1, so each side
    # adds its two Wilson distances. Wilson 9/10 = (0.595849, 0.982118), 1/10 mirrors it:
    # low = 0.8 - (0.304151 + 0.304151) = 0.191698, high = 0.8 + (0.082118 * 2) = 0.964236.
    a, b = _runs(both=0, only_a=1, only_b=9, neither=0)
    comparison = paired_comparison(a, b)
    assert comparison.p_value == 0.021484375
    assert comparison.significant
    assert comparison.test == "McNemar exact"
    assert (comparison.only_a, comparison.only_b, comparison.n_shared) == (1, 9, 10)
    assert (comparison.mean_a, comparison.mean_b) == (0.1, 0.9)
    assert comparison.difference == pytest.approx(0.8)
    assert _rounded(comparison.interval) == (0.1917, 0.9642)


def test_mcnemar_equal_discordant_counts_give_p_one() -> None:
    # b = c = 3: 2 * P[X <= 3] for X ~ Bin(6, 1/2) = 2 * 42/64 > 1, capped at 1.
    a, b = _runs(both=5, only_a=3, only_b=3, neither=9)
    comparison = paired_comparison(a, b)
    assert comparison.p_value == 1.0
    assert not comparison.significant
    assert comparison.difference == 0.0
    assert comparison.interval is not None and comparison.interval[0] < 0 < comparison.interval[1]
    # A run against itself: 8 both, 12 neither (n = 20), no discordant pair, p = 1. Wilson
    # 8/20: centre = (0.4 + 0.096036) / 1.192073 = 0.416114, half = 1.959964 * sqrt(0.012 +
    # 0.002401) / 1.192073 = 0.197307, so (0.218807, 0.613421). phi = (8*12 - 20/2) / sqrt(8*12
    # *8*12) = 86/96 = 0.895833. Each side: sqrt(0.181193^2 + 0.213421^2 - 2 * 0.895833 *
    # 0.181193 * 0.213421) = sqrt(0.032831 + 0.045549 - 0.069286) = 0.09536.
    same = paired_comparison(a, a)
    assert same.p_value == 1.0 and same.difference == 0.0
    assert _rounded(same.interval) == (-0.0954, 0.0954)


def test_mcnemar_matches_a_published_example() -> None:
    # Cavo et al. (2012) in Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency
    # Tables", ch. 8: 59 both, 6 only first, 16 only second, 80 neither (n = 161). Newcombe's
    # square-and-add interval there: -0.0621 (-0.1186 to -0.0046). The exact McNemar p is
    # 2 * (C(22,0) + ... + C(22,6)) / 2^22 = 2 * (1 + 22 + 231 + 1540 + 7315 + 26334 + 74613)
    # / 4194304 = 2 * 110056 / 4194304 = 0.052479.
    a, b = _runs(both=59, only_a=16, only_b=6, neither=80)
    comparison = paired_comparison(a, b)
    assert comparison.difference is not None and comparison.interval is not None
    assert round(comparison.difference, 4) == -0.0621
    assert _rounded(comparison.interval) == (-0.1186, -0.0046)
    assert comparison.p_value == 2 * 110056 / 4194304
    assert not comparison.significant  # the exact test is conservative; the interval is not


def test_only_shared_items_are_compared() -> None:
    a = {"q1": 1.0, "q2": 0.0, "only-in-a": 1.0}
    b = {"q1": 1.0, "q2": 1.0, "only-in-b": 0.0}
    comparison = paired_comparison(a, b)
    assert comparison.n_shared == 2
    assert (comparison.only_a, comparison.only_b) == (0, 1)
    assert comparison.p_value == 1.0  # 2 * P[X <= 0], X ~ Bin(1, 1/2) = 2 * 1/2


def test_no_shared_items_is_not_significant_and_says_why() -> None:
    comparison = paired_comparison({"q1": 1.0}, {"q2": 0.0})
    assert comparison.n_shared == 0
    assert not comparison.significant
    assert comparison.p_value is None and comparison.difference is None
    assert comparison.test == "none"
    assert "share no item" in comparison.note
    assert paired_comparison({}, {}).n_shared == 0


def test_paired_permutation_for_fractional_scores() -> None:
    # B beats A by exactly 0.25 on every one of 40 items: every resampled mean difference is
    # 0.25 (the interval is one point), and among 10,000 random sign flips of 40 differences
    # none reaches |sum| = 10 (only all-plus and all-minus do, 2 of 2^40): p = (0 + 1) / 10001.
    a = {f"q{i}": 0.25 * (i % 4) for i in range(40)}
    b = {key: score + 0.25 for key, score in a.items()}
    comparison = paired_comparison(a, b)
    assert comparison.test == "paired permutation"
    assert comparison.difference == pytest.approx(0.25)
    assert _rounded(comparison.interval) == (0.25, 0.25)
    assert comparison.p_value == 1 / (BOOTSTRAP_RESAMPLES + 1)
    assert comparison.significant
    assert comparison.only_a is None and comparison.only_b is None
    # Equal scores: every difference is 0, so p = 1.
    same = paired_comparison(a, dict(a))
    assert (same.p_value, same.significant, same.interval) == (1.0, False, (0.0, 0.0))


def test_a_handful_of_items_is_never_called_significant_by_accident() -> None:
    # One item, 1.0 against 0.5: two sign assignments, both reach |0.5|: p = 1 (a bootstrap
    # said p = 0.0002). Four items each 0.5 worse: of 2^4 = 16 assignments only all-minus and
    # all-plus reach |2.0|: p = 2 / 16 = 0.125, the exact sign test.
    one = paired_comparison({"x": 1.0}, {"x": 0.5})
    assert (one.p_value, one.significant) == (1.0, False)
    four = paired_comparison(dict.fromkeys("abcd", 1.0), dict.fromkeys("abcd", 0.5))
    assert four.p_value == pytest.approx(0.125) and not four.significant


def test_paired_bootstrap_is_deterministic_and_ignores_dict_order() -> None:
    a = {f"q{i}": (i % 3) / 2 for i in range(60)}
    b = {f"q{i}": ((i + 1) % 3) / 2 for i in range(60)}
    first = paired_comparison(a, b)
    reversed_a = dict(reversed(list(a.items())))
    assert paired_comparison(reversed_a, b) == first
    assert first.p_value is not None and first.p_value > 0.05  # same spread of scores
    assert not first.significant
