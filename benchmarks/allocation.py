"""Compute allocation on math sets (BENCHMARKS.md section 4): what allocated thinking saves.

    python benchmarks/allocation.py [--sets math500,amc23,aime2024] [--per-set 4]
        [--configs cot,fast,think,score,agreement,confidence,score+esc,scale]
        [--base-url URL --model NAME] [--allocation-config FILE] [--concurrency 4]

Per item, every configuration runs once (rotating order, so drift on a shared machine hits all
of them): `cot` one plain chain-of-thought pass (the `direct` planner, no allocation), `fast`
and `think` uniform System 1 and System 2, `score` / `agreement` / `confidence` allocated by
that estimator at its calibrated tau (the allocation config; 0.5 if none), `score+esc` allocated
with an ESC vote (up to 6 samples, windows of 3) on think nodes, and `scale` the SCALE planner.
MATH-500 items are drawn from the report split (index % 25 == 12), never from the calibration
dev split (index % 25 == 0). Reports accuracy with its Wilson interval, mean generated tokens,
model calls, median wall-clock per item, and the token ratios against uniform think and against
plain CoT; MATH-500 accuracy is also given per level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result

from agentflow import OpenAIModel
from agentflow.allocation import Allocator, load_allocator
from agentflow.settings import Settings
from agentflow_evals.allocate import Probe, probe
from agentflow_evals.datasets import EvalItem, load_dataset
from agentflow_evals.failures import InfrastructureFailure
from agentflow_evals.stats import wilson_interval

CONFIGS = ("cot", "fast", "think", "score", "agreement", "confidence", "score+esc", "scale")
REPORT_SPLIT = (25, 12)
"""MATH-500 items whose index % 25 == 12: disjoint from calibration's every:25 dev split."""


def items(sets: list[str], per_set: int) -> list[tuple[str, EvalItem]]:
    """(set name, item) for the first `per_set` items of each set (MATH-500: of its report
    split)."""
    chosen: list[tuple[str, EvalItem]] = []
    for name in sets:
        pool = load_dataset(name).items
        if name == "math500":
            every, offset = REPORT_SPLIT
            pool = pool[offset::every]
        chosen += [(name, item) for item in pool[:per_set]]
    return chosen


def setup(config: str, tau_file: Path | None) -> tuple[str, Allocator | str]:
    """(planner, allocation) of a configuration."""
    if config == "cot":
        return "direct", "off"
    if config in ("fast", "think"):
        return "direct", f"uniform-{config}"
    if config == "scale":
        return "scale", load_allocator("score", config=tau_file) or "off"
    name, _, vote = config.partition("+")
    allocator = load_allocator(
        name, vote="esc" if vote else "none", samples=6 if vote else 1, config=tau_file
    )
    return "direct", allocator or "off"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, timeout=600)
    configs = args.configs.split(",")
    setups = {c: setup(c, args.allocation_config) for c in configs}
    chosen = items(args.sets.split(","), args.per_set)
    slots = asyncio.Semaphore(args.concurrency)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []

    async def one(index: int, named: tuple[str, EvalItem]) -> None:
        name, item = named
        async with slots:
            order = configs[index % len(configs) :] + configs[: index % len(configs)]
            for config in order:
                planner, allocation = setups[config]
                try:
                    result = await probe(item, model, planner, allocation)
                except InfrastructureFailure as failure:  # the server's fault: no figure at all
                    skipped.append({"id": item.id, "config": config, "error": str(failure)})
                    print(f"skipped {item.id} {config}: {failure}", file=sys.stderr)
                    continue
                rows.append(_row(name, item, config, result))
                print(f"{item.id} {config}: {rows[-1]}", file=sys.stderr)

    try:
        await asyncio.gather(*(one(i, item) for i, item in enumerate(chosen)))
    finally:
        await model.aclose()
    return {
        "model": settings.model,
        "base_url": settings.base_url,
        "items": len(chosen),
        "sets": args.sets,
        "rows": rows,
        "skipped": skipped,
    }


def _row(name: str, item: EvalItem, config: str, result: Probe) -> dict[str, Any]:
    return {
        "id": item.id,
        "set": name,
        "level": item.meta.get("level"),
        "config": config,
        "correct": result.correct,
        "completion_tokens": result.completion_tokens,
        "calls": result.calls,
        "seconds": round(result.seconds, 2),
        "samples": result.samples,
        "stopped_early": result.stopped_early,
        "tokens": result.tokens,
    }


def summarize(rows: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    summary = {}
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        if not mine:
            continue
        correct = sum(r["correct"] for r in mine)
        low, high = wilson_interval(correct, len(mine))
        summary[config] = {
            "n": len(mine),
            "accuracy": correct / len(mine),
            "interval": [round(low, 3), round(high, 3)],
            "tokens": statistics.mean(r["completion_tokens"] for r in mine),
            "calls": statistics.mean(r["calls"] for r in mine),
            "seconds_median": statistics.median(r["seconds"] for r in mine),
            "stopped_early": sum(r["stopped_early"] for r in mine),
        }
    for values in summary.values():
        for anchor in ("think", "cot"):
            if anchor in summary and summary[anchor]["tokens"]:
                values[f"tokens_vs_{anchor}"] = values["tokens"] / summary[anchor]["tokens"]
    return summary


def by_level(rows: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """MATH-500 accuracy per configuration and level, as "correct/n"."""
    table_: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["set"] != "math500":
            continue
        cell = table_.setdefault(row["config"], {}).get(str(row["level"]), "0/0")
        correct, n = (int(x) for x in cell.split("/"))
        level = str(row["level"])
        table_[row["config"]][level] = f"{correct + row['correct']}/{n + 1}"
    return table_


def render(summary: dict[str, dict[str, Any]]) -> str:
    headers = ["config", "n", "accuracy [95% CI]", "tokens", "calls", "median s"]
    headers += ["tokens / think", "tokens / cot"]
    body = []
    for config, s in summary.items():
        low, high = s["interval"]
        body.append(
            [
                config,
                s["n"],
                f"{s['accuracy']:.2f} [{low:.2f}, {high:.2f}]",
                f"{s['tokens']:.0f}",
                f"{s['calls']:.1f}",
                f"{s['seconds_median']:.1f}",
                f"{s.get('tokens_vs_think', float('nan')):.2f}",
                f"{s.get('tokens_vs_cot', float('nan')):.2f}",
            ]
        )
    return table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="math500,amc23,aime2024")
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--allocation-config", type=Path)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    summary = summarize(result["rows"], args.configs.split(","))
    levels = by_level(result["rows"])
    print(render(summary))
    if levels:
        print("MATH-500 by level:", json.dumps(levels))
    path = write_result(
        "allocation", {**result, "summary": summary, "math500_by_level": levels}, args.out
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
