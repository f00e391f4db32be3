"""`agentflow allocate calibrate DATASET --estimator E`: choose the threshold tau on a dev split.

Each dev item runs twice through the `direct` planner: once with the estimator and a tau of 1
(so the estimate is made and the node runs fast), once in uniform think mode. From those two
runs every tau is priced without running again: an item whose difficulty is above tau costs the
estimate plus the think run and scores what the think run scored; the others cost the fast run.
One point per tau (accuracy against mean generated tokens); the tau chosen is the cheapest one
within `--tolerance` of the best accuracy. It is written to the allocation config (`ask`,
`eval` and `Agent(allocation=NAME)` read it) with the split, the model and the whole curve.

The dev split is named and fixed (`every:K` takes items 0, K, 2K, ...), so reported sets can
leave it out: calibrating on the items a score is reported on would tune tau to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agentflow import Agent, ExecutionError, Model, PlanError, RunLimits, Trace
from agentflow.allocation import (
    ESTIMATORS,
    AllocationConfig,
    Allocator,
    Calibration,
    CurvePoint,
    config_path,
    read_config,
)
from agentflow.cli import CommandContext, Commands, whole_number
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow_evals.datasets import EvalItem, load_dataset
from agentflow_evals.failures import InfrastructureFailure, classify
from agentflow_evals.scoring import format_question, score_sample

__all__ = ["Probe", "dev_split", "probe", "register_allocate"]

TAUS = tuple(round(0.1 * k, 1) for k in range(11))
NODE_TIMEOUT = 1800.0
"""Seconds per node: a think budget on a slow CPU server takes minutes, and a node cut off
by the executor's clock would be priced as a failure of the allocation."""
DRAWS_FAST = {"agreement", "confidence"}
"""Estimators whose fast samples are the node's own request: paid for even when it thinks."""


def register_allocate(commands: Commands, common: CommandContext) -> None:
    group = commands.add_parser(
        "allocate", help="compute allocation: `allocate calibrate DATASET` chooses tau"
    )
    actions = group.add_subparsers(dest="action", required=True)
    calibrate = actions.add_parser(
        "calibrate",
        parents=[common.connection_options()],
        help="choose tau on a dev split and write it to the allocation config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    calibrate.add_argument("dataset", help="a dataset name (e.g. math500) or a JSONL file")
    calibrate.add_argument("--estimator", required=True, choices=sorted(ESTIMATORS))
    calibrate.add_argument(
        "--split", default="every:25", help="the dev split: every:K (default %(default)s)"
    )
    calibrate.add_argument("--limit", type=whole_number(1), help="at most N dev items")
    calibrate.add_argument("--concurrency", type=whole_number(1), default=4, help="items at once")
    calibrate.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="accuracy (0-1) tau may give up against the best point for fewer tokens",
    )
    calibrate.add_argument("--out", type=Path, help="where the per-item runs go (resumable)")
    calibrate.add_argument("--config", type=Path, help="allocation config to write")
    calibrate.set_defaults(handler=partial(_calibrate, common))


def dev_split(items: tuple[EvalItem, ...], split: str, limit: int | None) -> list[EvalItem]:
    """Items of the named split: `every:K` is items 0, K, 2K, ... (then the first `limit`; None:
    all of them, 0: none)."""
    kind, _, every = split.partition(":")
    if kind != "every" or not every.isdigit() or int(every) < 1:
        raise UserError(f"--split must look like every:K (K >= 1), not {split!r}")
    chosen = list(items[:: int(every)])
    return chosen if limit is None else chosen[: max(limit, 0)]


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One item run once under one allocator."""

    correct: bool
    completion_tokens: int
    calls: int
    seconds: float
    difficulty: float | None
    tokens: dict[str, int]
    """Completion tokens by purpose (estimate, fast, think), summed over nodes."""
    samples: int
    stopped_early: bool


async def probe(item: EvalItem, model: Model, planner: str, allocation: Allocator | str) -> Probe:
    """Run `item` once and score it. As in `eval`, a failure of the system under test is a
    wrong answer, and a failure of the model server (timeout, connection, HTTP error) raises
    `InfrastructureFailure`: it must never be priced as a cheap wrong answer."""
    agent = Agent(
        model=model,
        planner=planner,
        allocation=allocation,
        limits=RunLimits(max_model_calls=64),
        node_timeout=NODE_TIMEOUT,
    )
    started = time.perf_counter()
    trace: Trace | None
    try:
        result = await agent.run(format_question(item))
        score = await score_sample(item, answer=result.answer, reply=result.reply, judge=None)
        correct, trace = score.correct, result.trace
    except (ExecutionError, PlanError) as exc:
        failure = classify(exc)
        if failure.infrastructure:
            raise InfrastructureFailure(failure, item.id) from exc
        partial_trace = exc.trace if isinstance(exc, ExecutionError) else None
        correct, trace = False, partial_trace if isinstance(partial_trace, Trace) else None
    records = [n.allocation for n in trace.nodes.values() if n.allocation] if trace else []
    tokens: dict[str, int] = {}
    for record in records:
        for purpose, count in record["tokens"].items():
            tokens[purpose] = tokens.get(purpose, 0) + count
    return Probe(
        correct=correct,
        completion_tokens=trace.usage.completion_tokens if trace else 0,
        calls=trace.usage.calls if trace else 0,
        seconds=time.perf_counter() - started,
        difficulty=max((r["difficulty"] for r in records), default=None),
        tokens=tokens,
        samples=sum(r.get("samples", 0) for r in records),
        stopped_early=any(r.get("stopped_early") for r in records),
    )


async def _calibrate_item(item: EvalItem, model: Model, estimator: str) -> dict[str, Any]:
    rated = await probe(item, model, "direct", Allocator.named(estimator, tau=1.0))
    think = await probe(item, model, "direct", "uniform-think")
    estimate = rated.tokens.get("estimate", 0)
    if estimator in DRAWS_FAST:
        estimate += rated.tokens.get("fast", 0)
    return {
        "id": item.id,
        "difficulty": rated.difficulty,
        "fast_correct": rated.correct,
        "fast_tokens": rated.completion_tokens,
        "think_correct": think.correct,
        "think_tokens": estimate + think.completion_tokens,
    }


def curve(rows: list[dict[str, Any]]) -> list[CurvePoint]:
    """Accuracy and mean tokens per tau, from each item's fast and think runs."""
    points = []
    for tau in TAUS:
        think = [r for r in rows if (r["difficulty"] if r["difficulty"] is not None else 1) > tau]
        fast = [r for r in rows if r not in think]
        correct = sum(r["think_correct"] for r in think) + sum(r["fast_correct"] for r in fast)
        tokens = sum(r["think_tokens"] for r in think) + sum(r["fast_tokens"] for r in fast)
        points.append(
            CurvePoint(
                tau=tau,
                accuracy=correct / len(rows),
                completion_tokens=tokens / len(rows),
                think_share=len(think) / len(rows),
            )
        )
    return points


def choose_tau(points: list[CurvePoint], tolerance: float) -> float:
    """The cheapest tau within `tolerance` of the best accuracy (ties: the lower tau)."""
    best = max(p.accuracy for p in points)
    eligible = [p for p in points if p.accuracy >= best - tolerance - 1e-12]
    return min(eligible, key=lambda p: (p.completion_tokens, p.tau)).tau


def _calibrate(common: CommandContext, args: argparse.Namespace) -> int:
    settings = common.settings(args)
    dataset = load_dataset(args.dataset)
    items = dev_split(dataset.items, args.split, args.limit)
    split_name = f"{dataset.name} {args.split}" + (f" first {args.limit}" if args.limit else "")
    out = args.out or Path("runs") / f"calibrate-{dataset.name}-{args.estimator}"
    out.mkdir(parents=True, exist_ok=True)
    urls = common.base_urls(args, settings)
    model = OpenAIModel.from_settings(settings, urls)
    cache = out / "items.jsonl"
    done = _finished(cache)
    rows = asyncio.run(_rows(items, model, args.estimator, (cache, done), args.concurrency))
    points = curve(rows)
    tau = choose_tau(points, args.tolerance)
    path = args.config or config_path()
    config = read_config(path)
    entry = Calibration(
        tau=tau, dev_split=split_name, model=settings.model, items=len(rows), curve=points
    )
    updated = AllocationConfig(estimators={**config.estimators, args.estimator: entry})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated.model_dump_json(indent=2), encoding="utf-8")
    print(render_curve(points, tau))
    print(f"tau {tau} for {args.estimator} on {split_name} ({len(rows)} items) -> {path}")
    print(f"per-item runs in {out}", file=sys.stderr)
    return 0


def _finished(cache: Path) -> dict[str, dict[str, Any]]:
    """Rows a previous run of the same calibration finished, by item id."""
    if not cache.exists():
        return {}
    rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines() if line]
    return {str(row["id"]): row for row in rows}


async def _rows(
    items: list[EvalItem],
    model: Model,
    estimator: str,
    cache: tuple[Path, dict[str, dict[str, Any]]],
    concurrency: int,
) -> list[dict[str, Any]]:
    """Each item's two runs; those in the cache are not run again, new ones are appended."""
    path, done = cache
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(item: EvalItem) -> dict[str, Any] | None:
        if item.id in done:
            return done[item.id]
        async with slots:
            try:
                row = await _calibrate_item(item, model, estimator)
            except InfrastructureFailure as failure:  # not cached: a rerun retries it
                print(f"skipped: {failure}", file=sys.stderr)
                return None
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        return row

    try:
        rows = await asyncio.gather(*(one(item) for item in items))
    finally:
        await model.aclose()
    finished = [row for row in rows if row is not None]
    if not finished:
        raise UserError("no dev item finished (the model server failed on all): see above")
    return finished


def render_curve(points: list[CurvePoint], chosen: float) -> str:
    lines = ["| tau | accuracy | tokens/item | think share |", "|---|---|---|---|"]
    for p in points:
        mark = " (chosen)" if p.tau == chosen else ""
        lines.append(
            f"| {p.tau:.1f}{mark} | {p.accuracy:.3f} | {p.completion_tokens:.0f} "
            f"| {p.think_share:.2f} |"
        )
    return "\n".join(lines)
