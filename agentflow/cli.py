"""The `agentflow` command line: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow._version import __version__
from agentflow.agent import Agent, RunResult
from agentflow.context import RunLimits
from agentflow.exceptions import AgentflowError, ExecutionError, UserError
from agentflow.models import OpenAIModel
from agentflow.registry import load_tool, planner_names, tool_names
from agentflow.runtime import LocalServer
from agentflow.settings import Settings
from agentflow.tool import Tool, ToolError
from agentflow.trace import Trace

if TYPE_CHECKING:
    from agentflow_evals.runner import EvalConfig

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["eval", "report"]:  # `eval DATASET` and `eval report DIR...` share a name
        arguments = ["eval-report", *arguments[2:]]
    args = parser.parse_args(arguments)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ExecutionError as exc:
        if getattr(args, "json", False) and isinstance(exc.trace, Trace):
            print(json.dumps({"error": str(exc), "trace": exc.trace.as_dict()}, indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AgentflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentflow",
        description="Agentic reasoning and parallel search with LLMs served by vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"agentflow {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_ask(commands)
    _add_search(commands)
    _add_index(commands)
    _add_eval(commands)
    _add_model(commands)
    return parser


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("model server")
    group.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="OpenAI-compatible API root; repeat it to spread requests over several servers "
        "of the same model (env AGENTFLOW_BASE_URL; default: the embedded model at "
        "http://127.0.0.1:$AGENTFLOW_PORT/v1, port 8100)",
    )
    group.add_argument(
        "--model", help="served model name (env AGENTFLOW_MODEL; default SmolLM2-135M-Instruct)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        help="seconds for one model request (env AGENTFLOW_TIMEOUT; default 120)",
    )
    return common


def _settings(args: argparse.Namespace) -> Settings:
    first_url = args.base_url[0] if args.base_url else None
    return Settings.from_env(base_url=first_url, model=args.model, timeout=args.timeout)


def _add_ask(commands: Any) -> None:
    ask = commands.add_parser(
        "ask",
        parents=[_connection_options()],
        help="answer one question",
        description="Answer one question with a planner, printing the answer.",
    )
    ask.add_argument("question", help="the question to answer")
    ask.add_argument(
        "--planner",
        default="direct",
        help=f"strategy: {', '.join(planner_names())} (default: direct)",
    )
    ask.add_argument("--json", action="store_true", help="print answer, usage and trace as JSON")
    ask.add_argument(
        "--show-plan",
        action="store_true",
        help="print the DAG and a timeline of the nodes (to stderr with --json)",
    )
    ask.add_argument(
        "--corpus",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.jsonl",
        help="give the agent a `search` tool over these passages (repeatable)",
    )
    ask.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME",
        help=f"give the agent a registered tool (repeatable): {', '.join(tool_names())}",
    )
    ask.add_argument(
        "--max-model-calls",
        type=int,
        default=RunLimits.max_model_calls,
        help="hard cap on model calls for the question (default %(default)s)",
    )
    ask.add_argument(
        "--max-tokens",
        type=int,
        default=RunLimits.max_tokens,
        help="hard cap on prompt+completion tokens (default %(default)s)",
    )
    ask.add_argument(
        "--concurrency", type=int, default=16, help="nodes running at once (default %(default)s)"
    )
    ask.set_defaults(handler=_ask)


def _ask(args: argparse.Namespace) -> int:
    settings = _settings(args)
    limits = RunLimits(max_model_calls=args.max_model_calls, max_tokens=args.max_tokens)
    result = asyncio.run(_ask_async(args, settings, limits))
    if args.show_plan:
        print(result.trace.render(), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(result.answer)
    return 0


async def _ask_async(args: argparse.Namespace, settings: Settings, limits: RunLimits) -> RunResult:
    urls = args.base_url or [settings.base_url]
    model = OpenAIModel(settings.model, urls, api_key=settings.api_key, timeout=settings.timeout)
    try:
        agent = Agent(
            model=model,
            planner=args.planner,
            tools=[*_corpus_tools(args.corpus), *(load_tool(name) for name in args.tool)],
            limits=limits,
            max_concurrency=args.concurrency,
        )
        return await agent.run(args.question)
    finally:
        await model.aclose()


def _corpus_tools(corpora: list[Path]) -> list[Tool]:
    if not corpora:
        return []
    from agentflow_tools.search import LocalIndex, make_search_tool

    index = LocalIndex.open(corpora)
    _report_skipped(index.info.skipped_lines)
    return [make_search_tool(index)]


def _report_skipped(skipped: list[str]) -> None:
    for line in skipped[:20]:
        print(f"warning: {line}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"warning: ... and {len(skipped) - 20} more skipped lines", file=sys.stderr)


def _add_search(commands: Any) -> None:
    search = commands.add_parser(
        "search",
        help="search local JSONL passages with BM25",
        description="Search one or more JSONL corpora ({id, title, text}, {title, text} or "
        "{title, sentences}); the index is built on first use and cached.",
    )
    search.add_argument("query", help="what to search for")
    search.add_argument(
        "--corpus",
        action="append",
        type=Path,
        required=True,
        metavar="FILE.jsonl",
        help="a corpus file (repeatable)",
    )
    search.add_argument("-k", type=int, default=10, help="passages to return (default 10)")
    search.add_argument(
        "--json", action="store_true", help="print a JSON list of {id, title, text, score}"
    )
    search.set_defaults(handler=_search)


def _search(args: argparse.Namespace) -> int:
    from agentflow_tools.search import LocalIndex

    index = LocalIndex.open(args.corpus)
    _report_skipped(index.info.skipped_lines)
    try:
        hits = index.search(args.query, args.k)
    except ToolError as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        rows = [{"id": h.id, "title": h.title, "text": h.text, "score": h.score} for h in hits]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>2}. [{hit.score:.2f}] {hit.title} ({hit.id})\n    {hit.text[:300]}")
    return 0


def _add_index(commands: Any) -> None:
    index = commands.add_parser("index", help="build or inspect local search indexes")
    actions = index.add_subparsers(title="actions", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="index JSONL corpora now (with a progress bar)")
    build.add_argument("files", nargs="+", type=Path, metavar="FILE.jsonl")
    build.set_defaults(handler=_index_build)
    info = actions.add_parser("info", help="list cached indexes, or describe the index of FILES")
    info.add_argument("files", nargs="*", type=Path, metavar="FILE.jsonl")
    info.set_defaults(handler=_index_info)


def _index_build(args: argparse.Namespace) -> int:
    from agentflow_tools.search import LocalIndex

    index = LocalIndex.open(args.files, progress=True)
    _report_skipped(index.info.skipped_lines)
    info = index.info
    print(
        f"{info.passages} passages ({info.duplicates} duplicates dropped, "
        f"{len(info.skipped_lines)} lines skipped) in {info.path}"
    )
    return 0


def _index_info(args: argparse.Namespace) -> int:
    from agentflow_tools.search import LocalIndex, cached_indexes

    infos = [LocalIndex.open(args.files).info] if args.files else cached_indexes()
    if not infos:
        print("no cached indexes")
    for info in infos:
        print(json.dumps(asdict(info), indent=2))
    return 0


def _add_eval(commands: Any) -> None:
    run = commands.add_parser(
        "eval",
        parents=[_connection_options()],
        help="score a planner on a dataset (resumable); `eval report DIR...` compares runs",
        description="Run a dataset through a planner and score it. Results are appended to "
        "OUT/results.jsonl as items finish: run the same command again to resume a killed run. "
        "`agentflow eval report DIR [DIR...]` writes a markdown table and plots comparing runs.",
    )
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
    run.set_defaults(handler=_eval)
    report = commands.add_parser("eval-report", help=argparse.SUPPRESS)
    report.add_argument("runs", nargs="+", type=Path, metavar="DIR")
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="where report.md and the plots go (default ./report)",
    )
    report.set_defaults(handler=_eval_report)


def _eval(args: argparse.Namespace) -> int:
    from agentflow_evals.datasets import describe_datasets
    from agentflow_evals.runner import EvalConfig

    if args.list_datasets:
        for row in describe_datasets():
            print(f"{row['name']:<16} {row['task']:<11} {row['items']!s:>6}  {row['file']}")
        return 0
    if not args.dataset:
        raise UserError("name a dataset (agentflow eval --list-datasets) or a JSONL file")
    settings = _settings(args)
    urls = args.base_url or [settings.base_url]
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


def _add_model(commands: Any) -> None:
    model = commands.add_parser(
        "model",
        help="manage the embedded local model server",
        description="Start, stop and inspect the embedded SmolLM2-135M-Instruct vLLM server "
        "(state in $AGENTFLOW_HOME/server, default ~/.cache/agentflow/server).",
    )
    actions = model.add_subparsers(title="actions", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="prepare the weights once and start the server; reuses a server that is already up",
    )
    up.set_defaults(handler=_model_up)
    down = actions.add_parser("down", help="stop the server that `model up` started")
    down.set_defaults(handler=_model_down)
    status = actions.add_parser("status", help="is the server up, and where")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_model_status)
    logs = actions.add_parser("logs", help="print the end of the server's log")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to print (default 50)")
    logs.set_defaults(handler=_model_logs)


def _local_server() -> LocalServer:
    timeout = float(os.environ.get("AGENTFLOW_STARTUP_TIMEOUT", 900))
    return LocalServer(Settings.from_env(), startup_timeout=timeout)


def _model_up(args: argparse.Namespace) -> int:
    server = _local_server()
    print(
        f"starting the embedded model at {server.base_url} (log: {server.log_file})",
        file=sys.stderr,
    )
    status = server.up(on_progress=_ProgressLine())
    print(file=sys.stderr)
    print(f"model server up at {status.base_url} serving {status.model}")
    return 0


def _model_down(args: argparse.Namespace) -> int:
    stopped = _local_server().down()
    print("model server stopped" if stopped else "no model server started by agentflow is running")
    return 0


def _model_status(args: argparse.Namespace) -> int:
    status = _local_server().status()
    if args.json:
        print(
            json.dumps(
                {
                    "base_url": status.base_url,
                    "healthy": status.healthy,
                    "pid": status.pid,
                    "model": status.model,
                    "log_file": str(status.log_file),
                }
            )
        )
    else:
        state = "up" if status.healthy else ("starting" if status.pid else "down")
        owner = f" (pid {status.pid})" if status.pid else ""
        print(f"{state}{owner}: {status.base_url} {status.model}")
    return 0 if status.healthy else 3


def _model_logs(args: argparse.Namespace) -> int:
    print(_local_server().log_tail(args.lines))
    return 0


class _ProgressLine:
    """Start-up progress: a live line on a terminal, a line every 15 s in logs and CI."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_print = -15.0

    def __call__(self, elapsed: float, last_log_line: str) -> None:
        line = last_log_line.strip()[-90:]
        if self.tty:
            print(f"\r\x1b[K  waiting for vLLM {elapsed:4.0f}s  {line}", end="", file=sys.stderr)
        elif elapsed - self.last_print >= 15:
            self.last_print = elapsed
            print(f"  waiting for vLLM {elapsed:4.0f}s  {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
