"""`dag`: the model writes the whole plan as JSON (Flash-Searcher / LLMCompiler style).

A plan is a block of independent look-ups (HybridDeepSearcher's parallel query block) and then
steps that use their results, each step one tool on one or more inputs. The plan is streamed:
the look-up block is handed to the executor the moment its JSON array closes, all of it at once
(siblings start together, however fast the tool), and then each step the moment its own JSON
object closes, so look-ups run while the model is still writing the steps. The joiner answers
or asks for a replan; a replan sees every finding and never reruns a node (a look-up that repeats
a finished one is merged into it).

The joiner writes the answer from every finding, so by default a plan does not end in a
reasoning step that answers the question: the prompt's examples have none, and a reasoning step
that no other step uses is held until the plan closes and then left to the joiner (on the 1.5B
such a step cost its question 15-90 s of decoding the join then repeated: issue 24).
`DagPlanner(answer_steps=True)` plans and runs them as before (benchmarks/latency.py's A/B).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from agentflow.context import RunContext
from agentflow.model import ModelSettings
from agentflow.plan import LLM_KIND, PlanBuilder, PlanLimits, TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow_planners._common import (
    findings,
    join,
    lookup_tool,
    prompt,
    step_to_node,
    summarize_if_long,
)
from agentflow_planners._jsonstream import ArrayItemStream

__all__ = ["DagPlanner"]

MAX_INPUT_CHARS = 300
"""Caps each input in the schema, so a model stuck repeating itself still closes the JSON."""
MAX_STEPS = 6
MAX_CALLS = 5
"""Look-ups, and calls one step, may make at once (Flash-Searcher's limit)."""


class DagPlanner(Planner):
    name = "dag"
    max_rounds = 3  # two replans at most
    plan_settings = ModelSettings(temperature=0.0, max_tokens=768)
    limits = PlanLimits(max_nodes=16, max_depth=6)

    def __init__(self, *, answer_steps: bool = False) -> None:
        self.answer_steps = answer_steps
        """Run reasoning steps nothing else uses (the joiner answers anyway); off by default."""

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        await summarize_if_long(state, ctx)
        messages = [{"role": "user", "content": self._prompt(state, ctx)}]
        finished = [state.nodes[i] for i, r in state.results.items() if r.ok and i in state.nodes]
        builder = PlanBuilder(
            tools=ctx.tools.names, limits=self.limits, known=state.results, finished=finished
        )
        steps = _StepExpander(state.round, lookup_tool=lookup_tool(ctx))
        lookups, items = ArrayItemStream("lookups"), ArrayItemStream("steps")
        schema = plan_schema([*ctx.tools.names, "llm"])
        block: list[TaskNode] = []
        held = _HeldSteps(enabled=not self.answer_steps)
        async for piece in ctx.stream(messages, self.plan_settings, json_schema=schema):
            block += [n for q in lookups.feed(piece) for n in steps.lookup(q, ctx, builder)]
            ready = block if lookups.closed else []
            step_nodes = [n for item in items.feed(piece) for n in steps.expand(item, ctx, builder)]
            ready += [n for n in step_nodes if not held.take(n)]
            if lookups.closed:
                block = []
            for node in ready:
                added = builder.add(node)
                if added is not None:
                    yield added
        for node in block:  # the look-up block never closed (output cut off): run what came
            if (added := builder.add(node)) is not None:
                yield added
        for node in held.release(builder):
            if (added := builder.add(node)) is not None:
                yield added
        builder.raw = items.text
        if not builder.nodes and not state.round:
            builder.build()  # raises PlanError with the raw text
        # A replan with nothing new to run (each look-up a repeat of a finished one, or none
        # usable) goes to the join with what was found: an error would lose those findings.
        ctx.trace.emit("plan", round=state.round, raw=items.text, repairs=builder.repairs)

    def _prompt(self, state: RunState, ctx: RunContext) -> str:
        previous = ""
        if state.round:
            previous = (
                f"\nA first plan ran. What it found:\n{findings(state)}\n"
                f"Still missing: {state.replan_reasons[-1] if state.replan_reasons else '?'}\n"
                "Plan only the steps still needed; write the ids above in braces to use them.\n"
            )
        search_like = [t.name for t in ctx.tools if "search" in t.name]
        return prompt(
            "dag_plan.md",
            tools=ctx.tools.describe(),
            question=state.question,
            previous=previous,
            example_tool=(search_like or ctx.tools.names or ["llm"])[0],
            steps_rule=ANSWER_STEPS_RULE if self.answer_steps else JOIN_ANSWERS_RULE,
            example_steps=ANSWER_STEP_EXAMPLE if self.answer_steps else "[]",
        )

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        return await join(state, ctx, allow_replan=not state.final_round)


ANSWER_STEPS_RULE = "Then list the steps that use their results, in order."
JOIN_ANSWERS_RULE = (
    "Then list the steps that need a result first (a look-up that names an earlier result), in"
    " order. The answer is written from all results afterwards: add no step that only answers"
    " the question."
)
ANSWER_STEP_EXAMPLE = (
    '[{"id":"s1","tool":"llm","inputs":["Is the Danube longer than the Rhine? {l1} {l2}"]}]'
)


class _HeldSteps:
    """Reasoning steps held back while the plan streams, and the steps that use them.

    When the plan closes, a reasoning step that no other step uses (the plan's "answer the
    question from {l1} {l2}") is dropped, as a repair: the joiner reads every finding and writes
    the answer itself. Every other held step runs, in plan order; so does a plan of reasoning
    steps alone (e.g. without tools), which would otherwise have nothing to run."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.nodes: list[TaskNode] = []

    def take(self, node: TaskNode) -> bool:
        """Hold `node` if it is a reasoning step or uses one held; False lets it run now."""
        held_ids = {n.id for n in self.nodes}
        if self.enabled and (node.kind == LLM_KIND or node.deps & held_ids):
            self.nodes.append(node)
            return True
        return False

    def release(self, builder: PlanBuilder) -> list[TaskNode]:
        """The held steps worth running, in plan order; the others noted as repairs."""
        used = {dep for node in self.nodes for dep in node.deps}
        unused = {n.id for n in self.nodes if n.kind == LLM_KIND and n.id not in used}
        if len(unused) == len(self.nodes) and not builder.nodes and not builder.merged:
            return self.nodes  # a plan of reasoning steps alone (a replan of repeats is not)
        for node_id in sorted(unused):
            builder.repairs.append(f"{node_id}: a reasoning step nothing uses, left to the join")
        return [n for n in self.nodes if n.id not in unused]


class _StepExpander:
    """Turns look-ups and steps into nodes. A step with several inputs becomes one node per input
    (Flash-Searcher lets every step issue several calls); `{s1}` in a later input then stands
    for all of s1's nodes."""

    def __init__(self, round_index: int, *, lookup_tool: str) -> None:
        self.prefix = f"r{round_index}" if round_index else ""
        self.lookup_tool = lookup_tool
        self.groups: dict[str, list[str]] = {}
        self.lookups = 0

    def lookup(self, query: Any, ctx: RunContext, builder: PlanBuilder) -> list[TaskNode]:
        """The look-up's node; none for a piece of tool-call syntax (not counted: the model
        numbered the call it meant) or a look-up with nothing to look up (counted, so later
        look-ups keep the numbers the model gave them; its references are dropped)."""
        text = _without_call_syntax(str(query), self.lookup_tool)
        if text is None:
            builder.repairs.append(f"read {str(query)!r} as part of a tool call, not a look-up")
            return []
        self.lookups += 1
        node_id = f"{self.prefix}l{self.lookups}"
        if not any(c.isalnum() for c in text):
            self.groups[f"l{self.lookups}"] = []
            builder.repairs.append(f"skipped {node_id}: nothing to look up in {text!r}")
            return []
        self.groups[f"l{self.lookups}"] = [node_id]
        return [step_to_node(node_id, self.lookup_tool, self._rewrite(text), ctx.tools)]

    def expand(self, item: Any, ctx: RunContext, builder: PlanBuilder) -> list[TaskNode]:
        inputs = item.get("inputs") if isinstance(item, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            builder.repairs.append(f"skipped a step that is not a tool call: {str(item)[:80]}")
            return []
        step_id = str(item.get("id") or f"s{len(self.groups) + 1}")
        if step_id in self.groups:
            step_id = f"{step_id}_{len(self.groups) + 1}"
        ids = [self.prefix + step_id] if len(inputs) == 1 else [
            f"{self.prefix}{step_id}_{k}" for k in range(1, len(inputs) + 1)
        ]  # fmt: skip
        self.groups[step_id] = ids
        tool = str(item.get("tool") or "llm")
        return [
            step_to_node(node_id, tool, self._rewrite(text), ctx.tools)
            for node_id, text in zip(ids, inputs, strict=True)
        ]

    def _rewrite(self, text: str) -> str:
        for step_id, ids in self.groups.items():
            text = text.replace("{" + step_id + "}", "; ".join("{" + i + "}" for i in ids))
        return text


_KEYWORD = r"(?:(?:query|q|question|input|text)\s*[:=]\s*)?"


def _without_call_syntax(text: str, tool: str) -> str | None:
    """`text` without a call of `tool` written around it; None when it is only a piece of one.

    The 1.5B wrote look-ups as `search(query: "...")` inside a JSON string, whose inner quote
    ended the string: the look-ups came as `search(query: `, the query, and `)`. Only a call
    written as one (`search(` with no space, an optional `query:`) is read so: "search
    (disambiguation)" and "Dune: Part Two" stay as they are."""
    text, name = text.strip(), re.escape(tool)
    if whole := re.fullmatch(rf"{name}\(\s*{_KEYWORD}[\"']?(.*?)[\"']?\s*\)", text, re.I | re.S):
        return whole.group(1).strip()
    opening = re.fullmatch(rf"{name}\(\s*{_KEYWORD}[\"']?", text, re.I)
    return None if opening or re.fullmatch(r"[\"']?\s*\)", text) else text


def plan_schema(tools: list[str]) -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_INPUT_CHARS}
    step = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 8},
            "tool": {"type": "string", "enum": tools},
            "inputs": {"type": "array", "items": text, "minItems": 1, "maxItems": MAX_CALLS},
        },
        "required": ["id", "tool", "inputs"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "lookups": {"type": "array", "items": text, "maxItems": MAX_CALLS},
            "steps": {"type": "array", "items": step, "maxItems": MAX_STEPS},
        },
        "required": ["lookups", "steps"],
        "additionalProperties": False,
    }
