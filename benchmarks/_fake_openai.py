"""A fake OpenAI-compatible server: every chat completion answers after a fixed delay.

    python benchmarks/_fake_openai.py [--port 0] [--delay 0.05]

It prints `listening on PORT` once it accepts connections, and exits when its standard input
closes, so a benchmark that dies cannot leave it behind. The HTTP handling is a bare asyncio
protocol (HTTP/1.1 keep-alive, Content-Length bodies, no pipelining surprises), so the server
adds little besides the delay even with hundreds of connections open. Routes:

- `POST /v1/chat/completions`: a fixed `chat.completion` body, with usage, after `--delay` s;
- `GET /v1/models`: the one model it serves;
- `GET /stats`: requests answered so far, the peak number in flight since the last `/stats`,
  and the server's CPU seconds so far.

`FakeServer` starts it as a subprocess and stops it again, from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, cast

MODEL = "fake-model"
REPLY = "The fake server always thinks the same thing.\nAnswer: 42"

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 12, "total_tokens": 72},
    }
).encode()
_MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "me"}]}
).encode()
_NOT_FOUND = json.dumps({"error": {"message": "no such route", "type": "not_found"}}).encode()
_BAD_REQUEST = json.dumps({"error": {"message": "bad request", "type": "invalid"}}).encode()


def _response(status: str, body: bytes, *, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


_COMPLETION_RESPONSE = _response("200 OK", _COMPLETION)
_MODELS_RESPONSE = _response("200 OK", _MODELS)


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.peak = 0

    def stats(self) -> bytes:
        cpu = time.process_time()
        body = json.dumps({"requests": self.requests, "peak_in_flight": self.peak, "cpu_s": cpu})
        self.peak = self.in_flight
        return _response("200 OK", body.encode())


class _Connection(asyncio.Protocol):
    """One client connection: reads requests off the buffer, answers each in arrival order."""

    def __init__(self, delay: float, counters: _Counters) -> None:
        self.delay = delay
        self.counters = counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._handle_one():
            pass

    def _handle_one(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        try:
            method, path, _ = lines[0].split(" ", 2)
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._send(_response("400 Bad Request", _BAD_REQUEST, close=True), close=True)
            return False
        if len(self.buffer) < end + 4 + length:
            return False
        del self.buffer[: end + 4 + length]
        self._route(method, path.split("?", 1)[0], headers.get("connection") == "close")
        return True

    def _route(self, method: str, path: str, close: bool) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            self.counters.in_flight += 1
            self.counters.peak = max(self.counters.peak, self.counters.in_flight)
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay, self._complete, close)
        elif method == "GET" and path.endswith("/models"):
            self._send(_MODELS_RESPONSE, close)
        elif method == "GET" and path == "/stats":
            self._send(self.counters.stats(), close)
        else:
            self._send(_response("404 Not Found", _NOT_FOUND), close)

    def _complete(self, close: bool) -> None:
        self.counters.in_flight -= 1
        self.counters.requests += 1
        self._send(_COMPLETION_RESPONSE, close)

    def _send(self, payload: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(payload)
        if close:
            self.transport.close()


async def serve(port: int, delay: float) -> None:
    """Serve until standard input closes."""
    loop = asyncio.get_running_loop()
    counters = _Counters()
    server = await loop.create_server(
        lambda: _Connection(delay, counters), "127.0.0.1", port, backlog=2048
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)
    async with server:
        await loop.run_in_executor(None, sys.stdin.read)  # EOF: the parent is gone


class FakeServer:
    """The fake server as a subprocess on a free loopback port; a context manager."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--port", "0", "--delay", str(self.delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops the server
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.port = int(line.split()[-1])
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        """Requests answered so far and the peak in flight since the previous call."""
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per completion")
    args = parser.parse_args()
    try:
        import uvloop  # a faster loop if installed; the server works without it
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
