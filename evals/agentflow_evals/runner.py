"""The eval runner: items concurrently, each result on disk the moment it is done, resumable.

`run_eval(config)` loads the dataset, skips the items `results.jsonl` already holds, runs the
rest `concurrency` at a time (each with `samples` agent runs), appends every finished item,
and writes `summary.json` from all results at the end. Kill it and run the same command again:
nothing finished is computed twice, nothing is lost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agentflow import Model
from agentflow.exceptions import AgentflowError, UserError
from agentflow_evals.config import EvalConfig
from agentflow_evals.datasets import Dataset, EvalItem, load_dataset
from agentflow_evals.failures import InfrastructureFailure
from agentflow_evals.item import ToolCache, make_judge, run_item
from agentflow_evals.manifest import build_manifest, check_resumable, now
from agentflow_evals.results import RunDirectory, incomplete
from agentflow_evals.summary import summarize

__all__ = ["EvalConfig", "EvalIncompleteError", "run_eval"]

_SLOW_SERVER = (
    "; a slow or busy server may need a longer --node-timeout (a step) or --timeout "
    "(a request), or a lower --concurrency"
)


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
    _check_corpus(config)
    dataset = load_dataset(config.dataset)
    for issue in dataset.issues:
        print(f"warning: {issue}", file=sys.stderr)
    run_dir = RunDirectory(config.out)
    with run_dir.lock():
        summary = await _resume(config, dataset, run_dir, model, judge)
    return summary


def _check_corpus(config: EvalConfig) -> None:
    """Before any item starts: a missing file or one with no usable passage would otherwise
    fail every item in flight. Opening builds the index once (cached for the items)."""
    missing = [c for c in config.corpus if not Path(c).is_file()]
    if missing:
        raise UserError(f"corpus file not found: {', '.join(missing)}")
    if config.corpus:
        from agentflow_tools.search import LocalIndex

        LocalIndex.open([Path(c) for c in config.corpus])


async def _resume(
    config: EvalConfig, dataset: Dataset, run_dir: RunDirectory, model: Model, judge: Model | None
) -> dict[str, Any]:
    manifest = build_manifest(config, dataset, model, judge)
    finished, problems = run_dir.read_results()
    for row in finished:
        if (lack := incomplete(row)) is not None:
            problems.append(f"{run_dir.results}: item {row['id']}: {lack} (item will be rerun)")
    finished = [row for row in finished if incomplete(row) is None]
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if finished:  # a directory with no finished item holds nothing to mix up: settings may change
        _check_same_run(run_dir, manifest, len(finished))
    items = list(dataset.items[: config.limit] if config.limit else dataset.items)
    wanted = {item.id for item in items}
    finished = list({r["id"]: r for r in reversed(finished) if r["id"] in wanted}.values())[::-1]
    done_ids = {row["id"] for row in finished}
    todo = [item for item in items if item.id not in done_ids]
    if finished:
        print(f"resuming: {len(finished)} of {len(items)} items already done", file=sys.stderr)
    run_dir.write_json(run_dir.manifest, manifest)
    started = time.perf_counter()
    new_rows, failures = await _run_items(todo, config, model, judge, run_dir)
    wall = time.perf_counter() - started
    rows = finished + new_rows
    summary: dict[str, Any] = {}
    if rows:
        summary = summarize(rows, manifest, wall=wall, new_rows=new_rows)
        summary["infrastructure_failures"] = dict(Counter(f.failure.kind for f in failures))
        summary["unfinished"] = len(items) - len(rows)
        run_dir.write_json(run_dir.summary, summary)
    if failures:
        raise EvalIncompleteError(failures, todo=len(items) - len(rows), where=run_dir.path)
    manifest["finished_at"] = now()
    run_dir.write_json(run_dir.manifest, manifest)
    return summary


def _check_same_run(run_dir: RunDirectory, manifest: dict[str, Any], finished: int) -> None:
    old = run_dir.read_manifest()
    if old is None:
        raise UserError(
            f"{run_dir.results} holds {finished} finished items but {run_dir.manifest} is missing "
            "or not a JSON object, so nothing tells which run they belong to; pass another "
            "--out, or restore the manifest"
        )
    check_resumable(old, manifest, run_dir.path)


class EvalIncompleteError(AgentflowError):
    """Items failed on the model server: nothing was recorded for them, a resume retries them."""

    def __init__(self, failures: list[InfrastructureFailure], *, todo: int, where: Path) -> None:
        kinds = Counter(f.failure.kind for f in failures)
        counted = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        stopped = " (stopped early)" if todo > len(failures) else ""
        super().__init__(
            f"{len(failures)} items failed on the model server ({counted}){stopped}; first: "
            f"{str(failures[0]).rstrip('.')}. Nothing was recorded for them and {todo} items are "
            "not done. Check the server (agentflow model status, --base-url, --model), then "
            f"run the same command again to resume into {where}."
        )
        self.failures = failures


ItemRunner = Callable[[EvalItem], Awaitable[dict[str, Any]]]


class _Stop(Exception):
    """Enough infrastructure failures: cancel the items in flight."""


async def _run_items(
    items: list[EvalItem],
    config: EvalConfig,
    model: Model,
    judge: Model | None,
    run_dir: RunDirectory,
) -> tuple[list[dict[str, Any]], list[InfrastructureFailure]]:
    gate = asyncio.Semaphore(config.concurrency)
    run_one = _item_runner(config, model, judge)
    rows: list[dict[str, Any]] = []
    failures: list[InfrastructureFailure] = []
    bar = tqdm(total=len(items), desc=config.dataset, unit="item", disable=not sys.stderr.isatty())
    progress = _Progress(bar=bar)

    async def one(item: EvalItem) -> None:
        async with gate:
            try:
                row = await run_one(item)
            except InfrastructureFailure as failure:
                failures.append(failure)
                hint = _SLOW_SERVER if failure.failure.kind == "timeout" else ""
                print(
                    f"error: {failure} (not recorded; a resume retries it{hint})", file=sys.stderr
                )
                if len(failures) >= config.max_failures:
                    raise _Stop from None
                return
        run_dir.append_result(row)
        rows.append(row)
        progress.update(row)

    try:
        await _all_items(items, one)
    finally:
        bar.close()
    return rows, failures


async def _all_items(
    items: list[EvalItem], one: Callable[[EvalItem], Coroutine[Any, Any, None]]
) -> None:
    """Every item at once; `_Stop` ends the run quietly, and an error of agentflow's own that
    stopped it (a corpus that cannot be read) comes out as itself, not as a group of one."""
    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except* _Stop:
        pass  # the items still in flight were cancelled, nothing half-written
    except* AgentflowError as errors:
        raise errors.exceptions[0] from None


def _item_runner(config: EvalConfig, model: Model, judge: Model | None) -> ItemRunner:
    """Where items run: in this process, or as tasks on a Ray cluster (`config.ray`)."""
    if config.ray:
        from agentflow_evals.ray_runner import RayItemRunner

        return RayItemRunner(config, model, judge).run
    tools, grader = ToolCache(), make_judge(config, model, judge)

    async def local(item: EvalItem) -> dict[str, Any]:
        return await run_item(item, config, model, grader, tools.for_item(item, config.corpus))

    return local
