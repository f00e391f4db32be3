"""The `agentflow` command line: a thin shell over the Python API.

One module per command group. The core's groups (`ask`, `model`) live here; packages above the
core add theirs through the `agentflow.commands` entry points, each naming a
`register(commands, common)` function (see `CommandContext`).
"""

from __future__ import annotations

from agentflow.cli._common import (
    CommandContext,
    Commands,
    CorpusSearch,
    McpServers,
    Register,
    add_mcp_options,
    add_otel_option,
    seconds,
    seconds_or_zero,
    whole_number,
)
from agentflow.cli._main import main

__all__ = [
    "CommandContext",
    "Commands",
    "CorpusSearch",
    "McpServers",
    "Register",
    "add_mcp_options",
    "add_otel_option",
    "main",
    "seconds",
    "seconds_or_zero",
    "whole_number",
]
