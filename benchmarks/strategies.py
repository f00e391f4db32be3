"""System 2 strategies at matched token budgets: one chain, parallel samples with a vote, threads.

    python benchmarks/strategies.py [--math 3] [--multihop 3] [--budget 192]
        [--strategies chain,vote,threads] [--samples 3] [--threads 3]
        [--base-url URL --model NAME] [--out FILE]

Every item runs once per strategy (rotating order, so drift on a shared machine hits all of
them), one at a time, through the `direct` planner with its one node in System 2
(`uniform-think`), so the strategy is the only difference. Each strategy may generate at most
`--budget` tokens per item (thinking included for thinking models):

- `chain`: one call of `budget` tokens;
- `vote`: `--samples` parallel samples of budget / samples tokens each, under an ESC vote whose
  window holds them all (temperature 0.7);
- `threads`: an outline (budget / 4), the threads sharing budget / 2, the join (budget / 4).

Items are dev splits, never tuned on: MATH-500 items 0, 25, 50, ... and HotpotQA dev items 0,
25, 50, ... (closed book: no search tool, so a multi-hop question is answered from the model's
memory; the comparison questions are the parallel kind). Reported per strategy: accuracy with
its Wilson interval, generated tokens, critical-path tokens (the longest chain of dependent
tokens: the chain itself, the longest sample, or outline + longest thread + join), wall-clock,
model calls; for threads also whether a node's threads overlapped in time and the prefix-cache
hit rate of the thread requests, read from vLLM's `/metrics` just before the first thread is
sent and just after the last one returns (the requests counter in between says whether anyone
else's requests were counted too).

Rows are appended to OUT.rows.jsonl as they finish; the same command resumes a killed run from
them. A run that fails (a call past `--timeout` on a loaded server) is a row with its error,
counted apart from accuracy ("failed runs").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import RESULTS_DIR, table, write_result

from agentflow import Agent, OpenAIModel
from agentflow.allocation import Allocator, Budget, Constant, Strategy
from agentflow.allocation._threads import join_instruction
from agentflow.cli import whole_number
from agentflow.exceptions import ExecutionError
from agentflow.model import Message, ModelResponse, ModelSettings
from agentflow.runtime.vllm_metrics import snapshot
from agentflow.settings import Settings
from agentflow.trace import Trace
from agentflow_evals.allocate import dev_split
from agentflow_evals.datasets import EvalItem, load_dataset
from agentflow_evals.scoring import format_question, score_sample
from agentflow_evals.stats import wilson_interval

STRATEGY_NAMES: tuple[Strategy, ...] = ("chain", "vote", "threads")
SPLIT = "every:25"
COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:request_success_total",
)


def budget(strategy: Strategy, total: int, samples: int, threads: int) -> Budget:
    """The System 2 budget of `strategy` at `total` generated tokens per item."""
    if strategy == "vote":
        return Budget(
            mode="think",
            max_tokens=max(1, total // samples),
            thinking_tokens=None,
            samples=samples,
            window=samples,
            vote="esc",
            temperature=0.7,
            strategy="vote",
        )
    return Budget(
        mode="think", max_tokens=total, thinking_tokens=None, strategy=strategy, threads=threads
    )


def items(math: int, multihop: int) -> list[tuple[str, EvalItem]]:
    chosen = [("math500", item) for item in dev_split(load_dataset("math500").items, SPLIT, math)]
    hotpot = dev_split(load_dataset("hotpotqa").items, SPLIT, multihop)
    return chosen + [("hotpotqa", item) for item in hotpot]


async def counters(base_url: str) -> dict[str, float] | None:
    """vLLM's prefix-cache and request counters now (summed over labels), or None."""
    now = await snapshot(base_url)
    return None if now is None else {name: now.totals.get(name, 0.0) for name in COUNTERS}


class MeteredModel(OpenAIModel):
    """Reads the server's counters around the thread requests of a `threads` node: after the
    shared prefix is rendered (the outline is done, no thread sent yet) and before the join."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_url = self.pool.base_urls[0]
        self.before: dict[str, float] | None = None
        self.windows: list[dict[str, float]] = []

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        prompt = await super().render_prompt(messages, chat_template_kwargs)
        self.before = await counters(self.base_url)
        return prompt

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        if prompt.endswith(join_instruction()) and self.before is not None:
            after = await counters(self.base_url)  # the join: every thread has returned
            if after is not None:
                self.windows.append({k: after[k] - self.before[k] for k in COUNTERS})
            self.before = None
        return await super().complete_text(prompt, settings)


def overlapped(trace: Trace) -> bool | None:
    """Whether two threads of one node ran at the same time (None: no threads ran)."""
    children = [n for n in trace.nodes.values() if n.parent and n.started_at is not None]
    if len(children) < 2:
        return None
    spans = [(n.started_at or 0.0, n.finished_at or 0.0) for n in children]
    return any(
        start_a < stop_b and start_b < stop_a
        for i, (start_a, stop_a) in enumerate(spans)
        for start_b, stop_b in spans[i + 1 :]
    )


def rows_path(args: argparse.Namespace) -> Path:
    """Where rows go as they finish: beside `--out`, so a killed run resumes from them."""
    out = args.out or RESULTS_DIR / "strategies.json"
    return out.with_suffix(".rows.jsonl")


def read_rows(path: Path, args: argparse.Namespace, ids: set[str]) -> list[dict[str, Any]]:
    """The finished rows of an earlier run of the same config, for the items `ids` (resumed);
    none if there is no such file. Failed runs are dropped to run again, and a last line cut
    by a kill is skipped; the file is written back as what is kept."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise SystemExit(f"{path}:{number} is not a JSON row: fix or delete it") from None
            print(f"skipped {path}'s last line, cut off: {line[:60]!r}", file=sys.stderr)
    other = [r for r in rows if r.get("config") != config(args)]
    if other:
        raise SystemExit(f"{path} holds rows of another run ({other[0]}): use another --out")
    kept = [r for r in rows if r["id"] in ids and not r.get("error")]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    print(
        f"resuming: {len(kept)} finished rows from {path} (delete it to start over)",
        file=sys.stderr,
    )
    return kept


async def run_or_record(
    model: MeteredModel, item: EvalItem, strategy: Strategy, args: argparse.Namespace
) -> dict[str, Any]:
    """The item's row; a run that failed (a timeout on a loaded server) is a row with its
    error, counted apart from accuracy, instead of the end of the benchmark."""
    try:
        return {**await run_one(model, item, strategy, args), "config": config(args)}
    except ExecutionError as exc:
        return {"id": item.id, "strategy": strategy, "error": str(exc), "config": config(args)}


def config(args: argparse.Namespace) -> dict[str, Any]:
    """What rows must share to be one run's (not the timeout: a resume may well raise it)."""
    names = ("budget", "samples", "threads", "model", "base_url")
    return {name: getattr(args, name) for name in names}


async def run_one(
    model: MeteredModel, item: EvalItem, strategy: Strategy, args: argparse.Namespace
) -> dict[str, Any]:
    think = budget(strategy, args.budget, args.samples, args.threads)
    allocator = Allocator(estimator=Constant("uniform-think", 1.0), think=think)
    agent = Agent(model=model, planner="direct", allocation=allocator, node_timeout=args.timeout)
    windows = len(model.windows)
    started = time.perf_counter()
    result = await agent.run(format_question(item))
    seconds = time.perf_counter() - started
    score = await score_sample(item, answer=result.answer, reply=result.reply, judge=None)
    record = result.trace.nodes["answer"].allocation or {}
    threads = record.get("threads") or {}
    children = [n for n in result.trace.nodes.values() if n.parent]
    return {
        "id": item.id,
        "strategy": strategy,
        "correct": score.correct,
        "answer": result.answer[:80],
        "completion_tokens": result.trace.usage.completion_tokens,
        "critical_path_tokens": record.get("critical_path_tokens"),
        "seconds": round(seconds, 2),
        "calls": result.trace.usage.calls,
        "samples": record.get("samples"),
        "threads_ran": threads.get("ran"),
        "threads_merged": threads.get("merged"),
        "threads_outlined": threads.get("outlined"),
        "overlapped": overlapped(result.trace),
        "thread_cache": model.windows[windows] if len(model.windows) > windows else None,
        "thread_prompt_tokens": sum(n.usage.prompt_tokens for n in children),
        "notes": record.get("notes", []),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = MeteredModel(settings.model, settings.base_url, timeout=args.timeout)
    strategies: list[Strategy] = [s for s in STRATEGY_NAMES if s in args.strategies.split(",")]
    chosen = items(args.math, args.multihop)
    rows_file = rows_path(args)
    rows = read_rows(rows_file, args, {item.id for _, item in chosen})
    done = {(r["id"], r["strategy"]) for r in rows}
    try:
        for index, (name, item) in enumerate(chosen):
            order = strategies[index % len(strategies) :] + strategies[: index % len(strategies)]
            for strategy in (s for s in order if (item.id, s) not in done):
                row = {"set": name, **await run_or_record(model, item, strategy, args)}
                rows.append(row)
                with rows_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(row) + "\n")
                print(f"{item.id} {strategy}: {row}", file=sys.stderr)
    finally:
        await model.aclose()
    return {
        "model": settings.model,
        "base_url": settings.base_url,
        "budget": args.budget,
        "samples": args.samples,
        "threads": args.threads,
        "split": SPLIT,
        "items": [item.id for _, item in chosen],
        "rows": rows,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGY_NAMES:
        mine = [r for r in rows if r["strategy"] == strategy and not r.get("error")]
        errors = sum(1 for r in rows if r["strategy"] == strategy and r.get("error"))
        if not mine:
            if errors:
                summary[strategy] = {"n": 0, "errors": errors}
            continue
        correct = sum(r["correct"] for r in mine)
        low, high = wilson_interval(correct, len(mine))
        summary[strategy] = {
            "n": len(mine),
            "accuracy": correct / len(mine),
            "interval": [round(low, 3), round(high, 3)],
            "tokens": statistics.mean(r["completion_tokens"] for r in mine),
            "critical_path_tokens": statistics.mean(r["critical_path_tokens"] or 0 for r in mine),
            "seconds_mean": statistics.mean(r["seconds"] for r in mine),
            "seconds_median": statistics.median(r["seconds"] for r in mine),
            "calls": statistics.mean(r["calls"] for r in mine),
            "errors": errors,
            "by_set": {
                name: f"{sum(r['correct'] for r in mine if r['set'] == name)}/"
                f"{sum(1 for r in mine if r['set'] == name)}"
                for name in sorted({r["set"] for r in mine})
            },
        }
    return summary


def thread_cache(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefix-cache hit rate of thread requests, over every threads node measured, and over
    the clean windows only: those whose queried tokens are exactly the thread prompts' tokens
    (the server is shared: any other request scheduled in the window adds to the queries)."""
    measured = [r for r in rows if r.get("thread_cache")]
    clean = [
        r
        for r in measured
        if r["thread_cache"]["vllm:prefix_cache_queries_total"] == r["thread_prompt_tokens"]
    ]
    return {
        "threads_nodes": sum(1 for r in rows if r["strategy"] == "threads" and not r.get("error")),
        "overlapped": sum(1 for r in rows if r.get("overlapped")),
        "all_windows": _hit_rate(measured),
        "clean_windows": _hit_rate(clean),
    }


def _hit_rate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    windows = [r["thread_cache"] for r in rows]
    queries = sum(w["vllm:prefix_cache_queries_total"] for w in windows)
    hits = sum(w["vllm:prefix_cache_hits_total"] for w in windows)
    return {
        "nodes": len(rows),
        "thread_requests": sum(r["threads_ran"] or 0 for r in rows),
        "thread_prompt_tokens": sum(r["thread_prompt_tokens"] for r in rows),
        "requests_finished": sum(w["vllm:request_success_total"] for w in windows),
        "queried_tokens": queries,
        "hit_tokens": hits,
        "hit_rate": hits / queries if queries else None,
    }


def render(summary: dict[str, dict[str, Any]]) -> str:
    headers = ["strategy", "n", "accuracy [95% CI]", "by set", "generated tokens"]
    headers += ["critical-path tokens", "mean s", "median s", "calls", "failed runs"]
    body = []
    for strategy, s in summary.items():
        if not s["n"]:  # every run of it failed
            body.append([strategy, 0, *["-"] * 7, s["errors"]])
            continue
        low, high = s["interval"]
        body.append(
            [
                strategy,
                s["n"],
                f"{s['accuracy']:.2f} [{low:.2f}, {high:.2f}]",
                ", ".join(f"{k} {v}" for k, v in s["by_set"].items()),
                f"{s['tokens']:.0f}",
                f"{s['critical_path_tokens']:.0f}",
                f"{s['seconds_mean']:.1f}",
                f"{s['seconds_median']:.1f}",
                f"{s['calls']:.1f}",
                s["errors"],
            ]
        )
    return table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--math", type=whole_number(0), default=3, help="MATH-500 dev items")
    parser.add_argument("--multihop", type=whole_number(0), default=3, help="HotpotQA dev items")
    parser.add_argument("--budget", type=whole_number(1), default=192, help="tokens per item")
    parser.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    parser.add_argument("--samples", type=whole_number(1), default=3, help="samples of the vote")
    parser.add_argument("--threads", type=whole_number(1), default=3, help="most threads")
    parser.add_argument(
        "--timeout",
        type=whole_number(1),
        default=900,
        help="seconds a model call and a node may take (default %(default)s)",
    )
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    summary = summarize(result["rows"])
    cache = thread_cache(result["rows"])
    print(render(summary))
    print("thread requests' prefix cache:", cache)
    path = write_result(
        "strategies", {**result, "summary": summary, "thread_cache": cache}, args.out
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
