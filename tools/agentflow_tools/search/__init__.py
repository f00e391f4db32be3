"""Search: a local BM25 index over JSONL corpora (the embedded default), and web search backends."""

from agentflow_tools.search.corpus import CorpusIssue, Passage, read_passages
from agentflow_tools.search.hit import SearchHit
from agentflow_tools.search.local import (
    IndexInfo,
    LocalIndex,
    cached_indexes,
    default_index_dir,
    make_search_tool,
)

__all__ = [
    "CorpusIssue",
    "IndexInfo",
    "LocalIndex",
    "Passage",
    "SearchHit",
    "cached_indexes",
    "default_index_dir",
    "make_search_tool",
    "read_passages",
]
