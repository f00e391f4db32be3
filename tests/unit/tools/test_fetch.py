"""Page fetch against a real HTTP server on 127.0.0.1, and its SSRF checks.

Only loopback is ever connected to. Tests of refused URLs install `no_connections`, which fails
the test if a request is sent at all, so a broken check cannot send traffic anywhere.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from agentflow.tool import ToolError
from agentflow_tools.fetch import (
    FetchPolicy,
    blocked_reason,
    check_url,
    fetch,
    fetch_page,
    make_fetch_tool,
)

ARTICLE = """<!doctype html>
<html><head><title>Cats</title><script>var secret = "script text";</script></head>
<body><nav><a href="/">Home</a></nav>
<article><h1>About cats</h1>
<p>Cats are small carnivorous mammals. They have been living with people for thousands of
years, and they sleep for most of the day.</p>
<p>A second paragraph says that cats purr when they are content.</p></article>
<footer>Copyright footer</footer></body></html>
"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
HUGE_SIZE = 1_000_000
LOOPBACK = frozenset({"127.0.0.1"})


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    stop: threading.Event
    seen: list[tuple[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def finish(self) -> None:
        try:
            super().finish()
        except ConnectionError:
            pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        route = ROUTES.get(self.path.split("?")[0], _not_found)
        try:
            route(self)
        except ConnectionError:
            pass  # the client hung up, as it does past the byte cap or the timeout

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _huge(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(HUGE_SIZE))
    handler.end_headers()
    for _ in range(HUGE_SIZE // 10_000):
        handler.wfile.write(b"x" * 10_000)


def _slow(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"first bytes")
    handler.wfile.flush()
    handler.server.stop.wait(10)


def _not_found(handler: _Handler) -> None:
    handler.reply(404, b"no such page", Content_Type="text/plain")


def _redirect(to: str) -> Any:
    def route(handler: _Handler) -> None:
        port = handler.server.server_address[1]
        handler.reply(302, Location=to.format(port=port))

    return route


ROUTES: dict[str, Any] = {
    "/article": lambda h: h.reply(200, ARTICLE.encode(), Content_Type="text/html; charset=utf-8"),
    "/text": lambda h: h.reply(200, b"plain words\n", Content_Type="text/plain"),
    "/latin1": lambda h: h.reply(
        200, "café".encode("latin-1"), Content_Type="text/plain; charset=iso-8859-1"
    ),
    "/json": lambda h: h.reply(200, b'{"answer": 42}', Content_Type="application/json"),
    "/image": lambda h: h.reply(200, PNG, Content_Type="image/png"),
    "/untyped": lambda h: h.reply(200, b"what am I"),
    "/huge": _huge,
    "/slow": _slow,
    "/relative-redirect": _redirect("/text"),
    "/redirect-to-localhost": _redirect("http://localhost:{port}/after-localhost-redirect"),
    "/redirect-to-file": _redirect("file:///etc/passwd"),
    "/loop": _redirect("/loop"),
}


@dataclass
class Server:
    port: int
    seen: list[tuple[str, str]] = field(repr=False)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.stop = threading.Event()
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(port=httpd.server_address[1], seen=httpd.seen)
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent; the URL should have been refused before")

    monkeypatch.setattr(httpx2.AsyncClient, "send", refuse)


LOCAL = FetchPolicy(allowed_hosts=LOOPBACK)


async def test_html_is_reduced_to_its_text(server: Server) -> None:
    page = await fetch(server.url("/article"), LOCAL)
    assert "Cats are small carnivorous mammals." in page.text
    assert "cats purr" in page.text
    assert "script text" not in page.text
    assert "<p>" not in page.text
    assert (page.status, page.content_type, page.truncated) == (200, "text/html", False)


async def test_plain_text_and_json_come_back_as_they_are(server: Server) -> None:
    assert (await fetch(server.url("/text"), LOCAL)).text == "plain words"
    assert (await fetch(server.url("/json"), LOCAL)).text == '{"answer": 42}'
    assert (await fetch(server.url("/latin1"), LOCAL)).text == "café"


async def test_a_huge_body_is_cut_at_the_byte_cap(server: Server) -> None:
    page = await fetch(server.url("/huge"), FetchPolicy(allowed_hosts=LOOPBACK, max_bytes=50_000))
    assert page.truncated
    assert page.text == "x" * 50_000
    assert "cut" in page.render()


async def test_long_text_is_cut_at_the_character_cap(server: Server) -> None:
    policy = FetchPolicy(allowed_hosts=LOOPBACK, max_chars=5)
    page = await fetch(server.url("/text"), policy)
    assert (page.text, page.truncated) == ("plain", True)


async def test_a_slow_body_times_out(server: Server) -> None:
    with pytest.raises(ToolError, match=r"timed out after 0\.3 s"):
        await fetch(server.url("/slow"), FetchPolicy(allowed_hosts=LOOPBACK, timeout=0.3))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/image", "is image/png, not a web page or text"),
        ("/untyped", "without a Content-Type"),
        ("/missing", "HTTP 404 Not Found"),
        ("/loop", "too many redirects"),
        ("/redirect-to-file", "only http and https"),
    ],
)
async def test_unreadable_responses_are_clear_errors(
    server: Server, path: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await fetch(server.url(path), LOCAL)


async def test_redirects_are_followed(server: Server) -> None:
    page = await fetch(server.url("/relative-redirect"), LOCAL)
    assert page.text == "plain words"
    assert page.url == server.url("/text")


async def test_a_redirect_into_loopback_is_refused(server: Server) -> None:
    with pytest.raises(ToolError, match="localhost resolves to 127.0.0.1, which is loopback"):
        await fetch(server.url("/redirect-to-localhost"), LOCAL)
    assert "/redirect-to-localhost" in server.paths()
    assert "/after-localhost-redirect" not in server.paths()


async def test_a_connection_goes_to_the_checked_address_with_the_host_name(
    server: Server,
) -> None:
    page = await fetch(
        server.url("/text?via=name", host="localhost"), FetchPolicy(allow_private=True)
    )
    assert page.text == "plain words"
    assert ("/text?via=name", f"localhost:{server.port}") in server.seen


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/never-1",
        "http://localhost:{port}/never-2",
        "http://[::1]:{port}/never-3",
        "http://[::ffff:127.0.0.1]:{port}/never-4",
        "http://0.0.0.0:{port}/never-5",
        "http://127.1:{port}/never-6",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://192.168.1.1/",
        "http://[fd00::1]/",
    ],
)
async def test_private_addresses_are_refused_before_connecting(
    server: Server, no_connections: None, url: str
) -> None:
    with pytest.raises(ToolError, match="refused to fetch .* only public internet addresses"):
        await fetch(url.format(port=server.port))
    assert not [path for path in server.paths() if path.startswith("/never")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/file", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/page", "write it with https://"),
        ("http:///no-host", "has no host"),
        ("http://[::1/", "not a valid URL"),
        ("http://127.0.0.1:99999/", "invalid port"),
    ],
)
async def test_bad_urls_are_refused(no_connections: None, url: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await fetch(url)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "special-purpose"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


async def test_check_url_pins_the_resolved_address() -> None:
    resolved = await check_url(
        "http://localhost:8/x", FetchPolicy(allowed_hosts=frozenset({"LOCALHOST"}))
    )
    assert resolved.address == ipaddress.ip_address("127.0.0.1")
    assert resolved.url.host == "localhost"


async def test_allowed_hosts_lift_the_check_for_those_hosts_only() -> None:
    policy = FetchPolicy(allowed_hosts=LOOPBACK)
    assert (await check_url("http://127.0.0.1/", policy)).address.is_loopback
    with pytest.raises(ToolError, match="refused"):
        await check_url("http://[::1]/", policy)


async def test_the_model_tool_never_reaches_private_addresses(
    server: Server, no_connections: None
) -> None:
    assert fetch_page.name == "fetch_page"
    assert fetch_page.parameters["required"] == ["url"]
    with pytest.raises(ToolError, match="loopback"):
        await fetch_page.call({"url": server.url("/text")})


async def test_a_tool_with_its_own_policy(server: Server) -> None:
    local_fetch = make_fetch_tool(FetchPolicy(allow_private=True), name="fetch_local")
    assert local_fetch.name == "fetch_local"
    text = await local_fetch.call({"url": server.url("/text")})
    assert text == f"URL: {server.url('/text')}\n\nplain words"
