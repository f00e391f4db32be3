"""`agentflow serve` under load: concurrent streamed chats against a fake delayed model server.

    python benchmarks/serve.py [--levels 10,50,200] [--replicas 1,2,4] [--delay 0.05] [--out FILE]

Three processes on loopback: the fake OpenAI-compatible server (`_fake_openai.py`, every
completion after `--delay` s), `agentflow serve`'s app under uvicorn (this script with
`--child`, one agent on the `direct` planner) or, for a replica count above 1, on that many
Ray Serve replicas behind Serve's proxy (`agentflow serve --replicas N`'s deployment, on a Ray
the child starts and stops), and this process as the client: for each replica count and level,
that many chats at once through the official `AsyncOpenAI` client, streamed, each with a marker
of its own that its answer must not lack (the fake model does not echo it, so the check is that
every stream ended with `[DONE]` after content and a usage chunk).

Per level: chats completed and lost, time to first byte (the first chunk) and to the first
piece of the answer, p50 and p99, runs per second, and the server's CPU per run (user+system
time during the level of the child and every process under it, Ray's included, from /proc).
A lost chat is one that failed or ended without an answer and usage. Then the same questions
through `Agent.run`
plus the answer-writing call, in one process with no HTTP in front: the same two model calls
per question, so `serve / in-process` is the HTTP layer's own cost as a ratio of throughput.

Each run makes two model calls (the direct planner's step, then the answer); no follow-ups, so
no rewrite. The fake server answers whole completions only, so the answer arrives in one piece.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import httpx2
import openai
import uvicorn
from _common import RESULTS_DIR, table, write_result
from _fake_openai import MODEL, FakeServer

from agentflow.agent import Agent
from agentflow.model import Model, ModelSettings
from agentflow.models import OpenAIModel
from agentflow.server import AgentSpec, ServerConfig, create_app
from agentflow.server.conversation import Conversation
from agentflow.server.protocol import ChatCompletionRequest, ChatMessage
from agentflow.server.service import ChatService, Content
from agentflow.settings import Settings

AGENT = "agentflow-direct"


class OneShotModel(OpenAIModel):
    """The fake server answers whole completions only: a stream is the answer in one piece."""

    stream = Model.stream  # the base class's: the whole completion as one piece


def model_on(base_url: str) -> OneShotModel:
    return OneShotModel(MODEL, base_url, max_concurrency=1024, timeout=300)


def bench_config(model_url: str) -> ServerConfig:
    """Queue and slots (per replica) large enough for any level."""
    agents = (AgentSpec(id=AGENT, model=model_on(model_url), planner="direct"),)
    return ServerConfig(agents=agents, max_runs=1024, max_queue=1024, keepalive=30)


def run_child(port: int, model_url: str, replicas: int) -> None:
    """The server process: the app under uvicorn, or on `replicas` Ray Serve replicas."""
    if replicas == 1:
        app = create_app(bench_config(model_url))
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
        return
    from agentflow.server.replicas import application, local_ray, run_locally

    build = partial(bench_config, model_url)
    deployed = application(build, build(), replicas=replicas, grace=5)
    stop = threading.Event()
    with local_ray(cpus=replicas):
        run_locally(deployed, "127.0.0.1", port)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass


CONSTRAINTS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "ten words": ("Answer in at most ten words.", lambda reply: 0 < len(reply.split()) <= 10),
    "French": ("Always answer in French.", lambda reply: _is_french(reply)),
    "capitals": (
        "Always answer in capital letters only.",
        lambda reply: any(c.isalpha() for c in reply) and not any(c.islower() for c in reply),
    ),
}
"""A constraint set in turn 1 and a check of every later reply against it."""
QUESTIONS = [
    "What is the capital of Italy?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "What do bees make?",
    "What colour is the sky on a clear day?",
]
_FRENCH = {"le", "la", "les", "est", "de", "des", "une", "un", "et", "du", "en", "qui", "c'est"}
_ENGLISH = {"the", "is", "of", "and", "a", "in", "to", "it", "that", "was", "are"}


def _is_french(reply: str) -> bool:
    words = [w.strip(".,;:!?\"'()").lower() for w in reply.split()]
    return sum(w in _FRENCH for w in words) > sum(w in _ENGLISH for w in words)


async def converse(
    service: ChatService, constraint: str, rotation: int, turns: int
) -> list[tuple[bool, str]]:
    """One conversation: the constraint in turn 1, then a question per turn; each reply and
    whether it kept the constraint."""
    instruction, check = CONSTRAINTS[constraint]
    questions = QUESTIONS[rotation:] + QUESTIONS[:rotation]
    messages: list[ChatMessage] = []
    kept = []
    for turn in range(turns):
        text = f"{instruction} {questions[turn]}" if turn == 0 else questions[turn]
        messages.append(ChatMessage(role="user", content=text))
        request = ChatCompletionRequest(model=AGENT, messages=messages, temperature=0)
        run = service.start(request)
        pieces = [u.text async for u in run.updates(60) if isinstance(u, Content)]
        reply = "".join(pieces).strip()
        messages.append(ChatMessage(role="assistant", content=reply))
        kept.append((check(reply), reply))
    return kept


async def drift(base_url: str, model_name: str, turns: int, tokens: int) -> dict[str, Any]:
    """Adherence per turn with and without reminders, on a live model; both conditions at
    once, so the model server batches them alike."""
    model = OpenAIModel(model_name, base_url, timeout=900)
    agents = (AgentSpec(id=AGENT, model=model.with_overrides(ModelSettings(max_tokens=tokens))),)
    conditions = {"without reminders": None, "with reminders": 1}
    plan = [(label, c, r) for label in conditions for c in CONSTRAINTS for r in (0, 3)]
    services = {
        label: ChatService(ServerConfig(agents=agents, max_runs=32, remind_after_turns=remind))
        for label, remind in conditions.items()
    }
    try:
        runs = (converse(services[name], c, r, turns) for name, c, r in plan)
        kept = await asyncio.gather(*runs)
    finally:
        await model.aclose()
    results: dict[str, Any] = {label: {} for label in conditions}
    for (label, c, r), conversation in zip(plan, kept, strict=True):
        results[label][f"{c}/{r}"] = conversation
    return results


def drift_report(results: dict[str, Any], turns: int) -> str:
    headers = ["turn", *results]
    rows = []
    for turn in range(turns):
        cells = []
        for runs in results.values():
            kept = [conversation[turn][0] for conversation in runs.values()]
            cells.append(f"{sum(kept)}/{len(kept)}")
        rows.append([turn + 1, *cells])
    return table(headers, rows)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of process `pid` and every process under it so far (Linux /proc;
    a process that ended meanwhile is left out)."""
    total, frontier, seen = 0.0, [pid], {pid}
    while frontier:
        current = frontier.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        frontier += [int(child) for child in children if int(child) not in seen]
        seen.update(int(child) for child in children)
    return total


@dataclass(frozen=True)
class Chat:
    first_byte: float
    first_content: float
    ok: bool


def _question(index: int) -> str:
    return f"Which is older, Oxford or Cambridge? (chat marker-{index})"


async def chat(api: openai.AsyncOpenAI, index: int) -> Chat:
    started = time.perf_counter()
    first_byte = first_content = float("nan")
    content, usage = "", None
    stream = await api.chat.completions.create(
        model=AGENT,
        messages=[{"role": "user", "content": _question(index)}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for piece in stream:
        now = time.perf_counter() - started
        first_byte = now if first_byte != first_byte else first_byte
        if piece.choices and piece.choices[0].delta.content:
            first_content = now if first_content != first_content else first_content
            content += piece.choices[0].delta.content
        usage = piece.usage or usage
    return Chat(first_byte, first_content, ok=bool(content) and usage is not None)


async def through_serve(base_url: str, chats: int, server_pid: int) -> dict[str, Any]:
    http = httpx2.AsyncClient(timeout=300, limits=httpx2.Limits(max_connections=chats + 8))
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="x", http_client=http, max_retries=0
    ) as api:
        cpu, client_cpu = _cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(chat(api, i) for i in range(chats)), return_exceptions=True
        )
        wall = time.perf_counter() - started
        cpu, client_cpu = _cpu_seconds(server_pid) - cpu, time.process_time() - client_cpu
    done = [o for o in outcomes if isinstance(o, Chat) and o.ok]
    return {
        "chats": chats,
        "completed": len(done),
        "lost": chats - len(done),
        "first_byte_p50_ms": _percentile([c.first_byte for c in done], 50),
        "first_byte_p99_ms": _percentile([c.first_byte for c in done], 99),
        "first_content_p50_ms": _percentile([c.first_content for c in done], 50),
        "runs_per_s": len(done) / wall,
        "server_cpu_ms_per_run": 1000 * cpu / chats,
        "client_cpu_ms_per_run": 1000 * client_cpu / chats,
        "wall_s": wall,
    }


async def in_process(model_url: str, chats: int) -> dict[str, Any]:
    """The same work without HTTP in front: `Agent.run`, then the answer-writing call."""
    model = model_on(model_url)
    agent = Agent(model=model, planner="direct")

    async def one(index: int) -> None:
        message = ChatMessage(role="user", content=_question(index))
        result = await agent.run(message.text(0))
        answer = Conversation.from_messages([message]).answer_messages(result, None)
        await model.complete(answer)

    try:
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(chats)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await model.aclose()
    return {"runs_per_s": chats / wall, "cpu_ms_per_run": 1000 * cpu / chats, "wall_s": wall}


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def start_server(model_url: str, replicas: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, __file__, "--child", str(port), "--model-url", model_url,
               "--replicas", str(replicas)]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60 + 30 * (replicas > 1)  # Ray takes 10-20 s to start
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the agentflow server did not start")
        try:
            if httpx2.get(f"{root}/health", timeout=1).status_code == 200:
                return process, f"{root}/v1"
        except httpx2.TransportError:
            time.sleep(0.1)


async def measure(
    levels: list[int], replicas: int, server: subprocess.Popen[bytes], base_url: str
) -> list[dict[str, Any]]:
    """Each level through one server of `replicas` replicas (after a warm-up that reaches
    every replica's imports, connections and planner)."""
    await through_serve(base_url, 10 * replicas, server.pid)
    rows = []
    for level in levels:
        row = {"replicas": replicas, **await through_serve(base_url, level, server.pid)}
        rows.append(row)
        print(f"{replicas} replicas, {level} chats: {row['completed']} completed "
              f"in {row['wall_s']:.1f} s", flush=True)  # fmt: skip
    return rows


async def baselines(model_url: str, levels: list[int]) -> dict[int, dict[str, Any]]:
    """The in-process runs per level, once for every replica count."""
    await in_process(model_url, 10)  # warm-up
    return {level: await in_process(model_url, level) for level in levels}


def serve_levels(model_url: str, levels: list[int], replicas: int) -> list[dict[str, Any]]:
    server, base_url = start_server(model_url, replicas)
    try:
        return asyncio.run(measure(levels, replicas, server, base_url))
    finally:
        server.terminate()
        server.wait(timeout=120)  # Ray stops its processes first


def report(rows: list[dict[str, Any]]) -> str:
    headers = ["replicas", "chats", "completed", "lost", "TTFB p50 ms", "TTFB p99 ms",
               "first answer p50 ms", "runs/s", "server CPU ms/run", "client CPU ms/run",
               "in-process runs/s", "in-process CPU ms/run", "serve / in-process"]  # fmt: skip
    body = [
        [
            r["replicas"],
            r["chats"],
            r["completed"],
            r["lost"],
            f"{r['first_byte_p50_ms']:.0f}",
            f"{r['first_byte_p99_ms']:.0f}",
            f"{r['first_content_p50_ms']:.0f}",
            f"{r['runs_per_s']:.1f}",
            f"{r['server_cpu_ms_per_run']:.1f}",
            f"{r['client_cpu_ms_per_run']:.1f}",
            f"{r['in_process']['runs_per_s']:.1f}",
            f"{r['in_process']['cpu_ms_per_run']:.1f}",
            f"{r['ratio']:.2f}",
        ]
        for r in rows
    ]
    return table(headers, body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="10,50,200", help="concurrent chats per level")
    parser.add_argument(
        "--replicas", default="1", help="replica counts to measure, e.g. 1,2,4 (above 1: Ray Serve)"
    )
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per fake completion")
    parser.add_argument("--out", type=Path, help="JSON result (default benchmarks/results/)")
    parser.add_argument(
        "--drift", action="store_true", help="instead: instruction drift on the live model"
    )
    parser.add_argument("--turns", type=int, default=5, help="turns per conversation (drift)")
    parser.add_argument("--drift-tokens", type=int, default=48, help="token cap per call (drift)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.model_url, int(args.replicas))
        return 0
    if args.drift:
        return main_drift(args)
    levels = [int(level) for level in args.levels.split(",")]
    counts = [int(count) for count in args.replicas.split(",")]
    with FakeServer(args.delay) as fake:
        rows = [row for count in counts for row in serve_levels(fake.base_url, levels, count)]
        alone = asyncio.run(baselines(fake.base_url, levels))
    for row in rows:
        row["in_process"] = alone[row["chats"]]
        row["ratio"] = row["runs_per_s"] / row["in_process"]["runs_per_s"]
    print(report(rows))
    path = write_result("serve", {"delay_s": args.delay, "levels": rows}, args.out)
    print(f"wrote {path}")
    return 0


def main_drift(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    started = time.perf_counter()
    results = asyncio.run(drift(settings.base_url, settings.model, args.turns, args.drift_tokens))
    print(drift_report(results, args.turns))
    out = args.out or RESULTS_DIR / "serve_drift.json"
    data = {"model": settings.model, "turns": args.turns, "max_tokens": args.drift_tokens}
    path = write_result("serve_drift", {**data, "results": results}, out)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
