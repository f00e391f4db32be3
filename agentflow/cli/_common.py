"""What the core lends every command group: the connection options and the settings built from
them, plus the one service a group above the core provides to another (`ask --corpus`).

It is its own module, not part of `_main`, because the command modules import it and `_main`
imports the core command modules: keeping them together would make an import cycle.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from agentflow.exceptions import UserError
from agentflow.settings import Settings
from agentflow.tool import Tool, ToolSource

__all__ = [
    "CommandContext",
    "Commands",
    "CorpusSearch",
    "McpServers",
    "Register",
    "add_mcp_options",
    "add_otel_option",
    "whole_number",
]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The `add_subparsers()` action a group adds its parsers to (a string: argparse's class is not
subscriptable at run time)."""

CorpusSearch: TypeAlias = Callable[[Sequence[Path]], Tool]
"""Builds the `search` tool over JSONL corpora that `ask --corpus` gives the agent."""

McpServers: TypeAlias = Callable[[Sequence[str], "float | None"], list[ToolSource]]
"""Builds the MCP servers of `--mcp` (each a URL or a command line), given `--mcp-timeout`."""

Register: TypeAlias = Callable[[Commands, "CommandContext"], None]
"""What an `agentflow.commands` entry point names: adds its group's parsers to `commands`."""


@dataclass(kw_only=True)
class CommandContext:
    """Passed to every `register(commands, common)`.

    Groups take the shared options from here instead of importing each other, so a group in a
    package above the core depends on the core only.
    """

    corpus_search: CorpusSearch | None = None
    """Set by the group that owns local search (agentflow_tools): the core's `ask --corpus`
    uses it without importing that package. None until a group provides it."""

    mcp_servers: McpServers | None = None
    """Set by agentflow_tools' `tools` group: what `--mcp` (`add_mcp_options`) builds."""

    def mcp_sources(self, specs: Sequence[str], timeout: float | None = None) -> list[ToolSource]:
        """The MCP servers of `add_mcp_options`' `--mcp` (a `ToolSource` each), with
        `--mcp-timeout`."""
        if not specs:
            return []
        if self.mcp_servers is None:
            raise UserError(
                "--mcp needs the MCP client of agentflow_tools, whose commands did not load "
                "(see `agentflow tools --help`)"
            )
        return self.mcp_servers(specs, timeout)

    def connection_options(self) -> argparse.ArgumentParser:
        """A parent parser (`parents=[...]`) with `--base-url`, `--model`, `--timeout` and
        `--idle-timeout`."""
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
            "--model",
            help="served model name, or an embedded model's short name (smollm2-135m, "
            "qwen2.5-coder-1.5b), which also picks that model's embedded server unless "
            "--base-url is given (env AGENTFLOW_MODEL; default SmolLM2-135M-Instruct)",
        )
        group.add_argument(
            "--timeout",
            type=float,
            help="seconds for one try of a model request: connecting and the whole reply or "
            "stream, however slowly it trickles. A request is tried at most 4 times (a timed-out "
            "try only on another server), so it gives up within 4 x this plus a few seconds of "
            "backoff (env AGENTFLOW_TIMEOUT; default 120)",
        )
        group.add_argument(
            "--idle-timeout",
            type=float,
            metavar="SECONDS",
            help="a streamed answer that sends nothing this long is a dead connection: asked "
            "again if nothing arrived yet, an error otherwise. The wait for the first piece "
            "includes the server's queue and prefill, so set it above the slowest time to "
            "first token under load (env AGENTFLOW_IDLE_TIMEOUT; default: only --timeout "
            "bounds each wait)",
        )
        return common

    def settings(self, args: argparse.Namespace) -> Settings:
        """Settings from the connection options, falling back to the environment."""
        first_url = args.base_url[0] if args.base_url else None
        return Settings.from_env(
            base_url=first_url,
            model=args.model,
            timeout=args.timeout,
            idle_timeout=getattr(args, "idle_timeout", None),
        )

    def base_urls(self, args: argparse.Namespace, settings: Settings) -> list[str]:
        """Every `--base-url` given, or the one the settings name."""
        return list(args.base_url or [settings.base_url])


def add_mcp_options(parser: argparse.ArgumentParser, *, pooled: bool = False) -> None:
    """`--mcp` (repeatable) and `--mcp-timeout`, which `CommandContext.mcp_sources` reads;
    `pooled`: the command keeps one session per server across its runs (`serve`, `mcp`)."""
    group = parser.add_argument_group("MCP servers (needs the `mcp` extra)")
    started = "started once, its session kept across runs" if pooled else "started for each run"
    group.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="CMD_OR_URL",
        help="give the agent the tools of an MCP server (repeatable): a command line such as "
        f'"python server.py" ({started}, over stdio) or an http(s):// URL (streamable HTTP)',
    )
    group.add_argument(
        "--mcp-timeout",
        type=seconds,
        metavar="SECONDS",
        help="seconds an MCP tool call may take (default 30); starting a server may take this "
        "too, but at least 30",
    )


def add_otel_option(parser: argparse.ArgumentParser) -> None:
    """`--otel [ENDPOINT]`: send each run as an OpenTelemetry trace (`agentflow.telemetry`)."""
    parser.add_argument(
        "--otel",
        nargs="?",
        const="",
        type=_otel_endpoint,
        metavar="ENDPOINT",
        help="send every run as an OpenTelemetry trace over OTLP/HTTP to ENDPOINT (e.g. "
        "http://localhost:4318; alone: OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4318). Also on "
        "when OTEL_EXPORTER_OTLP_ENDPOINT is set. No question or answer text unless "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (needs the `otel` extra)",
    )


def _otel_endpoint(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL (give --otel after the question, or its endpoint)"
        )
    return text


def whole_number(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a count in `low`..`high`: a value outside it is a usage error
    (exit 2) naming the bound, never quietly "everything" or "all but a few"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (0, `nan` and `inf` are usage
    errors, never "no limit" or "fail everything")."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, not {text}")
    return value


def seconds_or_zero(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more."""
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds, 0 or more, not {text}"
        )
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
