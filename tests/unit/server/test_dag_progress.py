"""The dag planner behind the server: its plan and every node's progress reach the client as
reasoning while it runs, and the answer as content."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from agentflow.model import Message, ModelSettings
from agentflow.tool import tool

from .conftest import config, fake_reply, serving

FACTS = {"oxford founded": "Oxford: founded 1096", "cambridge founded": "Cambridge: founded 1209"}


@tool
def lookup(query: str) -> str:
    """Look up a fact."""
    return FACTS.get(query.lower(), "no idea")


def scripted(replies: list[str]) -> Any:
    """The planner's calls answered in order; the answer-writing call as everywhere else."""

    def reply(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        if "Proposed answer:" in str(messages[-1]["content"]):
            return fake_reply(messages, settings, schema)
        return replies.pop(0)

    return reply


def test_the_plan_and_each_nodes_progress_stream_as_reasoning() -> None:
    plan = {
        "lookups": ["Oxford founded", "Cambridge founded"],
        "steps": [
            {"id": "s1", "tool": "llm", "inputs": ["Which was founded first? {l1} {l2}"]},
            {"id": "s2", "tool": "lookup", "inputs": ["{s1} founded"]},  # s1 runs: s2 needs it
        ],
    }
    replies = [
        json.dumps(plan),
        "Answer: Oxford",
        json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
    ]
    server = config(scripted(replies), planner="dag", tools=[lookup])
    with serving(server) as base_url, openai.OpenAI(base_url=base_url, api_key="x") as api:
        stream = api.chat.completions.create(
            model="agentflow-direct",
            messages=[{"role": "user", "content": "Which was founded first, Oxford or Cambridge?"}],
            stream=True,
        )
        chunks = [c.choices[0].delta for c in stream if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in chunks)
    content = "".join(d.content or "" for d in chunks)
    assert '- planned l1: lookup("Oxford founded")' in reasoning
    assert "- planned s1: llm(" in reasoning and "(after l1, l2)" in reasoning
    assert "- done l1: Oxford: founded 1096" in reasoning
    assert "- done s1: Oxford" in reasoning and "Answer found: Oxford" in reasoning
    assert "- planned s2: lookup(" in reasoning and "(after s1)" in reasoning
    assert content == "The answer is Oxford as far as I can tell."


def test_a_request_picks_its_planner_and_limits_in_its_agentflow_object() -> None:
    plan = {"lookups": ["Oxford founded"], "steps": []}
    enough = json.dumps({"enough": True, "answer": "1096", "missing": ""})
    replies = [json.dumps(plan), enough, json.dumps(plan)]  # the second run stops at its cap
    server = config(scripted(replies), tools=[lookup])  # the agent's own planner is direct
    with (
        serving(server) as base_url,
        openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as api,
    ):
        options = {"agentflow": {"planner": "dag", "max_model_calls": 5}}
        reply = api.chat.completions.create(
            model="agentflow-direct",
            messages=[{"role": "user", "content": "When was Oxford founded?"}],
            extra_body=options,
        )
        run = api.get(f"/runs/{(reply.model_extra or {})['run_id']}", cast_to=object)
        with pytest.raises(openai.InternalServerError, match="its limit of model calls"):
            api.chat.completions.create(
                model="agentflow-direct",
                messages=[{"role": "user", "content": "When was Oxford founded?"}],
                extra_body={"agentflow": {"planner": "dag", "max_model_calls": 1}},
            )
    assert isinstance(run, dict) and run["trace"]["planner"] == "dag"
    assert [node["id"] for node in run["trace"]["nodes"]] == ["l1"]
