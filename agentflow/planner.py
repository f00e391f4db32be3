"""The `Planner` extension point and the state a run passes between planning, execution and joining.

A run is a loop of rounds (`Agent` drives it): the planner streams `TaskNode`s, the executor runs
them as their inputs resolve, and the planner's `join` answers or asks for another round. Every
strategy (DAG, hybrid rounds, ReAct, direct) is one `Planner`, so all share executor and trace.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Literal

from agentflow.answers import extract_answer, stated_answer
from agentflow.context import RunContext
from agentflow.model import ModelSettings
from agentflow.passages import is_passages, render_passages
from agentflow.plan import TaskId, TaskNode
from agentflow.tool import delimit, render_output

__all__ = [
    "NO_ANSWER",
    "Answer",
    "Continue",
    "Planner",
    "Replan",
    "RunState",
    "TaskResult",
    "load_prompt",
]


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """What a node produced, or why it did not."""

    node_id: TaskId
    status: Literal["ok", "failed", "cancelled"]
    output: Any = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """What made the node fail, when it was an exception (a timeout, a model error): lets a
    planner that cannot answer without the node raise it as the cause."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_text(self, budget: int = 2000) -> str:
        """The result as the joiner reads it: the output, or the error, marked as such."""
        if self.ok:
            return render_output(self.output, budget)
        return f"[{self.status}: {self.error}]"


@dataclass(frozen=True, kw_only=True)
class Answer:
    text: str
    """The short answer (a name, a number, a phrase): what EM/F1 compare and what `ask` prints."""
    reply: str | None = None
    """The whole final reply the planner wrote, when it is more than `text` (reasoning, a
    `\\boxed{}`, BrowseComp's Explanation / Exact Answer / Confidence lines). Scorers that read
    an answer format read this; None means the reply was just `text`."""


@dataclass(frozen=True, kw_only=True)
class Replan:
    """Plan again: the results so far are not enough. Counted in `Trace.replans`."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class Continue:
    """Go on to the planner's next step (ReAct's next action, hybrid's next round of queries);
    not a replan."""

    reason: str = ""


@dataclass(kw_only=True)
class RunState:
    """Everything the planner has to go on: the question and every finished node so far."""

    question: str
    round: int = 0
    final_round: bool = False
    """No replans left: `join` must return an `Answer`."""
    nodes: dict[TaskId, TaskNode] = field(default_factory=dict)
    results: dict[TaskId, TaskResult] = field(default_factory=dict)
    replan_reasons: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    """The planner's own memory between `plan` and `join` (planners are shared across runs)."""

    def transcript(self, budget_per_node: int = 1500) -> str:
        """Finished nodes, each its call on one line and its output fenced as data below it.

        A passage (a search hit with an `id`) that an earlier node already showed is not sent
        again: sibling look-ups often find the same page, and every repeat is prompt tokens on
        the critical path. Its place says where it was shown."""
        blocks = []
        shown: dict[str, TaskId] = {}
        for node_id, result in self.results.items():
            node = self.nodes.get(node_id)
            label = node.describe() if node else node_id
            text = _without_repeats(result, node_id, shown, budget_per_node)
            blocks.append(f"{node_id}: {label}\n{delimit(node_id, text)}")
        return "\n".join(blocks) or "(nothing yet)"


def _without_repeats(
    result: TaskResult, node_id: TaskId, shown: dict[str, TaskId], budget: int
) -> str:
    """`result` as text, leaving out passages already in `shown` (passage id -> node)."""
    if not result.ok or not is_passages(result.output):
        return result.as_text(budget)
    fresh = [p for p in result.output if p["id"] not in shown]
    repeated = sorted({shown[p["id"]] for p in result.output if p["id"] in shown})
    rendered = render_passages(fresh, budget)
    # Only passages shown whole count as shown: one cut here must still reach the model
    # through a later node that found it.
    for passage in fresh:
        if passage["id"] in rendered.whole:
            shown.setdefault(passage["id"], node_id)
    text = rendered.text
    if repeated:
        count = len(result.output) - len(fresh)
        text += f"\n(and {count} passage(s) already shown under {', '.join(repeated)})"
    return text.strip()


class Planner(ABC):
    """A strategy: what to run next (`plan`) and when to answer (`join`)."""

    name: ClassVar[str]
    max_rounds: int = 3
    """Rounds of plan-execute-join before `join` must answer (replans = rounds - 1)."""
    step_settings: ModelSettings = ModelSettings(temperature=0.0, max_tokens=256)
    """Settings of the model call behind each `llm` node."""

    @abstractmethod
    def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        """Yield this round's nodes, each as soon as it is known; none to go straight to `join`."""

    @abstractmethod
    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        """Answer from the results, or ask for another round (never in the final round)."""

    async def run_llm_node(self, node: TaskNode, args: dict[str, Any], ctx: RunContext) -> str:
        """Execute an `llm` node: answer `args["question"]` from `args["context"]`."""
        question = str(args.get("question") or args.get("input") or "")
        context = args.get("context") or []
        notes = "\n".join(
            delimit(f"note{index}", render_output(c, 1500))
            for index, c in enumerate((c for c in context if c), start=1)
        )  # the notes are other nodes' outputs: data, fenced like every tool output
        notes = notes or "(none)"
        prompt = load_prompt("agentflow", "reasoning_step.md").format(
            question=question, context=notes
        )
        response = await ctx.complete(
            [{"role": "user", "content": prompt}], self.step_settings, node_id=node.id
        )
        if response.choices[0].finish_reason == "length":
            return stated_answer(response.text) or NO_ANSWER
        return extract_answer(response.text)


NO_ANSWER = "[no answer: the step was cut off at its token limit before it answered]"
"""A reasoning step's output when its reply ran out of tokens before an answer: its last line
would pass for one (on MATH-500 the 1.5B's "4. \\(2*(3*4+5)+1 =" reached the join as a finding
and the join gave it as the answer)."""


@functools.cache
def load_prompt(package: str, name: str) -> str:
    """A prompt file shipped as package data in `package/prompts/` (read once per process)."""
    return (resources.files(package) / "prompts" / name).read_text(encoding="utf-8")
