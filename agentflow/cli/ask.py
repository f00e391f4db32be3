"""`agentflow ask`: answer one question with a planner."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from functools import partial
from pathlib import Path

from agentflow.agent import Agent, RunResult
from agentflow.allocation import (
    add_allocation_options,
    allocation_settings,
    allocator_from_settings,
)
from agentflow.cli._common import (
    CommandContext,
    Commands,
    add_mcp_options,
    add_otel_option,
    seconds,
    whole_number,
)
from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.registry import load_planner, load_tool, planner_names, tool_names
from agentflow.settings import Settings
from agentflow.telemetry import exporting
from agentflow.tool import Tool, ToolSource

__all__ = ["NODE_TIMEOUT_HELP", "add_limits", "add_tool_options", "agent_tools", "register"]


def register(commands: Commands, common: CommandContext) -> None:
    ask = commands.add_parser(
        "ask",
        parents=[common.connection_options()],
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
    add_tool_options(ask)
    add_mcp_options(ask)
    add_limits(ask)
    add_allocation_options(ask)
    add_otel_option(ask)
    # a run that stops on an unusable model reply still prints the best answer it had
    ask.set_defaults(handler=partial(_ask, common), prints_best_answer=True)


def add_tool_options(parser: argparse.ArgumentParser) -> None:
    """`--corpus` and `--tool`, which `agent_tools` reads (shared with `agentflow mcp`)."""
    parser.add_argument(
        "--corpus",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.jsonl",
        help="give the agent a `search` tool over these passages (repeatable)",
    )
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME",
        help=f"give the agent a registered tool (repeatable): {', '.join(tool_names())}",
    )


def agent_tools(common: CommandContext, args: argparse.Namespace) -> list[Tool]:
    """The tools the options of `add_tool_options` give the agent."""
    return [*_corpus_tools(common, args.corpus), *(load_tool(name) for name in args.tool)]


def add_limits(ask: argparse.ArgumentParser) -> None:
    """The run's caps, `--concurrency` and `--node-timeout` (shared with `agentflow mcp`)."""
    ask.add_argument(
        "--max-model-calls",
        type=whole_number(1),
        default=RunLimits.max_model_calls,
        help="hard cap on model calls for the question (default %(default)s)",
    )
    ask.add_argument(
        "--max-tokens",
        type=whole_number(1),
        default=RunLimits.max_tokens,
        help="hard cap on prompt+completion tokens (default %(default)s)",
    )
    ask.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=16,
        help="nodes running at once (default %(default)s)",
    )
    ask.add_argument("--deadline", type=seconds, metavar="SECONDS", help=_DEADLINE_HELP)
    ask.add_argument(
        "--node-timeout", type=seconds, default=180.0, metavar="SECONDS", help=NODE_TIMEOUT_HELP
    )


NODE_TIMEOUT_HELP = (
    "seconds one step of the plan may run, its model requests and retries included (default "
    "%(default)g); a step past it fails and is not run again. A slow model under load (a 1.5B "
    "on a CPU writes a few tokens a second per request when many run at once) needs more"
)
_DEADLINE_HELP = (
    "seconds for the whole question (default: none). At three quarters of it the work still "
    "running is cancelled and the findings so far are joined into an answer, printed with a "
    "warning on stderr; if that join cannot answer by the deadline, what its unusable reply "
    "wrote as the answer is printed with a warning instead (exit 1 if it wrote none)"
)


def _ask(common: CommandContext, args: argparse.Namespace) -> int:
    settings = common.settings(args)
    limits = RunLimits(
        max_model_calls=args.max_model_calls, max_tokens=args.max_tokens, deadline=args.deadline
    )
    tools: list[Tool | ToolSource] = [
        *agent_tools(common, args),
        *common.mcp_sources(args.mcp, args.mcp_timeout),
    ]
    urls = common.base_urls(args, settings)
    with exporting(args.otel):
        result = asyncio.run(_ask_async(args, settings, urls, tools, limits))
    if args.show_plan:
        print(result.trace.render(), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(result.answer)
    if result.deadline_hit:
        print(
            f"warning: the run reached its deadline of {args.deadline:g} s (--deadline): the "
            "work left was cancelled and the answer joins only the findings made until then",
            file=sys.stderr,
        )
    return 0


async def _ask_async(
    args: argparse.Namespace,
    settings: Settings,
    urls: list[str],
    tools: list[Tool | ToolSource],
    limits: RunLimits,
) -> RunResult:
    planner = load_planner(args.planner)
    allocation = allocation_settings(args, getattr(planner, "default_allocation", None))
    allocator = allocator_from_settings(allocation)  # before connecting: bad options fail fast
    model = OpenAIModel.from_settings(settings, urls)
    try:
        agent = Agent(
            model=model,
            planner=planner,
            tools=tools,
            limits=limits,
            max_concurrency=args.concurrency,
            node_timeout=args.node_timeout,
            allocation=allocator or "off",
        )
        return await agent.run(args.question)
    finally:
        await model.aclose()


def _corpus_tools(common: CommandContext, corpora: list[Path]) -> list[Tool]:
    if not corpora:
        return []
    if common.corpus_search is None:
        raise UserError(
            "--corpus needs the local search of agentflow_tools, whose commands did not load "
            "(see `agentflow search --help`)"
        )
    return [common.corpus_search(corpora)]
