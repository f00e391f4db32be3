"""Web search backends and the search cache, against fake engines on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agentflow.exceptions import UserError
from agentflow.tool import RetryTask, ToolError
from agentflow_tools.search.cache import (
    CachedBackend,
    CacheKey,
    SearchCache,
    default_cache_dir,
    normalize_query,
)
from agentflow_tools.search.hit import SearchHit
from agentflow_tools.search.web import (
    BraveBackend,
    SearxngBackend,
    SerperBackend,
    TavilyBackend,
    WebSearchBackend,
    make_web_search_tool,
    web_backend_from_env,
)

BACKENDS = ["searxng", "tavily", "brave", "serper"]
TIMEOUT = 5.0
"""Client timeout for engines that answer: generous, so a loaded machine does not fail a test."""
SHORT_TIMEOUT = 0.25
"""Client timeout against the engine that never answers: what the timeout tests wait."""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may carry the loopback traffic elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# --- a fake search engine on 127.0.0.1 -------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """dict or list: sent as JSON; str or bytes: sent as they are."""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the server closes)."""


Handler = Callable[[Received], Reply]


class FakeEngine:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with `handler(request)`."""

    def __init__(self) -> None:
        self.handler: Handler = lambda request: Reply(status=599, body="no handler set")
        self.received: list[Received] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            self.received.append(request)
            reply = self.handler(request)
            if reply.hang:
                await self._release.wait()
                return
            writer.write(_encode(reply))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader) -> Received:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query))
    return Received(method=method, path=url.path, query=query, headers=headers, body=body)


def _encode(reply: Reply) -> bytes:
    if isinstance(reply.body, bytes):
        payload, content_type = reply.body, "application/octet-stream"
    elif isinstance(reply.body, str):
        payload, content_type = reply.body.encode(), "text/html; charset=utf-8"
    else:
        payload, content_type = json.dumps(reply.body).encode(), "application/json"
    phrase = (
        HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ else ""
    )
    lines = [
        f"HTTP/1.1 {reply.status} {phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in reply.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    server = FakeEngine()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


# --- what each engine sends back ---------------------------------------------------------------

PAGES = [
    ("https://example.org/paris", "Paris", "Paris is the capital of France."),
    ("https://example.org/lyon", "Lyon", "Lyon is a city in France."),
    ("https://example.org/nice", "Nice", "Nice is on the Riviera."),
]


def ok_body(backend: str) -> dict[str, Any]:
    """A successful answer in the engine's documented shape, with extra fields to ignore."""
    pages = list(enumerate(PAGES, start=1))
    if backend == "searxng":
        results = [
            {"url": u, "title": t, "content": c, "engine": "ddg", "score": 4.0 - rank}
            for rank, (u, t, c) in pages
        ]
        return {"query": "q", "number_of_results": 0, "results": results, "answers": []}
    if backend == "tavily":
        results = [
            {"url": u, "title": t, "content": c, "score": 1 - rank / 10, "raw_content": None}
            for rank, (u, t, c) in pages
        ]
        return {"query": "q", "answer": None, "results": results, "response_time": 1}
    if backend == "brave":
        web = [{"url": u, "title": t, "description": c, "page_age": "x"} for _, (u, t, c) in pages]
        return {"type": "search", "query": {"original": "q"}, "web": {"results": web}}
    organic = [{"link": u, "title": t, "snippet": c, "position": rank} for rank, (u, t, c) in pages]
    return {"searchParameters": {"q": "q", "type": "search"}, "organic": organic, "credits": 1}


def page_hits(*scores: float) -> list[SearchHit]:
    """The hits the first pages should become, with these scores."""
    return [
        SearchHit(id=url, title=title, text=text, score=score, url=url)
        for (url, title, text), score in zip(PAGES, scores, strict=False)
    ]


WRONG_SHAPE: dict[str, Any] = {
    "searxng": {"results": "none today"},
    "tavily": {"detail": {"error": "something odd"}},
    "brave": {"type": "search", "web": {"results": [{"title": "no url here"}]}},
    "serper": {"searchParameters": {"q": "q"}, "organic": [{"title": "no link here"}]},
}


@pytest.fixture
async def make_backend(engine: FakeEngine) -> AsyncIterator[Callable[..., WebSearchBackend]]:
    made: list[WebSearchBackend] = []

    def make(name: str, timeout: float = TIMEOUT) -> WebSearchBackend:
        backend: WebSearchBackend
        if name == "searxng":
            backend = SearxngBackend(engine.url, timeout=timeout)
        elif name == "tavily":
            backend = TavilyBackend("tvly-test", base_url=engine.url, timeout=timeout)
        elif name == "brave":
            backend = BraveBackend("brave-test", base_url=f"{engine.url}/res/v1", timeout=timeout)
        else:
            backend = SerperBackend("serper-test", base_url=engine.url, timeout=timeout)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


# --- each engine's request and answer ------------------------------------------------------


async def test_searxng_request_and_hits(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body=ok_body("searxng"))
    hits = await make_backend("searxng").search("  capital \n of   France ", 2)
    [request] = engine.received
    assert (request.method, request.path) == ("GET", "/search")
    assert request.query == {"q": "capital of France", "format": "json"}
    assert hits == page_hits(3.0, 2.0)


async def test_searxng_under_a_path_prefix(engine: FakeEngine) -> None:
    body = {"results": [{"url": "https://a.example", "title": "A", "content": None}]}
    engine.handler = lambda request: Reply(body=body)
    backend = SearxngBackend(f"{engine.url}/searx/", timeout=TIMEOUT)
    try:
        [hit] = await backend.search("a", 5)
    finally:
        await backend.aclose()
    assert engine.received[0].path == "/searx/search"
    assert (hit.text, hit.score) == ("", 1.0)  # no content, no score: empty text, 1/rank


async def test_tavily_request_and_hits(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body=ok_body("tavily"))
    hits = await make_backend("tavily").search("capital of France", 50)
    [request] = engine.received
    assert (request.method, request.path) == ("POST", "/search")
    assert request.headers["authorization"] == "Bearer tvly-test"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["query"] == "capital of France"
    assert body["max_results"] == 20  # the API's cap, whatever k asks
    assert hits == page_hits(0.9, 0.8, 0.7)


async def test_brave_request_and_hits(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body=ok_body("brave"))
    hits = await make_backend("brave").search("capital of France", 2)
    [request] = engine.received
    assert (request.method, request.path) == ("GET", "/res/v1/web/search")
    assert request.headers["x-subscription-token"] == "brave-test"
    assert request.headers["accept"] == "application/json"
    assert request.query == {"q": "capital of France", "count": "2", "text_decorations": "false"}
    assert hits == page_hits(1.0, 0.5)


async def test_brave_without_web_results_is_empty(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body={"type": "search", "query": {"original": "zz"}})
    assert await make_backend("brave").search("zzzzqqq", 5) == []


async def test_serper_request_and_hits(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body=ok_body("serper"))
    hits = await make_backend("serper").search("capital of France", 3)
    [request] = engine.received
    assert (request.method, request.path) == ("POST", "/search")
    assert request.headers["x-api-key"] == "serper-test"
    assert request.json() == {"q": "capital of France", "num": 3}
    assert hits == page_hits(1.0, 1 / 2, 1 / 3)


@pytest.mark.parametrize("name", BACKENDS)
async def test_results_are_cut_to_k(engine: FakeEngine, make_backend: Any, name: str) -> None:
    engine.handler = lambda request: Reply(body=ok_body(name))
    hits = await make_backend(name).search("france", 1)
    assert [h.title for h in hits] == ["Paris"]


# --- failures become ToolError, and the run goes on -------------------------------------------


FAILURES: dict[str, tuple[Callable[[str], Reply], list[str]]] = {
    "500": (
        lambda name: Reply(status=500, body="Internal error: index exploded"),
        ["search failed: HTTP 500", "index exploded"],
    ),
    "429": (
        lambda name: Reply(status=429, body={"e": "slow down"}, headers={"Retry-After": "7"}),
        ["HTTP 429 (rate limited", "retry after 7 s", "slow down"],
    ),
    "garbage": (
        lambda name: Reply(body="<html><body>Captcha " + "x" * 5000),
        ["with a body that is not JSON", "Captcha"],
    ),
    "wrong shape": (lambda name: Reply(body=WRONG_SHAPE[name]), ["unexpected shape"]),
    "array": (lambda name: Reply(body=[1, 2, 3]), ["unexpected shape"]),
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("name", BACKENDS)
async def test_engine_failure_is_a_tool_error(
    engine: FakeEngine, make_backend: Any, name: str, failure: str
) -> None:
    reply, expected = FAILURES[failure]
    engine.handler = lambda request: reply(name)
    with pytest.raises(ToolError) as caught:
        await make_backend(name).search("france", 3)
    message = str(caught.value)
    assert message.startswith(name)
    assert all(part in message for part in expected), message
    assert len(message) < 400  # an excerpt of the body, not all of it


@pytest.mark.parametrize("name", BACKENDS)
async def test_slow_engine_times_out(engine: FakeEngine, make_backend: Any, name: str) -> None:
    engine.handler = lambda request: Reply(hang=True)
    with pytest.raises(ToolError, match="timed out after 0.25 s"):
        await make_backend(name, timeout=SHORT_TIMEOUT).search("france", 3)


async def test_backend_works_again_after_a_failure(engine: FakeEngine, make_backend: Any) -> None:
    replies = iter([Reply(status=503, body="down"), Reply(body=ok_body("searxng"))])
    engine.handler = lambda request: next(replies)
    backend = make_backend("searxng")
    with pytest.raises(ToolError, match="HTTP 503"):
        await backend.search("france", 3)
    assert len(await backend.search("france", 3)) == 3


async def test_searxng_403_hints_at_the_json_format(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(status=403, body="Forbidden")
    with pytest.raises(ToolError, match="json format"):
        await make_backend("searxng").search("france", 3)


async def test_hosted_401_names_the_key_variable(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(status=401, body={"detail": {"error": "bad key"}})
    with pytest.raises(ToolError, match="BRAVE_API_KEY"):
        await make_backend("brave").search("france", 3)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_engine() -> None:
    backend = SearxngBackend(f"http://127.0.0.1:{_closed_port()}", timeout=TIMEOUT)
    try:
        with pytest.raises(ToolError, match="searxng search failed: http://127.0.0.1"):
            await backend.search("france", 3)
    finally:
        await backend.aclose()


# --- queries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
async def test_empty_query_asks_the_model_again(
    engine: FakeEngine, make_backend: Any, query: str
) -> None:
    with pytest.raises(RetryTask, match="non-empty query"):
        await make_backend("searxng").search(query, 3)
    assert engine.received == []


@pytest.mark.parametrize(("name", "limit"), [("searxng", 2000), ("tavily", 400), ("brave", 400)])
async def test_too_long_query_asks_for_a_shorter_one(
    engine: FakeEngine, make_backend: Any, name: str, limit: int
) -> None:
    engine.handler = lambda request: Reply(body=ok_body(name))
    backend = make_backend(name)
    assert len(await backend.search("w" * limit, 3)) == 3
    with pytest.raises(RetryTask, match=f"{limit + 1} characters.*at most {limit}"):
        await backend.search("w" * (limit + 1), 3)
    assert len(engine.received) == 1


async def test_k_below_one_is_misuse(make_backend: Any) -> None:
    with pytest.raises(UserError, match="k >= 1"):
        await make_backend("searxng").search("france", 0)


# --- construction and configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "variable"),
    [
        (TavilyBackend, "TAVILY_API_KEY"),
        (BraveBackend, "BRAVE_API_KEY"),
        (SerperBackend, "SERPER_API_KEY"),
    ],
)
def test_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, backend: type[TavilyBackend], variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(UserError, match=variable):
        backend()
    monkeypatch.setenv(variable, "  ")
    with pytest.raises(UserError, match=variable):
        backend()
    monkeypatch.setenv(variable, "secret-key")
    made = backend()
    assert "secret-key" not in repr(made)


def test_base_url_must_be_http() -> None:
    with pytest.raises(UserError, match="http:// or https://"):
        SearxngBackend("127.0.0.1:8888")


def test_from_env_unset_means_no_web_search() -> None:
    assert web_backend_from_env({}) is None
    assert web_backend_from_env({"AGENTFLOW_WEB_SEARCH": " "}) is None


def test_from_env_picks_each_backend() -> None:
    keys = {"TAVILY_API_KEY": "t", "BRAVE_API_KEY": "b", "SERPER_API_KEY": "s"}
    cases = {
        "searxng": SearxngBackend,
        "Tavily": TavilyBackend,
        "brave": BraveBackend,
        " serper ": SerperBackend,
    }
    for choice, expected in cases.items():
        env = {"AGENTFLOW_WEB_SEARCH": choice, "AGENTFLOW_SEARXNG_URL": "http://127.0.0.1:8888"}
        backend = web_backend_from_env({**env, **keys}, timeout=3.0)
        assert type(backend) is expected
        assert isinstance(backend, SearxngBackend | TavilyBackend | BraveBackend | SerperBackend)
        assert backend.timeout == 3.0


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_WEB_SEARCH", "searxng")
    monkeypatch.setenv("AGENTFLOW_SEARXNG_URL", "http://127.0.0.1:8888/")
    backend = web_backend_from_env()
    assert isinstance(backend, SearxngBackend)
    assert backend.base_url == "http://127.0.0.1:8888"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTFLOW_WEB_SEARCH": "google"}, "choose one of searxng, tavily, brave, serper"),
        ({"AGENTFLOW_WEB_SEARCH": "searxng"}, "AGENTFLOW_SEARXNG_URL"),
        ({"AGENTFLOW_WEB_SEARCH": "tavily"}, "TAVILY_API_KEY"),
        ({"AGENTFLOW_WEB_SEARCH": "brave", "BRAVE_API_KEY": ""}, "BRAVE_API_KEY"),
        ({"AGENTFLOW_WEB_SEARCH": "serper"}, "SERPER_API_KEY"),
    ],
)
def test_from_env_misconfiguration(env: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        web_backend_from_env(env)


# --- pure wire tests on MockTransport ---------------------------------------------------------


async def test_wire_on_mock_transport_and_reopen_after_aclose() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=ok_body("tavily"))

    transport = httpx2.MockTransport(handler)
    backend = TavilyBackend("tvly-wire", base_url="https://tavily.test", transport=transport)
    assert await backend.search("q", 1) == page_hits(0.9)
    await backend.aclose()
    await backend.aclose()
    assert len(await backend.search("q", 2)) == 2  # a new client after aclose
    await backend.aclose()
    assert str(seen[0].url) == "https://tavily.test/search"
    assert seen[0].headers["authorization"] == "Bearer tvly-wire"
    assert [json.loads(r.content)["max_results"] for r in seen] == [1, 2]


# --- the web_search tool ----------------------------------------------------------------------


async def test_web_search_tool(engine: FakeEngine, make_backend: Any) -> None:
    engine.handler = lambda request: Reply(body=ok_body("searxng"))
    web_search = make_web_search_tool(make_backend("searxng"), k=2)
    assert web_search.name == "web_search"
    assert web_search.description.startswith("Search the web with a short keyword query.")
    assert web_search.parameters["properties"]["query"]["type"] == "string"
    assert web_search.parameters["required"] == ["query"]
    result = await web_search.call({"query": "france"})
    assert result == [hit.as_dict() for hit in page_hits(3.0, 2.0)]
    with pytest.raises(RetryTask):
        await web_search.call({})
    assert web_search.signature_line().startswith("web_search(query: string)")


def test_web_search_tool_needs_k_of_at_least_one() -> None:
    with pytest.raises(UserError):
        make_web_search_tool(SearxngBackend("http://127.0.0.1:1"), k=0)


def test_hit_as_dict() -> None:
    hit = SearchHit(id="doc-1", title="T", text="body", score=0.5)
    assert hit.as_dict() == {"id": "doc-1", "title": "T", "text": "body", "score": 0.5, "url": None}


# --- the cache --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def searxng(engine: FakeEngine, make_backend: Any) -> WebSearchBackend:
    engine.handler = lambda request: Reply(body=ok_body("searxng"))
    backend: WebSearchBackend = make_backend("searxng")
    return backend


async def test_repeated_query_costs_nothing(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path
) -> None:
    cached = CachedBackend(searxng, SearchCache(tmp_path))
    first = await cached.search("capital of France", 3)
    second = await cached.search("capital of France", 3)
    assert second == first
    assert len(engine.received) == 1
    assert cached.name == "searxng"


async def test_cache_normalizes_case_and_whitespace(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path
) -> None:
    cached = CachedBackend(searxng, SearchCache(tmp_path))
    await cached.search("Capital of  FRANCE", 3)
    await cached.search("  capital\tof france ", 3)
    assert len(engine.received) == 1
    await cached.search("capital of france", 2)  # another k: another entry
    await cached.search("capital of spain", 3)
    assert len(engine.received) == 3


def test_cache_key_includes_backend_query_and_k() -> None:
    key = CacheKey.of("searxng", " Ünïcode  Query ", 5)
    assert key.query == normalize_query("ünïcode query") == "ünïcode query"
    assert key.digest == CacheKey.of("searxng", "ÜNÏCODE QUERY", 5).digest
    assert key.digest != CacheKey.of("tavily", "ünïcode query", 5).digest
    assert key.digest != CacheKey.of("searxng", "ünïcode query", 6).digest
    assert normalize_query("ＡＢＣ") == "abc"  # fullwidth forms fold too


async def test_cache_is_shared_through_the_directory(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path
) -> None:
    await CachedBackend(searxng, SearchCache(tmp_path)).search("france", 3)
    another = CachedBackend(searxng, SearchCache(tmp_path))  # as another process would
    assert len(await another.search("france", 3)) == 3
    assert len(engine.received) == 1
    names = await asyncio.to_thread(os.listdir, tmp_path)
    assert [Path(name).suffix for name in names] == [".json"]  # no temporary files left


async def test_cache_ttl(engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path) -> None:
    clock = FakeClock()
    cached = CachedBackend(searxng, SearchCache(tmp_path, ttl=60, clock=clock))
    await cached.search("france", 3)
    clock.now += 59
    await cached.search("france", 3)
    assert len(engine.received) == 1
    clock.now += 2
    await cached.search("france", 3)
    assert len(engine.received) == 2
    clock.now += 30  # the refetch was stored afresh
    await cached.search("france", 3)
    assert len(engine.received) == 2


def test_cache_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="ttl"):
        SearchCache(tmp_path, ttl=0)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'{"version": 1}',
        b'{"version": 99, "backend": "searxng", "query": "france", "k": 3, "stored_at": 0, '
        b'"hits": []}',
        b"[1, 2, 3]",
    ],
)
async def test_corrupt_cache_file_is_a_miss(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path, content: bytes
) -> None:
    cache = SearchCache(tmp_path)
    cached = CachedBackend(searxng, cache)
    await cached.search("france", 3)
    path = cache.path_for(CacheKey.of("searxng", "france", 3))
    path.write_bytes(content)
    assert len(await cached.search("france", 3)) == 3
    assert len(engine.received) == 2
    await cached.search("france", 3)  # the refetch replaced the corrupt file
    assert len(engine.received) == 2


async def test_entry_of_another_key_is_a_miss(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path
) -> None:
    cache = SearchCache(tmp_path)
    cached = CachedBackend(searxng, cache)
    await cached.search("paris", 3)
    paris = cache.path_for(CacheKey.of("searxng", "paris", 3))
    paris.replace(cache.path_for(CacheKey.of("searxng", "lyon", 3)))
    await cached.search("lyon", 3)
    assert len(engine.received) == 2


async def test_failures_are_not_cached(
    engine: FakeEngine, make_backend: Any, tmp_path: Path
) -> None:
    replies = iter([Reply(status=500, body="oops"), Reply(body=ok_body("searxng"))])
    engine.handler = lambda request: next(replies)
    cached = CachedBackend(make_backend("searxng"), SearchCache(tmp_path))
    with pytest.raises(ToolError, match="HTTP 500"):
        await cached.search("france", 3)
    assert len(await cached.search("france", 3)) == 3
    assert len(engine.received) == 2


async def test_concurrent_identical_queries_ask_once(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path
) -> None:
    cached = CachedBackend(searxng, SearchCache(tmp_path))
    results = await asyncio.gather(*(cached.search("France", 3) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert len(engine.received) == 1
    assert cached._flights == {}


async def test_unwritable_cache_still_answers(
    engine: FakeEngine, searxng: WebSearchBackend, tmp_path: Path, caplog: Any
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cached = CachedBackend(searxng, SearchCache(blocker))
    with caplog.at_level(logging.WARNING, logger="agentflow_tools.search.cache"):
        assert len(await cached.search("france", 3)) == 3
        assert len(await cached.search("france", 3)) == 3
    assert len(engine.received) == 2
    assert "cannot write" in caplog.text


async def test_cached_backend_closes_the_inner_backend(tmp_path: Path) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=ok_body("brave")))
    inner = BraveBackend("k", base_url="https://brave.test", transport=transport)
    cached = CachedBackend(inner, SearchCache(tmp_path))
    await cached.search("q", 2)
    await cached.aclose()
    assert inner._client is None


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir({"AGENTFLOW_HOME": str(tmp_path)}) == tmp_path / "search-cache"
    monkeypatch.delenv("AGENTFLOW_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "agentflow" / "search-cache"
    assert SearchCache().directory == tmp_path / ".cache" / "agentflow" / "search-cache"


def test_readers_never_see_half_an_entry(tmp_path: Path) -> None:
    """Writers replace the file atomically: every read is a miss or a whole entry."""
    cache = SearchCache(tmp_path)
    key = CacheKey.of("searxng", "race", 50)
    sizes = {10, 50}
    bad: list[object] = []
    stop = threading.Event()

    def write(n: int) -> None:
        hits = [SearchHit(id=str(i), title="t" * 50, text="x" * 500, score=i) for i in range(n)]
        while not stop.is_set():
            cache.put_sync(key, hits)

    def read() -> None:
        for _ in range(200):
            hits = cache.get_sync(key)
            if hits is not None and len(hits) not in sizes:
                bad.append(hits)

    writers = [threading.Thread(target=write, args=(n,)) for n in sizes]
    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in writers + readers:
        thread.start()
    for thread in readers:
        thread.join()
    stop.set()
    for thread in writers:
        thread.join()
    assert bad == []
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]
