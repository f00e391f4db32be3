"""Tools: typed, docstringed functions the planner may call, and the `Toolset` that holds them;
`ToolSource`s (an MCP server) whose tools exist only while a run holds them open."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentflow.exceptions import UserError
from agentflow.passages import is_passages, render_passages

__all__ = [
    "OpenTools",
    "PooledSource",
    "RetryTask",
    "Tool",
    "ToolError",
    "ToolSource",
    "Toolset",
    "delimit",
    "open_tools",
    "render_output",
    "split_tools",
    "tool",
]

logger = logging.getLogger("agentflow.tools")


class ToolError(Exception):
    """A tool could not do its job; the message is shown to the model."""


class RetryTask(ToolError):
    """Raised by a tool to send a message back to the model and let it try again."""


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A callable the model can use, with the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    function: Callable[..., Any] = field(repr=False)
    args_model: type[BaseModel] = field(repr=False)
    timeout: float = 60.0
    """Seconds before a call is abandoned and its node fails."""
    max_concurrency: int = 8
    """Calls of this tool allowed at once across a run."""

    async def call(self, args: Mapping[str, Any]) -> Any:
        """Validate `args` and run the function (sync functions run in a worker thread)."""
        try:
            validated = self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            raise RetryTask(f"invalid arguments for {self.name}: {exc.errors()[0]['msg']}") from exc
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        return await asyncio.to_thread(self.function, **kwargs)

    def signature_line(self) -> str:
        """`name(arg: type, ...) - description`, the way prompts list tools."""
        props = self.parameters.get("properties", {})
        args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
        return f"{self.name}({args}) - {self.description}"


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, timeout: float = 60.0, max_concurrency: int = 8
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float = 60.0,
    max_concurrency: int = 8,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed, docstringed function (sync or async) into a `Tool`."""

    def build(fn: Callable[..., Any]) -> Tool:
        args_model = _args_model(fn)
        description = inspect.getdoc(fn)
        if not description:
            raise UserError(f"tool {fn.__name__!r} needs a docstring: the model reads it")
        return Tool(
            name=name or fn.__name__,
            description=description.split("\n\n")[0].replace("\n", " "),
            parameters=args_model.model_json_schema(),
            function=fn,
            args_model=args_model,
            timeout=timeout,
            max_concurrency=max_concurrency,
        )

    return build(function) if function is not None else build


def _args_model(fn: Callable[..., Any]) -> type[BaseModel]:
    hints = inspect.get_annotations(fn, eval_str=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name not in hints:
            raise UserError(f"tool {fn.__name__!r}: parameter {param.name!r} needs a type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    config = ConfigDict(extra="forbid")
    return create_model(f"{fn.__name__}_args", __config__=config, **fields)


class Toolset:
    """Tools by unique name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item if isinstance(item, Tool) else tool(item))

    def add(self, item: Tool) -> None:
        if item.name in self._tools:
            raise UserError(f"two tools are named {item.name!r}; tool names must be unique")
        self._tools[item.name] = item

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def describe(self) -> str:
        """The tool list as prompts show it, a line per tool (empty without tools)."""
        return "\n".join(t.signature_line() for t in self)


async def _nothing() -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class OpenTools:
    """A `ToolSource`'s tools while it is open, and how to close it."""

    tools: tuple[Tool, ...]
    close: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)
    """Closes what `open` opened (a session, a subprocess); never raises."""
    alive: Callable[[], bool] = field(default=lambda: True, repr=False)
    """False once the tools cannot work any more (the server went away): a pool opens anew."""

    async def aclose(self) -> None:
        await self.close()


class ToolSource(ABC):
    """Tools that exist only while something is open, such as an MCP server's session.

    An `Agent` given a source among its tools opens it when a run starts (every source at
    once), runs with its tools beside the static ones, and closes it when the run ends or is
    cancelled: one session per source per run. Wrap a source in `PooledSource` to keep one
    session across runs (a server's)."""

    label: str = "tool source"
    """Names the source in messages (the command line, the URL)."""

    @abstractmethod
    async def open(self) -> OpenTools:
        """Connect and list the tools. Raises `ToolError`, naming the source, if it cannot;
        a cancelled `open` leaves nothing behind."""


class PooledSource(ToolSource):
    """One open session of `source` shared by every run: opened by the first run that needs
    it, kept open across runs (opened anew if it died), closed by `aclose` (at shutdown)."""

    def __init__(self, source: ToolSource) -> None:
        self.source = source
        self.label = source.label
        self._lock = asyncio.Lock()
        self._open: OpenTools | None = None
        self._failures = 0
        self._failed: ToolError | None = None

    async def open(self) -> OpenTools:
        """The open session (opened if none). Runs that waited while an open failed share its
        `ToolError` rather than each wait for a new one (a server hanging until its startup
        timeout would make the tenth run wait ten); a run that comes after tries again."""
        failures = self._failures
        async with self._lock:
            if self._open is not None and not self._open.alive():
                stale, self._open = self._open, None
                await stale.aclose()
            if self._open is None:
                if self._failures != failures and self._failed is not None:
                    raise ToolError(str(self._failed))
                try:
                    self._open = await self.source.open()
                except ToolError as exc:
                    self._failures, self._failed = self._failures + 1, exc
                    raise
            return OpenTools(tools=self._open.tools, alive=self._open.alive)

    async def aclose(self) -> None:
        async with self._lock:
            opened, self._open = self._open, None
        if opened is not None:
            await opened.aclose()


def split_tools(
    items: Iterable[Tool | Callable[..., Any] | ToolSource],
) -> tuple[Toolset, tuple[ToolSource, ...]]:
    """The static tools (functions made `Tool`s) apart from the sources, each in order."""
    static: list[Tool | Callable[..., Any]] = []
    sources: list[ToolSource] = []
    for item in items:
        if isinstance(item, ToolSource):
            sources.append(item)
        else:
            static.append(item)
    return Toolset(static), tuple(sources)


@contextlib.asynccontextmanager
async def open_tools(static: Toolset, sources: Iterable[ToolSource]) -> AsyncIterator[Toolset]:
    """`static` and the tools of every source, opened at once; all closed on the way out
    (also when cancelled). A source that cannot open raises its `ToolError` once the others
    are closed; a tool name met twice is a `UserError` naming both owners."""
    opened = await _open_all(tuple(sources))
    try:
        yield _combined(static, opened)
    finally:
        await _close_all([tools for _, tools in opened])


async def _open_all(sources: tuple[ToolSource, ...]) -> list[tuple[ToolSource, OpenTools]]:
    results: list[OpenTools | Exception | None] = [None] * len(sources)

    async def open_one(index: int) -> None:
        try:
            results[index] = await sources[index].open()
        except Exception as exc:  # kept to raise after the others are closed
            results[index] = exc

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(len(sources)):
                group.create_task(open_one(index))
    finally:  # on cancellation too: what did open is closed
        opened = [(s, r) for s, r in zip(sources, results, strict=True) if isinstance(r, OpenTools)]
        failed = [r for r in results if isinstance(r, Exception)]
        if failed or any(r is None for r in results):
            await _close_all([tools for _, tools in opened])
    if failed:
        raise failed[0]
    return opened


def _combined(static: Toolset, opened: list[tuple[ToolSource, OpenTools]]) -> Toolset:
    tools = Toolset(static)
    owner = dict.fromkeys(static.names, "the agent's own tools")
    for source, open_ in opened:
        for item in open_.tools:
            if item.name in owner:
                raise UserError(
                    f"two tools are named {item.name!r} ({owner[item.name]} and "
                    f"{source.label}); tool names must be unique"
                )
            owner[item.name] = source.label
            tools.add(item)
    return tools


async def _close_all(opened: list[OpenTools]) -> None:
    results = await asyncio.gather(*(o.aclose() for o in opened), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            logger.warning("closing a tool source failed: %s", result)


def render_output(value: Any, budget: int = 4000) -> str:
    """A tool's output as text for the model: search passages one line per hit
    (`agentflow.passages`), other structures as JSON, cut to `budget` characters."""
    if is_passages(value):
        return render_passages(value, budget).text
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > budget:
        text = text[:budget] + f"... [cut: {len(text) - budget} more characters]"
    return text


def delimit(node_id: str, text: str) -> str:
    """`text` fenced as data from node `node_id`, so instructions inside a fetched page or a
    search result read as quoted material, not as part of the prompt.

    Every tag inside the text that could open or close a fence (`</result>`, `</RESULT >`,
    `< result id="x">`, in any case or spacing, and in look-alike forms: fullwidth `＜/result＞`,
    zero-width or other invisible characters inside) loses its `<`, so the data can neither
    close its own block nor forge another one."""
    return f'<result id="{node_id}">\n{_defuse(text)}\n</result>'


_FENCE_TAG = re.compile(r"<(?=\s*/?\s*result\b)", re.IGNORECASE)
_INVISIBLE = {"Cf", "Mn", "Me"}
"""Unicode categories left out when looking for tags: format characters, combining marks."""


def _defuse(text: str) -> str:
    """`text` with the `<` (or look-alike) of every fence tag replaced by `‹`.

    Tags are found in a folded view of the text (NFKC, with format characters such as zero-width
    spaces and combining marks dropped), but only the `<` changes: the rest of the data (`x²`, `ﬁ`,
    fullwidth digits) is left as it was."""
    if text.isascii():
        return _FENCE_TAG.sub("‹", text)
    folded: list[str] = []
    origin: list[int] = []  # the index in `text` of each character of `folded`
    for index, char in enumerate(text):
        if unicodedata.category(char) not in _INVISIBLE:
            form = unicodedata.normalize("NFKC", char)
            folded += form
            origin += [index] * len(form)
    tags = {origin[match.start()] for match in _FENCE_TAG.finditer("".join(folded))}
    return "".join("‹" if index in tags else char for index, char in enumerate(text))
