"""Thinking adapters: how a `Budget`'s mode becomes a request, per model family.

The switch for thinking differs by family, so a budget is applied through one small adapter
chosen by model name (`adapter_for`) or by configuration (`ADAPTERS`):

- `chat-template` (Qwen3): `chat_template_kwargs={"enable_thinking": bool}`;
- `thinking-flag`: the same pass-through under the name `thinking` (DeepSeek-V3.1, Granite);
- `reasoning-effort` (gpt-oss): `reasoning_effort` low / high;
- `always-thinking` (DeepSeek-R1, QwQ): cannot switch thinking off, so fast mode is a think
  capped at `FAST_THINKING_CAP` tokens;
- `no-thinking` (SmolLM2 and most small instruct models): fast is a terse-answer instruction with
  a short budget, think a step-by-step instruction with a larger one.

Thinking is capped with vLLM's `thinking_token_budget`; `max_tokens` covers thinking plus answer,
since thinking eats `max_tokens` and a cap on the answer alone would leave it empty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace

from agentflow.allocation._budget import Budget
from agentflow.exceptions import UserError
from agentflow.model import Message, ModelSettings

__all__ = [
    "ADAPTERS",
    "FAST_THINKING_CAP",
    "AlwaysThinking",
    "ChatTemplateSwitch",
    "NoThinking",
    "ReasoningEffort",
    "ThinkingAdapter",
    "adapter_for",
]

FAST_THINKING_CAP = 256
"""Thinking tokens an always-thinking model gets in fast mode."""

TERSE = (
    "Answer at once and briefly: no explanation, no working. Reply with the final answer "
    'only, on one line as "Answer: <answer>" (or inside \\boxed{} if the task asks for a box).'
)
STEP_BY_STEP = (
    "This step is hard. Think it through step by step and check each step before you go on. "
    "Then give the final answer in the form the task asks for."
)


class ThinkingAdapter(ABC):
    """Turns a planner's messages and settings into a request under a budget."""

    name: str
    can_think: bool = True
    """Whether the model has a thinking mode at all (a reply without reasoning in think mode,
    or with reasoning in fast mode, is then worth noting in the trace)."""

    def apply(
        self, messages: Sequence[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        """The request for `budget`: the budget's temperature and priority, then the switch."""
        settings = replace(
            settings,
            temperature=settings.temperature if budget.temperature is None else budget.temperature,
            priority=budget.priority if budget.priority is not None else settings.priority,
        )
        return self.switch(list(messages), settings, budget)

    @abstractmethod
    def switch(
        self, messages: list[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        """Set the family's thinking switch and the token caps."""

    def quiet(self, settings: ModelSettings) -> ModelSettings:
        """`settings` for a side call in fast mode (a difficulty rating, a decomposition): the
        thinking switch off, the caller's own `max_tokens` kept (not the fast budget's). A model
        that cannot switch thinking off gets its fast thinking cap on top of that; a model
        without thinking gets `settings` as they are (no prompt steering: the caller's prompt
        and schema shape the answer)."""
        if not self.can_think:
            return settings
        own = settings.max_tokens
        _, quiet = self.switch([], settings, Budget(mode="fast", max_tokens=own or 0))
        return quiet if own is not None else replace(quiet, max_tokens=None)


class ChatTemplateSwitch(ThinkingAdapter):
    """A boolean in `chat_template_kwargs` (Qwen3's `enable_thinking`, others' `thinking`)."""

    def __init__(self, key: str = "enable_thinking") -> None:
        self.key = key
        self.name = "chat-template" if key == "enable_thinking" else "thinking-flag"

    def switch(
        self, messages: list[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        think = budget.mode == "think"
        kwargs = {**(settings.chat_template_kwargs or {}), self.key: think}
        return messages, _capped(replace(settings, chat_template_kwargs=kwargs), budget, think)


class ReasoningEffort(ThinkingAdapter):
    name = "reasoning-effort"

    def switch(
        self, messages: list[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        think = budget.mode == "think"
        effort = replace(settings, reasoning_effort="high" if think else "low")
        return messages, _capped(effort, budget, think)


class AlwaysThinking(ThinkingAdapter):
    name = "always-thinking"

    def switch(
        self, messages: list[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        if budget.mode == "think":
            return messages, _capped(settings, budget, True)
        cap = replace(budget, thinking_tokens=FAST_THINKING_CAP)
        return messages, _capped(settings, cap, True)


class NoThinking(ThinkingAdapter):
    name = "no-thinking"
    can_think = False

    def switch(
        self, messages: list[Message], settings: ModelSettings, budget: Budget
    ) -> tuple[list[Message], ModelSettings]:
        instruction = STEP_BY_STEP if budget.mode == "think" else TERSE
        steered = [{"role": "system", "content": instruction}, *messages]
        return steered, replace(settings, max_tokens=budget.max_tokens)


def _capped(settings: ModelSettings, budget: Budget, think: bool) -> ModelSettings:
    thinking = budget.thinking_tokens if think and budget.thinking_tokens else 0
    return replace(
        settings,
        max_tokens=budget.max_tokens + thinking,
        thinking_token_budget=thinking or None,
    )


ADAPTERS: dict[str, Callable[[], ThinkingAdapter]] = {
    "chat-template": lambda: ChatTemplateSwitch("enable_thinking"),
    "thinking-flag": lambda: ChatTemplateSwitch("thinking"),
    "reasoning-effort": ReasoningEffort,
    "always-thinking": AlwaysThinking,
    "no-thinking": NoThinking,
}
"""Adapters by configuration name."""

_BY_NAME = (
    (("qwen3",), "chat-template"),
    (("deepseek-v3.1", "granite"), "thinking-flag"),
    (("gpt-oss",), "reasoning-effort"),
    (("deepseek-r1", "qwq", "r1-distill", "openthinker", "s1"), "always-thinking"),
)


def adapter_for(model_name: str, configured: str | None = None) -> ThinkingAdapter:
    """The adapter `configured` names, else the one the model's name suggests, else
    `no-thinking` (a prompt switch works on any chat model)."""
    name = configured
    if name is None:
        lowered = model_name.lower()
        name = next((a for keys, a in _BY_NAME if any(k in lowered for k in keys)), "no-thinking")
    if name not in ADAPTERS:
        raise UserError(f"unknown thinking adapter {name!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[name]()
