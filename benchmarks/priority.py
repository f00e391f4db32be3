"""Critical-path priority against first-come-first-served, on one server, in one run.

    python benchmarks/priority.py [--in-flight 8] [--rounds 2] [--planner dag]

The server must run with `--scheduling-policy priority` (`agentflow model up` does). Each round
runs two batches of `--in-flight` HotpotQA questions (comparison and bridge alternating), all of a
batch at once: one with the executor's priorities (planning and joining first, then nodes by the
longest chain still to run after them), one with every request at priority 0, which vLLM serves
in arrival order. Every question runs once: a question asked twice would find its prompts in the
prefix cache the second time, which favoured whichever mode went second by 2-3x in a first
version of this benchmark. Which mode goes first alternates between rounds, so drift on a
shared machine hits both. Reports p50 and p90 seconds per question for each mode, the server's
own queue wait and time to first token (vLLM's /metrics), and how many requests carried a
priority other than 0 (only those can be reordered).
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
from latency import DATA, VARIANTS, question_set, run_one

from agentflow import Agent, ModelSettings, OpenAIModel
from agentflow.runtime.vllm_metrics import snapshot
from agentflow.settings import Settings
from agentflow_evals.datasets import EvalItem
from agentflow_tools.search import LocalIndex, make_search_tool

MODES = ("priority", "fifo")


async def run_batch(agent: Agent, batch: list[EvalItem], base_url: str) -> dict[str, Any]:
    before = await snapshot(base_url)
    started = time.perf_counter()
    rows = await asyncio.gather(*(run_one(agent, item) for item in batch))
    seconds = time.perf_counter() - started
    after = await snapshot(base_url)
    server = after.since(before) if before is not None and after is not None else None
    return {"rows": rows, "batch_seconds": round(seconds, 2), "server": server}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, timeout=args.timeout)
    fifo = model.with_overrides(ModelSettings(priority=0))  # every request equal: arrival order
    search = make_search_tool(LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl"))))
    agents = {
        mode: Agent(model=m, planner=VARIANTS.get(args.planner, args.planner), tools=[search])
        for mode, m in (("priority", model), ("fifo", fifo))
    }
    per_type = args.in_flight * args.rounds  # two batches per round, half of each type
    comparison, bridge = question_set("comparison", per_type), question_set("bridge", per_type)
    mixed = [q for pair in zip(comparison, bridge, strict=True) for q in pair]
    batches: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for k, mode in enumerate(order):
                first = (2 * r + k) * args.in_flight
                batch = mixed[first : first + args.in_flight]
                result = await run_batch(agents[mode], batch, settings.base_url)
                batches[mode].append(result)
                seconds = [row["seconds"] for row in result["rows"]]
                print(
                    f"round {r + 1}/{args.rounds} {mode}: batch {result['batch_seconds']} s, "
                    f"median question {statistics.median(seconds):.1f} s",
                    file=sys.stderr,
                )
    finally:
        await model.aclose()
    return {"planner": args.planner, "in_flight": args.in_flight, "batches": batches}


def report(result: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for mode, batches in result["batches"].items():
        seconds = [row["seconds"] for b in batches for row in b["rows"]]
        servers = [b["server"] for b in batches if b["server"]]
        summary[mode] = {
            "questions": len(seconds),
            "p50_s": round(statistics.median(seconds), 1),
            "p90_s": round(percentile(seconds, 0.9), 1),
            "batch_s": round(statistics.mean(b["batch_seconds"] for b in batches), 1),
            "errors": sum(1 for b in batches for row in b["rows"] if row["error"]),
            "model_calls": sum(row["model_calls"] for b in batches for row in b["rows"]),
            "node_model_calls": sum(row["node_model_calls"] for b in batches for row in b["rows"]),
            "mean_queue_s": _mean(s["mean_queue_time_s"] for s in servers),
            "mean_ttft_s": _mean(s["mean_time_to_first_token_s"] for s in servers),
        }
    headers = ["mode", "questions", "p50 s", "p90 s", "batch s", "queue s", "TTFT s",
               "model calls", "of them for nodes", "errors"]  # fmt: skip
    rows = [
        [m, s["questions"], s["p50_s"], s["p90_s"], s["batch_s"], s["mean_queue_s"],
         s["mean_ttft_s"], s["model_calls"], s["node_model_calls"], s["errors"]]
        for m, s in summary.items()
    ]  # fmt: skip
    print(f"\n### {result['planner']}, {result['in_flight']} questions in flight\n")
    print(table(headers, rows))
    fifo, prio = summary["fifo"], summary["priority"]
    if prio["p50_s"] and prio["p90_s"]:
        summary["fifo_over_priority_p50"] = round(fifo["p50_s"] / prio["p50_s"], 2)
        summary["fifo_over_priority_p90"] = round(fifo["p90_s"] / prio["p90_s"], 2)
        print(
            f"\nFIFO/priority: p50 {summary['fifo_over_priority_p50']}x, "
            f"p90 {summary['fifo_over_priority_p90']}x"
        )
    return summary


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.mean(present), 2) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument(
        "--planner",
        default="dag",
        help="a planner, or dag-answer-steps: dag running its reasoning steps as llm nodes "
        "(default %(default)s)",
    )
    parser.add_argument("--in-flight", type=int, default=8, help="questions at once (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="batches per mode (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model call")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    summary = report(result)
    path = write_result("priority", {**result, "summary": summary}, args.out)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
