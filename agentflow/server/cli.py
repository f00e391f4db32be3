"""`agentflow serve`: the command that starts the chat backend (registered through the
`agentflow.commands` entry point `serve`, so the core CLI never imports FastAPI)."""

from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from pathlib import Path

import uvicorn

from agentflow.cli._common import CommandContext, Commands
from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.registry import load_tool, planner_names, tool_names
from agentflow.server.app import create_app
from agentflow.server.config import AgentSpec, ServerConfig
from agentflow.server.config_file import load_agents
from agentflow.tool import Tool

__all__ = ["register_serve"]

API_KEYS_ENV = "AGENTFLOW_SERVE_API_KEYS"
"""Comma-separated keys clients must send (AGENTFLOW_API_KEY is the one sent to the model)."""


def register_serve(commands: Commands, common: CommandContext) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common.connection_options()],
        help="serve agents as an OpenAI-compatible chat API",
        description="Serve agents at /v1/chat/completions (streaming: the answer in content, "
        "the plan's progress as reasoning) and /v1/models.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (%(default)s)")
    _add_agent_options(serve)
    _add_operating_options(serve)
    serve.set_defaults(handler=partial(_serve, common))


def _add_agent_options(serve: argparse.ArgumentParser) -> None:
    agent = serve.add_argument_group("the agent (or several, with --config)")
    agent.add_argument("--planner", default="dag", help=f"{', '.join(planner_names())}")
    agent.add_argument("--id", help="the model id clients ask for (default agentflow-PLANNER)")
    agent.add_argument(
        "--corpus", action="append", type=Path, default=[], metavar="FILE.jsonl",
        help="a `search` tool over these passages (repeatable)",
    )  # fmt: skip
    agent.add_argument(
        "--tool", action="append", default=[], metavar="NAME",
        help=f"a registered tool (repeatable): {', '.join(tool_names())}",
    )  # fmt: skip
    agent.add_argument("--max-model-calls", type=int, default=RunLimits.max_model_calls)
    agent.add_argument("--max-tokens", type=int, default=RunLimits.max_tokens)
    agent.add_argument("--concurrency", type=int, default=16, help="nodes of a run at once")
    agent.add_argument(
        "--config", type=Path, help="TOML file of [[agents]] (id, planner, tools, corpus, "
        "limits, model, base_url); replaces the single agent above",
    )  # fmt: skip


def _add_operating_options(serve: argparse.ArgumentParser) -> None:
    ops = serve.add_argument_group("operating")
    ops.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help=f"a key clients must send (repeatable; env {API_KEYS_ENV}, comma-separated)",
    )  # fmt: skip
    ops.add_argument("--max-runs", type=int, default=8, help="runs in flight (%(default)s)")
    ops.add_argument("--max-queue", type=int, default=32, help="runs waiting (%(default)s)")
    ops.add_argument("--run-timeout", type=float, default=600.0, help="seconds per run")
    ops.add_argument("--grace", type=float, default=30.0, help="seconds to finish at SIGTERM")
    ops.add_argument("--keepalive", type=float, default=10.0, help="seconds between keepalives")
    ops.add_argument("--trace-ttl", type=float, default=3600.0, help="seconds runs are kept")
    ops.add_argument(
        "--remind-after", type=int, default=4, metavar="TURNS",
        help="restate standing instructions after this many user turns (0: never)",
    )  # fmt: skip
    ops.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN")


def _serve(common: CommandContext, args: argparse.Namespace) -> int:
    config = build_config(common, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(config, grace=args.grace)
    ids = ", ".join(spec.id for spec in config.agents)
    print(f"serving {ids} at http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=int(args.grace),
        log_level="warning",
    )
    return 0


def build_config(common: CommandContext, args: argparse.Namespace) -> ServerConfig:
    """The server's configuration from the command line (and the --config file)."""
    settings = common.settings(args)
    model = OpenAIModel.from_settings(settings, common.base_urls(args, settings))
    if args.config:
        agents = load_agents(args.config, model, partial(_tools, common), settings)
    else:
        agents = (_single_agent(common, args, model),)
    env_keys = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return ServerConfig(
        agents=agents,
        api_keys=frozenset([*args.api_key, *env_keys]),
        max_runs=_positive(args.max_runs, "--max-runs"),
        max_queue=max(0, args.max_queue),
        run_timeout=args.run_timeout,
        keepalive=args.keepalive,
        trace_ttl=args.trace_ttl,
        remind_after_turns=args.remind_after or None,
        cors_origins=tuple(args.cors_origin),
    )


def _single_agent(
    common: CommandContext, args: argparse.Namespace, model: OpenAIModel
) -> AgentSpec:
    return AgentSpec(
        id=args.id or f"agentflow-{args.planner}",
        model=model,
        planner=args.planner,
        tools=_tools(common, args.corpus, args.tool),
        limits=RunLimits(max_model_calls=args.max_model_calls, max_tokens=args.max_tokens),
        max_concurrency=_positive(args.concurrency, "--concurrency"),
    )


def _tools(common: CommandContext, corpora: list[Path], names: list[str]) -> tuple[Tool, ...]:
    tools = [load_tool(name) for name in names]
    if corpora:
        if common.corpus_search is None:
            raise UserError(
                "--corpus needs the local search of agentflow_tools, whose commands did not "
                "load (see `agentflow search --help`)"
            )
        tools.insert(0, common.corpus_search(corpora))
    return tuple(tools)


def _positive(value: int, flag: str) -> int:
    if value < 1:
        raise UserError(f"{flag} must be at least 1, got {value}")
    return value
