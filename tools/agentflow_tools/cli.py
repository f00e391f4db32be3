"""`agentflow search`, `agentflow index` and `agentflow tools`: the local BM25 search from the
command line, and what tools an agent can be given (the built-in ones, an MCP server's).

Registered under the `agentflow.commands` entry points (`search`, `index`, `tools`);
`register_search` also lends the core's `ask --corpus` its search tool, and `register_tools`
lends `--mcp` (ask, eval, serve) its MCP client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from agentflow.cli import CommandContext, Commands, add_mcp_options, whole_number
from agentflow.exceptions import UserError
from agentflow.registry import load_tool, tool_names
from agentflow.tool import Tool, ToolError, ToolSource
from agentflow_tools.mcp_client import DEFAULT_TIMEOUT, MCPServer
from agentflow_tools.search import LocalIndex, cached_indexes, make_search_tool
from agentflow_tools.search.hit import MAX_K

__all__ = ["corpus_search", "mcp_servers", "register_index", "register_search", "register_tools"]


def register_search(commands: Commands, common: CommandContext) -> None:
    common.corpus_search = corpus_search
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
    search.add_argument(
        "-k",
        type=whole_number(1, MAX_K),
        default=10,
        help=f"passages to return, 1-{MAX_K} (default 10)",
    )
    search.add_argument(
        "--json", action="store_true", help="print a JSON list of {id, title, text, score}"
    )
    search.set_defaults(handler=_search)


def register_index(commands: Commands, common: CommandContext) -> None:
    index = commands.add_parser("index", help="build or inspect local search indexes")
    actions = index.add_subparsers(title="actions", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="index JSONL corpora now (with a progress bar)")
    build.add_argument("files", nargs="+", type=Path, metavar="FILE.jsonl")
    build.set_defaults(handler=_index_build)
    info = actions.add_parser("info", help="list cached indexes, or describe the index of FILES")
    info.add_argument("files", nargs="*", type=Path, metavar="FILE.jsonl")
    info.set_defaults(handler=_index_info)


def corpus_search(corpora: Sequence[Path]) -> Tool:
    """The `search` tool `ask --corpus` gives the agent, after reporting skipped lines."""
    index = LocalIndex.open(corpora)
    _report_skipped(index.info.skipped_lines)
    return make_search_tool(index)


def _report_skipped(skipped: list[str]) -> None:
    for line in skipped[:20]:
        print(f"warning: {line}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"warning: ... and {len(skipped) - 20} more skipped lines", file=sys.stderr)


def _search(args: argparse.Namespace) -> int:
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


def _index_build(args: argparse.Namespace) -> int:
    index = LocalIndex.open(args.files, progress=True)
    _report_skipped(index.info.skipped_lines)
    info = index.info
    print(
        f"{info.passages} passages ({info.duplicates} duplicates dropped, "
        f"{len(info.skipped_lines)} lines skipped) in {info.path}"
    )
    return 0


def _index_info(args: argparse.Namespace) -> int:
    infos = [LocalIndex.open(args.files).info] if args.files else cached_indexes()
    if not infos:
        print("no cached indexes")
    for info in infos:
        print(json.dumps(asdict(info), indent=2))
    return 0


def register_tools(commands: Commands, common: CommandContext) -> None:
    common.mcp_servers = mcp_servers
    tools = commands.add_parser("tools", help="list the tools an agent can be given")
    actions = tools.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="the built-in tools, and those of the MCP servers named with --mcp",
        description="Print each tool's name, description and arguments: the built-in tools "
        "(--tool NAME, and search with --corpus), then those each --mcp server offers.",
    )
    add_mcp_options(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list of tools")
    listing.set_defaults(handler=_tools_list)


def mcp_servers(specs: Sequence[str], timeout: float | None = None) -> list[ToolSource]:
    """The MCP servers of `--mcp`: each a URL (streamable HTTP) or a command line (stdio)."""
    return [MCPServer.from_spec(spec, timeout=timeout or DEFAULT_TIMEOUT) for spec in specs]


def _tools_list(args: argparse.Namespace) -> int:
    servers = mcp_servers(args.mcp, args.mcp_timeout)  # bad specs fail before anything runs
    groups: list[tuple[str, list[Tool]]] = [("built in", _builtin_tools())]
    for server in servers:
        assert isinstance(server, MCPServer)
        try:
            groups.append((f"MCP server {server.label}", asyncio.run(server.list_tools())))
        except ToolError as exc:
            raise UserError(str(exc)) from None
    if args.json:
        rows = [_tool_row(item) | {"source": source} for source, items in groups for item in items]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for source, items in groups:
        print(f"{source}:" if items else f"{source}: (no tools)")
        for item in items:
            print(f"  {item.name}\n    {item.description}")
            print(f"    arguments: {_arguments(item.parameters)}")
    return 0


def _builtin_tools() -> list[Tool]:
    """The registered tools, and `search` (built over the corpora of `--corpus`)."""
    tools = []
    for name in tool_names():
        try:
            tools.append(load_tool(name))
        except UserError as exc:  # its extra is not installed
            print(f"warning: {exc}", file=sys.stderr)
    # Described, never called: the index is only given with --corpus.
    return [*tools, make_search_tool(cast(LocalIndex, None))]


def _tool_row(item: Tool) -> dict[str, Any]:
    return {"name": item.name, "description": item.description, "parameters": item.parameters}


def _arguments(schema: dict[str, Any]) -> str:
    """`name (type, required): description, ...` from a JSON schema's properties."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    parts = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type") or ("|".join(str(s.get("type")) for s in spec.get("anyOf", [])))
        flags = ", ".join(str(f) for f in (kind or "any", "required" if name in required else ""))
        about = f": {spec['description']}" if spec.get("description") else ""
        parts.append(f"{name} ({flags.rstrip(', ')}){about}")
    return ", ".join(parts) or "(none)"
