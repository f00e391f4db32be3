"""Executor efficiency against the makespan bound, and client CPU per node, next to LangGraph.

    python benchmarks/scheduling.py [--delay 0.05] [--concurrency 64] [--repeats 7]
        [--shapes wide,chain,layered] [--transport http|memory] [--http-client httpx|aiohttp]
        [--out FILE]

A fake OpenAI-compatible server (`_fake_openai.py`, a separate process on loopback) answers
every chat completion after `--delay` seconds. Every node of a synthetic DAG (`_dags.py`) is an
`llm` node that makes one request to it. The same DAGs run on three systems, interleaved (one
warm-up run each, then `--repeats` rounds in a rotating order), and the medians are reported:

- agentflow: `Agent` + `StaticPlanner` (no planner model call), the executor as shipped;
- LangGraph: a `StateGraph` with one graph node per DAG node (`_langgraph_dag.py`);
- plain asyncio: a future and a task per node, about the least any scheduler can do. It shows
  what the HTTP client alone costs here, and so the best efficiency reachable with it;
- asyncio + OpenAIModel: the same, each node calling agentflow's `OpenAIModel.complete` (its
  lean request path) directly: agentflow's client without its executor;
- asyncio + aiohttp (HTTP only): the same, each node posting its request with a bare aiohttp
  session (`json.dumps` out, `json.loads` back, nothing else): the least a Python client on
  aiohttp costs here, and so the best efficiency any system built on it can reach.

LangGraph and plain asyncio send the request agentflow's `llm` node sends (its prompt file and
step settings) through an `AsyncOpenAI` client, as a user of them would, under a semaphore of
`--concurrency`; agentflow gets the same limit as `Agent(max_concurrency=...)` and
`OpenAIModel`'s endpoint limit. With `--transport memory` nothing goes over HTTP: every request
is an in-process sleep of `--delay`, which leaves the orchestration cost alone.

Makespan is the wall-clock of one whole run (`agent.run`, `graph.ainvoke`): building and
compiling the graph is not in it. The bound is max(critical path, ceil(nodes / concurrency)) x
delay, and efficiency = bound / makespan (bound / node span, first node start to last node end,
is shown too). CPU per node is the CPU time of this process, the client, during the run divided
by the nodes. Every run is checked: each node ran exactly once, after all of its inputs had
finished, and the server saw one request per node and never more than `--concurrency` at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result
from _dags import SHAPES, Dag, Timeline, make_dag
from _fake_openai import MODEL, REPLY, FakeServer
from openai import AsyncOpenAI, DefaultAioHttpClient

from agentflow.agent import Agent
from agentflow.answers import extract_answer
from agentflow.context import RunContext, RunLimits
from agentflow.endpoints import EndpointPool, HttpClientFactory
from agentflow.model import Message, Model, ModelSettings
from agentflow.models import OpenAIModel
from agentflow.plan import TaskId, TaskNode
from agentflow.planner import load_prompt
from agentflow.testing import FunctionModel, StaticPlanner
from agentflow.tool import render_output

QUESTION = "Run the synthetic plan."

Stats = Callable[[], Awaitable[dict[str, Any]]]
"""The server's counters: requests answered, peak in flight since the last call, CPU seconds."""


# --- where requests go --------------------------------------------------------------------------


class InProcessServer:
    """`--transport memory`: the fake server's reply after the delay, with no HTTP at all."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = self.in_flight = self.peak = 0

    async def reply(self) -> str:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.requests += 1
        return REPLY

    async def complete(
        self, messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        """The `FunctionModel` function agentflow calls."""
        return await self.reply()

    async def stats(self) -> dict[str, Any]:
        stats = {"requests": self.requests, "peak_in_flight": self.peak, "cpu_s": 0.0}
        self.peak = self.in_flight
        return stats


class BareClient:
    """aiohttp alone: the request body as JSON, the reply's text read back, no retries, types,
    timing or error handling. A floor, not a client anyone should ship."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def chat(self, prompt: str, settings: ModelSettings) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers={"Content-Type": "application/json"})
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
        }
        async with self.session.post(self.url, data=json.dumps(body).encode()) as response:
            data = json.loads(await response.read())
        return str(data["choices"][0]["message"]["content"] or "")

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


Client = AsyncOpenAI | InProcessServer | Model | BareClient


class Requester:
    """The request every LangGraph and plain-asyncio node makes: the body agentflow's `llm`
    node sends (its prompt file, its step settings), through `client` or in process."""

    def __init__(self, client: Client, concurrency: int) -> None:
        self.client = client
        self.gate = asyncio.Semaphore(concurrency)
        self.template = load_prompt("agentflow", "reasoning_step.md")
        self.settings = StaticPlanner.step_settings
        self.timeline = Timeline()

    async def ask(self, node_id: str, context: list[str]) -> str:
        notes = "\n".join(f"- {render_output(c, 1500)}" for c in context if c) or "(none)"
        prompt = self.template.format(question=_question(node_id), context=notes)
        async with self.gate:
            start = time.perf_counter()
            if isinstance(self.client, InProcessServer):
                text = await self.client.reply()
            elif isinstance(self.client, Model):
                text = (await self.client.complete([{"role": "user", "content": prompt}])).text
            elif isinstance(self.client, BareClient):
                text = await self.client.chat(prompt, self.settings)
            else:
                response = await self.client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=self.settings.temperature,
                    max_tokens=self.settings.max_tokens,
                )
                text = response.choices[0].message.content or ""
            output = extract_answer(text)
            self.timeline.record(node_id, start)
        return output


@dataclass(kw_only=True)
class Backend:
    """What the three systems talk to in one benchmark run."""

    model: Model
    """agentflow's."""
    requester: Requester
    """LangGraph's and plain asyncio's."""
    model_requester: Requester
    """Plain asyncio's through agentflow's model."""
    stats: Stats
    bare_requester: Requester | None = None
    """Plain asyncio's through bare aiohttp (HTTP only)."""


@contextlib.asynccontextmanager
async def open_backend(
    args: argparse.Namespace, server: FakeServer | None
) -> AsyncIterator[Backend]:
    if server is None:
        memory = InProcessServer(args.delay)
        in_memory = FunctionModel(memory.complete)
        yield Backend(
            model=in_memory,
            requester=Requester(memory, args.concurrency),
            model_requester=Requester(in_memory, args.concurrency),
            stats=memory.stats,
        )
        return
    make_http = _http_client_factory(args.http_client)
    pool = EndpointPool(server.base_url, max_concurrency=args.concurrency)
    client = AsyncOpenAI(
        base_url=server.base_url,
        api_key="EMPTY",
        max_retries=0,  # as agentflow's endpoints make theirs
        http_client=make_http(server.base_url) if make_http else None,
    )
    model = OpenAIModel(MODEL, pool, settings=StaticPlanner.step_settings)
    bare = BareClient(server.base_url)
    try:
        yield Backend(
            model=model,
            requester=Requester(client, args.concurrency),
            model_requester=Requester(model, args.concurrency),
            bare_requester=Requester(bare, args.concurrency),
            stats=lambda: asyncio.to_thread(server.stats),
        )
    finally:
        await model.aclose()
        await client.close()
        await bare.aclose()


def _http_client_factory(name: str) -> HttpClientFactory | None:
    """None keeps the OpenAI SDK's default (httpx2); "aiohttp" is the SDK's aiohttp transport."""
    if name == "httpx":
        return None
    return lambda base_url: DefaultAioHttpClient()


# --- the three systems --------------------------------------------------------------------------


@dataclass(kw_only=True)
class Runner:
    """One system set up for one DAG: `run()` runs it once and returns that run's timeline."""

    system: str
    run: Callable[[], Awaitable[Timeline]]
    setup_s: float = 0.0
    """Building the graph (LangGraph's compile); not part of any run."""


class TimedPlanner(StaticPlanner):
    """`StaticPlanner` whose `llm` nodes record when they ran."""

    def __init__(self, rounds: Sequence[Sequence[TaskNode]], answer: Callable[..., str]) -> None:
        super().__init__(rounds, answer)
        self.timeline = Timeline()

    async def run_llm_node(self, node: TaskNode, args: dict[str, Any], ctx: RunContext) -> str:
        start = time.perf_counter()
        output = await super().run_llm_node(node, args, ctx)
        self.timeline.record(node.id, start)
        return output


def agentflow_runner(dag: Dag, model: Model, concurrency: int) -> Runner:
    plan = [
        TaskNode(
            id=TaskId(node_id),
            kind="llm",
            args={"question": _question(node_id), "context": [{"$ref": d} for d in inputs]},
        )
        for node_id, inputs in dag.deps.items()
    ]
    planner = TimedPlanner([plan], answer=lambda state: f"{len(state.results)}")
    limits = RunLimits(max_model_calls=dag.nodes + 1, max_tokens=10**9)
    agent = Agent(model=model, planner=planner, limits=limits, max_concurrency=concurrency)

    async def run() -> Timeline:
        planner.timeline = Timeline()
        result = await agent.run(QUESTION)
        failed = [n.id for n in result.trace.nodes.values() if n.status != "ok"]
        if failed or result.answer != str(dag.nodes):
            raise AssertionError(f"agentflow: {len(failed)} nodes failed, e.g. {failed[:3]}")
        return planner.timeline

    return Runner(system="agentflow", run=run)


def langgraph_runner(dag: Dag, requester: Requester) -> Runner:
    import _langgraph_dag as lg

    started = time.perf_counter()
    if dag.name == "wide":  # the fan-out as LangGraph's docs write it: `Send` per leaf
        leaves = [n for n, inputs in dag.deps.items() if inputs == ("root",)]
        graph = lg.fan_out_graph("root", leaves, "join", requester.ask)
    else:
        graph = lg.static_graph(dag.deps, requester.ask)
    setup_s = time.perf_counter() - started

    async def run() -> Timeline:
        requester.timeline = Timeline()
        results = await lg.run_graph(graph, dag.nodes)
        if len(results) != dag.nodes:
            raise AssertionError(f"langgraph: {len(results)} results for {dag.nodes} nodes")
        return requester.timeline

    return Runner(system="langgraph", run=run, setup_s=setup_s)


def plain_runner(dag: Dag, requester: Requester, system: str = "asyncio") -> Runner:
    async def run() -> Timeline:
        requester.timeline = Timeline()
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[str]] = {n: loop.create_future() for n in dag.deps}

        async def one(node_id: str, inputs: tuple[str, ...]) -> None:
            context = [await futures[d] for d in inputs]
            futures[node_id].set_result(await requester.ask(node_id, context))

        async with asyncio.TaskGroup() as group:
            for node_id, inputs in dag.deps.items():
                group.create_task(one(node_id, inputs))
        return requester.timeline

    return Runner(system=system, run=run)


# --- measuring ----------------------------------------------------------------------------------


async def measure(runner: Runner, dag: Dag, stats: Stats, concurrency: int) -> dict[str, Any]:
    """One checked run: makespan, node span, CPU time and the server's peak of requests."""
    gc.collect()
    before = await stats()  # also resets the peak
    wall, cpu = time.perf_counter(), time.process_time()
    timeline = await runner.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = await stats()
    timeline.check(dag)
    if after["peak_in_flight"] > concurrency:
        raise AssertionError(f"{runner.system}: {after['peak_in_flight']} requests at once")
    if after["requests"] - before["requests"] != dag.nodes:
        raise AssertionError(f"{runner.system}: {after['requests'] - before['requests']} requests")
    return {
        "makespan_s": round(wall, 4),
        "span_s": round(timeline.span(), 4),
        "cpu_s": round(cpu, 4),
        "server_cpu_s": round(after["cpu_s"] - before["cpu_s"], 4),
        "peak_in_flight": after["peak_in_flight"],
    }


async def measure_shape(
    dag: Dag, runners: Sequence[Runner], args: argparse.Namespace, stats: Stats
) -> dict[str, list[dict[str, Any]]]:
    """Every runner `repeats` times, interleaved, in a rotating order; one warm-up run each."""
    for runner in runners:
        await measure(runner, dag, stats, args.concurrency)
    runs: dict[str, list[dict[str, Any]]] = {r.system: [] for r in runners}
    for repeat in range(args.repeats):
        shift = repeat % len(runners)
        for runner in [*runners[shift:], *runners[:shift]]:
            runs[runner.system].append(await measure(runner, dag, stats, args.concurrency))
    return runs


def summarise(dag: Dag, runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    bound = dag.bound(args.delay, args.concurrency)
    makespan, span, cpu, server_cpu = (
        statistics.median(r[key] for r in runs)
        for key in ("makespan_s", "span_s", "cpu_s", "server_cpu_s")
    )
    return {
        "makespan_s": round(makespan, 4),
        "span_s": round(span, 4),
        "efficiency": round(bound / makespan, 3),
        "span_efficiency": round(bound / span, 3),
        "cpu_ms_per_node": round(cpu / dag.nodes * 1000, 3),
        "client_busy": round(cpu / makespan, 3),
        "server_cpu_ms_per_node": round(server_cpu / dag.nodes * 1000, 3),
        "peak_in_flight": max(r["peak_in_flight"] for r in runs),
    }


async def run_shapes(args: argparse.Namespace, server: FakeServer | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with open_backend(args, server) as backend:
        for shape in args.shapes:
            dag = make_dag(shape)
            runners = [
                agentflow_runner(dag, backend.model, args.concurrency),
                langgraph_runner(dag, backend.requester),
                plain_runner(dag, backend.requester),
                plain_runner(dag, backend.model_requester, "asyncio+OpenAIModel"),
            ]
            if backend.bare_requester is not None:
                runners.append(plain_runner(dag, backend.bare_requester, "asyncio+aiohttp"))
            runs = await measure_shape(dag, runners, args, backend.stats)
            results[shape] = {
                **describe(dag, args),
                "systems": {
                    r.system: {
                        **summarise(dag, runs[r.system], args),
                        "setup_s": round(r.setup_s, 3),
                        "runs": runs[r.system],
                    }
                    for r in runners
                },
            }
            print(report(results[shape]), flush=True)
    return results


def describe(dag: Dag, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "shape": dag.name,
        "nodes": dag.nodes,
        "edges": sum(len(inputs) for inputs in dag.deps.values()),
        "critical_path": dag.critical_path(),
        "bound_s": round(dag.bound(args.delay, args.concurrency), 4),
        "list_schedule_s": round(dag.list_schedule(args.concurrency) * args.delay, 4),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# --- reporting ----------------------------------------------------------------------------------


def report(shape: dict[str, Any]) -> str:
    """The markdown table of one shape, and the ratios under it."""
    systems = shape["systems"]
    headers = ["system", "nodes", "critical path", "bound (s)", "makespan (s)", "efficiency"]
    headers += ["efficiency (node span)", "CPU ms/node"]
    rows = [
        [name, shape["nodes"], shape["critical_path"], f"{shape['bound_s']:.3f}"]
        + [f"{s[key]:.3f}" for key in ("makespan_s", "efficiency", "span_efficiency")]
        + [f"{s['cpu_ms_per_node']:.3f}"]
        for name, s in systems.items()
    ]
    cpu = {name: s["cpu_ms_per_node"] for name, s in systems.items()}
    above = {name: cpu[name] - cpu["asyncio"] for name in ("agentflow", "langgraph")}
    busy = ", ".join(f"{name} {s['client_busy']:.0%}" for name, s in systems.items())
    best = shape["bound_s"] / shape["list_schedule_s"]
    bare = systems.get("asyncio+aiohttp")
    floor = (
        f"Bare aiohttp, the floor of any client built on it: efficiency "
        f"{bare['efficiency']:.3f} at {bare['cpu_ms_per_node']:.3f} ms of CPU per node."
        if bare
        else ""
    )
    return "\n".join(
        [
            f"\n### {shape['shape']}: {shape['nodes']} nodes, {shape['edges']} edges\n",
            table(headers, rows),
            f"\nCPU per node, LangGraph / agentflow: {cpu['langgraph'] / cpu['agentflow']:.2f}x. "
            f"Above plain asyncio: agentflow {above['agentflow']:+.3f} ms, "
            f"LangGraph {above['langgraph']:+.3f} ms. agentflow's executor above its own "
            f"client: {cpu['agentflow'] - cpu['asyncio+OpenAIModel']:+.3f} ms.",
            f"Client CPU busy during the run: {busy}. Server CPU per request: "
            f"{systems['agentflow']['server_cpu_ms_per_node']:.3f} ms. "
            f"LangGraph graph build + compile: {systems['langgraph']['setup_s']:.3f} s.",
            f"A zero-overhead executor (first ready, first served) needs "
            f"{shape['list_schedule_s']:.3f} s here: efficiency {best:.3f} at best. "
            f"Load average {' '.join(map(str, shape['load_average']))}.",
            *([floor] if floor else []),
        ]
    )


def versions() -> dict[str, str]:
    found = {}
    for dist in ("agentflow-dag", "langgraph", "langchain-core", "openai", "httpx2", "aiohttp"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _question(node_id: str) -> str:
    return f"What does step {node_id} conclude?"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per request (0.05)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests at once (64)")
    parser.add_argument("--repeats", type=int, default=7, help="measured runs per system (7)")
    parser.add_argument(
        "--shapes",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(SHAPES),
        help=f"comma-separated, of {', '.join(SHAPES)} (all)",
    )
    parser.add_argument(
        "--transport",
        choices=["http", "memory"],
        default="http",
        help="http: the fake server process (default); memory: in-process sleeps, no HTTP",
    )
    parser.add_argument(
        "--http-client",
        choices=["httpx", "aiohttp"],
        default="httpx",
        help="the AsyncOpenAI transport of LangGraph and plain asyncio (httpx: the SDK "
        "default); agentflow's model posts through its own lean path either way",
    )
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args(argv)
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    return args


@contextlib.contextmanager
def fake_server(args: argparse.Namespace) -> Iterator[FakeServer | None]:
    """The server process for `--transport http`, stopped however the benchmark ends."""
    if args.transport == "memory":
        yield None
        return
    with FakeServer(args.delay) as server:
        yield server


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import _langgraph_dag  # noqa: F401 - fail before starting anything
    except ImportError as exc:
        raise SystemExit(f"this benchmark needs LangGraph: pip install langgraph ({exc})") from exc
    found = versions()
    settings = {
        "delay_s": args.delay,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "transport": args.transport,
        "http_client": args.http_client if args.transport == "http" else None,
    }
    print(", ".join(f"{k} {v}" for k, v in settings.items()) + "; medians")
    print(", ".join(f"{k} {v}" for k, v in found.items()))
    try:
        with fake_server(args) as server:
            shapes = asyncio.run(run_shapes(args, server))
    except KeyboardInterrupt:
        print("\ninterrupted; the fake server is stopped", file=sys.stderr)
        return 130
    path = write_result(
        "scheduling",
        {"settings": settings, "packages": found, "makespan": "whole run", "shapes": shapes},
        args.out,
    )
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
