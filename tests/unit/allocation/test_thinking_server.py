"""Thinking adapters over real HTTP, against a fake OpenAI-compatible server on loopback that
behaves like a thinking model: it sends its thinking as `reasoning` (the field recent vLLM
sends), honours or ignores `enable_thinking`, accepts or refuses `thinking_token_budget` and
`n`, and serves `/tokenize`, `/detokenize` and `/v1/completions` (raw text: a prompt that ends
inside `<think>` is thought on, one word a token, until the stop or `max_tokens`), so budget
forcing runs for real."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentflow import Agent
from agentflow.models import OpenAIModel, RetryPolicy


@dataclass
class Behaviour:
    honours_switch: bool = True
    accepts_thinking_budget: bool = True
    accepts_n: bool = True
    serves_raw_text: bool = True
    """False: no `/tokenize`, `/detokenize` or `/v1/completions` (404), as servers other than
    vLLM."""
    requests: list[dict[str, Any]] = field(default_factory=list)


def _reply(body: dict[str, Any], behaviour: Behaviour) -> tuple[int, dict[str, Any]]:
    behaviour.requests.append(body)
    if "thinking_token_budget" in body and not behaviour.accepts_thinking_budget:
        return 400, {"error": {"message": "unknown field: thinking_token_budget", "code": 400}}
    n = int(body.get("n", 1))
    if n > 1 and not behaviour.accepts_n:
        return 400, {"error": {"message": "n must be 1", "code": 400}}
    kwargs = body.get("chat_template_kwargs") or {}
    thinks = kwargs.get("enable_thinking", True) or not behaviour.honours_switch
    words = ["hmm"] * min(50, int(body.get("thinking_token_budget") or 50)) if thinks else []
    message = {"role": "assistant", "content": "Answer: 4"}
    if words:
        message["reasoning"] = " ".join(words)
    choices = [{"index": i, "message": message, "finish_reason": "stop"} for i in range(n)]
    usage = {"prompt_tokens": 10, "completion_tokens": n * (len(words) + 2)}
    return 200, {"id": "x", "object": "chat.completion", "model": "m", "choices": choices,
                 "usage": usage}  # fmt: skip


def _raw(path: str, body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    behaviour.requests.append({"path": path, **body})
    if path == "/tokenize":  # the "template": a token per character of a fixed rendering
        rendered = f"<user>{body['messages'][-1]['content']}</user><assistant>"
        return {"tokens": [ord(c) for c in rendered], "count": len(rendered)}
    if path == "/detokenize":
        return {"prompt": "".join(chr(t) for t in body["tokens"])}
    prompt, cap = body["prompt"], int(body.get("max_tokens") or 16)
    if prompt.endswith("</think>\n\n"):
        text = "Answer: 4"
    else:  # thinking: would go on for 50 words, cut at the cap (the stop never comes)
        text = "<think>\n" + " ".join(["hmm"] * min(50, cap))
    usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text.split())}
    return {"model": "m", "choices": [{"text": text, "finish_reason": "length"}], "usage": usage}


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.endswith("/chat/completions"):
                status, data = _reply(body, behaviour)
            elif behaviour.serves_raw_text:
                status, data = 200, _raw(self.path.removeprefix("/v1"), body, behaviour)
            else:
                behaviour.requests.append({"path": self.path.removeprefix("/v1"), **body})
                status, data = 404, {"detail": "Not Found"}
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def _run(url: str, allocation: str) -> Any:
    model = OpenAIModel("Qwen/Qwen3-8B", url, retry=RetryPolicy(max_retries=0))
    try:
        result = await Agent(model=model, planner="direct", allocation=allocation).run("2+2?")
    finally:
        await model.aclose()
    return result


async def test_think_mode_switches_thinking_on_with_a_cap(server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    result = await _run(url, "uniform-think")
    (request,) = behaviour.requests
    assert request["chat_template_kwargs"] == {"enable_thinking": True}
    assert (request["thinking_token_budget"], request["max_tokens"]) == (4096, 640 + 4096)
    assert result.answer == "4"  # from the content; the thinking came as `reasoning`
    record = result.trace.nodes["answer"].allocation
    assert record["adapter"] == "chat-template" and record["notes"] == []


async def test_a_server_refusing_the_thinking_budget_gets_budget_forcing(
    server: tuple[str, Behaviour],
) -> None:
    url, behaviour = server
    behaviour.accepts_thinking_budget = False
    result = await _run(url, "uniform-think")
    paths = [r.get("path", "chat") for r in behaviour.requests]
    assert paths == ["chat", "/tokenize", "/detokenize", "/completions", "/completions"]
    assert behaviour.requests[1]["chat_template_kwargs"] == {"enable_thinking": True}
    think, answer = behaviour.requests[3], behaviour.requests[4]
    prompt = "<user>" + str(behaviour.requests[0]["messages"][-1]["content"]) + "</user><assistant>"
    assert (think["prompt"], think["max_tokens"], think["stop"]) == (prompt, 4096, ["</think>"])
    thought = "<think>\n" + " ".join(["hmm"] * 50)
    assert answer["prompt"] == f"{prompt}{thought}\n</think>\n\n" and answer["max_tokens"] == 640
    assert result.answer == "4"  # from the continuation, never from the thinking
    record = result.trace.nodes["answer"].allocation
    assert record["notes"] == [
        "server refused thinking_token_budget: thinking capped by budget forcing through "
        "/v1/completions"
    ]
    assert record["tokens"] == {"think": 53}  # "<think>", 50 words, then "Answer: 4"
    assert result.trace.nodes["answer"].usage.calls == 2


async def test_without_raw_text_a_refused_thinking_budget_is_capped_by_max_tokens(
    server: tuple[str, Behaviour],
) -> None:
    url, behaviour = server
    behaviour.accepts_thinking_budget, behaviour.serves_raw_text = False, False
    result = await _run(url, "uniform-think")
    paths = [r.get("path", "chat") for r in behaviour.requests]
    assert paths == ["chat", "/tokenize", "chat"]
    retried = behaviour.requests[2]
    assert "thinking_token_budget" not in retried and retried["max_tokens"] == 640 + 4096
    assert result.answer == "4"
    record = result.trace.nodes["answer"].allocation
    assert record["notes"] == [
        "server has no /tokenize: budget forcing is not possible there",
        "server refused thinking_token_budget: thinking capped by max_tokens only",
    ]


async def test_a_model_ignoring_the_switch_is_noted(server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.honours_switch = False
    result = await _run(url, "uniform-fast")
    assert behaviour.requests[0]["chat_template_kwargs"] == {"enable_thinking": False}
    notes = result.trace.nodes["answer"].allocation["notes"]
    assert notes == ["the model thought in fast mode: it ignores the thinking switch"]


async def test_agreement_on_a_server_refusing_n_draws_one_by_one(
    server: tuple[str, Behaviour],
) -> None:
    url, behaviour = server
    behaviour.accepts_n = False
    result = await _run(url, "agreement")
    assert [r.get("n", 1) for r in behaviour.requests] == [3, 1, 1, 1]
    record = result.trace.nodes["answer"].allocation
    assert (record["mode"], record["samples"], result.answer) == ("fast", 3, "4")
    assert record["notes"] == ["server refused n=3 (HTTP 400): drew the samples one by one"]
