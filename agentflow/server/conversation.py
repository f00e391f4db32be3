"""A chat request's messages as agentflow reads them: the standing instructions, the earlier
turns and the message to answer, and the prompts built from them.

A follow-up ("and which of them is older?") cannot be planned on its own, so it is first
rewritten into a standalone question from the conversation. In long conversations models drift
from what the user asked at the start; restating the standing instructions in every call once
the conversation is long reduces that ("Drift No More?", arXiv 2510.07777).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agentflow.agent import RunResult
from agentflow.model import Message
from agentflow.planner import load_prompt
from agentflow.server.protocol import ChatMessage, RequestError
from agentflow.tool import delimit

__all__ = ["Conversation", "planned_question"]

PROMPTS = "agentflow.server"

_INSTRUCTION = re.compile(
    r"\b(always|never|from now on|do not|don't|(answer|reply|respond|write)\s+(in|with|only|"
    r"using|as|at most|briefly))\b",
    re.IGNORECASE,
)
"""A sentence of an earlier user message that reads as a standing instruction."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, kw_only=True)
class Conversation:
    system: tuple[str, ...]
    """The system (and developer) messages' text."""
    turns: tuple[tuple[str, str], ...]
    """Earlier (role, text) pairs, user and assistant, before the message to answer."""
    message: str
    """The last user message: what this request asks."""

    @classmethod
    def from_messages(cls, messages: Sequence[ChatMessage]) -> Conversation:
        """Read the request's messages; a conversation agentflow cannot answer raises
        `RequestError` naming the message."""
        system: list[str] = []
        turns: list[tuple[str, str]] = []
        for index, item in enumerate(messages):
            if item.role in ("tool", "function"):
                raise RequestError(
                    f"{item.role} messages are not supported: the agent runs its own tools",
                    param=f"messages[{index}].role",
                )
            text = item.text(index)
            if item.role in ("system", "developer"):
                system.append(text)
            else:
                turns.append((item.role, text))
        if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
            raise RequestError(
                "the last message must be a user message with text", param="messages"
            )
        return cls(system=tuple(system), turns=tuple(turns[:-1]), message=turns[-1][1])

    @property
    def user_turns(self) -> int:
        """User messages so far, this one included."""
        return 1 + sum(role == "user" for role, _ in self.turns)

    def standing_instructions(self) -> str:
        """The system messages and the sentences of earlier user messages that set a rule
        (not the questions asked beside them)."""
        ruled = [
            sentence
            for role, text in self.turns
            if role == "user"
            for sentence in _SENTENCE_END.split(text)
            if _INSTRUCTION.search(sentence)
        ]
        return " ".join(part.strip() for part in (*self.system, *ruled) if part.strip())

    def reminder(self, after_turns: int | None) -> str | None:
        """The reminder to add to every call, once the conversation is past `after_turns`
        user turns (None: never)."""
        if after_turns is None or self.user_turns <= after_turns:
            return None
        instructions = self.standing_instructions()
        if not instructions:
            return None
        return load_prompt(PROMPTS, "reminder.md").format(instructions=instructions).strip()

    def rewrite_messages(self) -> list[Message]:
        """One call that turns a follow-up into a standalone question."""
        lines = [f"{role}: {_clip(text, 600)}" for role, text in self.turns[-8:]]
        prompt = load_prompt(PROMPTS, "rewrite.md").format(
            conversation="\n".join(lines), message=self.message
        )
        return [{"role": "user", "content": prompt}]

    def answer_messages(self, result: RunResult, reminder: str | None) -> list[Message]:
        """The answer-writing call: the conversation as the client sent it, its last message
        carrying what the run found, the proposed answer fenced as data like the notes (it is
        model text that may quote a tool's output)."""
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": "\n\n".join(self.system)})
        messages += [{"role": role, "content": text} for role, text in self.turns]
        prompt = load_prompt(PROMPTS, "answer.md").format(
            message=self.message, notes=_notes(result), answer=delimit("proposed", result.answer)
        )
        if reminder:
            prompt = f"{prompt}\n\n{reminder}"
        messages.append({"role": "user", "content": prompt})
        return messages


def planned_question(question: str, reminder: str | None) -> str:
    """The question the agent plans, with the reminder when there is one."""
    return f"{question}\n\n{reminder}" if reminder else question


def _notes(result: RunResult) -> str:
    """Each node's output fenced as data (`delimit`), as the planners' prompts fence it: a
    tool result that writes `</result>` or instructions cannot pass for the prompt."""
    blocks = [
        f"- {_clip(' '.join((record.label or record.id).split()), 120)}:\n"
        f"{delimit(record.id, _clip(record.output, 400))}"
        for record in result.trace.nodes.values()
        if record.output
    ]
    return "\n".join(blocks) or "(none)"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
