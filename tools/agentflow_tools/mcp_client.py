"""MCP servers as tools: `MCPServer.stdio(command, args)` and `MCPServer.http(url)`.

An `MCPServer` is a `ToolSource`: an `Agent` opens a session with it when a run starts, offers
the server's tools to the planner beside its own (each with the server's name, description and
input JSON schema), and closes the session when the run ends or is cancelled (the subprocess of
a stdio server is reaped then). Every MCP tool call is an ordinary `Tool` call: branches call
them at once over the one session, and whatever goes wrong (the server exits, hangs past
`timeout`, answers `isError`, or answers off its schema) is a `ToolError` the joiner reads.

The protocol is the official `mcp` SDK's (the `mcp` extra: `pip install 'agentflow-dag[mcp]'`),
imported only when a session opens. Its sessions hold anyio task groups, whose cancel scopes
must be entered and left by one task: each session is owned by a task of its own, which enters
the SDK's `Client`, lists the tools, and waits until it is told to close; calls go through the
client from the callers' tasks (the SDK multiplexes them over the one connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import json
import logging
import math
import os
import re
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel, ConfigDict

from agentflow.exceptions import UserError
from agentflow.redaction import redact_secrets
from agentflow.tool import OpenTools, RetryTask, Tool, ToolError, ToolSource
from agentflow_tools._mcp_http import capped_http_client

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client

__all__ = ["MCPServer", "render_result"]

INSTALL_HINT = "MCP servers need the mcp package: pip install 'agentflow-dag[mcp]'"
DEFAULT_TIMEOUT = 30.0
"""Seconds an MCP tool call may take by default."""
MIN_STARTUP_TIMEOUT = 30.0
"""Seconds starting a session may take at least (a server run by `npx` or `uvx` may install
itself first), unless told otherwise."""
MAX_RESULT_CHARS = 50_000
"""Characters of a tool result kept (as `fetch_page` keeps of a page): a result is pasted into
later prompts whole, and a server may answer megabytes."""
MAX_JSON_BYTES = 16 * 1024 * 1024
"""Bytes of one JSON response an HTTP server may send: past them the call fails, where the SDK
would read an endless body into memory (1.7 GB in 8 s from a lying server). Event streams are
read event by event and left alone."""
_STDERR_TAIL = 1200
"""Characters of a stdio server's stderr quoted when it fails."""
_CLOSING: set[asyncio.Task[None]] = set()
"""Sessions being closed whose closer was cancelled: held until their server is reaped."""


def require_mcp() -> None:
    """Raise a `UserError` with the install hint unless the `mcp` package is installed."""
    if importlib.util.find_spec("mcp") is None:
        raise UserError(INSTALL_HINT)


@dataclass(frozen=True, kw_only=True)
class MCPServer(ToolSource):
    """An MCP server whose tools an agent may call. Build one with `stdio` or `http`.

    >>> Agent(model=model, planner="dag",
    ...       tools=[MCPServer.stdio("python", ["examples/mcp_server.py"])])  # doctest: +SKIP
    """

    label: str
    """The command line or the URL, as messages name the server (secrets masked); the fields
    that may hold secrets as given (args, env, url, headers) are left out of the repr."""
    command: str | None = None
    args: tuple[str, ...] = field(default=(), repr=False)
    env: Mapping[str, str] | None = field(default=None, repr=False)
    """Extra environment for a stdio server (over the SDK's safe default: HOME, PATH, ...)."""
    cwd: Path | None = None
    url: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    """Seconds a tool call may take before it fails."""
    startup_timeout: float | None = None
    """Seconds starting a session (the server, the handshake, the tool list) may take; None:
    `timeout`, but at least `MIN_STARTUP_TIMEOUT`."""
    prefix: str = ""
    """Put before every tool name (`fs_` makes `read` into `fs_read`): two servers may then
    offer tools of the same name."""
    max_concurrency: int = 8
    """Calls of one of its tools allowed at once in a run."""

    def __post_init__(self) -> None:
        for value in (self.timeout, self.startup_timeout or 1):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"an MCP timeout must be a number of seconds above 0, not {value}")
        require_mcp()

    @property
    def start_within(self) -> float:
        """Seconds starting a session may take."""
        return self.startup_timeout or max(self.timeout, MIN_STARTUP_TIMEOUT)

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        startup_timeout: float | None = None,
        prefix: str = "",
    ) -> MCPServer:
        """A server the session starts as a subprocess, talking over its stdin and stdout."""
        if not command.strip():
            raise UserError("an MCP server needs a command")
        return cls(
            label=redact_secrets(shlex.join([command, *args])),
            command=command,
            args=tuple(args),
            env=dict(env) if env is not None else None,
            cwd=Path(cwd) if cwd is not None else None,
            timeout=timeout,
            startup_timeout=startup_timeout,
            prefix=prefix,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        startup_timeout: float | None = None,
        prefix: str = "",
    ) -> MCPServer:
        """A server reached over streamable HTTP at `url` (e.g. `http://127.0.0.1:8000/mcp`)."""
        if not url.startswith(("http://", "https://")):
            raise UserError(f"an MCP server URL starts with http:// or https://, not {url!r}")
        return cls(
            label=redact_secrets(url),
            url=url,
            headers=headers,
            timeout=timeout,
            startup_timeout=startup_timeout,
            prefix=prefix,
        )

    @classmethod
    def from_spec(cls, spec: str, *, timeout: float = DEFAULT_TIMEOUT) -> MCPServer:
        """What `--mcp` takes: a URL (streamable HTTP) or a command line (split like a shell)."""
        if spec.strip().startswith(("http://", "https://")):
            return cls.http(spec.strip(), timeout=timeout)
        try:
            words = shlex.split(spec)
        except ValueError as exc:
            raise UserError(
                f"cannot read the MCP server command {redact_secrets(spec)!r}: {exc}"
            ) from None
        if not words:
            raise UserError("--mcp needs a command line or a URL")
        return cls.stdio(words[0], words[1:], timeout=timeout)

    async def open(self) -> OpenTools:
        """Start a session and list the server's tools (`ToolError` naming the server if the
        server does not start, or not within `start_within` seconds)."""
        session = _Session(self)
        listing = await session.start()
        tools = tuple(_tool(self, session, item) for item in listing)
        return OpenTools(tools=tools, close=session.aclose, alive=session.alive)

    async def list_tools(self) -> list[Tool]:
        """The server's tools as agentflow `Tool`s (a session opened and closed for it)."""
        opened = await self.open()
        await opened.aclose()
        return list(opened.tools)


class _Session:
    """One MCP session, owned by a task of its own (see the module's docstring)."""

    def __init__(self, server: MCPServer) -> None:
        import anyio

        self.server = server
        self.client: Client | None = None
        self.dead = False
        self.cut: str | None = None
        """Why the HTTP transport stopped reading a response (its size cap), if it did."""
        self._scope = anyio.CancelScope()
        """Cancelled to close: the owner then leaves the SDK's contexts in its own task."""
        self._ready: asyncio.Future[list[mcp_types.Tool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._task: asyncio.Task[None] | None = None
        self._stderr: _StderrTail | None = None

    def alive(self) -> bool:
        return not self.dead and self._task is not None and not self._task.done()

    async def start(self) -> list[mcp_types.Tool]:
        # A context of its own: a pooled session outlives the run that opened it, whose
        # context variables (its trace span, its executor slot) must not follow it.
        self._task = asyncio.create_task(
            self._own(), name=f"mcp session {self.server.label}", context=contextvars.Context()
        )
        try:
            return await asyncio.shield(self._ready)
        except BaseException:
            await self.aclose()
            raise

    async def _own(self) -> None:
        """Open the client, list the tools, then hold the session until `aclose` (or the
        server fails to start: the error goes to `start`)."""
        import anyio
        from mcp import Client

        self._scope.deadline = anyio.current_time() + self.server.start_within
        try:
            with self._scope:
                async with contextlib.AsyncExitStack() as stack:
                    target = await self._target(stack)
                    try:
                        client = await stack.enter_async_context(Client(target, cache=None))
                    finally:  # spawned (or not): the child holds its own end of the pipe
                        if self._stderr is not None:
                            self._stderr.spawned()
                    listing = await _list_all(client)
                    self._scope.deadline = math.inf  # started: the session lasts until closed
                    self.client = client
                    self._ready.set_result(listing)
                    await anyio.sleep_forever()
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(self._start_error(exc))
        finally:
            self.dead = True
            if not self._ready.done():  # the deadline, or closed while starting
                self._ready.set_exception(
                    ToolError(f"MCP server {self.server.label} did not start within "
                              f"{self.server.start_within:g} s{self.stderr_tail()}")
                )  # fmt: skip

    async def _target(self, stack: contextlib.AsyncExitStack) -> Any:
        """What the SDK's `Client` connects to: stdio parameters or a streamable-HTTP transport."""
        server = self.server
        if server.url is not None:
            from mcp.client.streamable_http import streamable_http_client

            http = capped_http_client(server.headers or {}, MAX_JSON_BYTES, self._cut)
            await stack.enter_async_context(http)
            return streamable_http_client(server.url, http_client=http)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert server.command is not None
        _quiet_parse_errors()
        # The server's log, kept out of the terminal (its end quoted when the server fails).
        self._stderr = stderr = _StderrTail(server.label)
        assert stderr.writer is not None
        params = StdioServerParameters(
            command=server.command,
            args=list(server.args),
            env=dict(server.env) if server.env is not None else None,
            cwd=server.cwd,
        )
        return stdio_client(params, errlog=stderr.writer)

    def _cut(self, why: str) -> None:
        self.cut = why

    def _start_error(self, exc: Exception) -> ToolError:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        exc = _innermost(exc)
        why = _describe(exc)
        if isinstance(exc, OSError) and self.server.command is not None:
            why = f"cannot run {self.server.command!r}: {exc.strerror or exc}"
        elif isinstance(exc, MCPError) and exc.error.code == CONNECTION_CLOSED:
            why = "it closed the connection (it exited, or does not speak MCP on stdio)"
        return ToolError(f"MCP server {self.server.label} did not start: {why}{self.stderr_tail()}")

    def stderr_tail(self) -> str:
        """The end of a stdio server's stderr, as a suffix for a message ("" if none)."""
        text = self._stderr.text() if self._stderr is not None else ""
        return f"; its stderr ends:\n{text}" if text else ""

    async def aclose(self) -> None:
        """Close the session and wait for the owner to leave it (a stdio server is stopped
        and reaped by then). A cancelled closer leaves the closing to finish on its own."""
        self._scope.cancel()
        task = self._task
        if task is not None and not task.done():
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
            await asyncio.shield(task)
        if self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # seen: a start nobody waited for is no loop warning
        if self._stderr is not None:
            self._stderr.spawned()  # never spawned: the reader is told the pipe's end

    async def call(self, tool: str, name: str, arguments: dict[str, Any]) -> str:
        """Call `name` on the server: its result as text, or a `ToolError` saying what failed."""
        client, server = self.client, self.server
        if client is None or not self.alive():
            raise ToolError(f"MCP server {server.label} is gone{self.stderr_tail()}")
        try:
            async with asyncio.timeout(server.timeout):
                result = await client.call_tool(name, arguments)
        except TimeoutError:
            raise ToolError(
                f"{tool}: MCP server {server.label} did not answer within {server.timeout:g} s"
            ) from None
        except Exception as exc:
            raise self._call_error(tool, exc) from exc
        text = render_result(result)
        if result.is_error:
            raise ToolError(f"{tool} failed: {text}")
        return text

    def _call_error(self, tool: str, exc: Exception) -> ToolError:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED
        from pydantic import ValidationError

        label = self.server.label
        if isinstance(exc, MCPError) and exc.error.code == CONNECTION_CLOSED:
            self.dead = True
            if self.cut:  # the SDK closes the session on the transport's error
                return ToolError(f"{tool}: MCP server {label} {self.cut}; the session is closed")
            return ToolError(
                f"{tool}: MCP server {label} closed the connection (it exited?){self.stderr_tail()}"
            )
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return ToolError(f"{tool}: MCP server {label} sent a malformed result ({where}: "
                             f"{first['msg']})")  # fmt: skip
        return ToolError(f"{tool}: MCP server {label} failed: {_describe(exc)}")


class _NotMCPLines(logging.Filter):
    """Lets through only the first of the SDK's tracebacks for lines a stdio server writes to
    stdout that are not JSON-RPC (a banner, a print left in): a chatty server made thousands
    on agentflow's stderr, and the session goes on without them. The first says what the
    line was, for a server that speaks no MCP at all (it then does not start in time)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Failed to parse JSONRPC message"):
            return True
        first, self.seen = not self.seen, True
        return first


def _quiet_parse_errors() -> None:
    sdk = logging.getLogger("mcp.client.stdio")
    if not any(isinstance(f, _NotMCPLines) for f in sdk.filters):
        sdk.addFilter(_NotMCPLines())


class _StderrTail:
    """A stdio server's stderr: a pipe that a thread of its own reads to the end, keeping only
    the last bytes (a server may log gigabytes over a long session: nothing is written to disk,
    and a chatty server is never blocked on a full pipe)."""

    KEEP = 4 * _STDERR_TAIL

    def __init__(self, label: str) -> None:
        read_end, write_end = os.pipe()
        self.writer: TextIO | None = os.fdopen(write_end, "w", encoding="utf-8")
        """Given to the server as its stderr; ours is closed once it is spawned."""
        self._kept = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._drain, args=(read_end,), name=f"mcp stderr {label}", daemon=True
        )
        self._thread.start()

    def _drain(self, read_end: int) -> None:
        try:
            while chunk := os.read(read_end, 65536):
                with self._lock:
                    self._kept += chunk
                    del self._kept[: -self.KEEP]
        finally:
            os.close(read_end)

    def spawned(self) -> None:
        """Close our copy of the write end: the reader ends when the server does."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def text(self) -> str:
        """The end of what the server wrote (all of it once it exited: waited for, briefly)."""
        if self.writer is None:
            self._thread.join(timeout=0.2)
        with self._lock:
            kept = bytes(self._kept)
        return kept.decode("utf-8", errors="replace")[-_STDERR_TAIL:].strip()


async def _list_all(client: Client) -> list[mcp_types.Tool]:
    """Every tool the server lists, page after page (at most 100 pages)."""
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _innermost(exc: Exception) -> Exception:
    """The first exception inside exception groups (anyio's task groups raise them)."""
    while isinstance(exc, ExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: Exception) -> str:
    """An exception as a short line (an HTTP error may quote the URL: its secrets are masked)."""
    exc = _innermost(exc)
    from mcp import MCPError

    if isinstance(exc, MCPError):
        return exc.error.message
    text = str(exc).strip().splitlines()
    return redact_secrets(f"{type(exc).__name__}: {text[0]}") if text else type(exc).__name__


class _JSONArgs(BaseModel):
    """Stands for an MCP tool's arguments model: they are checked against its JSON schema."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, kw_only=True)
class MCPTool(Tool):
    """A tool of an MCP server: arguments checked against its input schema, then sent."""

    server: str
    """The server's label."""
    remote_name: str
    """The tool's name on the server (without the `prefix`)."""
    validator: Any = field(default=None, repr=False)
    """A `jsonschema` validator of the input schema; None if the schema itself is invalid
    (the server then checks the arguments)."""

    async def call(self, args: Mapping[str, Any]) -> Any:
        arguments = _coerce(dict(args), self.parameters)
        if self.validator is not None:
            from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

            error = best_match(self.validator.iter_errors(arguments))
            if error is not None:
                where = "/".join(str(part) for part in error.absolute_path)
                raise RetryTask(
                    f"invalid arguments for {self.name}: {f'{where}: ' if where else ''}"
                    f"{error.message}"
                )
        return await self.function(self.name, self.remote_name, arguments)


def _tool(server: MCPServer, session: _Session, item: mcp_types.Tool) -> MCPTool:
    schema = dict(item.input_schema or {"type": "object"})
    text = (item.description or item.title or item.name).split("\n\n")[0]
    return MCPTool(
        name=server.prefix + _safe_name(item.name),
        description=" ".join(text.split())[:400],
        parameters=schema,
        function=session.call,
        args_model=_JSONArgs,
        timeout=server.timeout + 5,  # the call's own limit (a clearer message) comes first
        max_concurrency=server.max_concurrency,
        server=server.label,
        remote_name=item.name,
        validator=_validator(schema),
    )


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _safe_name(name: str) -> str:
    """A server's tool name as agentflow offers it: the characters MCP recommends (others
    become `_`), at most 128. Names go into prompts a line per tool: a line break or a fence
    tag in one would write lines of its own."""
    return _UNSAFE_IN_NAME.sub("_", name)[:128] or "_"


def _validator(schema: dict[str, Any]) -> Any:
    """A validator of `schema` that runs none of its regular expressions: the check runs in
    the event loop, and one that backtracks catastrophically (`^(a+)+$`) holds the GIL, which
    froze the whole process. The server checks its own patterns."""
    from jsonschema import SchemaError  # type: ignore[import-untyped]
    from jsonschema.validators import extend, validator_for  # type: ignore[import-untyped]

    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError:
        return None
    additional = cls.VALIDATORS.get("additionalProperties")

    def additional_unless_patterns(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if additional is None or "patternProperties" in schema:  # matching names is regex too
            return ()
        return additional(validator, value, instance, schema)

    def unchecked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        return ()

    checks = {"pattern": unchecked, "patternProperties": unchecked}
    return extend(cls, {**checks, "additionalProperties": additional_unless_patterns})(schema)


_SCALARS: dict[str, Any] = {"integer": int, "number": float}


def _coerce(args: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments with a top-level string made the number or boolean its schema asks for
    (`"3"` -> 3), as a function tool's pydantic model would: planners write text."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return args
    for name, value in args.items():
        spec = properties.get(name)
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if not isinstance(value, str) or not isinstance(kind, str):
            continue
        text = value.strip()
        with contextlib.suppress(ValueError):
            if kind in _SCALARS:
                number = _SCALARS[kind](text)
                args[name] = number
            elif kind == "boolean" and text.lower() in ("true", "false"):
                args[name] = text.lower() == "true"
    return args


def render_result(result: mcp_types.CallToolResult, limit: int = MAX_RESULT_CHARS) -> str:
    """A tool result as text for the model: text blocks as they are, other content described
    (an image by its type and size, never dropped silently), `structuredContent` as JSON when
    no text says it; cut to `limit` characters, saying how many were left out."""
    parts = [_render_block(block) for block in result.content]
    if result.structured_content is not None and not any(
        getattr(block, "type", "") == "text" for block in result.content
    ):
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts) if parts else "(no output)"
    if len(text) > limit:
        text = text[:limit] + f"... [cut: {len(text) - limit} more characters]"
    return text


def _render_block(block: Any) -> str:
    kind = getattr(block, "type", "?")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4
        return f"[{kind}: {block.mime_type}, {size} bytes]"
    if kind == "resource_link":
        return f"[resource link: {block.name} {block.uri}]"
    if kind == "resource":
        inner = block.resource
        if hasattr(inner, "text"):
            return f"[resource {inner.uri}]\n{inner.text}"
        mime = inner.mime_type or "binary"
        return f"[resource {inner.uri}: {mime}, {len(inner.blob) * 3 // 4} bytes]"
    return f"[{kind} content]"
