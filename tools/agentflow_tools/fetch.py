"""Fetch a web page and return its readable text, safely enough to take URLs from a model.

The model chooses the URL, so the fetch must not become a way into the machine's own network
(server-side request forgery). Every hop, the first request and each redirect, is checked by
`check_url` before anything connects:

- only `http` and `https`;
- the host is resolved (`loop.getaddrinfo`; IP literals are used as they are) and refused if any
  of its addresses is loopback, private, link-local, unspecified, multicast, reserved or
  otherwise not globally routable, including IPv4 addresses wrapped in IPv6 (`::ffff:a.b.c.d`,
  6to4, NAT64);
- the request is then sent to the checked address itself (the `Host` header and the TLS server
  name keep the host name, so certificates are still verified against it). The name is never
  resolved a second time, which closes the DNS-rebinding gap between check and connect.

`FetchPolicy.allow_private` and `FetchPolicy.allowed_hosts` lift the address check for code that
fetches from its own network on purpose; `make_fetch_tool` builds a tool with such a policy.
The `fetch_page` tool handed to models keeps the default policy, which allows neither.

The limits, and why:

- `max_bytes` (2 MiB): the body is streamed and reading stops past the cap, keeping what came
  first. Nearly every article's HTML is well under this; a bigger body is an archive, a dump or
  an attack, and the model could not read it anyway. The cap counts decoded bytes, so a
  compressed body cannot expand past it (one network chunk may briefly decode to more).
- `timeout` (20 s) covers the whole fetch, DNS and redirects included: a slow server may not
  hold a plan's branch for longer than a model call would take.
- `max_redirects` (5): more than real sites use; loops end quickly.
- Content types: HTML and XHTML are reduced to their main text with trafilatura; `text/*`,
  JSON and XML are returned as text; anything else (images, PDFs, archives) is refused, since
  its bytes mean nothing to a language model.
- `max_chars` (50,000): the text handed back is cut there; prompts show far less of it.

Environment proxies (`HTTP_PROXY` and friends) are ignored: a proxy would connect on our behalf
to addresses the check never saw.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2

from agentflow.tool import Tool, ToolError, tool

try:
    import trafilatura
except ImportError as _import_error:  # pragma: no cover
    raise ImportError(
        "agentflow_tools.fetch needs trafilatura: pip install 'agentflow-dag[fetch]'"
    ) from _import_error

__all__ = [
    "FetchPolicy",
    "IPAddress",
    "Page",
    "ResolvedURL",
    "blocked_reason",
    "check_url",
    "fetch",
    "fetch_page",
    "make_fetch_tool",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/ld+json"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,*/*;q=0.1"


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    """What a fetch may reach and how much it may read."""

    max_bytes: int = 2 * 1024 * 1024
    """Body bytes read; the rest of a longer body is never downloaded."""
    timeout: float = 20.0
    """Seconds for the whole fetch: DNS, connections, redirects and body."""
    max_redirects: int = 5
    max_chars: int = 50_000
    """Characters of text returned."""
    allow_private: bool = False
    """Allow every address, the machine's own network included. Never for a model's URLs."""
    allowed_hosts: frozenset[str] = frozenset()
    """Hosts (as written in URLs, without brackets or port) exempt from the address check."""
    user_agent: str = "Mozilla/5.0 (compatible; agentflow-fetch)"


@dataclass(frozen=True, kw_only=True)
class ResolvedURL:
    """A URL that passed `check_url`, with the address the request will be sent to."""

    url: httpx2.URL
    address: IPAddress


@dataclass(frozen=True, kw_only=True)
class Page:
    """The readable text of a fetched page."""

    url: str
    """The final URL, after redirects."""
    status: int
    content_type: str
    text: str
    truncated: bool
    """The body was longer than `max_bytes` or the text longer than `max_chars`."""

    def render(self) -> str:
        """The page as the model reads it."""
        note = "\n\n[the page was cut: it is longer than the fetch limit]" if self.truncated else ""
        return f"URL: {self.url}\n\n{self.text or '(the page has no readable text)'}{note}"


@dataclass(frozen=True, kw_only=True)
class _Body:
    url: str
    status: int
    content_type: str
    charset: str | None
    data: bytes
    truncated: bool


async def fetch(url: str, policy: FetchPolicy | None = None) -> Page:
    """Fetch `url` and return its readable text; every failure is a `ToolError` saying why."""
    policy = policy or FetchPolicy()
    try:
        async with asyncio.timeout(policy.timeout):
            body = await _download(url, policy)
    except (TimeoutError, httpx2.TimeoutException) as exc:
        raise ToolError(f"timed out after {policy.timeout:g} s fetching {url}") from exc
    except httpx2.HTTPError as exc:
        raise ToolError(f"could not fetch {url}: {str(exc) or type(exc).__name__}") from exc
    return await asyncio.to_thread(_to_page, body, policy)


async def check_url(url: str | httpx2.URL, policy: FetchPolicy | None = None) -> ResolvedURL:
    """Check one hop: scheme, host, and every address the host resolves to.

    Raises `ToolError` for anything `policy` does not allow. Makes no connection; a host name
    is resolved, an IP literal is not.
    """
    policy = policy or FetchPolicy()
    parsed = _parse_url(url)
    host = parsed.raw_host.decode("ascii")
    addresses = await _resolve(host, parsed.port or _DEFAULT_PORTS[parsed.scheme])
    allowed = {name.lower() for name in policy.allowed_hosts}
    if not (policy.allow_private or parsed.host in allowed):
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None:
                where = host if _ip_literal(host) else f"{host} resolves to {address}, which"
                raise ToolError(
                    f"refused to fetch {parsed}: {where} is {reason}; "
                    "only public internet addresses may be fetched"
                )
    return ResolvedURL(url=parsed, address=_preferred(addresses))


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` must not be fetched ("loopback", "private", ...), or None if it is public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return blocked_reason(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("special-purpose", not address.is_global),
    )
    return next((label for label, hit in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _parse_url(url: str | httpx2.URL) -> httpx2.URL:
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise ToolError(f"not a valid URL: {str(url)!r} ({exc})") from exc
    if not parsed.scheme:
        raise ToolError(f"not a full URL: {str(url)!r}; write it with https://")
    if parsed.scheme not in _DEFAULT_PORTS:
        raise ToolError(f"only http and https URLs can be fetched, not {parsed.scheme}: URLs")
    if not parsed.host:
        raise ToolError(f"the URL {str(url)!r} has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ToolError(f"the URL {str(url)!r} has an invalid port")
    return parsed


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ToolError(f"host {host!r} has no addresses")
    return addresses


def _preferred(addresses: list[IPAddress]) -> IPAddress:
    """IPv4 first: many hosts publish IPv6 addresses that this machine cannot reach."""
    return next((a for a in addresses if a.version == 4), addresses[0])


async def _download(url: str, policy: FetchPolicy) -> _Body:
    async with _client(policy) as client:
        current: str | httpx2.URL = url
        for _ in range(policy.max_redirects + 1):
            target = await check_url(current, policy)
            async with _send(client, target) as response:
                location = _redirect_location(response)
                if location is None:
                    return await _read(response, target.url, policy)
            current = _join(target.url, location)
    raise ToolError(f"too many redirects (more than {policy.max_redirects}) fetching {url}")


def _join(base: httpx2.URL, location: str) -> httpx2.URL:
    try:
        return base.join(location)
    except httpx2.InvalidURL as exc:
        raise ToolError(f"{base} redirects to an invalid URL: {location!r}") from exc


def _client(policy: FetchPolicy) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx2.Timeout(policy.timeout),
        # One connection per request: connections are opened to checked addresses, and a
        # pooled one must not be reused for another host name that shares the address.
        limits=httpx2.Limits(max_keepalive_connections=0),
        headers={"User-Agent": policy.user_agent, "Accept": _ACCEPT},
    )


@contextlib.asynccontextmanager
async def _send(client: httpx2.AsyncClient, target: ResolvedURL) -> AsyncIterator[httpx2.Response]:
    """GET `target.url` from `target.address`, naming the host in `Host` and in TLS SNI."""
    url = target.url
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    request = client.build_request(
        "GET",
        url.copy_with(host=str(target.address)),
        headers={"Host": url.netloc.decode("ascii")},
        extensions=extensions,
    )
    response = await client.send(request, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _redirect_location(response: httpx2.Response) -> str | None:
    if response.status_code in _REDIRECT_STATUSES:
        return response.headers.get("Location")
    return None


async def _read(response: httpx2.Response, url: httpx2.URL, policy: FetchPolicy) -> _Body:
    if response.status_code >= 400:
        raise ToolError(f"HTTP {response.status_code} {response.reason_phrase} for {url}")
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    _check_content_type(content_type, url)
    data, truncated = await _read_capped(response, policy.max_bytes)
    return _Body(
        url=str(url),
        status=response.status_code,
        content_type=content_type,
        charset=response.charset_encoding,
        data=data,
        truncated=truncated,
    )


def _check_content_type(content_type: str, url: httpx2.URL) -> None:
    if not content_type:
        raise ToolError(f"{url} was sent without a Content-Type; only web pages and text are read")
    if not _is_html(content_type) and not _is_text(content_type):
        raise ToolError(
            f"{url} is {content_type}, not a web page or text; "
            "only HTML, plain text, JSON and XML can be read"
        )


def _is_html(content_type: str) -> bool:
    return content_type in _HTML_TYPES


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in _TEXT_TYPES
        or content_type.endswith(("+json", "+xml"))
    )


async def _read_capped(response: httpx2.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(response.aiter_bytes()) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


def _to_page(body: _Body, policy: FetchPolicy) -> Page:
    if _is_html(body.content_type):
        text = _html_text(body.data, body.charset)
    else:
        text = body.data.decode(_codec(body.charset), errors="replace")
    cut = len(text) > policy.max_chars
    return Page(
        url=body.url,
        status=body.status,
        content_type=body.content_type,
        text=text[: policy.max_chars].strip(),
        truncated=body.truncated or cut,
    )


def _html_text(data: bytes, charset: str | None) -> str:
    """The main text (trafilatura); all visible text when no main part is found."""
    html: str | bytes = data if charset is None else data.decode(_codec(charset), errors="replace")
    main = trafilatura.extract(html, include_comments=False, favor_recall=True)
    return main or trafilatura.html2txt(html)


def _codec(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:
        return "utf-8"


def make_fetch_tool(policy: FetchPolicy | None = None, *, name: str = "fetch_page") -> Tool:
    """A page-fetch tool bound to `policy`, e.g. one that may reach an intranet host."""
    policy = policy or FetchPolicy()

    async def fetch_page(url: str) -> str:
        """Fetch a web page by its http(s) URL and return its readable text: HTML is reduced to
        the main content; plain text, JSON and XML are returned as they are.
        """
        return (await fetch(url, policy)).render()

    return tool(name=name, timeout=policy.timeout + 10)(fetch_page)


fetch_page = make_fetch_tool()
"""The tool for models: public addresses only, default limits."""
