"""End-to-end latency per planner on HotpotQA, against a real vLLM server (BENCHMARKS.md §2).

    python benchmarks/latency.py [--per-type 20] [--planners direct,react,dag,hybrid]

Same model, same search tool over the pooled local corpus, same concurrency limit for every
planner. Questions run one at a time (the wall-clock of one question is the figure), planners
interleaved per question in a rotating order so drift on a shared machine hits all of them.
Reports per question type and planner: median and p90 wall-clock, model calls, generated
tokens, tool calls, EM and F1; the headline is react/dag of the median wall-clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result

from agentflow import Agent, ExecutionError, OpenAIModel, PlanError, Trace
from agentflow.settings import Settings
from agentflow_evals.qa import exact_match, f1
from agentflow_tools.search import LocalIndex, make_search_tool

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def questions(per_type: int) -> list[dict[str, Any]]:
    lines = (DATA / "multihop" / "hotpotqa_dev.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    chosen = []
    for kind in ("comparison", "bridge"):
        of_kind = [i for i in items if i["type_derived"] == kind][:per_type]
        chosen += [
            {
                "id": i["question_id"],
                "type": kind,
                "question": i["question_text"],
                "answers": [s for a in i["answers_objects"] for s in a["spans"]],
            }
            for i in of_kind
        ]
    return chosen


async def run_one(agent: Agent, item: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    trace: Trace | None = None
    try:
        result = await agent.run(item["question"])
        answer, trace, error = result.answer, result.trace, None
    except (ExecutionError, PlanError) as exc:
        answer, error = "", str(exc).splitlines()[0]
        if isinstance(exc, ExecutionError) and isinstance(exc.trace, Trace):
            trace = exc.trace
    seconds = time.perf_counter() - started
    nodes = list(trace.nodes.values()) if trace is not None else []
    usage = trace.usage if trace is not None else None
    return {
        "seconds": round(seconds, 3),
        "model_calls": usage.calls if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "tool_calls": sum(1 for n in nodes if n.tool),
        "em": exact_match(answer, item["answers"]),
        "f1": round(f1(answer, item["answers"]), 4),
        "answer": answer,
        "error": error,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    seconds = sorted(r["seconds"] for r in rows)
    return {
        "n": len(rows),
        "median_s": round(statistics.median(seconds), 2),
        "p90_s": round(seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))], 2),
        "model_calls": round(statistics.mean(r["model_calls"] for r in rows), 2),
        "completion_tokens": round(statistics.mean(r["completion_tokens"] for r in rows), 1),
        "tool_calls": round(statistics.mean(r["tool_calls"] for r in rows), 2),
        "em": round(statistics.mean(r["em"] for r in rows), 3),
        "f1": round(statistics.mean(r["f1"] for r in rows), 3),
        "errors": sum(1 for r in rows if r["error"]),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, timeout=settings.timeout)
    search = make_search_tool(LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl"))))
    agents = {
        p: Agent(model=model, planner=p, tools=[search], max_concurrency=args.concurrency)
        for p in args.planners
    }
    rows: dict[str, list[dict[str, Any]]] = {p: [] for p in args.planners}
    items = questions(args.per_type)
    try:
        for index, item in enumerate(items):
            order = (
                args.planners[index % len(args.planners) :]
                + args.planners[: index % len(args.planners)]
            )
            for planner in order:
                row = await run_one(agents[planner], item)
                rows[planner].append({"id": item["id"], "type": item["type"], **row})
            print(
                f"[{index + 1}/{len(items)}] {item['type']}: "
                + ", ".join(f"{p} {rows[p][-1]['seconds']:.1f}s" for p in args.planners),
                file=sys.stderr,
            )
    finally:
        await model.aclose()
    return {"model": settings.model, "base_url": settings.base_url, "rows": rows}


def report(result: dict[str, Any], planners: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in ("comparison", "bridge"):
        summary[kind] = {
            p: summarize([r for r in result["rows"][p] if r["type"] == kind]) for p in planners
        }
        stats = summary[kind]
        print(f"\n### HotpotQA {kind} ({stats[planners[0]]['n']} questions)\n")
        print(
            table(
                [
                    "planner",
                    "median s",
                    "p90 s",
                    "model calls",
                    "gen tokens",
                    "tool calls",
                    "EM",
                    "F1",
                    "errors",
                ],
                [
                    [
                        p,
                        s["median_s"],
                        s["p90_s"],
                        s["model_calls"],
                        s["completion_tokens"],
                        s["tool_calls"],
                        s["em"],
                        s["f1"],
                        s["errors"],
                    ]
                    for p, s in stats.items()
                ],
            )
        )
        if "react" in stats and "dag" in stats and stats["dag"]["median_s"]:
            ratio = stats["react"]["median_s"] / stats["dag"]["median_s"]
            stats["react_over_dag_median"] = round(ratio, 2)
            print(f"\nreact/dag median wall-clock: {ratio:.2f}x")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--per-type", type=int, default=20, help="questions per type (default 20)")
    parser.add_argument(
        "--planners", type=lambda s: s.split(","), default=["direct", "react", "dag", "hybrid"]
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    summary = report(result, args.planners)
    path = write_result("latency", {**result, "summary": summary}, args.out)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
