"""The shipped planners on scripted models: what they plan, what they answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow import Agent, PlanError
from agentflow.model import Choice, Message, ModelResponse, ModelSettings, Usage
from agentflow.planner import NO_ANSWER
from agentflow.testing import FunctionModel, ScriptedModel
from agentflow.tool import tool
from agentflow_planners._common import JoinDecision
from agentflow_planners.dag import DagPlanner

FACTS = {"oxford founded": "Oxford: founded 1096", "cambridge founded": "Cambridge: founded 1209"}


def lookup_tool(barrier: asyncio.Barrier | None = None) -> Any:
    @tool
    async def lookup(query: str) -> str:
        """Look up a fact."""
        if barrier is not None:
            async with asyncio.timeout(5):
                await barrier.wait()
        return FACTS.get(query.lower(), "no idea")

    return lookup


def plan(*steps: tuple[str, str, list[str]], lookups: tuple[str, ...] = ()) -> str:
    return json.dumps(
        {
            "lookups": list(lookups),
            "steps": [{"id": i, "tool": t, "inputs": x} for i, t, x in steps],
        }
    )


async def test_dag_runs_a_steps_inputs_together_and_feeds_them_forward() -> None:
    model = ScriptedModel(
        [
            plan(
                ("s1", "lookup", ["Oxford founded", "Cambridge founded"]),
                ("s2", "llm", ["Which was founded first? {s1}"]),
            ),
            "Oxford, in 1096.\nAnswer: Oxford",
            json.dumps({"enough": True, "answer": "University of Oxford", "missing": ""}),
        ]
    )
    planner = DagPlanner(answer_steps=True)
    agent = Agent(model=model, planner=planner, tools=[lookup_tool(asyncio.Barrier(2))])
    result = await agent.run("Which was founded first, Oxford or Cambridge?")

    assert result.answer == "University of Oxford"
    nodes = result.trace.nodes
    assert set(nodes) == {"s1_1", "s1_2", "s2"}
    assert nodes["s2"].deps == ["s1_1", "s1_2"]
    assert nodes["s2"].output == "Oxford"
    step_prompt = str(model.calls[1][0]["content"])
    assert "founded 1096" in step_prompt and "founded 1209" in step_prompt
    assert result.usage.calls == 3


async def test_dag_lookups_run_at_once_and_steps_refer_to_them() -> None:
    model = ScriptedModel(
        [
            plan(
                ("s1", "llm", ["Which was founded first? {l1} {l2}"]),
                lookups=("Oxford founded", "Cambridge founded"),
            ),
            "Answer: Oxford",
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    planner = DagPlanner(answer_steps=True)
    agent = Agent(model=model, planner=planner, tools=[lookup_tool(asyncio.Barrier(2))])
    result = await agent.run("Which was founded first, Oxford or Cambridge?")
    nodes = result.trace.nodes
    assert list(nodes) == ["l1", "l2", "s1"]
    assert nodes["l1"].tool == nodes["l2"].tool == "lookup"
    assert nodes["s1"].deps == ["l1", "l2"]
    assert result.answer == "Oxford"


async def test_dag_leaves_the_answering_step_to_the_join_and_runs_steps_others_need() -> None:
    model = ScriptedModel(
        [
            plan(
                ("s1", "llm", ["Which name comes first? {l1}"]),
                ("s2", "lookup", ["{s1} founded"]),
                ("s3", "llm", ["Which was founded first? {l1} {l2} {s2}"]),
                lookups=("Oxford founded", "Cambridge founded"),
            ),
            "Answer: Oxford",  # s1, which the look-up s2 needs
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    agent = Agent(model=model, planner="dag", tools=[lookup_tool(asyncio.Barrier(2))])
    result = await agent.run("Which was founded first, Oxford or Cambridge?")

    assert list(result.trace.nodes) == ["l1", "l2", "s1", "s2"]
    assert result.trace.nodes["s2"].deps == ["s1"]
    assert result.answer == "Oxford" and result.usage.calls == 3  # plan, s1, join: no s3
    join_prompt = str(model.calls[2][0]["content"])
    assert "founded 1096" in join_prompt and "founded 1209" in join_prompt
    plan_prompt = str(model.calls[0][0]["content"])
    assert '"tool":"llm"' not in plan_prompt  # its examples end with look-ups, not an answer


async def test_dag_runs_a_plan_of_reasoning_steps_alone() -> None:
    model = ScriptedModel(
        [
            plan(("s1", "llm", ["What is 17 * 23?"])),
            "17 * 23 = 391\nAnswer: 391",
            json.dumps({"enough": True, "answer": "391", "missing": ""}),
        ]
    )
    result = await Agent(model=model, planner="dag").run("What is 17 * 23?")
    assert list(result.trace.nodes) == ["s1"] and result.answer == "391"


async def test_a_reasoning_step_cut_off_before_its_answer_gives_the_join_no_answer() -> None:
    """The 1.5B's MATH-500 reply "4. \\(2*(3*4+5)+1 =" (cut at the step's token limit) used to
    reach the join as the step's answer, and the join gave it as the question's."""
    cut = "Let me count.\n4. \\(2*(3*4+5)+1 ="
    replies = [plan(("s1", "llm", ["How many values?"])), cut, JOIN_391]
    finishes = iter([None, "length", None])

    def model_fn(*_: Any) -> ModelResponse:
        text, finish = replies.pop(0), next(finishes)
        usage = Usage(prompt_tokens=1, completion_tokens=1, calls=1)
        return ModelResponse(
            choices=(Choice(text=text, finish_reason=finish),), usage=usage, model="m"
        )

    model = FunctionModel(model_fn)
    result = await Agent(model=model, planner="dag").run("How many values?")
    join_prompt = str(model.calls[2][0]["content"])
    assert result.trace.nodes["s1"].output == NO_ANSWER
    assert NO_ANSWER in join_prompt and "(3*4+5)+1 =" not in join_prompt


async def test_a_reasoning_step_cut_off_after_its_answer_line_keeps_it() -> None:
    replies = [plan(("s1", "llm", ["What is 17 * 23?"])), "Answer: 391\nCheck: 17 * 2", JOIN_391]

    def model_fn(*_: Any) -> ModelResponse:
        text = replies.pop(0)
        usage = Usage(prompt_tokens=1, completion_tokens=1, calls=1)
        choice = Choice(text=text, finish_reason="length" if text.startswith("Answer") else None)
        return ModelResponse(choices=(choice,), usage=usage, model="m")

    result = await Agent(model=FunctionModel(model_fn), planner="dag").run("What is 17 * 23?")
    assert result.trace.nodes["s1"].output == "391"


JOIN_391 = json.dumps({"enough": True, "answer": "391", "missing": ""})


async def test_dag_replans_with_what_it_found_and_answers_in_the_final_round() -> None:
    model = ScriptedModel(
        [
            plan(("s1", "lookup", ["Oxford founded"])),
            json.dumps({"enough": False, "answer": "?", "missing": "Cambridge's founding"}),
            plan(("s1", "lookup", ["Cambridge founded"])),
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    agent = Agent(model=model, planner="dag", tools=[lookup_tool()])
    result = await agent.run("Which was founded first?")
    assert result.answer == "Oxford"
    assert result.trace.replans == 1
    replan_prompt = str(model.calls[2][0]["content"])
    assert "founded 1096" in replan_prompt and "Cambridge's founding" in replan_prompt
    assert sorted(result.trace.nodes) == ["r1s1", "s1"]  # later rounds' ids carry the round


async def test_a_replan_that_repeats_a_finished_look_up_reuses_it_and_still_answers() -> None:
    """The 1.5B's replans repeated the first look-up word for word; the repeat is merged into
    the finished node (not run again), and a replan of repeats alone goes to the join."""
    model = ScriptedModel(
        [
            plan(lookups=("Oxford founded",)),
            json.dumps({"enough": False, "answer": "?", "missing": "Cambridge"}),
            plan(lookups=("oxford founded",)),
            "Oxford was founded in 1096.\nAnswer: Oxford",
        ]
    )
    agent = Agent(model=model, planner=DagPlanner(), tools=[lookup_tool()])
    agent.planner.max_rounds = 2
    result = await agent.run("Which was founded first?")
    assert result.answer == "Oxford"
    assert list(result.trace.nodes) == ["l1"]  # nothing run twice
    assert result.trace.replans == 1


async def test_look_ups_written_as_tool_calls_are_read_as_their_query() -> None:
    """`search(query: "...")` inside a JSON string: the inner quote ends it, so the look-ups
    come as `lookup(query: `, the query, and `)`."""
    model = ScriptedModel(
        [
            plan(lookups=("lookup(query: ", "Oxford founded", ")", 'lookup("Cambridge founded")')),
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    agent = Agent(model=model, planner="dag", tools=[lookup_tool()])
    result = await agent.run("Which was founded first?")
    labels = [n.label for n in result.trace.nodes.values()]
    assert labels == ['lookup("Oxford founded")', 'lookup("Cambridge founded")']


async def test_a_look_up_with_nothing_in_it_keeps_the_numbers_of_the_others() -> None:
    model = ScriptedModel(
        [
            plan(
                ("s1", "lookup", ["{l3} vs {l2}"]),
                lookups=("?", "Oxford founded", "Cambridge founded"),
            ),
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    result = await Agent(model=model, planner="dag", tools=[lookup_tool()]).run("Which first?")
    assert result.trace.nodes["s1"].label == 'lookup("{l3} vs {l2}")'
    assert sorted(result.trace.nodes) == ["l2", "l3", "s1"]


async def test_a_replan_of_repeats_and_an_answer_step_runs_neither() -> None:
    """The answer step is left to the join, as in a first plan: every look-up of the replan
    was merged into a finished one, which does not make it a plan of reasoning steps alone."""
    model = ScriptedModel(
        [
            plan(lookups=("Oxford founded",)),
            json.dumps({"enough": False, "answer": "?", "missing": "Cambridge"}),
            plan(("s1", "llm", ["Which was founded first? {l1}"]), lookups=("oxford founded",)),
            "Answer: Oxford",
        ]
    )
    agent = Agent(model=model, planner=DagPlanner(), tools=[lookup_tool()])
    agent.planner.max_rounds = 2
    result = await agent.run("Which was founded first?")
    assert list(result.trace.nodes) == ["l1"] and result.answer == "Oxford"


async def test_dag_without_a_plan_raises_plan_error_with_the_raw_text() -> None:
    agent = Agent(model=ScriptedModel(["I would rather not."]), planner="dag")
    with pytest.raises(PlanError) as caught:
        await agent.run("q")
    assert caught.value.raw == "I would rather not."


async def test_dag_sends_its_schema_with_the_tool_names() -> None:
    schemas: list[Mapping[str, Any] | None] = []

    def model_fn(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        schemas.append(schema)
        if len(schemas) == 1:
            return plan(("s1", "lookup", ["Oxford founded"]))
        return json.dumps({"enough": True, "answer": "x", "missing": ""})

    await Agent(model=FunctionModel(model_fn), planner="dag", tools=[lookup_tool()]).run("q")
    properties = schemas[0]["properties"]  # type: ignore[index]
    assert properties["steps"]["items"]["properties"]["tool"]["enum"] == ["lookup", "llm"]
    assert properties["lookups"]["items"]["type"] == "string"


@pytest.mark.parametrize("planner", ["dag", "hybrid"])
async def test_a_json_answer_may_be_a_number_and_is_read_as_its_text(planner: str) -> None:
    """Held to a string, the 1.5B wrote `"answer":",28"` for a number: the schema sent lets the
    answer be a number, which reaches the scorers as "28" (0.5 as "0.5")."""
    schemas: list[Mapping[str, Any] | None] = []

    def model_fn(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        schemas.append(schema)
        if len(schemas) == 1 and planner == "dag":
            return plan(lookups=("Oxford founded",))
        if len(schemas) == 1:
            return json.dumps({"queries": ["Oxford founded"], "answer": ""})
        if planner == "dag":
            return '{"enough": true, "answer": 28, "missing": ""}'
        return '{"queries": [], "answer": 28.0}'

    agent = Agent(model=FunctionModel(model_fn), planner=planner, tools=[lookup_tool()])
    result = await agent.run("How many?")
    answer_schema = schemas[-1]["properties"]["answer"]  # type: ignore[index]
    assert {"type": "number"} in answer_schema["anyOf"]
    assert (result.answer, result.reply) == ("28", "28")


@pytest.mark.parametrize(
    ("number", "text"),
    [("28", "28"), ("0.5", "0.5"), ("28.0", "28"), ("1" * 400, "1" * 400), ("-3", "-3")],
)
def test_a_number_answer_is_read_as_its_exact_text(number: str, text: str) -> None:
    reply = '{"enough": true, "answer": ' + number + ', "missing": ""}'
    assert JoinDecision.model_validate_json(reply).answer == text


@pytest.mark.parametrize("value", ["true", "NaN", "1e400", "9" * 801])
def test_a_value_that_is_no_answer_fails_like_any_bad_field(value: str) -> None:
    """A bool, NaN and infinity are no answer; a number longer than the string cap is cut
    like a looping string (an int past 308 digits used to raise OverflowError, not a
    validation error, and end the run)."""
    with pytest.raises(ValidationError):
        JoinDecision.model_validate_json('{"enough": true, "answer": ' + value + ', "missing": ""}')


async def test_react_takes_one_step_at_a_time_until_it_finishes() -> None:
    model = ScriptedModel(
        [
            json.dumps({"thought": "look it up", "tool": "lookup", "input": "Oxford founded"}),
            json.dumps({"thought": "done", "tool": "finish", "input": "1096"}),
        ]
    )
    result = await Agent(model=model, planner="react", tools=[lookup_tool()]).run("When?")
    assert result.answer == "1096"
    assert list(result.trace.nodes) == ["s1"]
    assert "founded 1096" in str(model.calls[1][0]["content"])
    assert result.trace.replans == 0


@pytest.mark.parametrize("planner", ["react", "hybrid"])
async def test_the_forced_last_answer_is_plain_text_with_an_answer_line(planner: str) -> None:
    """Out of steps (react) or rounds (hybrid), the join answers from the findings in plain text:
    no JSON schema, whose forced `{"answer":"` made the 1.5B write "Yes" or "No"."""
    schemas: list[Mapping[str, Any] | None] = []
    prompts: list[str] = []

    def model_fn(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        schemas.append(schema)
        prompts.append(str(messages[-1]["content"]))
        if "Findings:" in prompts[-1]:
            return "The findings name her as Chief of Protocol.\nAnswer: Chief of Protocol"
        if planner == "react":
            return json.dumps({"thought": "again", "tool": "lookup", "input": "Oxford founded"})
        return json.dumps({"queries": ["Oxford founded"], "answer": ""})

    agent = Agent(model=FunctionModel(model_fn), planner=planner, tools=[lookup_tool()])
    result = await agent.run("Which position did she hold?")

    assert "Findings:" in prompts[-1] and "founded 1096" in prompts[-1]
    assert schemas[-1] is None and '"Answer: <answer>"' in prompts[-1]
    assert result.answer == "Chief of Protocol"
    assert result.reply.startswith("The findings name her")  # whole, for format scorers
    assert result.usage.calls == len(prompts)


async def test_hybrid_runs_rounds_of_parallel_queries() -> None:
    model = ScriptedModel(
        [
            json.dumps({"queries": ["Oxford founded", "Cambridge founded"], "answer": ""}),
            json.dumps({"queries": [], "answer": "Oxford"}),
        ]
    )
    agent = Agent(model=model, planner="hybrid", tools=[lookup_tool(asyncio.Barrier(2))])
    result = await agent.run("Which first?")
    assert result.answer == "Oxford"
    assert sorted(result.trace.nodes) == ["r1q1", "r1q2"]


async def test_direct_answers_from_one_chain_of_thought() -> None:
    model = ScriptedModel(["Paris is the capital.\nAnswer: Paris"])
    result = await Agent(model=model, planner="direct").run("Capital of France?")
    assert result.answer == "Paris"
    assert list(result.trace.nodes) == ["answer"]
