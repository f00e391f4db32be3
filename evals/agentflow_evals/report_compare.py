"""The report's "Differences between runs": is run B more accurate than run A, beyond chance?

Two runs are compared when they ran the same dataset (the same name and, where both manifests
record it, the same sha256, so equal item ids mean equal items) and share at least one item.
The test is paired on those items (`stats.paired_comparison`): a difference of a few points
that two overlapping accuracy intervals leave open is often clear once each item is compared
with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

from agentflow_evals import _markdown as md
from agentflow_evals.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    SIGNIFICANCE_LEVEL,
    Comparison,
    paired_comparison,
)

if TYPE_CHECKING:
    from agentflow_evals.runs import Run

__all__ = ["compare_runs", "differences_section"]

_HEADER = (
    "run A",
    "run B",
    "shared items",
    "B − A (points)",
    "95% CI",
    "right only in A / B",
    "test",
    "p-value",
    "verdict",
)
_RIGHT = (False, False, True, True, True, True, False, True, False)


def compare_runs(runs: Sequence[Run]) -> list[tuple[Run, Run, Comparison]]:
    """Every pair of runs (in the given order, A before B) on the same dataset that share
    items, with the paired comparison of B against A."""
    compared = []
    for a, b in combinations(runs, 2):
        if _same_dataset(a, b):
            comparison = paired_comparison(a.scores, b.scores)
            if comparison.n_shared:
                compared.append((a, b, comparison))
    return compared


def differences_section(runs: Sequence[Run]) -> str:
    """A table with one row per compared pair, and the sentences a reader needs to read it."""
    compared = compare_runs(runs)
    if not compared:
        return (
            "_No two runs ran the same dataset with items in common, so no difference is tested._"
        )
    rows = [_row(a, b, comparison) for a, b, comparison in compared]
    tests = {comparison.test for _, _, comparison in compared}
    return md.table(_HEADER, rows, _RIGHT) + "\n\n" + _explanation(tests)


def _same_dataset(a: Run, b: Run) -> bool:
    name_a, sha_a = _dataset(a)
    name_b, sha_b = _dataset(b)
    if name_a is None or name_a != name_b:
        return False
    return sha_a is None or sha_b is None or sha_a == sha_b


def _dataset(run: Run) -> tuple[str | None, object]:
    """The dataset's name (from the summary, else the manifest) and its recorded sha256."""
    manifest = run.manifest or {}
    name = run.summary.get("dataset") or manifest.get("dataset")
    return (name if isinstance(name, str) else None), manifest.get("dataset_sha256")


def _row(a: Run, b: Run, comparison: Comparison) -> list[str]:
    low, high = comparison.interval or (None, None)
    discordant = (
        md.MISSING
        if comparison.only_a is None or comparison.only_b is None
        else f"{comparison.only_a} / {comparison.only_b}"
    )
    return [
        md.plain(a.name),
        md.plain(b.name),
        md.count(comparison.n_shared),
        _points(comparison.difference),
        f"[{_points(low)}, {_points(high)}]",
        discordant,
        comparison.test,
        _p_value(comparison.p_value),
        "significant" if comparison.significant else "not significant",
    ]


def _points(value: float | None) -> str:
    return md.MISSING if value is None else f"{100 * value:+.1f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return md.MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _explanation(tests: set[str]) -> str:
    sentences = [
        "*B − A*: run B's accuracy minus run A's, in percentage points, over the shared items "
        "only: items both runs finished (so it can differ from the accuracies above); pairs "
        "on different datasets or with no item in common are not listed."
    ]
    if "McNemar exact" in tests:
        sentences.append(
            "With one sample per item (each right or wrong) the test is the exact McNemar test, "
            "which weighs only the items exactly one run got right (*right only in A / B*), and "
            "the interval is Newcombe's paired score interval; the exact test is conservative, "
            "so a borderline interval can exclude 0 while the verdict is not significant."
        )
    if "paired permutation" in tests:
        sentences.append(
            "With several samples per item (fractional scores) the interval comes from a paired "
            f"bootstrap over the shared items ({BOOTSTRAP_RESAMPLES:,} resamples, seed "
            f"{BOOTSTRAP_SEED}) and the p-value from a paired sign-flip permutation test (exact "
            "up to 16 differing items), which stays honest on a handful of items."
        )
    sentences.append(
        f"p-values are two-sided, and *significant* means p < {SIGNIFICANCE_LEVEL}; among many "
        "pairs, about one in twenty equally accurate pairs shows as significant by chance."
    )
    return " ".join(sentences)
