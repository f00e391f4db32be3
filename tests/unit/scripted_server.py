"""A scripted OpenAI-compatible server on loopback, for tests through the CLI and the planners:
every request is answered by a Python function of its path and JSON body, over real HTTP.

`reply_json` and `reply_sse` build what vLLM sends (a chat completion, or its server-sent events
ending in `[DONE]`); a test's function may send anything else (an HTML page, a JSON body to a
streamed request, a stream cut short) to play a server that lies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content_type: str = "application/json"
    pieces: Iterable[bytes] = ()
    """The body, sent piece by piece (flushed after each); the connection closes at its end, or
    when the client closes it (a generator may trickle pieces forever)."""


Answer = Callable[[str, dict[str, Any]], Reply]
"""`answer(path, body)`: the reply to one request (path without the `/v1` prefix)."""


@dataclass
class Served:
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request's JSON body, `path` added, in arrival order."""


def chat_body(
    contents: list[str], *, reasoning: str | None = None, completion_tokens: int = 5
) -> dict[str, Any]:
    """A chat completion with one choice per content."""
    choices = []
    for index, content in enumerate(contents):
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning"] = reasoning
        choices.append({"index": index, "message": message, "finish_reason": "stop"})
    usage = {"prompt_tokens": 10, "completion_tokens": completion_tokens * len(contents)}
    return {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


def reply_json(data: Any, status: int = 200) -> Reply:
    return Reply(status=status, pieces=[json.dumps(data).encode()])


def sse_pieces(
    words: Sequence[str], *, reasoning: Sequence[str] = (), done: bool = True
) -> list[bytes]:
    """vLLM's events for an answer of `words` (one token each), after `reasoning` tokens."""
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    events += [{"choices": [{"index": 0, "delta": {"reasoning": r}}]} for r in reasoning]
    events += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in words]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    tokens = len(words) + len(reasoning)
    events.append({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": tokens}})
    pieces = [f"data: {json.dumps({'object': 'chat.completion.chunk', **e})}\n\n".encode()
              for e in events]  # fmt: skip
    return pieces + ([b"data: [DONE]\n\n"] if done else [])


def reply_sse(pieces: Iterable[bytes]) -> Reply:
    return Reply(content_type="text/event-stream", pieces=pieces)


def reply_chat(body: dict[str, Any], contents: list[str]) -> Reply:
    """What vLLM sends for `contents` (one per sample): server-sent events when the request
    asks to stream (a vote's sample: one), else one chat completion."""
    if body.get("stream"):
        (content,) = contents
        return reply_sse(
            sse_pieces(content.split(" ")[:1] + [f" {w}" for w in content.split(" ")[1:]])
        )
    return reply_json(chat_body(contents))


@contextmanager
def scripted_server(answer: Answer) -> Iterator[Served]:
    """A server on 127.0.0.1 answering every POST with `answer`; yields its `/v1` base URL."""
    served = Served(base_url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            path = self.path.removeprefix("/v1")
            with lock:
                served.requests.append({"path": path, **body})
            reply = answer(path, body)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for piece in reply.pieces:
                    self.wfile.write(piece)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a reply that trickles forever ends so)

        def do_GET(self) -> None:
            """`GET /models`, which readiness probes ask: an empty list, as a server would."""
            payload = json.dumps({"object": "list", "data": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
