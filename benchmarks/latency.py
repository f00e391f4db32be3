"""End-to-end latency per planner against a real vLLM server (BENCHMARKS.md §2).

    python benchmarks/latency.py [--per-set 20] [--sets comparison,bridge,fanout]
                                 [--in-flight 1,4] [--planners direct,react,dag,hybrid]

Same model, same search tool over the pooled local corpus, same concurrency limit for every
planner. Question sets: HotpotQA comparison (parallel) and bridge (sequential), and FanOutQA (the
widest fan-out in the data; its answers are not in the local corpus, so its accuracy is a floor,
its latency is the figure). At each `--in-flight` level the questions run that many at once;
planners take turns batch by batch in a rotating order so drift on a shared machine hits all of
them. Reports per set, level and planner: median and p90 seconds per question, model calls,
generated and prompt tokens, tool calls, correct (the eval's own scorer); the headline is
react/dag of the median. A second table per set and level says where the time went (mean
seconds per question: the planner's plan, replan and join requests, node requests, tools, the
rest; `_time_spent.py` says how an instant is assigned), and how the planner's own requests
split into queue-and-prefill and decode, with their prompt tokens and the share the server's
prefix cache held.

A/B variants run beside the planners as names of their own (`VARIANTS`): `dag-answer-steps` is
the dag planner that also plans and runs a final reasoning step answering the question (the
default before issue 24), so one run measures both with the same drift.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result
from _time_spent import ORDER, time_spent

from agentflow import Agent, ExecutionError, OpenAIModel, PlanError, Planner, Trace
from agentflow.settings import Settings
from agentflow_evals.datasets import EvalItem, load_dataset
from agentflow_evals.qa import exact_match, f1
from agentflow_evals.scoring import score_sample
from agentflow_planners.dag import DagPlanner
from agentflow_tools.search import LocalIndex, make_search_tool

DATA = Path(__file__).parents[1].parent / "shared" / "data"


SETS = ("comparison", "bridge", "fanout")
VARIANTS: dict[str, Planner] = {"dag-answer-steps": DagPlanner(answer_steps=True)}
"""Planner variants an A/B compares with the shipped planners, by the name `--planners` takes."""


def question_set(name: str, count: int) -> list[EvalItem]:
    """`count` items of one set, as the eval harness reads them (for its scorer)."""
    if name == "fanout":
        return list(load_dataset("fanoutqa", data_dir=DATA).items[:count])
    items = load_dataset("hotpotqa", data_dir=DATA).items
    return [i for i in items if i.meta.get("type") == name][:count]


async def run_one(agent: Agent, item: EvalItem) -> dict[str, Any]:
    """One question, scored by EM/F1 and by the eval's own scorer for its task."""
    question, answers = item.question, list(item.answers)
    started = time.perf_counter()
    trace: Trace | None = None
    reply = ""
    try:
        result = await agent.run(question)
        answer, reply, trace, error = result.answer, result.reply, result.trace, None
    except (ExecutionError, PlanError) as exc:
        answer, error = "", str(exc).splitlines()[0]
        if isinstance(exc, ExecutionError) and isinstance(exc.trace, Trace):
            trace = exc.trace
    seconds = time.perf_counter() - started
    nodes = list(trace.nodes.values()) if trace is not None else []
    usage = trace.usage if trace is not None else None
    row = {
        "seconds": round(seconds, 3),
        "model_calls": usage.calls if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "tool_calls": sum(1 for n in nodes if n.tool),
        # Calls made for a node: the only ones the executor gives a priority other than 0.
        "node_model_calls": sum(1 for r in trace.requests if r.node_id) if trace else 0,
        "em": exact_match(answer, answers),
        "f1": round(f1(answer, answers), 4),
        "answer": answer,
        "error": error,
        "time_spent": time_spent(trace, seconds) if trace is not None else None,
    }
    if error is None:
        score = await score_sample(item, answer=answer, reply=reply or answer, judge=None)
        row["correct"] = score.correct
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sorted(r["seconds"] for r in rows)
    scored = [r["correct"] for r in rows if "correct" in r]
    return {
        "n": len(rows),
        "median_s": round(statistics.median(seconds), 2),
        "p90_s": round(seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))], 2),
        "model_calls": round(statistics.mean(r["model_calls"] for r in rows), 2),
        "completion_tokens": round(statistics.mean(r["completion_tokens"] for r in rows), 1),
        "prompt_tokens": round(statistics.mean(r.get("prompt_tokens", 0) for r in rows), 1),
        "tool_calls": round(statistics.mean(r["tool_calls"] for r in rows), 2),
        "correct": round(statistics.mean(scored), 3) if scored else None,
        "f1": round(statistics.mean(r["f1"] for r in rows), 3),
        "errors": sum(1 for r in rows if r["error"]),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, timeout=args.timeout)
    search = make_search_tool(LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl"))))
    agents = {
        p: Agent(
            model=model,
            planner=VARIANTS.get(p, p),
            tools=[search],
            max_concurrency=args.concurrency,
        )
        for p in args.planners
    }
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for level in args.in_flight:
            for name in args.sets:
                key = f"{name}@{level}"
                rows[key] = {p: [] for p in args.planners}
                items = question_set(name, args.per_set)
                for b, start in enumerate(range(0, len(items), level)):
                    batch = items[start : start + level]
                    turn = b % len(args.planners)
                    for planner in args.planners[turn:] + args.planners[:turn]:
                        agent = agents[planner]
                        done = await asyncio.gather(*(run_one(agent, i) for i in batch))
                        rows[key][planner] += [
                            {"id": i.id, **r} for i, r in zip(batch, done, strict=True)
                        ]
                    print(
                        f"{key} [{start + len(batch)}/{len(items)}] "
                        + ", ".join(
                            f"{p} {statistics.median(r['seconds'] for r in rows[key][p]):.1f}s"
                            for p in args.planners
                        ),
                        file=sys.stderr,
                    )
    finally:
        await model.aclose()
    return {"model": settings.model, "base_url": settings.base_url, "rows": rows}


def report(result: dict[str, Any], planners: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    headers = ["planner", "median s", "p90 s", "model calls", "gen tokens", "prompt tokens",
               "tool calls", "correct", "F1", "errors"]  # fmt: skip
    for key, by_planner in result["rows"].items():
        stats = {p: summarize(by_planner[p]) for p in planners if by_planner[p]}
        if not stats:
            continue
        summary[key] = stats
        name, level = key.split("@")
        print(f"\n### {name}, {level} in flight ({next(iter(stats.values()))['n']} questions)\n")
        print(
            table(
                headers,
                [
                    [
                        p,
                        s["median_s"],
                        s["p90_s"],
                        s["model_calls"],
                        s["completion_tokens"],
                        s["prompt_tokens"],
                        s["tool_calls"],
                        s["correct"],
                        s["f1"],
                        s["errors"],
                    ]
                    for p, s in stats.items()
                ],  # fmt: skip
            )
        )
        print(f"\nwhere the time went (mean seconds per question):\n\n{spent_table(by_planner)}")
        if "react" in stats and "dag" in stats and stats["dag"]["median_s"]:
            ratio = stats["react"]["median_s"] / stats["dag"]["median_s"]
            summary[key]["react_over_dag_median"] = round(ratio, 2)
            print(f"\nreact/dag median wall-clock: {ratio:.2f}x")
    return summary


def spent_table(by_planner: dict[str, list[dict[str, Any]]]) -> str:
    """Mean seconds per category, then the planner's own requests: seconds to the first
    piece (queue and prefill) and after it (decode), prompt tokens, prefix-cached share."""
    headers = ["planner", *ORDER, "other", "planner: to first s", "decode s", "prompt tok",
               "cached"]  # fmt: skip
    body = []
    for planner, rows in by_planner.items():
        spent = [r["time_spent"] for r in rows if r.get("time_spent")]
        if not spent:
            continue
        mean = {k: statistics.mean(t["seconds"][k] for t in spent) for k in (*ORDER, "other")}
        own = [t["requests"].get("planner", {}) for t in spent]
        prompt = sum(o.get("prompt", 0) for o in own)
        cached = sum(o.get("cached", 0) for o in own)
        body.append(
            [planner, *(f"{mean[k]:.1f}" for k in (*ORDER, "other")),
             f"{statistics.mean(o.get('to_first_s', 0) for o in own):.1f}",
             f"{statistics.mean(o.get('decode_s', 0) for o in own):.1f}",
             f"{prompt / len(own):.0f}", f"{cached / prompt:.0%}" if prompt else "-"]
        )  # fmt: skip
    return table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--per-set", type=int, default=20, help="questions per set (default 20)")
    parser.add_argument(
        "--sets", type=lambda s: s.split(","), default=["comparison", "bridge"],
        help=f"comma-separated, from: {', '.join(SETS)} (default: comparison,bridge)",
    )  # fmt: skip
    parser.add_argument(
        "--in-flight", type=lambda s: [int(x) for x in s.split(",")], default=[1],
        help="questions at once, comma-separated levels (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--planners", type=lambda s: s.split(","), default=["direct", "react", "dag", "hybrid"]
    )
    parser.add_argument("--concurrency", type=int, default=16, help="nodes at once per question")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model call")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unknown = [name for name in args.sets if name not in SETS]
    if unknown:
        parser.error(f"unknown set(s): {', '.join(unknown)}")
    result = asyncio.run(run(args))
    summary = report(result, args.planners)
    path = write_result("latency", {**result, "summary": summary}, args.out)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
