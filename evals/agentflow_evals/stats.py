"""Confidence intervals for an eval's accuracy, and paired tests between two runs.

Everything here is pure Python (no numpy or scipy) and deterministic: the bootstrap draws from
one fixed seed, so the same results always give the same report.

Which method applies depends on the per-item scores:

- **Binary scores** (one sample per item, each item right or wrong): the accuracy's interval is
  the Wilson score interval, which keeps its coverage near 0% and 100% where the textbook
  normal (Wald) interval collapses to a point. Two runs on the same items are compared with the
  exact McNemar test, which looks only at the items on which the runs disagree, and the
  difference gets Newcombe's paired interval (his method 10: Wilson intervals of the two
  accuracies, combined with the correlation between the runs).
- **Fractional scores** (the mean over k samples of an item): an item is no longer one Bernoulli
  trial, so a Wilson interval on the mean would be wrong. A percentile bootstrap over items is
  used instead, for the accuracy and for the paired difference; see `accuracy_interval` for why
  not a t-interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "SIGNIFICANCE_LEVEL",
    "Comparison",
    "accuracy_interval",
    "paired_comparison",
    "wilson_interval",
]

BOOTSTRAP_RESAMPLES = 10_000
"""Resamples per bootstrap: the 2.5th percentile then rests on 250 draws, enough for a stable
first decimal of a percentage; it costs about one second per 1,000 items."""
BOOTSTRAP_SEED = 0
"""One fixed seed, so a report is reproducible to the last digit."""
SIGNIFICANCE_LEVEL = 0.05
"""A difference is called significant when its two-sided p-value is below this."""


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Run B against run A on the items both finished."""

    n_shared: int
    """Items both runs scored; only these are compared."""
    mean_a: float | None
    """Run A's accuracy on the shared items (None when there are none)."""
    mean_b: float | None
    """Run B's accuracy on the shared items."""
    difference: float | None
    """`mean_b - mean_a`: positive when B scored higher."""
    interval: tuple[float, float] | None
    """The 95% interval of the difference."""
    p_value: float | None
    """Two-sided p-value of "the runs are equally accurate" (None when nothing was compared)."""
    test: str
    """"McNemar exact", "paired permutation", or "none" when nothing was compared."""
    significant: bool
    """Whether `p_value < SIGNIFICANCE_LEVEL`."""
    only_a: int | None = None
    """McNemar only: items A got right and B wrong (a discordant pair)."""
    only_b: int | None = None
    """McNemar only: items B got right and A wrong."""
    note: str = ""
    """Why nothing was compared, when nothing was."""


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of `successes / n`.

    Its bounds are clamped to [0, 1] and made to contain the proportion itself: at 0/n and n/n
    the formula's bound equals the proportion only up to rounding."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    z = _z(confidence)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return min(max(centre - half, 0.0), p), max(min(centre + half, 1.0), p)


def accuracy_interval(scores: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The interval of the mean of per-item scores in [0, 1].

    When every score is 0 or 1 this is the Wilson interval. When some are fractional (the mean
    over k samples of an item) it is a seeded percentile bootstrap over items, chosen over a
    t-interval because its bounds stay inside [0, 1] by construction (a t-interval spills over
    near 0% and 100%), it makes no normality assumption about a skewed mean of few distinct
    values, and it is the same resampling that `paired_comparison` uses, so the accuracy and
    difference intervals of a report agree in method. Like every percentile bootstrap it is
    slightly narrow for a few dozen items. Raises ValueError for no scores or a score outside
    [0, 1]. The interval always contains the mean, also at 0% and 100%."""
    values = _checked(scores)
    if not values:
        raise ValueError("no scores: an accuracy needs at least one item")
    if _binary(values):
        return wilson_interval(round(sum(values)), len(values), confidence)
    mean = math.fsum(values) / len(values)
    low, high = _percentiles(_bootstrap_means(values), confidence)
    return min(max(low, 0.0), mean), max(min(high, 1.0), mean)


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float]) -> Comparison:
    """Compare two runs' per-item scores (item id -> score in [0, 1]) on the ids both have.

    Pairing matters: two runs on the same items share the items' difficulty, so the paired test
    sees a difference that two independent intervals would hide in their overlap. Binary scores
    get the exact McNemar test, fractional ones a paired permutation test (with a bootstrap
    interval) of the mean difference."""
    shared = sorted(a.keys() & b.keys())  # sorted: the bootstrap must not depend on dict order
    if not shared:
        return Comparison(
            n_shared=0,
            mean_a=None,
            mean_b=None,
            difference=None,
            interval=None,
            p_value=None,
            test="none",
            significant=False,
            note="the runs share no item ids, so there is nothing to compare",
        )
    xs = _checked([a[key] for key in shared])
    ys = _checked([b[key] for key in shared])
    if _binary(xs) and _binary(ys):
        return _mcnemar(xs, ys)
    return _paired_bootstrap(xs, ys)


# --- binary scores ----------------------------------------------------------------------------


def _mcnemar(xs: Sequence[float], ys: Sequence[float]) -> Comparison:
    """The exact McNemar test: under "equally accurate", each item the runs disagree on is a
    fair coin flip between them, so the smaller discordant count is Binomial(b + c, 1/2)."""
    only_a = sum(1 for x, y in zip(xs, ys, strict=True) if x > y)
    only_b = sum(1 for x, y in zip(xs, ys, strict=True) if y > x)
    both = sum(1 for x, y in zip(xs, ys, strict=True) if x == y == 1)
    n = len(xs)
    p_value = _binomial_two_sided(min(only_a, only_b), only_a + only_b)
    return Comparison(
        n_shared=n,
        mean_a=(both + only_a) / n,
        mean_b=(both + only_b) / n,
        difference=(only_b - only_a) / n,
        interval=_newcombe_paired(both=both, only_a=only_a, only_b=only_b, n=n),
        p_value=p_value,
        test="McNemar exact",
        significant=p_value < SIGNIFICANCE_LEVEL,
        only_a=only_a,
        only_b=only_b,
    )


def _binomial_two_sided(k: int, m: int) -> float:
    """min(1, 2 P[X <= k]) for X ~ Binomial(m, 1/2) and k <= m/2, in exact integer arithmetic
    (Python's int division rounds correctly however large the binomial coefficients get)."""
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(k + 1))
    return min(1.0, 2 * tail / (1 << m))


def _newcombe_paired(*, both: int, only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for a difference of paired proportions, B - A.

    Each accuracy's distance to its Wilson bounds is combined by "square and add", less the
    part the two runs share through their correlation (phi, continuity-corrected as Newcombe
    does). Same as R's contingencytables::Newcombe_square_and_add_CI_paired_2x2."""
    neither = n - both - only_a - only_b
    hits_b, hits_a = both + only_b, both + only_a
    p_b, p_a = hits_b / n, hits_a / n
    low_b, high_b = wilson_interval(hits_b, n)
    low_a, high_a = wilson_interval(hits_a, n)
    margins = hits_b * (n - hits_b) * hits_a * (n - hits_a)
    cross = both * neither - only_b * only_a
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    below = (p_b - low_b) ** 2 + (high_a - p_a) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a)
    above = (high_b - p_b) ** 2 + (p_a - low_a) ** 2 - 2 * phi * (high_b - p_b) * (p_a - low_a)
    difference = p_b - p_a
    low = max(difference - math.sqrt(max(below, 0.0)), -1.0)
    high = min(difference + math.sqrt(max(above, 0.0)), 1.0)
    return min(low, difference), max(high, difference)


# --- fractional scores ------------------------------------------------------------------------


def _paired_bootstrap(xs: Sequence[float], ys: Sequence[float]) -> Comparison:
    """The interval from resampling items (each item's pair kept together); the p-value from
    a paired sign-flip permutation test. A bootstrap p-value is far too small on a handful of
    items (one item "differing" by 0.5 came out p = 0.0002); the permutation test is exact
    for up to `EXACT_FLIP_ITEMS` differing items and valid at any size."""
    n = len(xs)
    diffs = [y - x for x, y in zip(xs, ys, strict=True)]
    difference = math.fsum(diffs) / n
    low, high = _percentiles(_bootstrap_means(diffs), 0.95)
    p_value = _sign_flip_p_value(diffs)
    return Comparison(
        n_shared=n,
        mean_a=math.fsum(xs) / n,
        mean_b=math.fsum(ys) / n,
        difference=difference,
        interval=(min(low, difference), max(high, difference)),
        p_value=p_value,
        test="paired permutation",
        significant=p_value < SIGNIFICANCE_LEVEL,
    )


EXACT_FLIP_ITEMS = 16
"""Up to this many differing items every sign assignment is enumerated (2^16 of them)."""


def _sign_flip_p_value(diffs: Sequence[float]) -> float:
    """Two-sided p of the mean paired difference: under "no difference" each item's difference
    is as likely negated, so p is the share of sign assignments whose |sum| reaches the
    observed one (exact when few items differ, else a seeded Monte Carlo estimate)."""
    nonzero = [d for d in diffs if d != 0]
    if not nonzero:
        return 1.0
    observed = abs(math.fsum(nonzero)) - 1e-12
    if len(nonzero) <= EXACT_FLIP_ITEMS:
        total = 1 << len(nonzero)
        hits = sum(1 for mask in range(total) if abs(_flipped(nonzero, mask)) >= observed)
        return hits / total
    rng = random.Random(BOOTSTRAP_SEED)
    hits = sum(
        1
        for _ in range(BOOTSTRAP_RESAMPLES)
        if abs(math.fsum(d if rng.random() < 0.5 else -d for d in nonzero)) >= observed
    )
    return (hits + 1) / (BOOTSTRAP_RESAMPLES + 1)


def _flipped(values: Sequence[float], mask: int) -> float:
    return math.fsum(-v if mask >> i & 1 else v for i, v in enumerate(values))


def _bootstrap_means(values: Sequence[float]) -> list[float]:
    """The sorted means of `BOOTSTRAP_RESAMPLES` resamples with replacement, from one seed."""
    rng = random.Random(BOOTSTRAP_SEED)
    n = len(values)
    return sorted(sum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES))


def _percentiles(ordered: Sequence[float], confidence: float) -> tuple[float, float]:
    """The two order statistics that leave (1 - confidence) / 2 of the draws on each side."""
    tail = math.floor(len(ordered) * (1 - confidence) / 2)
    return ordered[tail], ordered[len(ordered) - 1 - tail]


# --- checks -----------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _checked(scores: Sequence[float]) -> list[float]:
    values = [float(score) for score in scores]
    bad = [value for value in values if not 0.0 <= value <= 1.0]  # also rejects NaN
    if bad:
        raise ValueError(f"scores must lie in [0, 1], got {bad[0]!r}")
    return values


def _binary(values: Sequence[float]) -> bool:
    return all(value in (0.0, 1.0) for value in values)
