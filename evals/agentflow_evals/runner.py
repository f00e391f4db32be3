"""The eval runner: items concurrently, each result on disk the moment it is done, resumable.

`run_eval(config)` loads the dataset, skips the items `results.jsonl` already holds, runs the
rest `concurrency` at a time (each with `samples` agent runs), appends every finished item,
and writes `summary.json` from all results at the end. Kill it and run the same command again:
nothing finished is computed twice, nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agentflow import Agent, ExecutionError, Model, ModelSettings, PlanError, RunLimits, Trace
from agentflow.exceptions import UserError
from agentflow.tool import Tool
from agentflow_evals.datasets import Dataset, EvalItem, load_dataset
from agentflow_evals.manifest import build_manifest, check_resumable, now
from agentflow_evals.results import RunDirectory
from agentflow_evals.scoring import Judge, SampleScore, format_question, majority, score_sample

__all__ = ["EvalConfig", "ToolCache", "run_eval", "run_item"]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    dataset: str
    planner: str = "direct"
    out: Path
    limit: int | None = None
    samples: int = 1
    concurrency: int = 8
    """Items in flight at once."""
    temperature: float | None = None
    """Default: the planner's own (0) for one sample, 0.7 for several."""
    max_tokens: int | None = None
    seed: int | None = None
    max_model_calls: int = 64
    command: str = ""
    base_urls: Sequence[str] = field(default_factory=list)
    ray: str | None = None
    """A Ray cluster address, or "local" to start one here: items run as Ray tasks."""
    corpus: Sequence[str] = ()
    """Corpus files for a `search` tool on every item, instead of the dataset's own."""


@dataclass(kw_only=True)
class _Progress:
    bar: tqdm[Any]
    done: int = 0
    correct: float = 0.0
    tokens: int = 0

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.correct += row["correct"]
        self.tokens += sum(s["prompt_tokens"] + s["completion_tokens"] for s in row["samples"])
        self.bar.set_postfix(acc=f"{self.correct / self.done:.1%}", tokens=self.tokens)
        self.bar.update()
        if self.bar.disable:  # no terminal (CI, logs): one line per item instead
            print(
                f"[{self.done}/{self.bar.total}] acc {self.correct / self.done:.1%} "
                f"tokens {self.tokens}",
                file=sys.stderr,
            )


async def run_eval(config: EvalConfig, model: Model, judge: Model | None = None) -> dict[str, Any]:
    """Run (or resume) the eval `config` describes; returns the summary it writes."""
    dataset = load_dataset(config.dataset)
    for issue in dataset.issues:
        print(f"warning: {issue}", file=sys.stderr)
    run_dir = RunDirectory(config.out)
    with run_dir.lock():
        summary = await _resume(config, dataset, run_dir, model, judge)
    return summary


async def _resume(
    config: EvalConfig, dataset: Dataset, run_dir: RunDirectory, model: Model, judge: Model | None
) -> dict[str, Any]:
    manifest = build_manifest(config, dataset, model, judge)
    check_resumable(run_dir.read_manifest(), manifest, run_dir.path)
    finished, problems = run_dir.read_results()
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    items = list(dataset.items[: config.limit] if config.limit else dataset.items)
    wanted = {item.id for item in items}
    finished = list({r["id"]: r for r in reversed(finished) if r["id"] in wanted}.values())[::-1]
    done_ids = {row["id"] for row in finished}
    todo = [item for item in items if item.id not in done_ids]
    if finished:
        print(f"resuming: {len(finished)} of {len(items)} items already done", file=sys.stderr)
    run_dir.write_json(run_dir.manifest, manifest)
    started = time.perf_counter()
    new_rows = await _run_items(todo, config, model, judge, run_dir)
    wall = time.perf_counter() - started
    rows = finished + new_rows
    summary = summarize(rows, dataset, config, manifest, wall=wall, new_rows=new_rows)
    run_dir.write_json(run_dir.summary, summary)
    manifest["finished_at"] = now()
    run_dir.write_json(run_dir.manifest, manifest)
    return summary


ItemRunner = Callable[[EvalItem], Awaitable[dict[str, Any]]]


async def _run_items(
    items: list[EvalItem],
    config: EvalConfig,
    model: Model,
    judge: Model | None,
    run_dir: RunDirectory,
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(config.concurrency)
    run_one = _item_runner(config, model, judge)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(items), desc=config.dataset, unit="item", disable=not sys.stderr.isatty())
    progress = _Progress(bar=bar)

    async def one(item: EvalItem) -> None:
        async with gate:
            row = await run_one(item)
        run_dir.append_result(row)
        rows.append(row)
        progress.update(row)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    finally:
        bar.close()
    return rows


def _item_runner(config: EvalConfig, model: Model, judge: Model | None) -> ItemRunner:
    """Where items run: in this process, or as tasks on a Ray cluster (`config.ray`)."""
    if config.ray:
        from agentflow_evals.ray_runner import RayItemRunner

        return RayItemRunner(config, model, judge).run
    tools = ToolCache()

    async def local(item: EvalItem) -> dict[str, Any]:
        return await run_item(item, config, model, judge, tools.for_item(item, config.corpus))

    return local


async def run_item(
    item: EvalItem,
    config: EvalConfig,
    model: Model,
    judge: Model | None,
    tools: list[Tool],
) -> dict[str, Any]:
    """All samples of one item, scored: the row `results.jsonl` gets."""
    started = time.perf_counter()
    question = format_question(item)
    samples = await asyncio.gather(
        *(
            _run_sample(item, question, _sample_model(model, config, index), config, tools, judge)
            for index in range(config.samples)
        )
    )
    correct = [s["correct"] for s in samples]
    sensitive = bool(item.meta.get("sensitive"))
    if sensitive:  # BrowseComp: no plaintext question, gold or (possibly equal) answer on disk
        samples = [_redacted(s) for s in samples]
    return {
        "id": item.id,
        "question": None if sensitive else item.question,
        "answers": None if sensitive else list(item.answers),
        "task": item.task,
        "samples": samples,
        "correct": sum(correct) / len(correct),
        "maj_correct": majority(item, samples) if config.samples > 1 else None,
        "seconds": round(time.perf_counter() - started, 3),
    }


async def _run_sample(
    item: EvalItem,
    question: str,
    model: Model,
    config: EvalConfig,
    tools: list[Tool],
    judge: Model | None,
) -> dict[str, Any]:
    agent = Agent(
        model=model,
        planner=config.planner,
        tools=tools,
        limits=RunLimits(max_model_calls=config.max_model_calls),
    )
    started = time.perf_counter()
    trace: Trace | None = None
    answer, error = "", None
    try:
        result = await agent.run(question)
        answer, trace = result.answer, result.trace
    except (ExecutionError, PlanError) as exc:
        error = str(exc).splitlines()[0][:300]  # recorded with the item; the run goes on
        partial = exc.trace if isinstance(exc, ExecutionError) else None
        trace = partial if isinstance(partial, Trace) else None
    seconds = time.perf_counter() - started
    score: SampleScore = await score_sample(item, answer, Judge(judge or model))
    usage = trace.usage if trace is not None else None
    return {
        "answer": answer,
        "correct": score.correct,
        "em": score.em,
        "f1": score.f1,
        "confidence": score.confidence,
        "extracted": score.extracted,
        "seconds": round(seconds, 3),
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "model_calls": usage.calls if usage else 0,
        "tool_calls": sum(1 for n in trace.nodes.values() if n.tool) if trace else 0,
        "error": error,
    }


def _redacted(sample: dict[str, Any]) -> dict[str, Any]:
    answer = str(sample["answer"])
    digest = hashlib.sha256(answer.encode()).hexdigest()[:16]
    return {**sample, "answer": None, "answer_sha256": digest, "extracted": None}


def _sample_model(model: Model, config: EvalConfig, index: int) -> Model:
    temperature = config.temperature
    if temperature is None and config.samples > 1:
        temperature = 0.7  # k samples at temperature 0 would be k copies of one answer
    overrides = ModelSettings(
        temperature=temperature,
        max_tokens=config.max_tokens,
        seed=None if config.seed is None else config.seed + index,
    )
    return model.with_overrides(overrides) if overrides != ModelSettings() else model


class ToolCache:
    """One search index per corpus set, opened once and shared by every item that needs it."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, ...], list[Tool]] = {}

    def for_item(self, item: EvalItem, override: Sequence[str] = ()) -> list[Tool]:
        corpus = tuple(override or item.meta.get("corpus") or ())
        if not corpus:
            return []
        if corpus not in self._tools:
            from agentflow_tools.search import LocalIndex, make_search_tool

            self._tools[corpus] = [make_search_tool(LocalIndex.open([Path(p) for p in corpus]))]
        return self._tools[corpus]


def summarize(
    rows: list[dict[str, Any]],
    dataset: Dataset,
    config: EvalConfig,
    manifest: dict[str, Any],
    *,
    wall: float,
    new_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """`summary.json`: accuracy, latency percentiles, tokens and calls over every finished item."""
    if not rows:
        raise UserError(f"no finished items in {config.out}: nothing to summarise")
    samples = [s for r in rows for s in r["samples"]]
    seconds = sorted(r["seconds"] for r in rows)
    new_tokens = sum(s["completion_tokens"] for r in new_rows for s in r["samples"])
    return {
        "dataset": dataset.name,
        "planner": config.planner,
        "model": manifest["model"],
        "n": len(rows),
        "accuracy": _mean(r["correct"] for r in rows),
        "em": _mean_of(samples, "em"),
        "f1": _mean_of(samples, "f1"),
        "avg_at_k": _mean(r["correct"] for r in rows) if config.samples > 1 else None,
        "maj_at_k": _mean(float(r["maj_correct"]) for r in rows) if config.samples > 1 else None,
        "samples": config.samples,
        "calibration_error": _calibration(samples),
        "latency_p50": round(statistics.median(seconds), 3),
        "latency_p90": round(_percentile(seconds, 0.9), 3),
        "tokens_total": sum(s["prompt_tokens"] + s["completion_tokens"] for s in samples),
        "completion_tokens": sum(s["completion_tokens"] for s in samples),
        "model_calls": sum(s["model_calls"] for s in samples),
        "tool_calls": sum(s["tool_calls"] for s in samples),
        "errors": sum(1 for s in samples if s["error"]),
        "wall_seconds": round(wall, 3),
        "throughput_tokens_per_s": round(new_tokens / wall, 2) if wall > 0 else 0.0,
    }


def _calibration(samples: list[dict[str, Any]]) -> float | None:
    from agentflow_evals.browsecomp import calibration_error

    pairs = [(s["confidence"], s["correct"]) for s in samples if s["confidence"] is not None]
    if not pairs:
        return None
    return round(calibration_error([c for c, _ in pairs], [bool(k) for _, k in pairs]), 4)


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
