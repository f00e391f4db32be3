"""The pieces behind the routes, without HTTP: conversations, shutdown, the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.agent import RunResult
from agentflow.cli._common import CommandContext
from agentflow.cli._main import _parser
from agentflow.exceptions import UserError
from agentflow.model import Message, ModelSettings
from agentflow.server.cli import API_KEYS_ENV, build_config
from agentflow.server.conversation import Conversation
from agentflow.server.protocol import ChatCompletionRequest, ChatMessage, RequestError
from agentflow.server.service import ChatService, Failed, Finished
from agentflow.tool import Tool, tool
from agentflow.trace import Trace

from .conftest import config, fake_reply


def conversation(*turns: tuple[str, str]) -> Conversation:
    return Conversation.from_messages([ChatMessage(role=r, content=t) for r, t in turns])  # type: ignore[arg-type]


def test_standing_instructions_are_restated_once_the_conversation_is_long() -> None:
    turns = [
        ("system", "You are a geography tutor."),
        ("user", "Always answer in French. What is the capital of France?"),
        ("assistant", "D'accord."),
        ("user", "What is the capital of Italy?"),
        ("assistant", "Rome."),
        ("user", "And of Spain?"),
    ]
    chat = conversation(*turns)
    assert chat.user_turns == 3 and chat.message == "And of Spain?"
    assert chat.standing_instructions() == "You are a geography tutor. Always answer in French."
    assert chat.reminder(after_turns=3) is None
    reminder = chat.reminder(after_turns=2)
    assert reminder is not None and "Always answer in French." in reminder
    assert chat.reminder(after_turns=None) is None


def test_a_conversation_must_end_with_a_user_message() -> None:
    with pytest.raises(RequestError) as caught:
        conversation(("user", "hi"), ("assistant", "hello"))
    assert caught.value.param == "messages"
    with pytest.raises(RequestError) as caught:
        conversation(("user", "hi"), ("tool", "42"))
    assert caught.value.param == "messages[1].role"


def test_the_rewrite_and_answer_calls_see_the_earlier_turns() -> None:
    chat = conversation(
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Q?")
    )
    (rewrite,) = chat.rewrite_messages()
    assert (
        "user: Hi\nassistant: Hello" in rewrite["content"]
        and "Last message: Q?" in rewrite["content"]
    )
    result = RunResult(answer="Rome", trace=Trace(question="Q?", planner="direct"))
    answer = chat.answer_messages(result, reminder="Remember: be brief.")
    assert [m["role"] for m in answer] == ["system", "user", "assistant", "user"]
    assert answer[0]["content"] == "Be brief."
    last = answer[-1]["content"]
    assert last.startswith("Q?") and '<result id="proposed">\nRome\n</result>' in last
    assert last.endswith("Remember: be brief.")


def request(content: str = "What is the capital of France?") -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="agentflow-direct", messages=[ChatMessage(role="user", content=content)]
    )


async def test_shutdown_lets_short_runs_finish_and_cancels_long_ones() -> None:
    async def reply(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        if "slow" in str(messages[-1]["content"]):
            await asyncio.sleep(30)
        return fake_reply(messages, settings, schema)

    service = ChatService(config(reply))
    quick, slow = service.start(request()), service.start(request("slow question"))
    # The quick run takes ~0.05 s, up to ~0.15 s on a loaded machine: 0.5 s of grace was too
    # close; the slow one still needs 15 times the grace, so it is always cut off.
    await service.aclose(grace=2.0)
    assert quick.record.status == "ok" and slow.record.status == "failed"
    with pytest.raises(RequestError) as caught:
        service.start(request())
    assert caught.value.status == 503
    updates = [u async for u in quick.updates(keepalive=1)]
    assert isinstance(updates[-1], Finished) and not any(isinstance(u, Failed) for u in updates)
    # The one cut off says so to its client, rather than its stream just stopping.
    (*_, last) = [u async for u in slow.updates(keepalive=1)]
    assert last == Failed("the server is shutting down", status=503)


async def test_a_run_stopped_before_its_first_step_still_tells_its_client() -> None:
    service = ChatService(config())
    run = service.start(request())
    run.stop("the server is shutting down")  # before the task ever ran
    async with asyncio.timeout(5):
        updates = [u async for u in run.updates(keepalive=1) if u is not None]
    assert updates == [Failed("the server is shutting down", status=503)]
    assert service.waiting == 0 and run.record.status == "failed"
    await service.aclose(grace=0)


def parse(*argv: str) -> Any:
    parser, _ = _parser()
    return parser.parse_args(["serve", *argv])


def test_the_command_line_builds_agents_keys_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEYS_ENV, "from-env, other")
    args = parse("--planner", "react", "--tool", "calculator", "--api-key", "k1", "--max-runs", "3")
    built = build_config(CommandContext(), args)
    (agent,) = built.agents
    assert agent.id == "agentflow-react" and [t.name for t in agent.tools] == ["calculator"]
    assert built.api_keys == {"k1", "from-env", "other"} and built.max_runs == 3
    with pytest.raises(SystemExit):
        parse("--max-runs", "0")


def test_a_config_file_names_several_agents(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agents]]\nid = "quick"\nplanner = "direct"\n\n'
        '[[agents]]\nid = "deep"\nplanner = "dag"\nmax_model_calls = 9\n'
        'model = "other"\nbase_url = ["http://gpu:8000/v1"]\n'
    )
    built = build_config(CommandContext(), parse("--config", str(path)))
    quick, deep = built.agents
    assert (quick.id, quick.planner, deep.id, deep.planner) == ("quick", "direct", "deep", "dag")
    assert deep.limits.max_model_calls == 9 and deep.model.name == "other"
    path.write_text('[[agents]]\nid = "x"\nplaner = "dag"\n')
    with pytest.raises(UserError, match="planer"):
        build_config(CommandContext(), parse("--config", str(path)))


async def test_a_run_cancelled_before_it_ever_ran_leaves_the_queue() -> None:
    service = ChatService(config())
    run = service.start(request())
    assert service.waiting == 1 and run.task is not None
    run.task.cancel()
    await asyncio.gather(run.task, return_exceptions=True)
    assert (service.waiting, service.in_flight) == (0, 0)
    assert run.record.status == "cancelled" and run.record.finished is not None
    await service.aclose(grace=0)


def test_corpus_search_comes_from_the_group_that_owns_it(tmp_path: Path) -> None:
    @tool(name="search")
    def search(query: str) -> str:
        """Passages about `query`."""
        return query

    corpora: list[Sequence[Path]] = []

    def corpus_search(paths: Sequence[Path]) -> Tool:
        corpora.append(paths)
        return search

    args = parse("--corpus", str(tmp_path / "a.jsonl"))
    (agent,) = build_config(CommandContext(corpus_search=corpus_search), args).agents
    assert [t.name for t in agent.tools] == ["search"] and corpora == [[tmp_path / "a.jsonl"]]
    with pytest.raises(UserError, match="--corpus needs"):
        build_config(CommandContext(), args)
