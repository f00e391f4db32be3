"""`agentflow serve` as a user starts it, in front of the embedded model, answering the official
openai client: one streamed chat, kept short (the model runs on a slow CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2
import openai
import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
    command += ["--planner", "direct", "--api-key", "live-key"]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, env=os.environ.copy(), stderr=sink, stdout=sink)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "agentflow serve did not come up"
            try:
                if httpx2.get(f"{root}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.2)
        yield f"{root}/v1"
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_embedded_model_streams_an_answer_and_the_plan(serve_url: str) -> None:
    with openai.OpenAI(base_url=serve_url, api_key="live-key", max_retries=0) as api:
        stream = api.chat.completions.create(
            model="agentflow-direct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    progress = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert isinstance(content, str)
    assert "planned answer" in progress and "done answer" in progress
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens > 0
