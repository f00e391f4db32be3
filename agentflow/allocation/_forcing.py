"""Client-side budget forcing (s1): cap thinking where the server will not.

When a server refuses `thinking_token_budget`, the thinking is decoded through `/v1/completions`
on the chat template's raw prompt, with the cap as `max_tokens` and a stop at the
end-of-thinking tag; then the same raw prompt, followed by that thinking and the tag closed, is
continued for the answer. The second call shares the first one's prefix, so vLLM's prefix cache
makes it cheap. The answer is read from the continuation only, never from the thinking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from agentflow.allocation._budget import Budget
from agentflow.exceptions import ModelHTTPError, ModelNotFoundError
from agentflow.model import Message, ModelResponse, ModelSettings

__all__ = ["END_OF_THINKING", "TextModel", "force_budget", "no_raw_text_route"]

END_OF_THINKING = "</think>"
_NO_SUCH_ROUTE = frozenset({404, 405, 501})
"""What a server without vLLM's `/tokenize` (or `/v1/completions`) answers there."""


def no_raw_text_route(exc: ModelHTTPError) -> bool:
    """Whether `exc` says the server has no raw-text route (`/tokenize`, `/detokenize`,
    `/v1/completions`), as servers other than vLLM may not, rather than any other refusal."""
    return exc.status_code in _NO_SUCH_ROUTE and not isinstance(exc, ModelNotFoundError)


@runtime_checkable
class TextModel(Protocol):
    """A model that can show its raw prompt and continue raw text (`OpenAIModel` on vLLM)."""

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str: ...

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse: ...


async def force_budget(
    model: TextModel, messages: Sequence[Message], settings: ModelSettings, budget: Budget
) -> ModelResponse:
    """Think for at most `budget.thinking_tokens`, then answer in `budget.max_tokens`."""
    prompt = await model.render_prompt(messages, settings.chat_template_kwargs)
    plain = replace(settings, chat_template_kwargs=None, thinking_token_budget=None, n=1)
    thinking = await model.complete_text(
        prompt, replace(plain, max_tokens=budget.thinking_tokens, stop=(END_OF_THINKING,))
    )
    thought = thinking.text
    continued = f"{prompt}{thought.rstrip()}\n{END_OF_THINKING}\n\n"
    answer = await model.complete_text(continued, replace(plain, max_tokens=budget.max_tokens))
    reasoning = thought.replace("<think>", "").strip() or None
    choice = replace(answer.choices[0], text=answer.text.strip(), reasoning=reasoning)
    return ModelResponse(choices=(choice,), usage=thinking.usage + answer.usage, model=answer.model)
