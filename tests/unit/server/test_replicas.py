"""`agentflow serve --replicas 2` on real Ray Serve (issue 22, item 10): one command started
once for the module (Ray costs 10-20 s to start), in a process of its own, with a Ray of its
own, against a scripted model server over loopback. Every response says which replica served
it (`X-Agentflow-Replica`), so a run made on one replica is read back from the other by asking
until the other one answers. The last test stops the command and looks for what it left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from ..scripted_server import Reply, chat_body, reply_json, reply_sse, scripted_server
from .model_server import MODEL, answer_events, is_answer_call

KEYS = ("key-one", "key-two")
MARKER = re.compile(r"marker-\d+")
STARTUP = 180.0
"""Seconds the command may take to start Ray, Serve and both replicas on a busy 2-core box."""
GRACE = 2.0


HELD = {marker: (threading.Event(), threading.Event()) for marker in ("marker-300", "marker-301")}
"""Chats whose answer call, once it has arrived (the first event set), waits for the second."""


TRICKLING = "marker-400"
TRICKLE_ARRIVED = threading.Event()


def trickle() -> Iterator[bytes]:
    """An answer a word every 0.25 s for 10 s: still running when the grace is over."""
    TRICKLE_ARRIVED.set()
    for piece in answer_events([" word"] * 40):
        yield piece
        time.sleep(0.25)


def reply(path: str, body: dict[str, Any]) -> Reply:
    """The direct planner's step and the answer call, each naming the question's marker, so
    an answer that reached the wrong chat shows it."""
    markers = " ".join(sorted(set(MARKER.findall(json.dumps(body["messages"])))))
    if is_answer_call(body) and markers == TRICKLING:
        return reply_sse(trickle())
    if is_answer_call(body):
        if markers in HELD:
            arrived, release = HELD[markers]
            arrived.set()
            release.wait(60)
        return reply_sse(answer_events(["Paris", f" for {markers}."]))
    return reply_json(chat_body([f"Thinking about it.\nAnswer: Paris {markers}"]))


@dataclass
class Served:
    root: str
    process: subprocess.Popen[str]
    ray_dir: Path
    reader: threading.Thread
    output: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(model_url: str, log: Path) -> Served:
    port = _free_port()
    command = [sys.executable, "-m", "agentflow.cli", "serve", "--replicas", "2",
               "--port", str(port), "--base-url", model_url, "--planner", "direct",
               "--api-key", KEYS[0], "--api-key", KEYS[1], "--grace", str(GRACE)]  # fmt: skip
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   start_new_session=True)  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    deadline = time.monotonic() + STARTUP
    while not any(line.startswith("serving") for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"serve --replicas did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    found = re.search(r"Ray in (\S+)\)", lines[0])
    assert found, lines
    return Served(f"http://127.0.0.1:{port}", process, Path(found.group(1)), reader, lines)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with scripted_server(reply) as model:
        log = tmp_path_factory.mktemp("replicas") / "serve.log"
        server = _start(model.base_url, log)
        try:
            yield server
        finally:
            if server.process.poll() is None:
                os.killpg(server.process.pid, signal.SIGTERM)
                server.process.wait(timeout=60)
            server.reader.join(timeout=10)
            if server.process.stdout is not None:
                server.process.stdout.close()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _question(index: int) -> dict[str, Any]:
    text = f"What is the capital of France? (chat marker-{index})"
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


async def _chat(client: httpx2.AsyncClient, index: int, key: str = KEYS[0]) -> dict[str, str]:
    """One chat, streamed when `index` is odd: its answer, run id and replica."""
    url, body = "/v1/chat/completions", _question(index)
    if index % 2 == 0:
        response = await client.post(url, json=body, headers=_headers(key))
        assert response.status_code == 200, response.text
        answer = response.json()["choices"][0]["message"]["content"]
        return {"answer": answer, "run": response.json()["run_id"], **_served_by(response)}
    answer, done = "", False
    async with client.stream("POST", url, json={**body, "stream": True},
                             headers=_headers(key)) as response:  # fmt: skip
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                for choice in json.loads(line[6:]).get("choices", []):
                    answer += choice["delta"].get("content") or ""
    assert done, answer
    return {"answer": answer, **_served_by(response)}


def _served_by(response: httpx2.Response) -> dict[str, str]:
    return {
        "run": response.headers["x-agentflow-run-id"],
        "replica": response.headers["x-agentflow-replica"],
    }


def _read_from_other_replica(
    root: str, run: str, made_on: str, key: str, tries: int = 60
) -> httpx2.Response:
    """`GET /v1/runs/{run}` until a replica other than `made_on` answers it."""
    with httpx2.Client(base_url=root, timeout=30) as client:
        for _ in range(tries):
            response = client.get(f"/v1/runs/{run}", headers=_headers(key))
            if response.headers["x-agentflow-replica"] != made_on:
                return response
    raise AssertionError(f"{tries} reads of run {run} all landed on its own replica")


def test_two_replicas_serve_chats_without_loss_or_crosstalk(served: Served) -> None:
    async def chats() -> list[dict[str, str]]:
        async with httpx2.AsyncClient(base_url=served.root, timeout=60) as client:
            return await asyncio.gather(*(_chat(client, i) for i in range(40)))

    results = asyncio.run(chats())
    for index, result in enumerate(results):
        assert MARKER.findall(result["answer"]) == [f"marker-{index}"], result
    assert len({result["run"] for result in results}) == 40
    assert len({result["replica"] for result in results}) == 2  # both replicas answered


def test_the_openai_client_streams_through_the_proxy(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.root}/v1", api_key=KEYS[0], max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=_question(7)["messages"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Paris for marker-7."
    assert "Answer: Paris" in reasoning  # the plan's progress, through Serve's proxy
    assert chunks[-1].usage is not None


def test_a_run_made_on_one_replica_is_found_on_the_other(served: Served) -> None:
    async def two() -> list[dict[str, str]]:
        async with httpx2.AsyncClient(base_url=served.root, timeout=60) as client:
            return [await _chat(client, 100), await _chat(client, 101)]  # whole, streamed

    for made in asyncio.run(two()):
        found = _read_from_other_replica(served.root, made["run"], made["replica"], KEYS[0])
        assert found.status_code == 200, found.text
        run = found.json()
        assert run["id"] == made["run"] and run["status"] == "ok"
        assert run["answer"] == made["answer"] and run["trace"] is not None


def test_a_run_is_read_by_its_own_key_only_on_every_replica(served: Served) -> None:
    async def one() -> dict[str, str]:
        async with httpx2.AsyncClient(base_url=served.root, timeout=60) as client:
            return await _chat(client, 200, key=KEYS[1])

    made = asyncio.run(one())
    other_key = _read_from_other_replica(served.root, made["run"], made["replica"], KEYS[0])
    own_key = _read_from_other_replica(served.root, made["run"], made["replica"], KEYS[1])
    assert other_key.status_code == 404
    assert own_key.status_code == 200 and own_key.json()["answer"] == made["answer"]
    with httpx2.Client(base_url=served.root, timeout=30) as client:
        same_replica = [client.get(f"/v1/runs/{made['run']}", headers=_headers(KEYS[0]))
                        for _ in range(10)]  # fmt: skip
    assert {r.status_code for r in same_replica} == {404}


def test_a_running_run_shows_on_the_other_replica_until_it_ends(served: Served) -> None:
    with httpx2.Client(base_url=served.root, timeout=60) as client:
        body = {**_question(300), "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers=_headers(KEYS[0])) as response:  # fmt: skip
            made = _served_by(response)
            try:
                assert HELD["marker-300"][0].wait(60)  # its answer call is under way
                for _ in range(30):  # its `running` state may be a publication behind
                    running = _read_from_other_replica(
                        served.root, made["run"], made["replica"], KEYS[0]
                    )
                    if running.json()["status"] == "running":
                        break
            finally:
                HELD["marker-300"][1].set()
            streamed = response.read().decode()
    ended = _read_from_other_replica(served.root, made["run"], made["replica"], KEYS[0])
    assert running.json()["status"] == "running" and running.json()["answer"] == ""
    assert "data: [DONE]" in streamed
    assert ended.json()["status"] == "ok" and ended.json()["answer"] == "Paris for marker-300."


def test_a_client_leaving_a_stream_cancels_its_run_through_the_proxy(served: Served) -> None:
    with httpx2.Client(base_url=served.root, timeout=60) as client:
        body = {**_question(301), "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers=_headers(KEYS[0])) as response:  # fmt: skip
            made = _served_by(response)
            assert HELD["marker-301"][0].wait(60)
        # the connection is closed here, the answer call still held by the model server
    try:
        for _ in range(60):
            run = _read_from_other_replica(served.root, made["run"], made["replica"], KEYS[0])
            if run.json()["status"] == "cancelled":
                break
            time.sleep(0.25)  # the proxy tells the replica in its own time
    finally:
        HELD["marker-301"][1].set()
    assert run.json()["status"] == "cancelled"


def _descendants(pid: int) -> set[int]:
    """`pid`'s child processes, theirs, and so on (Linux /proc)."""
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if task.exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def _using(directory: Path) -> set[int]:
    """Processes whose command line names `directory` (every Ray process names its session)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(directory) in cmdline.read_bytes().decode(errors="replace"):
                found.add(int(cmdline.parent.name))
        except OSError:
            continue  # gone meanwhile
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _stream_lines(root: str, lines: list[str]) -> None:
    body = {**_question(400), "stream": True}
    with httpx2.Client(base_url=root, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers=_headers(KEYS[0])) as response:  # fmt: skip
            lines.extend(line for line in response.iter_lines() if line)


def _while_draining(root: str) -> tuple[int, int]:
    """/ready and a new chat's statuses once /ready stops saying 200 (a refused connection
    fails the test: the listener must stay open while the replicas drain)."""
    with httpx2.Client(base_url=root, timeout=30) as client:
        for _ in range(200):
            ready = client.get("/ready").status_code
            if ready != 200:
                chat = client.post("/v1/chat/completions", json=_question(401),
                                   headers=_headers(KEYS[0]))  # fmt: skip
                return ready, chat.status_code
            time.sleep(0.05)
    raise AssertionError("/ready said 200 for 10 s after SIGTERM")


def test_sigterm_drains_the_replicas_then_stops_ray_and_every_process(served: Served) -> None:
    """A stream still running at SIGTERM gets --grace seconds, then the error frame; the
    replicas say 503 meanwhile; then Ray and everything it started is gone."""
    started = _descendants(served.process.pid) | _using(served.ray_dir)
    assert len(started) >= 4  # Ray's own processes and the replicas' workers
    lines: list[str] = []
    streaming = threading.Thread(target=_stream_lines, args=(served.root, lines))
    streaming.start()
    assert TRICKLE_ARRIVED.wait(60)
    served.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    ready, chat = _while_draining(served.root)
    streaming.join(timeout=60)
    cut = time.monotonic() - signalled
    assert (ready, chat) == (503, 503)
    assert any("the server is shutting down" in line for line in lines[-2:]), lines[-3:]
    assert sum("word" in line for line in lines) > 1  # it answered until the grace...
    assert GRACE <= cut < GRACE + 10  # ...and was stopped then, not at once
    assert served.process.wait(timeout=90) == 0
    deadline = time.monotonic() + 20
    while _alive(started | _using(served.ray_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(started | _using(served.ray_dir))
    assert not served.ray_dir.exists()
