"""Web search backends: a self-hosted SearXNG, and the Tavily, Brave and Serper APIs.

Every backend answers `search(query, k)` with at most `k` `SearchHit`s, best first. A failure
the model should hear about (HTTP error, rate limit, timeout, a body that is not JSON or not of
the documented shape) raises `ToolError` with the status and a short excerpt of the body, so the
run goes on. Misuse found at construction (a missing API key, an unknown backend name) raises
`UserError`.

Queries: whitespace runs are collapsed and the ends stripped. An empty query, or one longer than
the backend allows (`max_query_chars`: 2,000 by default, 400 for Tavily and Brave, whose APIs
reject longer ones), raises `RetryTask`, so the model is told to write a shorter query. Queries
are not cut: a cut query silently asks something else.

Scores: SearXNG and Tavily send one; Brave and Serper rank only, so their score is 1/rank.

Choose a backend with `web_backend_from_env()`: `AGENTFLOW_WEB_SEARCH` = searxng | tavily |
brave | serper (unset: no web search), `AGENTFLOW_SEARXNG_URL` for searxng, and the key in
`TAVILY_API_KEY`, `BRAVE_API_KEY` or `SERPER_API_KEY`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.exceptions import UserError
from agentflow.tool import RetryTask, Tool, ToolError, tool
from agentflow_tools.search.hit import SearchHit

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_TIMEOUT",
    "MAX_QUERY_CHARS",
    "BraveBackend",
    "SearxngBackend",
    "SerperBackend",
    "TavilyBackend",
    "WebSearchBackend",
    "clean_query",
    "make_web_search_tool",
    "web_backend_from_env",
]

MAX_QUERY_CHARS = 2000
"""The longest query any backend accepts; some accept less (`max_query_chars`)."""
DEFAULT_TIMEOUT = 15.0
"""Seconds for one search request."""
BACKEND_NAMES = ("searxng", "tavily", "brave", "serper")
"""The values `AGENTFLOW_WEB_SEARCH` may take."""
_EXCERPT_CHARS = 200


class WebSearchBackend(ABC):
    """A search engine the `web_search` tool can ask. Implementations own their HTTP client."""

    name: str
    """Short name, as in `AGENTFLOW_WEB_SEARCH`; also part of the cache key."""
    max_query_chars: int = MAX_QUERY_CHARS

    @abstractmethod
    async def search(self, query: str, k: int) -> list[SearchHit]:
        """At most `k` hits for `query`, best first; `ToolError` when the engine fails."""

    async def aclose(self) -> None:
        """Close the HTTP client; the backend opens a new one if used again."""
        return None


def clean_query(query: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """`query` with whitespace collapsed; `RetryTask` when it is empty or too long."""
    cleaned = " ".join(query.split())
    if not cleaned:
        raise RetryTask("web search needs a non-empty query: write a few keywords")
    if len(cleaned) > max_chars:
        raise RetryTask(
            f"the query is {len(cleaned)} characters; this search engine takes at most "
            f"{max_chars}: write a shorter keyword query"
        )
    return cleaned


def _check_k(k: int) -> None:
    if k < 1:
        raise UserError(f"web search needs k >= 1 results, got {k}")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > _EXCERPT_CHARS:
        flat = flat[:_EXCERPT_CHARS] + "..."
    return repr(flat)


def _rank_score(rank: int) -> float:
    """1/rank for engines that rank without scoring (rank starts at 1)."""
    return 1.0 / max(rank, 1)


class _Wire(BaseModel):
    """A search engine's JSON answer: validated at the boundary, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")

    def hits(self) -> list[SearchHit]:
        raise NotImplementedError


class _HttpBackend(WebSearchBackend):
    """Shared HTTP plumbing: one lazily made client, error translation, response validation."""

    max_results: ClassVar[int] = 20
    """The most results one request may ask for."""
    wire: ClassVar[type[_Wire]]

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(
                f"{self.name} base URL must start with http:// or https://: {base_url!r}"
            )
        if timeout <= 0:
            raise UserError(f"{self.name} timeout must be positive, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, timeout={self.timeout})"

    async def search(self, query: str, k: int) -> list[SearchHit]:
        cleaned = clean_query(query, self.max_query_chars)
        _check_k(k)
        request = self._request(self._http(), cleaned, min(k, self.max_results))
        response = await self._send(request)
        return self._parse(response)[:k]

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @abstractmethod
    def _request(self, client: httpx2.AsyncClient, query: str, n: int) -> httpx2.Request:
        """The HTTP request asking for `n` results."""

    def _hint(self, status: int) -> str:
        """What an error status likely means for this engine ("" when nothing useful)."""
        if status == 429:
            return "rate limited: too many requests or quota used up"
        return ""

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self.timeout, transport=self._transport)
        return self._client

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._http().send(request)
        except httpx2.TimeoutException as exc:
            raise ToolError(f"{self.name} search timed out after {self.timeout:g} s") from exc
        except httpx2.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ToolError(f"{self.name} search failed: {self.base_url}: {reason}") from exc
        if not response.is_success:
            raise self._status_error(response)
        return response

    def _status_error(self, response: httpx2.Response) -> ToolError:
        status = response.status_code
        hint = self._hint(status)
        retry_after = response.headers.get("retry-after")
        if status == 429 and retry_after:
            unit = " s" if retry_after.strip().isdigit() else ""
            hint += f"; retry after {retry_after.strip()}{unit}"
        detail = f" ({hint})" if hint else ""
        body = _excerpt(response.text)
        return ToolError(f"{self.name} search failed: HTTP {status}{detail}; body: {body}")

    def _parse(self, response: httpx2.Response) -> list[SearchHit]:
        try:
            data = json.loads(response.content)
        except ValueError as exc:
            raise ToolError(
                f"{self.name} answered HTTP {response.status_code} with a body that is not "
                f"JSON: {_excerpt(response.text)}"
            ) from exc
        try:
            wire = self.wire.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "top level"
            raise ToolError(
                f"{self.name} answered JSON of an unexpected shape ({where}: {error['msg']}): "
                f"{_excerpt(response.text)}"
            ) from exc
        return wire.hits()


# SearXNG: GET {base}/search?q=...&format=json -> {"results": [{url, title, content, score}]}
# (docs.searxng.org/dev/search_api; the json format must be enabled in settings.yml).


class _ScoredResult(BaseModel):
    url: str
    title: str = ""
    content: str | None = None
    score: float | None = None


class _ScoredWire(_Wire):
    """The shape SearXNG and Tavily share: `results` with url, title, content and score."""

    results: list[_ScoredResult]

    def hits(self) -> list[SearchHit]:
        return [
            SearchHit(
                id=r.url,
                title=r.title,
                text=r.content or "",
                score=r.score if r.score is not None else _rank_score(rank),
                url=r.url,
            )
            for rank, r in enumerate(self.results, start=1)
        ]


class SearxngBackend(_HttpBackend):
    """A SearXNG instance (self-hosted: public ones usually disable the JSON format)."""

    name = "searxng"
    wire = _ScoredWire

    def _request(self, client: httpx2.AsyncClient, query: str, n: int) -> httpx2.Request:
        # SearXNG has no result-count parameter: it sends one page and `search` keeps `k`.
        params = {"q": query, "format": "json"}
        return client.build_request("GET", f"{self.base_url}/search", params=params)

    def _hint(self, status: int) -> str:
        if status == 403:
            return "is the json format enabled under search.formats in the instance's settings.yml?"
        return super()._hint(status)


class _KeyedBackend(_HttpBackend):
    """A hosted API that takes a key from the environment."""

    key_env: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url or self.default_base_url, timeout=timeout, transport=transport)
        self._api_key = _require_key(self.name, self.key_env, api_key, os.environ)

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            return f"the API key was refused: check {self.key_env}"
        return super()._hint(status)


def _require_key(name: str, env_var: str, api_key: str | None, env: Mapping[str, str]) -> str:
    key = (api_key if api_key is not None else env.get(env_var, "")).strip()
    if not key:
        raise UserError(f"{name} web search needs an API key: set {env_var}")
    return key


# Tavily: POST {base}/search, header Authorization: Bearer <key>, JSON {query, max_results<=20,
# ...} -> {"results": [{title, url, content, score}], ...} (docs.tavily.com/documentation/
# api-reference/endpoint/search; tavily-python AsyncTavilyClient). Queries over 400 characters
# are refused with HTTP 400.


class TavilyBackend(_KeyedBackend):
    """The Tavily search API; the key comes from `TAVILY_API_KEY` unless given."""

    name = "tavily"
    wire = _ScoredWire
    key_env = "TAVILY_API_KEY"
    default_base_url = "https://api.tavily.com"
    max_query_chars = 400

    def _request(self, client: httpx2.AsyncClient, query: str, n: int) -> httpx2.Request:
        body = {
            "query": query,
            "max_results": n,
            "search_depth": "basic",
            "include_answer": False,
            "include_raw_content": False,
            "include_images": False,
        }
        headers = {"Authorization": f"Bearer {self._api_key}"}
        return client.build_request("POST", f"{self.base_url}/search", json=body, headers=headers)


# Brave: GET {base}/web/search?q=...&count=<=20, header X-Subscription-Token: <key>
# -> {"type": "search", "web": {"results": [{title, url, description}]}, ...}; "web" is absent
# when nothing matched (api-dashboard.search.brave.com/api-reference/web/search/get; q is at
# most 400 characters and 50 words).


class _BraveResult(BaseModel):
    url: str
    title: str = ""
    description: str | None = None


class _BraveWeb(BaseModel):
    results: list[_BraveResult] = Field(default_factory=list)


class _BraveWire(_Wire):
    type: Literal["search"]
    web: _BraveWeb | None = None

    def hits(self) -> list[SearchHit]:
        results = self.web.results if self.web is not None else []
        return [
            SearchHit(
                id=r.url,
                title=r.title,
                text=r.description or "",
                score=_rank_score(rank),
                url=r.url,
            )
            for rank, r in enumerate(results, start=1)
        ]


class BraveBackend(_KeyedBackend):
    """The Brave web search API; the key comes from `BRAVE_API_KEY` unless given."""

    name = "brave"
    wire = _BraveWire
    key_env = "BRAVE_API_KEY"
    default_base_url = "https://api.search.brave.com/res/v1"
    max_query_chars = 400

    def _request(self, client: httpx2.AsyncClient, query: str, n: int) -> httpx2.Request:
        params: dict[str, str | int] = {"q": query, "count": n, "text_decorations": "false"}
        headers = {"X-Subscription-Token": self._api_key, "Accept": "application/json"}
        url = f"{self.base_url}/web/search"
        return client.build_request("GET", url, params=params, headers=headers)


# Serper: POST {base}/search, header X-API-KEY: <key>, JSON {q, num}
# -> {"searchParameters": {...}, "organic": [{title, link, snippet, position}], ...}
# (serper.dev playground examples and client code; no published schema).


class _SerperResult(BaseModel):
    link: str
    title: str = ""
    snippet: str | None = None
    position: int | None = None


class _SerperWire(_Wire):
    search_parameters: dict[str, Any] = Field(alias="searchParameters")
    organic: list[_SerperResult] = Field(default_factory=list)

    def hits(self) -> list[SearchHit]:
        return [
            SearchHit(
                id=r.link,
                title=r.title,
                text=r.snippet or "",
                score=_rank_score(r.position or rank),
                url=r.link,
            )
            for rank, r in enumerate(self.organic, start=1)
        ]


class SerperBackend(_KeyedBackend):
    """The Serper (Google results) API; the key comes from `SERPER_API_KEY` unless given."""

    name = "serper"
    wire = _SerperWire
    key_env = "SERPER_API_KEY"
    default_base_url = "https://google.serper.dev"

    def _request(self, client: httpx2.AsyncClient, query: str, n: int) -> httpx2.Request:
        body = {"q": query, "num": n}
        headers = {"X-API-KEY": self._api_key}
        return client.build_request("POST", f"{self.base_url}/search", json=body, headers=headers)


_HOSTED: dict[str, type[_KeyedBackend]] = {
    "tavily": TavilyBackend,
    "brave": BraveBackend,
    "serper": SerperBackend,
}


def web_backend_from_env(
    env: Mapping[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> WebSearchBackend | None:
    """The backend `AGENTFLOW_WEB_SEARCH` names (read from `env`, default `os.environ`).

    None when it is unset or empty. `UserError` for an unknown name, a searxng choice without
    `AGENTFLOW_SEARXNG_URL`, or a hosted API without its key variable.
    """
    env = os.environ if env is None else env
    raw = env.get("AGENTFLOW_WEB_SEARCH", "")
    choice = raw.strip().lower()
    if not choice:
        return None
    if choice == "searxng":
        url = env.get("AGENTFLOW_SEARXNG_URL", "").strip()
        if not url:
            raise UserError(
                "AGENTFLOW_WEB_SEARCH=searxng needs AGENTFLOW_SEARXNG_URL, "
                "e.g. http://127.0.0.1:8888"
            )
        return SearxngBackend(url, timeout=timeout)
    backend = _HOSTED.get(choice)
    if backend is None:
        raise UserError(
            f"AGENTFLOW_WEB_SEARCH={raw!r} is not a web search backend; "
            f"choose one of {', '.join(BACKEND_NAMES)} or leave it unset"
        )
    key = _require_key(choice, backend.key_env, None, env)
    return backend(key, timeout=timeout)


def make_web_search_tool(backend: WebSearchBackend, k: int = 5, *, timeout: float = 60.0) -> Tool:
    """The `web_search` tool: asks `backend` for `k` hits and returns them as dicts."""
    _check_k(k)

    async def web_search(query: str) -> list[dict[str, Any]]:
        """Search the web with a short keyword query. Returns the top results, best first,
        each with title, url, text (a snippet) and score.

        Write a few keywords, not a whole question with its context.
        """
        hits = await backend.search(query, k)
        return [hit.as_dict() for hit in hits]

    return tool(name="web_search", timeout=timeout)(web_search)
