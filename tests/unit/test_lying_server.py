"""A server that answers 200 with something that is not an answer (an HTML page, a JSON body to
a streamed request, a stream or body cut short) fails the item as infrastructure, through the
eval CLI and every planner: nothing is recorded, the exit is 1, and a resume against an honest
server records the items. Before, `--planner dag` recorded all of them as answered and wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agentflow.cli import main
from agentflow.exceptions import ModelResponseError
from tests.unit.scripted_server import (
    Answer,
    Reply,
    chat_body,
    reply_json,
    reply_sse,
    scripted_server,
    sse_pieces,
)
from tests.unit.wire import model_on

HTML = Reply(content_type="text/html", pieces=[b"<html>\n<body>502 Bad Gateway</body>\n</html>\n"])
PLAN = json.dumps({"lookups": [], "steps": [{"id": "s1", "tool": "llm", "inputs": ["2+2?"]}]})


def _honest_text(body: dict[str, Any]) -> str:
    properties = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    properties = properties.get("properties", {})
    if "steps" in properties and "lookups" in properties:
        return PLAN
    if "steps" in properties:
        return json.dumps({"steps": ["Add."]})
    if "difficulty" in properties:
        return json.dumps({"difficulty": 0.1})
    if "answer" in properties:
        return json.dumps({"enough": True, "answer": "4", "missing": "", "reasoning": ""})
    return "2+2 is 4. \\boxed{4}\nAnswer: 4"


def honest(path: str, body: dict[str, Any]) -> Reply:
    text = _honest_text(body)
    if body.get("stream"):
        return reply_sse(sse_pieces([text[i : i + 8] for i in range(0, len(text), 8)]))
    return reply_json(chat_body([text]))


def lying(lie: str) -> Answer:
    def answer(path: str, body: dict[str, Any]) -> Reply:
        if lie == "html":
            return HTML
        if lie == "ignores-stream":  # a JSON body whether streamed or not
            return reply_json(chat_body([_honest_text(body)]))
        reply = honest(path, body)
        pieces = list(reply.pieces)
        if body.get("stream"):  # "cut-short" and "stream-cut": the stream ends halfway
            return reply_sse(pieces[: len(pieces) // 2])
        if lie == "stream-cut":
            return reply
        return Reply(pieces=[pieces[0][: len(pieces[0]) // 2]])  # the body cut halfway

    return answer


def _eval(tmp_path: Path, url: str, planner: str) -> tuple[int, int]:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": str(i), "question": "2+2?", "answer": "4"}) + "\n" for i in range(3)
        )
    )
    out = tmp_path / "run"
    args = ["eval", str(questions), "--planner", planner, "--base-url", url, "--model", "m"]
    code = main([*args, "--out", str(out), "--max-failures", "100"])
    results = out / "results.jsonl"
    return code, len(results.read_text().splitlines()) if results.exists() else 0


PLANNERS = ["direct", "react", "hybrid", "dag", "scale"]
LIES = ["html", "ignores-stream", "cut-short", "stream-cut"]
STREAM_ONLY = {"ignores-stream", "stream-cut"}
"""Lies told to streamed requests only: a planner that streams nothing gets honest replies."""


@pytest.mark.parametrize("lie", LIES)
@pytest.mark.parametrize("planner", PLANNERS)
def test_a_lying_server_records_nothing_and_a_resume_retries(
    planner: str, lie: str, tmp_path: Path
) -> None:
    with scripted_server(lying(lie)) as server:
        code, rows = _eval(tmp_path, server.base_url, planner)
    streamed = any(r.get("stream") for r in server.requests)
    if lie in STREAM_ONLY and not streamed:
        assert (code, rows) == (0, 3)  # nothing was streamed: every reply was a fine answer
        return
    assert (code, rows) == (1, 0)
    with scripted_server(honest) as server:
        assert _eval(tmp_path, server.base_url, planner) == (0, 3)


def test_a_node_whose_reply_is_broken_stops_the_run(tmp_path: Path) -> None:
    """The dag plan and the joiner are honest, the llm step's reply is an HTML page: before,
    the failed step was data for the joiner, which answered, and the item was recorded."""

    def answer(path: str, body: dict[str, Any]) -> Reply:
        if not body.get("stream") and not body.get("response_format"):
            return HTML
        return honest(path, body)

    with scripted_server(answer) as server:
        assert _eval(tmp_path, server.base_url, "dag") == (1, 0)


USAGE_ONLY = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}}\n\n'
NO_CHOICE_STREAMS = {
    "done-only": b"data: [DONE]\n\n",
    "usage-only": USAGE_ONLY + b"data: [DONE]\n\n",
}
"""Streams that end properly in `[DONE]` with no choice in them: no answer, not an empty one."""


@pytest.mark.parametrize("stream", sorted(NO_CHOICE_STREAMS))
def test_a_stream_with_no_choice_records_nothing_and_a_resume_retries(
    stream: str, tmp_path: Path
) -> None:
    """The dag plan is streamed: before, an empty plan was read from it and every item was
    recorded wrong ("the plan has no usable nodes", error_kind plan), exit 0. Unstreamed, the
    same (`choices: []`) was already a malformed response."""

    def answer(path: str, body: dict[str, Any]) -> Reply:
        if body.get("stream"):
            return reply_sse([NO_CHOICE_STREAMS[stream]])
        return honest(path, body)

    with scripted_server(answer) as server:
        assert _eval(tmp_path, server.base_url, "dag") == (1, 0)
    assert any(r.get("stream") for r in server.requests)
    with scripted_server(honest) as server:
        assert _eval(tmp_path, server.base_url, "dag") == (0, 3)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html>\n<body>502</body>\n</html>\n", ModelResponseError),
        (json.dumps(chat_body(["Answer: 4"])).encode(), ModelResponseError),
        (b"".join(sse_pieces(["Answer", ": 4"], done=False)), ModelResponseError),
        (NO_CHOICE_STREAMS["done-only"], ModelResponseError),
        (NO_CHOICE_STREAMS["usage-only"], ModelResponseError),
    ],
    ids=["html", "ignores-stream", "no-done", "done-only", "usage-only"],
)
async def test_a_stream_that_is_not_one_raises_on_the_httpx_transport_too(
    body: bytes, error: type[Exception]
) -> None:
    model = model_on(lambda request: httpx2.Response(200, content=body), retries=0)
    with pytest.raises(error) as raised:
        async for _ in model.stream([{"role": "user", "content": "2+2?"}]):
            pass
    await model.aclose()
    if b"[DONE]" in body:  # what came is carried
        assert "no choice" in str(raised.value) and "[DONE]" in str(raised.value)


async def test_a_stream_whose_answer_is_empty_is_still_an_answer() -> None:
    """A choice that finished with no text is the model answering "", not the server failing."""
    body = b"".join(sse_pieces([]))
    model = model_on(lambda request: httpx2.Response(200, content=body), retries=0)
    deltas = [delta async for delta in model.stream([{"role": "user", "content": "2+2?"}])]
    await model.aclose()
    assert "".join(d.text for d in deltas) == "" and deltas[0].finish_reason == "stop"
