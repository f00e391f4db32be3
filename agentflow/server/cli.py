"""`agentflow serve`: the command that starts the chat backend (registered through the
`agentflow.commands` entry point `serve`, so the core CLI never imports FastAPI)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from agentflow.cli._common import (
    CommandContext,
    Commands,
    add_mcp_options,
    add_otel_option,
    seconds,
    seconds_or_zero,
    whole_number,
)
from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.registry import load_tool, planner_names, tool_names
from agentflow.server.app import create_app
from agentflow.server.config import AgentSpec, ServerConfig
from agentflow.server.config_file import load_agents, load_replicas
from agentflow.server.service import ChatService
from agentflow.telemetry import exporting
from agentflow.tool import PooledSource, Tool, ToolSource

if TYPE_CHECKING:
    from ray.serve import Application

__all__ = ["ray_app", "register_serve"]


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
    serve.add_argument(
        "--port", type=whole_number(1, 65535), default=8000, help="port, 1-65535 (%(default)s)"
    )
    _add_agent_options(serve)
    add_mcp_options(serve, pooled=True)
    _add_admission_options(serve)
    _add_operating_options(serve)
    _add_replica_options(serve)
    add_otel_option(serve)
    serve.set_defaults(handler=partial(_serve, common), context=common)


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
    agent.add_argument(
        "--max-model-calls", type=whole_number(2), default=RunLimits.max_model_calls,
        help="model calls per run, the answer call included (%(default)s); a request may lower it",
    )  # fmt: skip
    agent.add_argument(
        "--max-tokens", type=whole_number(1), default=RunLimits.max_tokens,
        help="tokens per run, prompts included (%(default)s); a request may lower it",
    )  # fmt: skip
    agent.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=16,
        help="nodes of a run at once (%(default)s)",
    )
    agent.add_argument(
        "--config", type=Path, help="TOML file of [[agents]] (id, planner, tools, corpus, "
        "limits, model, base_url); replaces the single agent above",
    )  # fmt: skip


def _add_admission_options(serve: argparse.ArgumentParser) -> None:
    limits = serve.add_argument_group("admission and limits")
    limits.add_argument(
        "--max-runs", type=whole_number(1), default=ServerConfig.max_runs,
        help="runs in flight (%(default)s). Each sends up to --concurrency requests to the "
        "model server at once and holds its trace (tens of KB); the model client sends one "
        "server 64 requests at once, so more running runs mostly wait there. Per replica "
        "with --replicas",
    )  # fmt: skip
    limits.add_argument(
        "--max-queue", type=whole_number(0), default=ServerConfig.max_queue,
        help="runs waiting for a slot (%(default)s), a few KB each; beyond: 429 with "
        "Retry-After. Per replica with --replicas",
    )  # fmt: skip
    limits.add_argument(
        "--answer-max-tokens", type=whole_number(1), default=ServerConfig.answer_max_tokens,
        help="completion cap of the answer call (%(default)s), inside the run's --max-tokens; "
        "a request's max_tokens may lower it",
    )  # fmt: skip
    limits.add_argument(
        "--run-timeout",
        type=seconds,
        default=ServerConfig.run_timeout,
        help="seconds per run (%(default)s)",
    )
    limits.add_argument(
        "--max-body-mb", type=whole_number(1), default=ServerConfig.max_body_bytes // 2**20,
        help="largest request body in MB (%(default)s); beyond: 413",
    )  # fmt: skip


def _add_operating_options(serve: argparse.ArgumentParser) -> None:
    ops = serve.add_argument_group("operating")
    ops.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help=f"a key clients must send (repeatable; env {API_KEYS_ENV}, comma-separated); "
        "a run can be read back only with the key that made it; an empty or blank key is refused",
    )  # fmt: skip
    ops.add_argument(
        "--grace", type=seconds_or_zero, default=30.0,
        help="seconds running answers may finish after SIGTERM (%(default)s), while new chats "
        "get 503; then they end with an error their clients see (with --replicas, on every "
        "replica)",
    )  # fmt: skip
    ops.add_argument(
        "--keepalive", type=_keepalive, default=ServerConfig.keepalive,
        help=f"seconds of silence in a stream before a keepalive comment, {MIN_KEEPALIVE:g} "
        "to 3600 (%(default)s)",
    )  # fmt: skip
    ops.add_argument(
        "--trace-ttl",
        type=seconds,
        default=ServerConfig.trace_ttl,
        help="seconds runs are kept (%(default)s)",
    )
    ops.add_argument(
        "--keep-runs", type=whole_number(1), default=ServerConfig.runs_kept,
        help="finished runs kept for GET /v1/runs/{id} (%(default)s; ~12 KB each; for all "
        "replicas together)",
    )  # fmt: skip
    ops.add_argument(
        "--keep-runs-mb", type=whole_number(1), default=ServerConfig.runs_kept_bytes // 2**20,
        help="MB the kept runs may take (%(default)s); the oldest go first, the newest stays",
    )  # fmt: skip
    ops.add_argument(
        "--remind-after", type=whole_number(0), default=4, metavar="TURNS",
        help="restate standing instructions after this many user turns (0: never)",
    )  # fmt: skip
    ops.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN")


def _add_replica_options(serve: argparse.ArgumentParser) -> None:
    scale = serve.add_argument_group("replicas (Ray Serve, the serve-ray extra)")
    scale.add_argument(
        "--replicas", type=whole_number(1), metavar="N",
        help="serve from N processes on a Ray Serve instance of its own, started here and "
        "stopped on exit (default: the --config file's `replicas`, else 1: one process, no "
        "Ray). --max-runs and --max-queue are per replica (N times them in all); finished "
        "runs are kept in one store the replicas share, so GET /v1/runs/{id} works from any, "
        "and --keep-runs and --keep-runs-mb bound it for all together; /health, /ready and "
        "/metrics speak for the replica that answers them",
    )  # fmt: skip


MIN_KEEPALIVE = 0.5
"""Seconds: a shorter --keepalive only floods a waiting client with comments."""


def _keepalive(text: str) -> float:
    value = seconds(text)
    if not MIN_KEEPALIVE <= value <= 3600:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_KEEPALIVE:g} and 3600 seconds, not {text}"
        )
    return value


def _serve(common: CommandContext, args: argparse.Namespace) -> int:
    try:
        api_keys(args)
    except UserError as exc:  # a usage mistake like an option out of range: exit 2
        print(f"agentflow serve: error: {exc}", file=sys.stderr)
        return 2
    config = build_config(common, args)
    ids = ", ".join(spec.id for spec in config.agents)
    replicas = _replicas(args)
    if replicas > 1:
        if args.otel is not None:
            raise UserError("--otel traces a single process: it cannot be used with --replicas")
        return _serve_replicas(common, args, config, replicas)
    _log_to_stderr()
    app = create_app(config, grace=args.grace)
    print(f"serving {ids} at http://{args.host}:{args.port}/v1", flush=True)
    uvicorn_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=SHUTDOWN_BACKSTOP,
        log_level="warning",
    )
    with exporting(args.otel) as send_traces:
        _DrainingServer(uvicorn_config, app, args.grace, on_stop=send_traces).run()
    return 0


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _replicas(args: argparse.Namespace) -> int:
    """`--replicas`, else the --config file's `replicas`, else 1."""
    if args.replicas is not None:
        return int(args.replicas)
    return (load_replicas(args.config) if args.config else None) or 1


def _serve_replicas(
    common: CommandContext, args: argparse.Namespace, config: ServerConfig, replicas: int
) -> int:
    """Serve from `replicas` Ray Serve replicas on a Ray of this process's own, until SIGINT
    or SIGTERM; then every replica drains as one process does (/ready and new chats 503,
    running answers --grace seconds, then an error frame) before Serve and Ray stop with
    every process they started."""
    ray_serve = _ray_serve(replicas)
    build = _ReplicaConfig.of(common, args)
    app = ray_serve.application(build, config, replicas=replicas, grace=args.grace)
    ids = ", ".join(spec.id for spec in config.agents)
    with ray_serve.local_ray(cpus=replicas) as temp:
        root = ray_serve.run_locally(app, args.host, args.port)
        print(f"serving {ids} at {root}/v1 from {replicas} replicas (Ray Serve, Ray in {temp})",
              flush=True)  # fmt: skip
        _until_signalled()
        ray_serve.drain(replicas, args.grace)
    return 0


def _ray_serve(replicas: int) -> Any:
    """The replicas module, or a one-line error naming the extra when Ray Serve is missing."""
    try:
        from agentflow.server import replicas as ray_serve
    except ImportError:
        raise UserError(
            f"--replicas {replicas} needs Ray Serve: pip install 'agentflow-dag[serve-ray]'"
        ) from None
    return ray_serve


def _until_signalled() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


@dataclass(frozen=True)
class _ReplicaConfig:
    """Builds a replica's configuration in the replica, from the command line and the
    AGENTFLOW_* environment of the command that deployed it (a replica on another node has
    an environment of its own): models and indexes open in the process that uses them."""

    common: CommandContext
    args: argparse.Namespace
    env: dict[str, str]

    @classmethod
    def of(cls, common: CommandContext, args: argparse.Namespace) -> _ReplicaConfig:
        """Paths made absolute, since a replica's working directory is Ray's."""
        args = argparse.Namespace(**vars(args))
        args.config = args.config.resolve() if args.config else None
        args.corpus = [path.resolve() for path in args.corpus]
        env = {k: v for k, v in os.environ.items() if k.startswith("AGENTFLOW_")}
        return cls(common, args, env)

    def __call__(self) -> ServerConfig:
        os.environ.update(self.env)
        _log_to_stderr()
        return build_config(self.common, self.args)


def ray_app(options: dict[str, str]) -> Application:
    """The Ray Serve application for `serve run` / `serve deploy` on a cluster, from
    `agentflow serve` options: `serve run agentflow.server.cli:ray_app options="--config
    agents.toml --replicas 4"`. Serve's own HTTP options decide where it listens (--host and
    --port are not used)."""
    from agentflow.cli._main import _parser  # the parser with every command group's options

    args = _parser()[0].parse_args(["serve", *shlex.split(options.get("options", ""))])
    common: CommandContext = args.context
    config = build_config(common, args)  # a mistake fails here, not in every replica
    replicas = _replicas(args)
    build = _ReplicaConfig.of(common, args)
    application: Application = _ray_serve(replicas).application(
        build, config, replicas=replicas, grace=args.grace
    )
    return application


SHUTDOWN_BACKSTOP = 5
"""Seconds uvicorn waits for connections once draining is done (their runs have ended, so
only the last frames are still going out)."""


class _DrainingServer(uvicorn.Server):
    """uvicorn that drains before it stops. At SIGTERM (or Ctrl-C) uvicorn would close the
    listener at once, wait up to its own timeout, cancel what is left (clients see a bare
    connection error, the log a traceback) and only then tell the app, which waited its grace
    again. Here the first signal drains the service while still listening: `/ready` says 503,
    new chats get 503, running answers have `grace` seconds, the rest end with an error frame;
    then uvicorn stops. A second signal stops at once: the grace ends, the answers still
    running get the error frame, then uvicorn stops (a third is uvicorn's own)."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        grace: float,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.app = app
        self.grace = grace
        self.on_stop = on_stop
        """Called once the server has shut down, before a signal it caught is re-raised."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None
        self._signals = 0

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:  # inside `serve`: uvicorn re-raises a captured signal once `serve` ends
            if self.on_stop is not None:
                await asyncio.to_thread(self.on_stop)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self.app.state, "service", None)
        if self._loop is None or service is None or self._signals >= 2:
            super().handle_exit(sig, frame)
            return
        self._signals += 1
        if self._signals == 2:  # no more grace
            self._loop.call_soon_threadsafe(service.hurry)
            return
        self._captured_signals.append(sig)  # re-raised by uvicorn once it has stopped
        self._loop.call_soon_threadsafe(self._start_draining, service)

    def _start_draining(self, service: ChatService) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain(service))

    async def _drain(self, service: ChatService) -> None:
        try:
            await service.drain(self.grace)
        finally:
            self.should_exit = True


def build_config(common: CommandContext, args: argparse.Namespace) -> ServerConfig:
    """The server's configuration from the command line (and the --config file)."""
    settings = common.settings(args)
    model = OpenAIModel.from_settings(settings, common.base_urls(args, settings))
    if args.config:
        agents = load_agents(
            args.config, model, partial(_tools, common), settings, partial(_mcp_pools, common)
        )
    else:
        agents = (_single_agent(common, args, model),)
    return ServerConfig(
        agents=agents,
        api_keys=api_keys(args),
        max_runs=args.max_runs,
        max_queue=args.max_queue,
        run_timeout=args.run_timeout,
        keepalive=args.keepalive,
        trace_ttl=args.trace_ttl,
        runs_kept=args.keep_runs,
        runs_kept_bytes=args.keep_runs_mb * 2**20,
        answer_max_tokens=args.answer_max_tokens,
        max_body_bytes=args.max_body_mb * 2**20,
        remind_after_turns=args.remind_after or None,
        cors_origins=tuple(args.cors_origin),
    )


def api_keys(args: argparse.Namespace) -> frozenset[str]:
    """The keys of --api-key and of the environment. An empty or blank one is refused, not
    dropped: it is what `--api-key "$KEY"` with KEY unset gives, and dropping it would serve
    with no key at all (or, kept, let an empty bearer in)."""
    keys = [key.strip() for key in args.api_key]
    if not all(keys):
        raise UserError('--api-key is empty or blank (is the variable in --api-key "$KEY" set?)')
    env = os.environ.get(API_KEYS_ENV)
    if env is not None:
        env_keys = [key.strip() for key in env.split(",")]
        if not all(env_keys):
            raise UserError(
                f"{API_KEYS_ENV} has an empty or blank key ({env!r}): give comma-separated "
                "keys, or unset it to serve without keys"
            )
        keys += env_keys
    return frozenset(keys)


def _single_agent(
    common: CommandContext, args: argparse.Namespace, model: OpenAIModel
) -> AgentSpec:
    return AgentSpec(
        id=args.id or f"agentflow-{args.planner}",
        model=model,
        planner=args.planner,
        tools=_tools(common, args.corpus, args.tool),
        tool_sources=_mcp_pools(common, args.mcp, args.mcp_timeout),
        limits=RunLimits(max_model_calls=args.max_model_calls, max_tokens=args.max_tokens),
        max_concurrency=args.concurrency,
    )


def _mcp_pools(
    common: CommandContext, specs: list[str], timeout: float | None
) -> tuple[ToolSource, ...]:
    """The MCP servers of `--mcp` (or a config file's `mcp`): one session each, opened by the
    first run that needs it and kept for the agent's runs until the server shuts down."""
    return tuple(PooledSource(source) for source in common.mcp_sources(specs, timeout))


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
