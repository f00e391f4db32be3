"""A search cache on disk, and `CachedBackend`, which puts it in front of a web backend.

Entries are keyed by (backend name, normalized query, k); normalizing folds case, Unicode
compatibility forms and whitespace, so "Paris  weather" and "paris weather" share an entry.
Each entry is one JSON file, named by the SHA-256 of its key, under the cache directory
(default `$AGENTFLOW_HOME/search-cache`, AGENTFLOW_HOME defaulting to ~/.cache/agentflow).

Concurrency: a file is written to a temporary name in the same directory, then moved over the
old one with `os.replace`, which is atomic, so a reader in any process sees the old entry or the
new one, never part of one. Within one process `CachedBackend` lets one task per key ask the
backend while the others wait for the entry it stores. Two processes that miss at the same time
may both ask the backend; the last write wins.

A file that cannot be read or parsed, has another key, or is older than the TTL is a miss; the
next store overwrites it. Failures are not cached. A cache that cannot be written is logged and
skipped: the search still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agentflow.exceptions import UserError
from agentflow.settings import agentflow_home
from agentflow_tools.search.hit import SearchHit
from agentflow_tools.search.web import WebSearchBackend

__all__ = [
    "CacheKey",
    "CachedBackend",
    "SearchCache",
    "default_cache_dir",
    "normalize_query",
]

logger = logging.getLogger(__name__)


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$AGENTFLOW_HOME/search-cache`, AGENTFLOW_HOME defaulting to ~/.cache/agentflow."""
    return agentflow_home(env) / "search-cache"


def normalize_query(query: str) -> str:
    """The query as the cache sees it: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


@dataclass(frozen=True, kw_only=True)
class CacheKey:
    """What one cache entry answers."""

    backend: str
    query: str
    """Normalized (see `normalize_query`)."""
    k: int

    @classmethod
    def of(cls, backend: str, query: str, k: int) -> CacheKey:
        return cls(backend=backend, query=normalize_query(query), k=k)

    @property
    def digest(self) -> str:
        """SHA-256 hex of the key: the entry's file name."""
        text = json.dumps([self.backend, self.query, self.k], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Entry(BaseModel):
    """One entry file. Files on disk may be truncated, edited or from another version."""

    model_config = ConfigDict(extra="ignore")

    version: Literal[1] = 1
    backend: str
    query: str
    k: int
    stored_at: float
    """Seconds since the epoch (wall clock: comparable across processes)."""
    hits: list[SearchHit]


class SearchCache:
    """Search results on disk, one JSON file per key, with an optional time to live."""

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise UserError(f"search cache ttl must be positive seconds or None, got {ttl}")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.ttl = ttl
        """Seconds an entry stays valid; None: forever."""
        self._clock = clock

    def __repr__(self) -> str:
        return f"SearchCache({str(self.directory)!r}, ttl={self.ttl})"

    def path_for(self, key: CacheKey) -> Path:
        return self.directory / f"{key.digest}.json"

    async def get(self, key: CacheKey) -> list[SearchHit] | None:
        """The stored hits for `key`, or None on a miss (absent, unreadable, corrupt, expired)."""
        return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: CacheKey, hits: list[SearchHit]) -> None:
        """Store `hits` for `key`, replacing any older entry atomically."""
        await asyncio.to_thread(self.put_sync, key, hits)

    def get_sync(self, key: CacheKey) -> list[SearchHit] | None:
        path = self.path_for(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("search cache: cannot read %s: %s", path, exc)
            return None
        try:
            entry = _Entry.model_validate_json(raw)
        except ValidationError:
            logger.info("search cache: ignoring corrupt entry %s", path)
            return None
        if (entry.backend, entry.query, entry.k) != (key.backend, key.query, key.k):
            return None
        if self._expired(entry.stored_at):
            return None
        return list(entry.hits)

    def put_sync(self, key: CacheKey, hits: list[SearchHit]) -> None:
        entry = _Entry(
            backend=key.backend, query=key.query, k=key.k, stored_at=self._clock(), hits=hits
        )
        path = self.path_for(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, entry.model_dump_json())
        except OSError as exc:
            logger.warning("search cache: cannot write %s: %s", path, exc)

    def _expired(self, stored_at: float) -> bool:
        return self.ttl is not None and self._clock() - stored_at > self.ttl


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(eq=False)
class _Flight:
    """The lock for one key while some task of this process is using it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class CachedBackend(WebSearchBackend):
    """`backend` behind `cache`: a repeated query is answered from disk."""

    def __init__(self, backend: WebSearchBackend, cache: SearchCache | None = None) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else SearchCache()
        self.name = backend.name
        self.max_query_chars = backend.max_query_chars
        self._flights: dict[str, _Flight] = {}

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, {self.cache!r})"

    async def search(self, query: str, k: int) -> list[SearchHit]:
        key = CacheKey.of(self.name, query, k)
        async with self._one_at_a_time(key.digest):
            hits = await self.cache.get(key)
            if hits is None:
                hits = await self.backend.search(query, k)
                await self.cache.put(key, hits)
            return hits

    async def aclose(self) -> None:
        await self.backend.aclose()

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, digest: str) -> AsyncIterator[None]:
        flight = self._flights.setdefault(digest, _Flight())
        flight.users += 1
        try:
            async with flight.lock:
                yield
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[digest]
