"""The HTTP client of an MCP session over streamable HTTP: the SDK's timeouts, and a cap on the
size of a JSON response (see `agentflow_tools.mcp_client.MAX_JSON_BYTES`). Imported only when
a session opens (`httpx2` and `mcp` come with the `mcp` extra)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["capped_http_client"]


def capped_http_client(
    headers: Mapping[str, str], max_json_bytes: int, on_cut: Callable[[str], None]
) -> Any:
    """The SDK's HTTP client (its timeouts) over a transport that fails a JSON response body
    past `max_json_bytes`, telling `on_cut` why."""
    import httpx2
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    class CappedBody(httpx2.AsyncByteStream):
        def __init__(self, body: Any) -> None:
            self.body = body

        async def __aiter__(self) -> Any:
            read = 0
            async for chunk in self.body:
                read += len(chunk)
                if read > max_json_bytes:
                    why = f"sent a response past {max_json_bytes:,} bytes"
                    on_cut(why)
                    raise httpx2.ReadError(why)
                yield chunk

        async def aclose(self) -> None:
            await self.body.aclose()

    class CappedTransport(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: Any) -> Any:
            # The cap counts bytes as they arrive: a compressed body would unpack past it.
            request.headers["accept-encoding"] = "identity"
            response = await super().handle_async_request(request)
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                await response.aclose()
                why = "sent a compressed response it was not asked for"
                on_cut(why)
                raise httpx2.ReadError(why)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.stream = CappedBody(response.stream)
            return response

    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    return httpx2.AsyncClient(headers=dict(headers), timeout=timeout, transport=CappedTransport())
