"""Time limits that hold against a server that trickles bytes (issue 21, item 5).

`--timeout` is a deadline for a whole request (connecting, the headers, the whole body or the
whole stream), where it used to bound each wait for bytes: a server sending a byte every 0.3 s
held `ask --timeout 3` for 188 s (the node's own timeout) and a dag plan for 398 s. `--deadline`
bounds the whole question: the work left is cancelled, and the findings so far are joined.

The bounds asserted are generous (behaviour, not speed): 4x the limit, measured with
`time.monotonic`. `ask` runs in a thread so that a run that does not stop fails the test at the
bound instead of holding it for minutes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agentflow import Agent, DeadlineExceededError, RunLimits, UserError
from agentflow.cli import main
from agentflow.endpoints import EndpointPool
from agentflow.exceptions import ModelTimeoutError
from agentflow.models import OpenAIModel, RetryPolicy

from .loopback import Loopback, Pause, sse_event, sse_head
from .scripted_server import Reply, chat_body, reply_json, reply_sse, scripted_server, sse_pieces

TRICKLE_S = 0.3
"""Seconds between two bytes of a trickling reply."""
PLAN = json.dumps(
    {
        "lookups": [],
        "steps": [
            {"id": "s1", "tool": "llm", "inputs": ["ALPHA: how tall is Everest?"]},
            {"id": "s2", "tool": "llm", "inputs": ["BETA: how tall is K2?"]},
        ],
    }
)
QUESTION = "Is Everest taller than K2?"
USER = [{"role": "user", "content": "hi"}]


def trickle(head: bytes, then: bytes = b" ") -> Iterator[bytes]:
    """`head` one byte at a time, then `then` forever: one piece every `TRICKLE_S`."""
    for byte in head:
        yield bytes([byte])
        time.sleep(TRICKLE_S)
    while True:
        yield then
        time.sleep(TRICKLE_S)


def trickling_json() -> Reply:
    return Reply(pieces=trickle(b'{"choices": ['))


def trickling_sse() -> Reply:
    return Reply(content_type="text/event-stream", pieces=trickle(b"".join(sse_pieces([PLAN]))))


def ask_within(args: list[str], bound: float) -> tuple[int, float]:
    """`agentflow ask ARGS`: its exit code and seconds taken; fails if it runs past `bound`."""
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(main(["ask", *args])), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound)
    seconds = time.monotonic() - started
    assert not thread.is_alive(), f"ask still running after {bound:g} s"
    return code[0], seconds


# --- --timeout: one request ---------------------------------------------------------------------


def test_ask_timeout_bounds_a_trickled_reply(capsys: pytest.CaptureFixture[str]) -> None:
    """Not streamed: the direct planner's one call (was: the node's 180 s)."""
    with scripted_server(lambda path, body: trickling_json()) as served:
        args = ["--timeout", "1", "--base-url", served.base_url, "--model", "m", QUESTION]
        code, seconds = ask_within(args, bound=4.0)
    assert code == 1 and seconds < 4.0
    assert "did not answer within 1 s" in capsys.readouterr().err


def test_ask_timeout_bounds_a_trickled_plan_stream(capsys: pytest.CaptureFixture[str]) -> None:
    """Streamed: the dag planner's plan arrives a byte at a time (was: 398 s)."""
    with scripted_server(lambda path, body: trickling_sse()) as served:
        args = ["--planner", "dag", "--timeout", "1", "--base-url", served.base_url]
        code, seconds = ask_within([*args, "--model", "m", QUESTION], bound=4.0)
    assert code == 1 and seconds < 4.0
    assert "did not answer within 1 s" in capsys.readouterr().err


@pytest.mark.parametrize("transport", ["aiohttp", "httpx2"])
async def test_a_stream_trickling_after_its_first_piece_ends_at_the_time_limit(
    transport: str,
) -> None:
    """A stream that answered and then trickles comments (keep-alives) is stopped at the
    request's time limit, on both transports; no idle timeout would ever fire."""
    script: list[tuple[Pause, bytes]] = [(0.0, sse_head() + sse_event("partial"))]
    script += [(TRICKLE_S / 3, b": \n")] * 200
    async with Loopback([script]) as server:
        factory = (lambda url: httpx2.AsyncClient()) if transport == "httpx2" else None
        pool = EndpointPool(server.base_url, http_client_factory=factory)
        model = OpenAIModel("m", pool, timeout=0.6, idle_timeout=5.0)
        started = time.monotonic()
        pieces = []
        with pytest.raises(ModelTimeoutError, match=r"did not finish within 0.6 s .* 1 pieces"):
            async for delta in model.stream(USER):
                pieces.append(delta.text)
        await model.aclose()
    assert pieces == ["partial"] and time.monotonic() - started < 2.4


@pytest.mark.parametrize("transport", ["aiohttp", "httpx2"])
async def test_a_trickled_body_is_one_timeout_not_one_per_retry(transport: str) -> None:
    """A timed-out try is asked again only of another server: one server, one time limit."""
    body = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n{"
    script: list[tuple[Pause, bytes]] = [(0.0, body), *[(TRICKLE_S / 3, b" ")] * 200]
    async with Loopback([script] * 4) as server:
        factory = (lambda url: httpx2.AsyncClient()) if transport == "httpx2" else None
        pool = EndpointPool(server.base_url, http_client_factory=factory)
        model = OpenAIModel("m", pool, timeout=0.6, retry=RetryPolicy(max_retries=3))
        started = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="did not answer within 0.6 s"):
            await model.complete(USER)
        await model.aclose()
    assert time.monotonic() - started < 2.4 and len(server.bodies) == 1


# --- --deadline: the whole question -------------------------------------------------------------


def is_join(body: dict[str, Any]) -> bool:
    return "Findings:" in str(body["messages"][0]["content"]) and not body.get("stream")


def dag_server(*, join_trickles: bool = False) -> Callable[[str, dict[str, Any]], Reply]:
    """Plans two reasoning steps: ALPHA answers at once, BETA trickles forever; the join
    answers at once (or trickles too)."""

    def answer(path: str, body: dict[str, Any]) -> Reply:
        if body.get("stream"):
            return reply_sse(sse_pieces([PLAN]))
        if is_join(body):  # JSON while it may replan; at the deadline, the last: an Answer line
            if join_trickles:
                return trickling_json()
            if body.get("response_format"):
                decision = {"enough": True, "answer": "Everest", "missing": ""}
                return reply_json(chat_body([json.dumps(decision)]))
            return reply_json(chat_body(["The findings give Everest.\nAnswer: Everest"]))
        if "BETA" in body["messages"][0]["content"]:
            return trickling_json()
        return reply_json(chat_body(["Everest is 8,849 m.\nAnswer: 8,849 m"]))

    return answer


def test_ask_deadline_joins_what_was_found(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(dag_server()) as served:
        args = ["--planner", "dag", "--deadline", "2", "--base-url", served.base_url]
        code, seconds = ask_within([*args, "--model", "m", QUESTION], bound=8.0)
    out = capsys.readouterr()
    assert code == 0 and seconds < 4.0
    assert out.out.strip() == "Everest"
    assert out.err.startswith("warning: the run reached its deadline of 2 s (--deadline)")
    joined = [r for r in served.requests if is_join(r)]
    assert len(joined) == 1 and "8,849 m" in joined[0]["messages"][0]["content"]


def test_ask_deadline_with_no_join_answer_is_an_error_with_no_best_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The join trickles: its reply never came, so there is no answer. The step that finished
    ("Answer: 8,849 m") answered a step, not the question: before, ask printed it, exit 0."""
    with scripted_server(dag_server(join_trickles=True)) as served:
        args = ["--planner", "dag", "--deadline", "2", "--json", "--base-url", served.base_url]
        code, seconds = ask_within([*args, "--model", "m", QUESTION], bound=8.0)
    out = capsys.readouterr()
    assert code == 1 and seconds < 4.0
    printed = json.loads(out.out)
    assert "answer" not in printed and "8,849" not in out.err
    assert "deadline of 2 s" in printed["error"] and "join was still running" in printed["error"]
    assert out.err.startswith("error: the run reached its deadline")


def scale_server(path: str, body: dict[str, Any]) -> Reply:
    """SCALE decomposes into two steps: the first answers at once, the last one trickles."""
    properties = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    properties = properties.get("properties", {})
    if "steps" in properties:
        text = json.dumps({"steps": ["Find the first factor.", "Multiply the factors."]})
    elif "difficulty" in properties:
        text = json.dumps({"difficulty": 0.1})
    elif "This is the last step" in json.dumps(body["messages"]):
        return trickling_sse() if body.get("stream") else trickling_json()
    else:
        text = "6 is the first factor.\nAnswer: 6"
    if body.get("stream"):
        return reply_sse(sse_pieces([text]))
    return reply_json(chat_body([text]))


def test_ask_deadline_never_prints_a_middle_steps_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SCALE's final step hangs: before, ask printed step 1's "Answer: 6" as the answer."""
    with scripted_server(scale_server) as served:
        args = ["--planner", "scale", "--deadline", "2", "--base-url", served.base_url]
        code, seconds = ask_within([*args, "--model", "m", "6 x 7?"], bound=8.0)
    out = capsys.readouterr()
    assert any("This is the last step" in json.dumps(r["messages"]) for r in served.requests)
    assert (code, out.out) == (1, "") and seconds < 4.0
    assert out.err.startswith("error: the run reached its deadline of 2 s")


async def test_the_api_deadline_answers_with_the_findings_so_far() -> None:
    with scripted_server(dag_server()) as served:
        model = OpenAIModel("m", served.base_url)
        agent = Agent(model=model, planner="dag", limits=RunLimits(deadline=1.2))
        started = time.monotonic()
        try:
            result = await agent.run(QUESTION)
        finally:
            await model.aclose()
    assert result.answer == "Everest" and result.deadline_hit
    assert time.monotonic() - started < 3.0
    statuses = {n.id: n.status for n in result.trace.nodes.values()}
    assert statuses == {"s1": "ok", "s2": "cancelled"}
    assert result.as_dict()["deadline_hit"] is True


async def test_a_deadline_before_any_reply_is_the_servers_failure() -> None:
    """No model call completed: the server gave nothing, so the cause is a timeout (an eval's
    infrastructure failure), where it used to be the run's own limit with no cause."""
    with scripted_server(lambda path, body: trickling_json()) as served:
        model = OpenAIModel("m", served.base_url)
        agent = Agent(model=model, planner="direct", limits=RunLimits(deadline=0.8))
        try:
            with pytest.raises(DeadlineExceededError, match="deadline of 0.8 s") as raised:
                await agent.run(QUESTION)
        finally:
            await model.aclose()
    assert raised.value.best_answer == ""
    assert f"{served.base_url} gave nothing before the deadline" in str(raised.value)
    assert isinstance(raised.value.__cause__, ModelTimeoutError)


async def test_a_deadline_after_a_reply_is_the_runs_own_failure() -> None:
    with scripted_server(dag_server(join_trickles=True)) as served:
        model = OpenAIModel("m", served.base_url)
        agent = Agent(model=model, planner="dag", limits=RunLimits(deadline=1.2))
        try:
            with pytest.raises(DeadlineExceededError, match="join was still running") as raised:
                await agent.run(QUESTION)
        finally:
            await model.aclose()
    assert raised.value.best_answer == "" and raised.value.__cause__ is None
    assert "gave nothing" not in str(raised.value)


def test_a_deadline_must_be_positive_seconds() -> None:
    with pytest.raises(UserError, match="deadline must be seconds above 0"):
        RunLimits(deadline=0)
    with pytest.raises(UserError, match="deadline must be seconds above 0"):
        RunLimits(deadline=float("nan"))


def test_the_help_states_what_the_limits_bound(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--deadline SECONDS" in text and "whole question" in text
    assert "the whole reply or stream" in text and "4 x" in text


def test_eval_deadline_scores_the_joined_answer_and_flags_the_row(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [{"id": "1", "question": QUESTION, "answer": "Everest"}]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    with scripted_server(dag_server()) as served:
        args = ["eval", str(questions), "--planner", "dag", "--deadline", "1.2", "--out", str(out)]
        started = time.monotonic()
        assert main([*args, "--base-url", served.base_url, "--model", "m"]) == 0
    assert time.monotonic() - started < 6.0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (sample,) = row["samples"]
    assert sample["answer"] == "Everest" and sample["correct"] is True
    assert sample["deadline_hit"] is True and sample["error_kind"] is None
    assert json.loads((out / "manifest.json").read_text())["deadline"] == 1.2


def _eval_rows(tmp_path: Path, base_url: str, planner: str) -> tuple[int, list[dict[str, Any]]]:
    """`eval` of three questions with --deadline 1.2: its exit code and the rows recorded."""
    questions = tmp_path / "q3.jsonl"
    rows = [{"id": str(i), "question": QUESTION, "answer": "Everest"} for i in range(3)]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    args = ["eval", str(questions), "--planner", planner, "--deadline", "1.2", "--out", str(out)]
    code = main([*args, "--timeout", "30", "--base-url", base_url, "--model", "m"])
    results = out / "results.jsonl"
    recorded = results.read_text().splitlines() if results.exists() else []
    return code, [json.loads(line) for line in recorded]


@pytest.mark.parametrize("planner", ["direct", "dag"])
def test_eval_deadline_before_any_reply_records_nothing_and_a_resume_retries(
    planner: str, tmp_path: Path
) -> None:
    """A server that answers 200 and then a byte at a time: before, each item was recorded
    wrong (error_kind deadline, model_calls 0), exit 0, and a resume never asked again."""
    with scripted_server(lambda path, body: trickling_json()) as served:
        assert _eval_rows(tmp_path, served.base_url, planner) == (1, [])
    with scripted_server(dag_server()) as served:
        code, rows = _eval_rows(tmp_path, served.base_url, planner)
    assert code == 0 and sorted(row["id"] for row in rows) == ["0", "1", "2"]


def test_eval_deadline_after_replies_is_a_recorded_deadline_failure(tmp_path: Path) -> None:
    """The plan and a step came, the join hangs: a hung request and a slow model look alike,
    so the sample is the system's failure, recorded wrong with no best answer."""
    with scripted_server(dag_server(join_trickles=True)) as served:
        code, rows = _eval_rows(tmp_path, served.base_url, "dag")
    assert code == 0 and len(rows) == 3
    for row in rows:
        (sample,) = row["samples"]
        assert sample["error_kind"] == "deadline" and sample["deadline_hit"] is True
        assert sample["correct"] is False and sample["answer"] == ""
        assert sample["model_calls"] >= 2


# --- --node-timeout: one step -------------------------------------------------------------------


def slow_answer(seconds: float) -> Callable[[str, dict[str, Any]], Reply]:
    """The direct planner's one call answered whole, after `seconds` (a busy server)."""

    def pieces() -> Iterator[bytes]:
        time.sleep(seconds)
        yield json.dumps(chat_body(["Everest is taller.\nAnswer: Everest"])).encode()

    return lambda path, body: Reply(pieces=pieces())


def test_eval_node_timeout_is_the_step_bound_and_a_resume_with_more_time_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reply in 1.5 s under --node-timeout 0.5: not recorded, and the message names the
    options to raise; the same run resumed with --node-timeout 10 records it right."""
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": QUESTION, "answer": "Everest"}) + "\n")
    out = tmp_path / "run"
    args = ["eval", str(questions), "--out", str(out), "--timeout", "30", "--model", "m"]
    with scripted_server(slow_answer(1.5)) as served:
        assert main([*args, "--base-url", served.base_url, "--node-timeout", "0.5"]) == 1
        err = capsys.readouterr().err
        assert "timed out after 0.5 s" in err and "--node-timeout" in err
        assert main([*args, "--base-url", served.base_url, "--node-timeout", "10"]) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["samples"][0]["correct"] is True


def test_ask_node_timeout_bounds_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(slow_answer(1.5)) as served:
        args = ["--base-url", served.base_url, "--model", "m", "--timeout", "30", QUESTION]
        code, _ = ask_within(["--node-timeout", "0.5", *args], bound=10.0)
        assert code == 1 and "timed out after 0.5 s" in capsys.readouterr().err
        code, _ = ask_within(["--node-timeout", "10", *args], bound=10.0)
    assert code == 0 and "Everest" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["ask", "eval"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_node_timeout_and_deadline_must_be_positive_seconds(
    command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--node-timeout", "--deadline"):
        with pytest.raises(SystemExit) as exited:
            main([command, option, value, "x"])
        assert exited.value.code == 2 and option in capsys.readouterr().err
