"""Schema-constrained answers that a degenerate reply does not sink.

A small model under a JSON schema can loop inside a string (`"answer": "10.5,10.5,10.5,...`)
until `max_tokens` cuts it off: the JSON never closes, and the question would fail on one bad
call. `complete_structured` tries three things before giving up:

1. parse the reply as it is;
2. salvage it: read the reply as partial JSON (an unfinished string, or a number the reply ends
   on, is dropped, not kept) and validate what was complete; a field the schema gives a default
   may be missing;
3. ask once more with a repetition guard (`repetition_penalty`) and a tighter token cap, then
   parse or salvage that reply.

Only then is it a `ModelOutputError`, whose `body` is the last reply: `best_effort_text` reads
from it what a caller can still show (the unfinished string, its loop cut to one repeat).

Every schema goes to the server with all its properties required (`request_schema`), so the
defaults that make salvage possible never let a model skip a field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from agentflow.exceptions import ModelOutputError
from agentflow.model import ModelResponse, ModelSettings, SchemaT

__all__ = ["best_effort_text", "complete_structured", "request_schema", "salvage"]

REPETITION_PENALTY = 1.15
"""vLLM's multiplicative penalty on tokens already seen: bounded, unlike a frequency penalty,
which grows with every quote and comma a JSON reply must repeat."""
GUARDED_MAX_TOKENS = 256
"""The retry's cap when the first call had a larger one (or none): a loop ends sooner."""

Send = Callable[[ModelSettings | None], Awaitable[ModelResponse]]
"""One call under the schema with these settings (the caller charges and traces it)."""
Note = Callable[[str], None]
"""Told what was done about a degenerate reply ("salvaged", "retried")."""


async def complete_structured(
    send: Send, schema: type[SchemaT], settings: ModelSettings | None, note: Note
) -> tuple[SchemaT, ModelResponse]:
    """Parse, salvage, retry once under a repetition guard, salvage; else `ModelOutputError`."""
    for attempt, chosen in enumerate((settings, guarded(settings))):
        response = await send(chosen)
        try:
            return response.parse(schema), response
        except ModelOutputError as error:
            found = salvage(response.text, schema)
            if found is not None:
                note(f"salvaged a {schema.__name__} reply that did not parse ({error})")
                return found, response
            if attempt:
                raise
            note(f"asked again with a repetition guard: the {schema.__name__} reply did not parse")
    raise AssertionError("unreachable: the guarded attempt returns or raises")


def guarded(settings: ModelSettings | None) -> ModelSettings:
    """`settings` with a repetition penalty and a cap of at most `GUARDED_MAX_TOKENS`."""
    settings = settings or ModelSettings()
    cap = min(settings.max_tokens or GUARDED_MAX_TOKENS, GUARDED_MAX_TOKENS)
    return replace(settings, repetition_penalty=REPETITION_PENALTY, max_tokens=cap)


def salvage(text: str, schema: type[SchemaT]) -> SchemaT | None:
    """What of a cut-off or malformed JSON reply validates against `schema`, or None. A reply
    that went on past a complete object (a draft, then another) is not salvaged: which one the
    model meant is not known."""
    if _goes_on_after_an_object(text):
        return None
    partial = _partial_json(text, trailing_strings=False)
    if not isinstance(partial, dict):
        return None
    try:
        return schema.model_validate(partial)
    except ValidationError:
        return None


def best_effort_text(text: str, field: str) -> str:
    """`field`'s text in a JSON reply that did not parse, unfinished or not, a loop cut to one
    repeat ("10.5,10.5,10.5,1" -> "10.5"), a number as its text; "" if there is none."""
    partial = _partial_json(text, trailing_strings=True)
    value = partial.get(field) if isinstance(partial, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "" if _CUT_NUMBER.search(text) else str(value)  # `{"answer": 2` may be 28
    return _one_repeat(value.strip()) if isinstance(value, str) else ""


def request_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """`schema`'s JSON schema with every property required, nested models' too."""
    required: dict[str, Any] = _require_all(schema.model_json_schema())
    return required


def _require_all(node: Any) -> Any:
    if isinstance(node, Mapping):
        node = {key: _require_all(value) for key, value in node.items()}
        if isinstance(node.get("properties"), Mapping):
            node["required"] = list(node["properties"])
        return node
    if isinstance(node, list):
        return [_require_all(value) for value in node]
    return node


_CUT_NUMBER = re.compile(r'(?:[,{]\s*"(?:[^"\\]|\\.)*"\s*:|[,\[])\s*-?[\d.eE+-]+\s*$')
"""A number at the very end of a reply that never closed: cut there, `85` may have been `8`."""


def _goes_on_after_an_object(text: str) -> bool:
    """The reply holds a complete JSON object and more after it than a closing code fence."""
    start = text.find("{")
    if start < 0:
        return False
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return False  # the first object never closed: a cut reply, salvage may read it
    return bool(text[end:].strip().strip("`").strip())


def _partial_json(text: str, *, trailing_strings: bool) -> Any:
    start = text.find("{")
    if start < 0:
        return None
    cut = None if trailing_strings else _CUT_NUMBER.search(text, start)
    if cut is not None:
        text = text[: cut.start() + 1]  # keep the `{`, `[` or `,` before it
    try:
        if trailing_strings:
            return pydantic_core.from_json(text[start:], allow_partial="trailing-strings")
        return pydantic_core.from_json(text[start:], allow_partial=True)
    except ValueError:
        return None


_LOOP = re.compile(r"(.+?)(?:[\s,;]*\1){2,}", re.DOTALL)


def _one_repeat(text: str) -> str:
    """A text that is mostly one unit said three times or more, as that unit once."""
    match = _LOOP.match(text)
    if match is None or match.end() < 0.8 * len(text):
        return text
    return match.group(1).strip(" ,;")
