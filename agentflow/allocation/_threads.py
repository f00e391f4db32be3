"""The `threads` strategy (after ThreadWeaver, arXiv 2512.07843): fork, decode apart, join.

1. **Outline.** One chat call under a JSON schema (`{"threads": [...]}`, at most
   `Budget.threads` items) on the node's messages with the outline instruction appended.
2. **Redundancy guard.** Near-duplicate items (the failure ThreadWeaver's authors report) are
   merged before any thread starts; the node's record says how many.
3. **Threads.** The raw prompt of the outline call (the chat template applied once: vLLM's
   `/tokenize` + `/detokenize`) followed by the outline is the shared prefix. Each thread's
   prompt is that prefix plus its own instruction, continued through `/v1/completions`, so the
   server's prefix cache serves the shared part once. A model that cannot continue raw text
   (no `/tokenize` on its server, or not an `OpenAIModel`) gets each thread as one more chat
   turn after the outline instead. The threads run at once, each in an
   executor slot of its own (the node lends its slot meanwhile: `agentflow.slots`), and appear
   in the trace as children of the node (`NodeRecord.parent`); cancelling the node cancels
   every thread still running.
4. **Join.** The prefix, then every thread's instruction and result, then the join
   instruction, continued for the answer.

One System 2 call's tokens are split so the strategy generates no more than a chain would: a
quarter for the outline, a quarter for the join, the other half shared by the threads. The
critical path (the longest chain of dependent tokens, what ThreadWeaver shortens) is the
outline, the longest thread and the join.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import resources
from typing import Any

from agentflow.allocation._estimators import Complete
from agentflow.allocation._forcing import TextModel, no_raw_text_route
from agentflow.exceptions import ModelHTTPError
from agentflow.model import Message, ModelResponse, ModelSettings
from agentflow.slots import lend_slot
from agentflow.trace import EventType, NodeRecord, NodeStatus, Trace

__all__ = [
    "MIN_TOKENS",
    "Outline",
    "Weave",
    "join_instruction",
    "merge_near_duplicates",
    "outline_schema",
    "parse_outline",
    "split_tokens",
    "thread_instruction",
    "weave",
]

MIN_TOKENS = 16
"""Fewest tokens any call of the strategy gets, however small the budget."""
MAX_ITEM_CHARS = 160
"""An outline item is one short instruction: the schema caps it, so an outline cut off by its
token cap still has closed items to salvage."""
SIMILAR = 0.7
"""Two items whose content words overlap this much (Jaccard) are one thread."""

_STOPWORDS = frozenset(
    "a an the of to in on for and or with by from is are be this that these it its as at each "
    "all any find compute calculate determine work out get solve what which how then thread "
    "step part".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:)?')
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.):]|thread\s*\d+\s*[.):]?)\s*", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Outline:
    """The threads an outline asked for, after the redundancy guard and the cap."""

    items: tuple[str, ...]
    written: int
    """Non-empty items the model wrote."""
    merged: int = 0
    """Items dropped as near-duplicates of an earlier one."""
    dropped: int = 0
    """Distinct items beyond the cap on threads."""
    malformed: bool = False
    """The text was not the JSON asked for: items were salvaged from it."""


def outline_schema(max_threads: int) -> dict[str, Any]:
    """The JSON schema of an outline of at most `max_threads` threads."""
    item = {"type": "string", "maxLength": MAX_ITEM_CHARS}
    threads = {"type": "array", "items": item, "minItems": 1, "maxItems": max(1, max_threads)}
    return {
        "type": "object",
        "properties": {"threads": threads},
        "required": ["threads"],
        "additionalProperties": False,
    }


def parse_outline(text: str, max_threads: int) -> Outline:
    """The outline in `text`: JSON as asked (`{"threads": [...]}` or a bare list), else the
    quoted strings of cut-off JSON, else one item per line (bullets and numbers removed).
    Near-duplicates are merged first, then the rest is cut to `max_threads`."""
    raw, malformed = _outline_items(text)
    items = [" ".join(item.split())[:MAX_ITEM_CHARS] for item in raw]
    items = [item for item in items if item]
    kept, merged = merge_near_duplicates(items)
    cap = max(1, max_threads)
    return Outline(
        items=tuple(kept[:cap]),
        written=len(items),
        merged=merged,
        dropped=max(0, len(kept) - cap),
        malformed=malformed,
    )


def _outline_items(text: str) -> tuple[list[str], bool]:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(body)
    except ValueError:
        if body.startswith(("{", "[")):  # cut off mid-JSON: keep the strings that closed
            return [m.group(1) for m in _QUOTED.finditer(body) if not m.group(2)], True
        return [_BULLET.sub("", line) for line in body.splitlines()], True
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = data.get("threads", lists[0] if lists else None)
    if isinstance(data, list):
        return [_item_text(x) for x in data], False
    return ([data] if isinstance(data, str) else []), True


def _item_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):  # {"instruction": "..."}: its first text
        return next((v for v in item.values() if isinstance(v, str)), "")
    return ""


def merge_near_duplicates(items: Sequence[str]) -> tuple[list[str], int]:
    """`items` without the near-duplicates of earlier ones, and how many were dropped."""
    kept: list[str] = []
    for item in items:
        if not any(_similar(item, earlier) for earlier in kept):
            kept.append(item)
    return kept, len(items) - len(kept)


def _similar(a: str, b: str) -> bool:
    words_a, words_b = _content_words(a), _content_words(b)
    if not words_a or not words_b:
        return _WORD.findall(a.lower()) == _WORD.findall(b.lower())
    return len(words_a & words_b) / len(words_a | words_b) >= SIMILAR


def _content_words(text: str) -> set[str]:
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words}


def split_tokens(total: int, threads: int) -> tuple[int, int, int]:
    """(outline, each thread, join) tokens out of `total`: a quarter, half over the threads, a
    quarter; never below `MIN_TOKENS` each."""
    quarter = max(MIN_TOKENS, total // 4)
    each = max(MIN_TOKENS, (total - 2 * quarter) // max(1, threads))
    return quarter, each, quarter


def _prompt(name: str) -> str:
    path = resources.files("agentflow") / "prompts" / name
    return path.read_text(encoding="utf-8").strip()


@dataclass(kw_only=True)
class Weave:
    """One node's threads: what was asked, run and spent."""

    outline: Outline
    prefix: str = ""
    """The shared prefix every thread prompt starts with (empty when nothing was forked, or
    when the threads were chat turns)."""
    transport: str = ""
    """How the threads were sent: `raw` (continuations of `prefix`) or `chat` (turns)."""
    response: ModelResponse | None = None
    """The join's answer, with every call's usage; None when the outline gave no thread."""
    outline_text: str = ""
    """What the outline call wrote, kept in the record when no thread could be read from it."""
    outline_tokens: int = 0
    thread_tokens: list[int] = field(default_factory=list)
    join_tokens: int = 0

    @property
    def critical_path_tokens(self) -> int:
        return self.outline_tokens + max(self.thread_tokens, default=0) + self.join_tokens

    def as_record(self) -> dict[str, Any]:
        return {
            "outlined": self.outline.written,
            "merged": self.outline.merged,
            "dropped": self.outline.dropped,
            "malformed": self.outline.malformed,
            "ran": len(self.thread_tokens),
            "instructions": list(self.outline.items),
            "transport": self.transport,
            "shared_prefix_chars": len(self.prefix),
            **({} if self.outline.items else {"outline_text": self.outline_text[:200]}),
            "tokens": {
                "outline": self.outline_tokens,
                "threads": self.thread_tokens,
                "join": self.join_tokens,
            },
            "critical_path_tokens": self.critical_path_tokens,
        }


async def weave(
    messages: Sequence[Message],
    settings: ModelSettings,
    *,
    total_tokens: int,
    max_threads: int,
    complete: Complete,
    text: TextModel | None,
    trace: Trace,
    node_id: str,
) -> Weave:
    """Outline, threads, join (the module docstring), each call charged through `complete` or
    `text`. `settings` is the request the node's budget makes (its temperature, thinking
    switch); the raw calls take its sampling fields only. Without `text`, or on a server
    that cannot show its raw prompt, the threads and the join are chat turns (`_ChatFork`)."""
    outline_cap, _, join_cap = split_tokens(total_tokens, max_threads)
    instruction = _prompt("threads_outline.md").replace("{max_threads}", str(max_threads))
    asked = _with_instruction(messages, instruction)
    request = replace(settings, max_tokens=outline_cap, n=1, thinking_token_budget=None)
    written = await complete(asked, request, json_schema=outline_schema(max_threads))
    result = Weave(
        outline=parse_outline(written.text, max_threads),
        outline_text=written.text,
        outline_tokens=written.usage.completion_tokens,
    )
    if not result.outline.items:
        return result
    fork = await _fork(asked, written.text, settings, complete, text)
    result.prefix, result.transport = fork.prefix, fork.transport
    each = split_tokens(total_tokens, len(result.outline.items))[1]
    threads = await _run_threads(result, fork, each, trace, node_id)
    results = "".join(f"{head}{answer.text.strip()}\n\n" for head, answer in threads)
    answer = await fork.send(f"{results}{join_instruction()}", join_cap)
    result.join_tokens = answer.usage.completion_tokens
    usage = sum((r.usage for _, r in threads), written.usage + answer.usage)
    choice = replace(answer.choices[0], text=answer.text.strip())
    result.response = ModelResponse(choices=(choice,), usage=usage, model=answer.model)
    return result


@dataclass(frozen=True)
class _RawFork:
    """Threads and join as raw-text continuations of one shared prefix: the prompt of the
    outline call (the chat template applied once) and the outline. The server's prefix cache
    serves that prefix once for all of them."""

    prefix: str
    text: TextModel
    settings: ModelSettings
    transport: str = "raw"

    async def send(self, tail: str, max_tokens: int) -> ModelResponse:
        settings = replace(self.settings, max_tokens=max_tokens)
        return await self.text.complete_text(self.prefix + tail, settings)


@dataclass(frozen=True)
class _ChatFork:
    """Threads and join as one more user turn after the outline, for a model that cannot
    continue raw text: every request repeats the same turns before it, so a prefix cache still
    serves those; the shared prefix is then the server's to know (`prefix` is empty)."""

    messages: tuple[Message, ...]
    complete: Complete
    settings: ModelSettings
    prefix: str = ""
    transport: str = "chat"

    async def send(self, tail: str, max_tokens: int) -> ModelResponse:
        turn: Message = {"role": "user", "content": tail.strip()}
        settings = replace(self.settings, max_tokens=max_tokens)
        return await self.complete([*self.messages, turn], settings)


async def _fork(
    asked: list[Message],
    outline: str,
    settings: ModelSettings,
    complete: Complete,
    text: TextModel | None,
) -> _RawFork | _ChatFork:
    """A raw-text fork when the model can show its raw prompt, else a chat fork. A server
    without vLLM's `/tokenize` answers 404 (or 405/501) there; any other error is raised."""
    if text is not None:
        try:
            rendered = await text.render_prompt(asked, settings.chat_template_kwargs)
        except ModelHTTPError as exc:
            if not no_raw_text_route(exc):
                raise
        else:
            return _RawFork(f"{rendered}{outline.strip()}\n\n", text, _raw(settings))
    turns = (*asked, {"role": "assistant", "content": outline.strip()})
    return _ChatFork(turns, complete, replace(settings, n=1, thinking_token_budget=None))


def thread_instruction(index: int, count: int, instruction: str) -> str:
    """What follows the shared prefix in thread `index`'s prompt (and before its result in
    the join's)."""
    template = _prompt("threads_thread.md")
    filled = template.replace("{index}", str(index)).replace("{count}", str(count))
    return filled.replace("{instruction}", instruction) + "\n"


def join_instruction() -> str:
    """What follows the threads' results in the join's prompt: the end of that prompt."""
    return _prompt("threads_join.md") + "\n"


async def _run_threads(
    weave: Weave, fork: _RawFork | _ChatFork, max_tokens: int, trace: Trace, node_id: str
) -> list[tuple[str, ModelResponse]]:
    """Every thread at once, each a child record of `node_id` and each in an executor slot of
    its own (the node lends its slot meanwhile: `agentflow.slots`); the first failure (or the
    node's cancellation) cancels the rest, and a failure is raised as itself."""
    items = weave.outline.items
    heads = [thread_instruction(i, len(items), item) for i, item in enumerate(items, start=1)]
    records = [_child(trace, node_id, i, item) for i, item in enumerate(items, start=1)]
    sends = [partial(fork.send, head, max_tokens) for head in heads]
    async with lend_slot() as slot:
        tasks = [
            asyncio.create_task(_thread(send, slot, trace, record))
            for send, record in zip(sends, records, strict=True)
        ]
        await _all_or_first_failure(tasks)
    responses = [task.result() for task in tasks]
    weave.thread_tokens = [r.usage.completion_tokens for r in responses]
    return list(zip(heads, responses, strict=True))


async def _all_or_first_failure(tasks: list[asyncio.Task[ModelResponse]]) -> None:
    """Wait for every task; on the first failure, or when this task is cancelled, cancel the
    rest and wait for them too, then raise it. Not a `TaskGroup`: on Python 3.11 a failing
    child cancels the task waiting in one for good, so the node's own timeout, should it
    expire afterwards, would surface as a bare cancellation instead of a timeout."""
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    failures = (task.exception() for task in tasks if not task.cancelled())
    failure = next((exc for exc in failures if exc is not None), None)
    if failure is not None:
        raise failure


async def _thread(
    send: Callable[[], Awaitable[ModelResponse]],
    slot: AbstractAsyncContextManager[None],
    trace: Trace,
    record: NodeRecord,
) -> ModelResponse:
    """One thread's request, sent once it has a slot; its record follows it."""
    try:
        async with slot:
            record.status, record.started_at = "running", trace.now()
            trace.emit("started", record.id, parent=record.parent)
            response = await send()
    except asyncio.CancelledError:
        _close(trace, record, "cancelled", error="cancelled with its node")
        raise
    except Exception as exc:
        _close(trace, record, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    record.usage = response.usage  # the parent node was charged: the run's usage counts it once
    record.output = response.text.strip()[:300]
    _close(trace, record, "ok")
    return response


def _child(trace: Trace, node_id: str, index: int, instruction: str) -> NodeRecord:
    parent = trace.nodes.get(node_id)
    record = NodeRecord(
        id=f"{node_id}.t{index}",
        kind="thread",
        deps=[],
        tool=None,
        round=parent.round if parent else 0,
        label=f"thread {index} of {node_id}: {instruction}",
        parent=node_id,
    )
    trace.nodes[record.id] = record
    trace.emit("planned", record.id, label=record.label, parent=node_id)
    return record


def _close(trace: Trace, record: NodeRecord, status: NodeStatus, error: str | None = None) -> None:
    record.status, record.finished_at, record.error = status, trace.now(), error
    if record.started_at is None:  # cancelled while it waited for a slot
        record.started_at = record.finished_at
    event: EventType = "finished" if status == "ok" else "failed"
    trace.emit("cancelled" if status == "cancelled" else event, record.id, error=error)


def _with_instruction(messages: Sequence[Message], instruction: str) -> list[Message]:
    """`messages` with `instruction` appended to the last user message (or as one)."""
    asked = [dict(m) for m in messages]
    if asked and asked[-1].get("role") == "user":
        asked[-1]["content"] = f"{asked[-1].get('content') or ''}\n\n{instruction}"
    else:
        asked.append({"role": "user", "content": instruction})
    return [*asked]


def _raw(settings: ModelSettings) -> ModelSettings:
    """The sampling fields of `settings` that a raw-text completion takes."""
    return ModelSettings(
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        priority=settings.priority,
        timeout=settings.timeout,
    )
