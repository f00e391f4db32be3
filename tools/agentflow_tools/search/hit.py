"""`SearchHit`: one result of a search, the same shape for the web backends and the local index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_K", "SearchHit"]

MAX_K = 1000
"""Results one search may return: a search engine allocates for k up front, and a huge k (a
typo) would exhaust memory before it found anything."""


@dataclass(frozen=True, kw_only=True)
class SearchHit:
    """One search result, best first in the lists that hold it."""

    id: str
    """Stable identifier: the URL for web hits, the document id for the local index."""
    title: str
    text: str
    """The snippet (web) or passage (local index) that matched."""
    score: float
    """Higher is better; comparable only within one result list of one backend."""
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, the shape a tool returns to the model."""
        return {
            "id": self.id,
            "title": self.title,
            "text": self.text,
            "score": self.score,
            "url": self.url,
        }
