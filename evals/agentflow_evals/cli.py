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
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.allocation import (
    add_allocation_options,
    allocation_settings,
    allocator_from_settings,
)
from agentflow.cli import (
    CommandContext,
    Commands,
    add_mcp_options,
    add_otel_option,
    seconds,
    whole_number,
)
from agentflow.cli.ask import NODE_TIMEOUT_HELP
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.registry import load_planner
from agentflow.settings import Settings, agentflow_home
from agentflow.telemetry import exporting

if TYPE_CHECKING:
    from agentflow_evals.config import EvalConfig

__all__ = ["register_eval"]

_count = whole_number(1)
"""0 and negatives are usage errors: `--limit 0` used to run everything, `-3` all but three."""

JudgeSpec = tuple[str, list[str]]
"""A judge model's name and the URLs of its server."""


def register_eval(commands: Commands, common: CommandContext) -> None:
    run = commands.add_parser(
        "eval",
        parents=[common.connection_options()],
        help="score a planner on a dataset (resumable); `eval report DIR...` compares runs, "
        "`eval regrade DIR` re-scores one",
        description="Run a dataset through a planner and score it. Results are appended to "
        "OUT/results.jsonl as items finish: run the same command again to resume a killed run. "
        "`agentflow eval report DIR [DIR...]` writes a markdown table and plots comparing runs; "
        "`agentflow eval regrade DIR` scores a finished run again without the model.",
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
    regrade = commands.add_parser(
        "eval-regrade",
        prog="agentflow eval regrade",
        description="Score a finished run again with today's scorers (and, for BrowseComp, the "
        "judge named here) without running the model: the replies it kept are re-read. The old "
        "results stay beside the new ones as results.before-regrade.jsonl.",
    )
    regrade.add_argument("run", type=Path, metavar="DIR", help="the run directory")
    regrade.add_argument(
        "--only-failed-judge",
        action="store_true",
        help="judge again only the samples whose judge gave no readable verdict "
        '(judge_parsed_with "failed"); every other sample keeps its score',
    )
    _add_judge_options(regrade)
    regrade.set_defaults(handler=partial(_eval_regrade, common))


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("judge (BrowseComp)")
    group.add_argument(
        "--judge-model",
        help="model that grades BrowseComp answers (default: the model under test; a judge "
        "that is not the model under test is the fair setting)",
    )
    group.add_argument(
        "--judge-base-url",
        metavar="URL",
        help="OpenAI-compatible API root of the judge (default: the model server's; for "
        "regrade, the server the run's judge used)",
    )
    group.add_argument(
        "--judge-cache",
        type=Path,
        metavar="FILE",
        help="where verdicts are cached by content hash, so a rerun or regrade costs no judge "
        "call (default $AGENTFLOW_HOME/judge-cache.sqlite3)",
    )
    group.add_argument(
        "--no-judge-cache", action="store_true", help="call the judge for every answer"
    )


def _add_run_options(run: argparse.ArgumentParser) -> None:
    add_allocation_options(run)
    add_otel_option(run)
    add_mcp_options(run)
    run.add_argument(
        "dataset",
        nargs="?",
        help="a dataset name (see --list-datasets) or a "
        "JSONL file of {id, question, answer[, aliases]}",
    )
    run.add_argument("--list-datasets", action="store_true", help="list known datasets and exit")
    run.add_argument("--planner", default="direct", help="default: direct")
    run.add_argument("--limit", type=_count, help="only the first N items")
    run.add_argument("--samples", type=_count, default=1, help="runs per item, for avg@k/maj@k")
    run.add_argument(
        "--concurrency",
        type=_count,
        help="items at once (default: as many as fill the server's KV cache, by vLLM's "
        "/metrics; 8 for servers that do not say)",
    )
    run.add_argument("--out", type=Path, help="run directory (default runs/DATASET-PLANNER-MODEL)")
    run.add_argument(
        "--extra-base-url",
        action="append",
        default=[],
        metavar="URL",
        help="another server of the same model to share the load (repeatable)",
    )
    run.add_argument(
        "--temperature", type=_temperature, help="default: 0, or 0.7 with --samples > 1"
    )
    run.add_argument("--max-tokens", type=_count, help="cap on tokens per model call")
    run.add_argument("--seed", type=int, help="base seed; sample i uses seed + i")
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
    _add_limits(run)
    _add_judge_options(run)


def _add_limits(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--max-failures",
        type=_count,
        default=5,
        help="items that may fail on the model server (never recorded; a resume retries them) "
        "before the run stops (default %(default)s)",
    )
    run.add_argument("--max-model-calls", type=_count, default=64, help="per sample (default 64)")
    run.add_argument(
        "--deadline",
        type=seconds,
        metavar="SECONDS",
        help="seconds per sample (default: none). At three quarters of it the work still running "
        "is cancelled and the findings so far are joined into the sample's answer, scored as "
        'usual and flagged "deadline_hit"; a sample whose join cannot answer by the deadline is '
        'scored wrong with error_kind "deadline"',
    )
    run.add_argument(
        "--node-timeout", type=seconds, default=180.0, metavar="SECONDS", help=NODE_TIMEOUT_HELP
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
    common.mcp_sources(
        args.mcp, args.mcp_timeout
    )  # a bad --mcp, or no `mcp` package, fails before the run
    urls = [*common.base_urls(args, settings), *args.extra_base_url]
    out = args.out or Path("runs") / _slug(
        f"{Path(args.dataset).stem}-{args.planner}-{settings.model}"
    )
    config = EvalConfig(
        dataset=args.dataset, planner=args.planner, out=out, limit=args.limit,
        samples=args.samples, concurrency=args.concurrency or 0, temperature=args.temperature,
        max_tokens=args.max_tokens, seed=args.seed, max_model_calls=args.max_model_calls,
        deadline=args.deadline, node_timeout=args.node_timeout,
        command=" ".join(["agentflow", *sys.argv[1:]]), base_urls=urls, ray=args.ray,
        corpus=[str(Path(c).resolve()) for c in args.corpus], judge_cache=_judge_cache(args),
        max_failures=args.max_failures, allocation=_allocation(args),
        mcp=tuple(args.mcp), mcp_timeout=args.mcp_timeout,
    )  # fmt: skip
    with exporting(args.otel):  # Ray workers' runs are not traced
        summary = asyncio.run(_eval_async(config, settings, urls, _judge_spec(args, urls)))
    print(json.dumps(summary, indent=2))
    print(f"results in {out}", file=sys.stderr)
    return 0


def _allocation(args: argparse.Namespace) -> dict[str, Any]:
    """The `--allocation` options, checked now so a bad one fails before any item runs."""
    planner = load_planner(args.planner)
    values = allocation_settings(args, getattr(planner, "default_allocation", None))
    allocator_from_settings(values)
    return values


def _judge_cache(args: argparse.Namespace) -> Path | None:
    if args.no_judge_cache:
        return None
    path: Path = args.judge_cache or agentflow_home() / "judge-cache.sqlite3"
    if path.is_dir():  # found now, not after the model has answered every item
        raise UserError(f"--judge-cache {path} is a directory: name a file, e.g. {path}/cache.db")
    return path


def _judge_spec(args: argparse.Namespace, urls: list[str]) -> JudgeSpec | None:
    """(judge model, its URLs), or None to judge with the model under test."""
    if not args.judge_model and not args.judge_base_url:
        return None
    if not args.judge_model:
        raise UserError("--judge-base-url needs --judge-model (the judge server's model name)")
    return args.judge_model, [args.judge_base_url] if args.judge_base_url else urls


async def _eval_async(
    config: EvalConfig,
    settings: Settings,
    urls: list[str],
    judge_spec: JudgeSpec | None,
) -> dict[str, Any]:
    from agentflow_evals.runner import run_eval
    from agentflow_evals.server_load import FALLBACK_CONCURRENCY, ServerWatch, describe

    watch = ServerWatch(urls, config.out)
    await watch.start()
    if not config.concurrency:
        concurrency, why = watch.default_concurrency()
        if concurrency != FALLBACK_CONCURRENCY:  # the fallback is the old default: no news
            print(f"{concurrency} items at once ({why}; set --concurrency)", file=sys.stderr)
        config = replace(config, concurrency=concurrency)
    model = OpenAIModel.from_settings(settings, urls)
    judge = _judge_model(judge_spec, settings)
    try:
        return await run_eval(config, model, judge)
    finally:
        await model.aclose()
        if judge is not None:
            await judge.aclose()
        record = await watch.finish(config.concurrency)
        if record is not None:
            print(describe(record), file=sys.stderr)


def _judge_model(spec: JudgeSpec | None, settings: Settings) -> OpenAIModel | None:
    if spec is None:
        return None
    name, urls = spec
    return OpenAIModel.from_settings(settings, urls, name=name)


def _eval_regrade(common: CommandContext, args: argparse.Namespace) -> int:
    from agentflow_evals.results import RunDirectory

    manifest = RunDirectory(args.run).read_manifest()
    if manifest is None:
        raise UserError(f"{args.run} has no manifest.json: pass the directory of an eval run")
    settings = Settings.from_env(model=manifest.get("judge_model") or manifest.get("model"))
    # The run's own judge, where it ran, unless told otherwise.
    urls = list(manifest.get("judge_base_urls") or manifest.get("base_urls") or [settings.base_url])
    spec = _judge_spec(args, urls) or (settings.model, urls)
    result = asyncio.run(
        _regrade_async(args.run, spec, settings, _judge_cache(args), args.only_failed_judge)
    )
    print(json.dumps(result.summary, indent=2))
    print(
        f"{result.rescored} samples scored again; "
        f"accuracy {result.before:.4f} -> {result.after:.4f}; "
        f"{len(result.gained)} items gained, {len(result.lost)} lost"
        + (f": +{', +'.join(result.gained)}" if result.gained else "")
        + (f" -{', -'.join(result.lost)}" if result.lost else ""),
        file=sys.stderr,
    )
    if result.from_short_answer:
        print(
            f"note: {result.from_short_answer} samples were scored from their short answer: the "
            "run predates kept replies",
            file=sys.stderr,
        )
    return 0


async def _regrade_async(
    run: Path, spec: JudgeSpec, settings: Settings, cache: Path | None, only_failed: bool
) -> Any:
    from agentflow_evals.judge_cache import JudgeCache
    from agentflow_evals.regrade import regrade
    from agentflow_evals.scoring import Judge

    judge_model = _judge_model(spec, settings)
    assert judge_model is not None
    try:
        judge = Judge(judge_model, JudgeCache(cache) if cache else None)
        return await regrade(run, judge, only_failed_judge=only_failed)
    finally:
        await judge_model.aclose()


def _eval_report(args: argparse.Namespace) -> int:
    from agentflow_evals.report import write_report

    path = write_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def _temperature(text: str) -> float:
    """An argparse type: a sampling temperature, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
