"""The benchmark DAGs, the makespan bound, and the record of when each node ran.

A `Dag` is a mapping node id -> the ids it needs, written so that inputs come first. Every node
stands for one request that takes `delay` seconds, so a schedule is counted in steps of `delay`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

SHAPES = ("wide", "chain", "layered")


@dataclass(frozen=True, kw_only=True)
class Dag:
    name: str
    deps: dict[str, tuple[str, ...]]
    """Node id -> the ids it needs, in an order where inputs come first."""

    @property
    def nodes(self) -> int:
        return len(self.deps)

    def critical_path(self) -> int:
        """Nodes on the longest path."""
        depth: dict[str, int] = {}
        for node_id, inputs in self.deps.items():
            depth[node_id] = 1 + max((depth[d] for d in inputs), default=0)
        return max(depth.values())

    def bound(self, delay: float, concurrency: int) -> float:
        return max(self.critical_path(), -(-self.nodes // concurrency)) * delay

    def list_schedule(self, concurrency: int) -> int:
        """Steps a zero-overhead executor needs: each step starts up to `concurrency` ready
        nodes, first ready first served. It can exceed the bound, which counts the critical path
        and the width separately (the wide fan-out needs 1 + 256/64 + 1 = 6 steps, not 5)."""
        done_at: dict[str, int] = {}
        ready_at = {n: 0 for n, inputs in self.deps.items() if not inputs}
        step = 0
        while len(done_at) < self.nodes:
            step += 1
            ready = sorted((t, i, n) for i, (n, t) in enumerate(ready_at.items()) if t < step)
            for _, _, node_id in ready[:concurrency]:
                done_at[node_id] = step
                del ready_at[node_id]
            for node_id, inputs in self.deps.items():
                if node_id not in done_at and node_id not in ready_at:
                    if all(d in done_at for d in inputs):
                        ready_at[node_id] = max(done_at[d] for d in inputs)
        return step


def wide(leaves: int = 256) -> Dag:
    deps: dict[str, tuple[str, ...]] = {"root": ()}
    names = [f"leaf{i:03d}" for i in range(leaves)]
    deps.update((name, ("root",)) for name in names)
    deps["join"] = tuple(names)
    return Dag(name="wide", deps=deps)


def chain(length: int = 64) -> Dag:
    names = [f"step{i:02d}" for i in range(length)]
    deps: dict[str, tuple[str, ...]] = {names[0]: ()}
    deps.update((name, (before,)) for before, name in zip(names, names[1:], strict=False))
    return Dag(name="chain", deps=deps)


def layered(nodes: int = 1000, layers: int = 20, seed: int = 0) -> Dag:
    """Layers of equal width; a node needs one node of the layer before it and 0-2 more of any
    earlier layer, so the critical path is `layers` and the width stays under the limit."""
    rng = random.Random(seed)
    grid = [
        [f"l{k:02d}n{i:02d}" for i in range(nodes // layers + (k < nodes % layers))]
        for k in range(layers)
    ]
    deps: dict[str, tuple[str, ...]] = dict.fromkeys(grid[0], ())
    for k in range(1, layers):
        earlier = [name for layer in grid[:k] for name in layer]
        for name in grid[k]:
            first = rng.choice(grid[k - 1])
            extra = rng.sample(earlier, rng.randint(0, 2))
            deps[name] = tuple(dict.fromkeys([first, *extra]))
    return Dag(name="layered", deps=deps)


def make_dag(shape: str) -> Dag:
    return {"wide": wide, "chain": chain, "layered": layered}[shape]()


@dataclass(kw_only=True)
class Timeline:
    """Start and end of every node execution in one run (perf_counter seconds)."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    executions: Counter[str] = field(default_factory=Counter)

    def record(self, node_id: str, start: float) -> None:
        self.executions[node_id] += 1
        self.spans[node_id] = (start, time.perf_counter())

    def span(self) -> float:
        return max(e for _, e in self.spans.values()) - min(s for s, _ in self.spans.values())

    def check(self, dag: Dag) -> None:
        """Every node ran exactly once, and only after all of its inputs had finished."""
        wrong = {n: self.executions[n] for n in dag.deps if self.executions[n] != 1}
        extra = set(self.executions) - set(dag.deps)
        if wrong or extra:
            raise AssertionError(f"{dag.name}: executions per node wrong: {wrong} {extra}")
        for node_id, inputs in dag.deps.items():
            early = [d for d in inputs if self.spans[d][1] > self.spans[node_id][0]]
            if early:
                raise AssertionError(f"{dag.name}: {node_id} started before {early} finished")
