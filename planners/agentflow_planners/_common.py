"""What the planners share: turning model-written steps into nodes, findings, joining, summaries."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints, WithJsonSchema

from agentflow.answers import extract_answer, number_text
from agentflow.context import RunContext
from agentflow.model import ModelSettings
from agentflow.plan import LLM_KIND, TaskId, TaskNode
from agentflow.planner import Answer, Replan, RunState, load_prompt
from agentflow.tool import Toolset, delimit

PACKAGE = "agentflow_planners"
SUMMARY_THRESHOLD = 6000
"""Characters of findings past which older findings are summarized (Flash-Searcher's summary)."""

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][\w-]*\}")
_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")


def prompt(name: str, **values: str) -> str:
    """A prompt file with `{name}` fields filled in; other braces (JSON examples) are left alone.

    One pass over the template: a value is never scanned again, so a question or a passage that
    contains `{findings}` or `{instructions}` stays that text instead of pulling in another
    field."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), load_prompt(PACKAGE, name))


def lookup_tool(ctx: RunContext) -> str:
    """Where look-ups go: a search tool, else the only tool, else a reasoning step."""
    names = ctx.tools.names
    return next((n for n in names if "search" in n), names[0] if len(names) == 1 else "llm")


def step_to_node(node_id: str, tool: str, text: str, tools: Toolset) -> TaskNode:
    """A model-written step (`tool`, free-text `input` with `{id}` placeholders) as a node."""
    value: Any = {"$template": text} if _PLACEHOLDER.search(text) else text
    found = tools.get(tool)
    if found is None:
        kind = "tool" if tool not in ("llm", "") else LLM_KIND
        return TaskNode(
            id=TaskId(node_id), kind=kind, tool=tool if kind == "tool" else None,
            args={"question": value},
        )  # fmt: skip
    first_parameter = next(iter(found.parameters.get("properties", {})), "input")
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool, args={first_parameter: value})


def findings(state: RunState) -> str:
    """The summary of older findings, if any, then every finding since."""
    summary = state.notes.get("summary")
    summarized: set[str] = state.notes.get("summarized", set())
    recent = RunState(question=state.question, nodes=state.nodes)
    recent.results = {k: v for k, v in state.results.items() if k not in summarized}
    text = recent.transcript() if recent.results else ""
    if summary:  # written by the model from fenced data: still data
        return f"Summary of earlier findings:\n{delimit('summary', summary)}\n{text}".strip()
    return text or "(nothing yet)"


async def summarize_if_long(state: RunState, ctx: RunContext) -> None:
    """Fold the findings into a short summary once they pass `SUMMARY_THRESHOLD` characters."""
    current = findings(state)
    if len(current) <= SUMMARY_THRESHOLD:
        return
    text = prompt(
        "summarize.md", question=state.question, findings=current[-4 * SUMMARY_THRESHOLD :]
    )
    response = await ctx.complete(
        [{"role": "user", "content": text}], ModelSettings(temperature=0.0, max_tokens=256)
    )
    state.notes["summary"] = response.text
    state.notes["summarized"] = set(state.results)
    ctx.trace.emit("summary", text=response.text)


MAX_REPLY_CHARS = 800
"""Caps a final reply written inside JSON: room for an answer format (a boxed result, or
Explanation / Exact Answer / Confidence lines), while a model stuck repeating itself is still cut
off inside the string and the JSON still closes."""


def _number_as_text(value: Any) -> Any:
    """A JSON number as the text of an answer: an integer exactly (however long: the length cap
    then refuses a looping one), a float as Python writes it, 28.0 as "28"; anything else
    (a string, or NaN and infinity, which are not answers) is left to the string check."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return number_text(value)
    return value


AnswerText = Annotated[
    str,
    BeforeValidator(_number_as_text),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "maxLength": MAX_REPLY_CHARS}, {"type": "number"}]}
    ),
    StringConstraints(max_length=MAX_REPLY_CHARS),
]
"""An answer field of a JSON reply: a string, or a number read as its text. Held to a string,
the 1.5B wrote a number's answer as ",28" or ",284" (it wanted `"answer": 28`; the grammar
forced the quote first). 7 of 50 MATH-500 dag answers began with a stray "," and 4 with ">";
allowed a number, none did in a rerun of the 50."""


class JoinDecision(BaseModel):
    enough: bool = Field(description="true if the findings answer the question")
    answer: AnswerText = Field(description="the final answer, or a guess")
    missing: str = Field(
        default="", max_length=200, description="what is still unknown, empty if nothing"
    )
    """The default is for salvaging a reply cut off inside this field (the answer came first);
    the schema sent still requires it (`agentflow._structured.request_schema`)."""


JOIN_SETTINGS = ModelSettings(temperature=0.0, max_tokens=400)


FINAL_INSTRUCTIONS = (
    "First think it through in one or two sentences, then give the answer on its own line as"
    ' "Answer: <answer>".'
)
"""The last join writes plain text, not JSON: forced to open with `{"answer":"`, the 1.5B wrote
"Yes" or "No" to 26 of 26 HotpotQA questions whatever the findings said (issue 20's react run);
the "Answer:" line is the form `extract_answer` reads from every planner."""


async def join(state: RunState, ctx: RunContext, *, allow_replan: bool) -> Answer | Replan:
    """The joiner: answer from the findings, or (when allowed) ask for a replan."""
    instructions = (
        'Reply as JSON: "enough" (true or false), "answer", and "missing" (what is still unknown).'
        if allow_replan
        else FINAL_INSTRUCTIONS
    )
    text = prompt(
        "join.md", question=state.question, findings=findings(state), instructions=instructions
    )
    messages = [{"role": "user", "content": text}]
    if not allow_replan:
        response = await ctx.complete(messages, JOIN_SETTINGS)
        return final_answer(response.text)
    decision, _ = await ctx.complete_structured(messages, JoinDecision, JOIN_SETTINGS)
    if decision.enough or not decision.missing.strip():
        return final_answer(decision.answer)
    return Replan(reason=decision.missing.strip())


def final_answer(reply: str) -> Answer:
    """The model's final reply kept whole for scorers of answer formats, and its short answer."""
    return Answer(text=clean_answer(reply), reply=reply.strip())


def clean_answer(text: str) -> str:
    return extract_answer(text).strip().rstrip(".").strip()
