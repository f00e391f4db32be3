"""`summary.json`: what a run scored, from every finished results row."""

from __future__ import annotations

import statistics
from typing import Any

from agentflow.exceptions import UserError
from agentflow_evals.browsecomp import calibration_error, hle_convention_calibration_error
from agentflow_evals.stats import accuracy_interval

__all__ = ["summarize"]


def summarize(
    rows: list[dict[str, Any]],
    manifest: dict[str, Any],
    *,
    wall: float,
    new_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """`summary.json`: accuracy (with its 95% interval), calibration, latency percentiles,
    tokens and calls over every finished item. `manifest` names the run (dataset, planner,
    model, samples)."""
    if not rows:
        raise UserError("no finished items: nothing to summarise")
    samples = [s for r in rows for s in r["samples"]]
    seconds = sorted(r["seconds"] for r in rows)
    new_tokens = sum(s["completion_tokens"] for r in new_rows for s in r["samples"])
    k = int(manifest["samples"])
    scores = [float(r["correct"]) for r in rows]
    low, high = accuracy_interval(scores)
    return {
        "dataset": manifest["dataset"],
        "planner": manifest["planner"],
        "model": manifest["model"],
        "n": len(rows),
        "accuracy": _mean(scores),
        "accuracy_ci95": [round(low, 4), round(high, 4)],
        "em": _mean_of(samples, "em"),
        "f1": _mean_of(samples, "f1"),
        "loose_accuracy": _mean_of(samples, "loose"),
        "avg_at_k": _mean(scores) if k > 1 else None,
        "maj_at_k": _mean(float(r["maj_correct"]) for r in rows) if k > 1 else None,
        "samples": k,
        **_calibration(samples),
        **_judge_reads(samples),
        "latency_p50": round(statistics.median(seconds), 3),
        "latency_p90": round(_percentile(seconds, 0.9), 3),
        "tokens_total": sum(s["prompt_tokens"] + s["completion_tokens"] for s in samples),
        "completion_tokens": sum(s["completion_tokens"] for s in samples),
        "model_calls": sum(s["model_calls"] for s in samples),
        "tool_calls": sum(s["tool_calls"] for s in samples),
        # Rows written before request timings existed have no count: they add nothing.
        "requests_over_30s": sum(s.get("requests_over_30s", 0) for s in samples),
        "errors": sum(1 for s in samples if s["error"]),
        "wall_seconds": round(wall, 3),
        "throughput_tokens_per_s": round(new_tokens / wall, 2) if wall > 0 else 0.0,
    }


CALIBRATION_CONVENTION = (
    "RMS calibration error in percentage points over every sample the judge graded (a "
    "verdict it failed to give is left out), confidences in percent (a missing one counts as "
    "100), sorted into bins of 100 with the remainder merged into the last bin (HLE's bins); "
    "tied confidences share their accuracy, so the order of the samples does not matter. "
    "calibration_error counts every bin; calibration_error_hle_convention leaves the last bin "
    "out as HLE's calib_err does (0 for 100-199 samples, null under 100). It is not HLE's "
    "figure to the digit: under ties HLE's depends on numpy's unstable sort, and HLE rounds "
    "to whole percent."
)


def _calibration(samples: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [
        s
        for s in samples
        if s.get("confidence") is not None
        and not s["error"]
        and s.get("judge_parsed_with") != "failed"
    ]
    if not scored:
        return {"calibration_error": None, "calibration_error_hle_convention": None}
    confidences = [float(s["confidence"]) for s in scored]
    correct = [bool(s["correct"]) for s in scored]
    hle = hle_convention_calibration_error(confidences, correct)
    return {
        "calibration_error": round(calibration_error(confidences, correct), 2),
        "calibration_error_hle_convention": None if hle is None else round(hle, 2),
        "calibration_convention": CALIBRATION_CONVENTION,
        "confidence_stated": sum(1 for s in scored if s.get("confidence_source") == "response"),
        "confidence_from_judge": sum(1 for s in scored if s.get("confidence_source") == "judge"),
        "confidence_missing": sum(1 for s in scored if s.get("confidence_source") == "missing"),
    }


def _judge_reads(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """How the judge's verdicts were read, for judged tasks: `judge_failed` counts the samples
    scored wrong because no verdict could be read (`eval regrade --only-failed-judge` retries
    them); they are in the accuracy as wrong and out of the calibration."""
    reads = [s.get("judge_parsed_with") for s in samples if not s["error"]]
    if not any(reads):
        return {}
    return {
        "judge_failed": reads.count("failed"),
        "judge_parsed_with": {way: reads.count(way) for way in ("schema", "regex", "failed")},
    }


def _mean(values: Any) -> float:
    collected = list(values)
    return round(sum(collected) / len(collected), 4) if collected else 0.0


def _mean_of(samples: list[dict[str, Any]], key: str) -> float | None:
    present = [s[key] for s in samples if s.get(key) is not None]
    return _mean(present) if present else None


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, int(-(-q * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]
