"""The entry point: builds the parser from the core's command groups and those registered under
the `agentflow.commands` entry points, then runs the chosen handler and turns errors into exit
codes.

The core imports no package above it: `search`, `index` and `eval` come from agentflow_tools and
agentflow_evals through their entry points. A group that cannot be imported (its extra is not
installed) still appears, as a command that says what to install.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from importlib.metadata import EntryPoint, entry_points

from agentflow._version import __version__
from agentflow.cli import ask, model
from agentflow.cli._common import CommandContext, Commands, Register
from agentflow.exceptions import AgentflowError, ExecutionError, UserError
from agentflow.trace import Trace

__all__ = ["COMMAND_GROUP", "DISTRIBUTION", "main"]

COMMAND_GROUP = "agentflow.commands"
DISTRIBUTION = "agentflow-dag"
"""The distribution on PyPI (`agentflow` there is an unrelated project); used in install hints
when an entry point does not say which distribution it came from."""


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    arguments = _join_action(list(sys.argv[1:] if argv is None else argv), commands)
    args = parser.parse_args(arguments)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except ExecutionError as exc:
        return _execution_error(exc, args)
    except AgentflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `agentflow ... | head`: the reader left, nothing is wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _execution_error(exc: ExecutionError, args: argparse.Namespace) -> int:
    """A run that stopped: its trace (with --json), and the best answer it had, if it had one,
    printed as the answer with a warning (exit 0); else the error (exit 1)."""
    best = exc.best_answer if getattr(args, "prints_best_answer", False) else ""
    if getattr(args, "json", False) and isinstance(exc.trace, Trace):
        answer = {"answer": best} if best else {}
        print(json.dumps({**answer, "error": str(exc), "trace": exc.trace.as_dict()}, indent=2))
    elif best:
        print(best)
    if best:
        print(
            f"warning: the run could not finish ({exc}); printed its best answer", file=sys.stderr
        )
        return 0
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _join_action(arguments: list[str], commands: Commands) -> list[str]:
    """`GROUP ACTION ...` becomes `GROUP-ACTION ...` when a group registered a hidden parser of
    that name, so `eval DATASET` and `eval report DIR...` can share a name yet differ in options."""
    if len(arguments) >= 2 and f"{arguments[0]}-{arguments[1]}" in commands.choices:
        return [f"{arguments[0]}-{arguments[1]}", *arguments[2:]]
    return arguments


def _parser() -> tuple[argparse.ArgumentParser, Commands]:
    parser = argparse.ArgumentParser(
        prog="agentflow",
        description="Agentic reasoning and parallel search with LLMs served by vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"agentflow {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    common = CommandContext()
    ask.register(commands, common)
    model.register(commands, common)
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        _register_entry(commands, common, entry)
    return parser, commands


def _register_entry(commands: Commands, common: CommandContext, entry: EntryPoint) -> None:
    if entry.name in commands.choices:
        print(f"warning: {entry.value} ignored: command {entry.name!r} exists", file=sys.stderr)
        return
    try:
        register: Register = entry.load()
    except ImportError as exc:
        _register_unavailable(commands, entry, exc)
        return
    register(commands, common)


def _register_unavailable(commands: Commands, entry: EntryPoint, exc: ImportError) -> None:
    """A stand-in for a group whose module cannot be imported: listed in `--help`, and running
    it says what to install instead of a traceback at start-up."""
    dist = entry.dist.name if entry.dist is not None else DISTRIBUTION
    requirement = f"{dist}[{','.join(entry.extras)}]" if entry.extras else dist
    hint = f"pip install '{requirement}'"
    message = f"`agentflow {entry.name}` is not available ({exc}): {hint}"
    stub = commands.add_parser(entry.name, help=f"(not installed: {hint})", description=message)
    stub.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    stub.set_defaults(handler=partial(_unavailable, message))


def _unavailable(message: str, args: argparse.Namespace) -> int:
    raise UserError(message)
