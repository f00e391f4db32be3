"""`agentflow search` and `agentflow index`: the local BM25 search from the command line.

Registered under the `agentflow.commands` entry points (`search`, `index`); `register_search`
also lends the core's `ask --corpus` its search tool.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from agentflow.cli import CommandContext, Commands, whole_number
from agentflow.exceptions import UserError
from agentflow.tool import Tool, ToolError
from agentflow_tools.search import LocalIndex, cached_indexes, make_search_tool
from agentflow_tools.search.hit import MAX_K

__all__ = ["corpus_search", "register_index", "register_search"]


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
