"""`agentflow eval DATASET` and `agentflow eval report DIR...`: run and compare evaluations.

Registered under the `agentflow.commands` entry points (`eval`). `eval report` is the hidden
`eval-report` parser: the core rewrites `GROUP ACTION` to `GROUP-ACTION` when such a parser
exists, so `eval report` can have its own options while `eval DATASET` keeps its positional.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.cli import CommandContext, Commands
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.settings import Settings

if TYPE_CHECKING:
    from agentflow_evals.config import EvalConfig

__all__ = ["register_eval"]


def register_eval(commands: Commands, common: CommandContext) -> None:
    run = commands.add_parser(
        "eval",
        parents=[common.connection_options()],
        help="score a planner on a dataset (resumable); `eval report DIR...` compares runs",
        description="Run a dataset through a planner and score it. Results are appended to "
        "OUT/results.jsonl as items finish: run the same command again to resume a killed run. "
        "`agentflow eval report DIR [DIR...]` writes a markdown table and plots comparing runs.",
    )
    _add_run_options(run)
    run.set_defaults(handler=partial(_eval, common))
    # No `help=`: a subcommand without one is left out of `agentflow --help`.
    report = commands.add_parser(
        "eval-report",
        prog="agentflow eval report",
        description="Compare eval runs: a markdown table and plots of accuracy against tokens "
        "and latency.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories")
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="where report.md and the plots go (default ./report)",
    )
    report.set_defaults(handler=_eval_report)


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "dataset",
        nargs="?",
        help="a dataset name (see --list-datasets) or a "
        "JSONL file of {id, question, answer[, aliases]}",
    )
    run.add_argument("--list-datasets", action="store_true", help="list known datasets and exit")
    run.add_argument("--planner", default="direct", help="default: direct")
    run.add_argument("--limit", type=int, help="only the first N items")
    run.add_argument("--samples", type=int, default=1, help="runs per item, for avg@k/maj@k")
    run.add_argument("--concurrency", type=int, default=8, help="items at once (default 8)")
    run.add_argument("--out", type=Path, help="run directory (default runs/DATASET-PLANNER-MODEL)")
    run.add_argument(
        "--extra-base-url",
        action="append",
        default=[],
        metavar="URL",
        help="another server of the same model to share the load (repeatable)",
    )
    run.add_argument("--judge-model", help="model judging BrowseComp answers (default: --model)")
    run.add_argument("--temperature", type=float, help="default: 0, or 0.7 with --samples > 1")
    run.add_argument("--max-tokens", type=int, help="cap on tokens per model call")
    run.add_argument("--seed", type=int, help="base seed; sample i uses seed + i")
    run.add_argument("--max-model-calls", type=int, default=64, help="per sample (default 64)")
    run.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="FILE.jsonl",
        help="give every item a `search` tool over these passages (repeatable; default: the "
        "dataset's own corpus, if it has one)",
    )
    run.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run items as tasks on a Ray cluster "
        "(`local` starts one here); results land in OUT exactly as without it",
    )


def _eval(common: CommandContext, args: argparse.Namespace) -> int:
    from agentflow_evals.config import EvalConfig
    from agentflow_evals.datasets import describe_datasets

    if args.list_datasets:
        for row in describe_datasets():
            print(f"{row['name']:<16} {row['task']:<11} {row['items']!s:>6}  {row['file']}")
        return 0
    if not args.dataset:
        raise UserError("name a dataset (agentflow eval --list-datasets) or a JSONL file")
    settings = common.settings(args)
    urls = common.base_urls(args, settings)
    out = args.out or Path("runs") / _slug(
        f"{Path(args.dataset).stem}-{args.planner}-{settings.model}"
    )
    config = EvalConfig(
        dataset=args.dataset, planner=args.planner, out=out, limit=args.limit,
        samples=args.samples, concurrency=args.concurrency, temperature=args.temperature,
        max_tokens=args.max_tokens, seed=args.seed, max_model_calls=args.max_model_calls,
        command=" ".join(["agentflow", *sys.argv[1:]]), base_urls=urls, ray=args.ray,
        corpus=[str(Path(c).resolve()) for c in args.corpus],
    )  # fmt: skip
    summary = asyncio.run(_eval_async(config, settings, urls, args.judge_model))
    print(json.dumps(summary, indent=2))
    print(f"results in {out}", file=sys.stderr)
    return 0


async def _eval_async(
    config: EvalConfig, settings: Settings, urls: list[str], judge_name: str | None
) -> dict[str, Any]:
    from agentflow_evals.runner import run_eval

    model = OpenAIModel(settings.model, urls, api_key=settings.api_key, timeout=settings.timeout)
    judge = OpenAIModel(judge_name, urls, api_key=settings.api_key) if judge_name else None
    try:
        return await run_eval(config, model, judge)
    finally:
        await model.aclose()
        if judge is not None:
            await judge.aclose()


def _eval_report(args: argparse.Namespace) -> int:
    from agentflow_evals.report import write_report

    path = write_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
