"""Plans: typed DAGs of `TaskNode`s, with validation and repair of what models write.

A node's arguments are JSON values in which two markers refer to other nodes' outputs:

- `{"$ref": "n1"}` is replaced by n1's output as it is (a string, a list, an object), and
  `{"$ref": "n1.title"}` by one field of it;
- `{"$template": "When was {n1} born?"}` is a string with outputs rendered into it.

A node's `deps` are derived from these references, never written by hand, so they cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NewType

import networkx as nx

from agentflow.exceptions import PlanError

__all__ = [
    "LLM_KIND",
    "Plan",
    "PlanLimits",
    "TaskId",
    "TaskNode",
    "find_refs",
    "resolve_args",
    "validate_plan",
]

TaskId = NewType("TaskId", str)
NodeKind = Literal["tool", "llm"]
LLM_KIND: NodeKind = "llm"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w-]*)\}")


@dataclass(frozen=True, kw_only=True)
class TaskNode:
    """One step of a plan: a tool call, or a reasoning step answered by the model."""

    id: TaskId
    kind: NodeKind
    tool: str | None = None
    """The tool to call; None for `llm` nodes."""
    args: Mapping[str, Any] = field(default_factory=dict)
    """Arguments, possibly holding `$ref` / `$template` markers."""
    difficulty: float | None = None
    """0 (trivial) to 1 (hard), when an allocator scored it."""

    @property
    def deps(self) -> frozenset[TaskId]:
        return frozenset(find_refs(self.args))

    def describe(self) -> str:
        """A one-line human rendering, e.g. `search("Oxford founded")`."""
        shown = ", ".join(_describe_value(v) for v in self.args.values())
        return f"{self.tool or self.kind}({shown})"


@dataclass(frozen=True, kw_only=True)
class PlanLimits:
    """Caps that keep a runaway plan from running away."""

    max_nodes: int = 64
    max_depth: int = 16


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A validated DAG: every reference exists, no cycles, within limits."""

    nodes: tuple[TaskNode, ...]
    repairs: tuple[str, ...] = ()
    """What validation changed, in words, for the trace."""

    def graph(self) -> nx.DiGraph[TaskId]:
        graph: nx.DiGraph[TaskId] = nx.DiGraph()
        for node in self.nodes:
            graph.add_node(node.id)
            graph.add_edges_from((dep, node.id) for dep in node.deps)
        return graph

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "id": n.id,
                    "kind": n.kind,
                    "tool": n.tool,
                    "args": dict(n.args),
                    "deps": sorted(n.deps),
                }
                for n in self.nodes
            ],
            "repairs": list(self.repairs),
        }

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for node in self.nodes:
            label = node.describe().replace('"', "'")[:80]
            lines.append(f'    {node.id}["{node.id}: {label}"]')
        for node in self.nodes:
            lines.extend(f"    {dep} --> {node.id}" for dep in sorted(node.deps))
        return "\n".join(lines)


def find_refs(value: Any) -> set[TaskId]:
    """Every node id referenced anywhere inside `value`."""
    if isinstance(value, Mapping):
        if isinstance(value.get("$ref"), str):
            return {TaskId(value["$ref"].split(".", 1)[0])}
        if isinstance(value.get("$template"), str):
            return {TaskId(m) for m in _PLACEHOLDER.findall(value["$template"])}
        return set().union(*(find_refs(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(find_refs(v) for v in value))
    return set()


def resolve_args(value: Any, outputs: Mapping[TaskId, Any]) -> Any:
    """`value` with every reference replaced by the referenced node's output."""
    if isinstance(value, Mapping):
        if isinstance(value.get("$ref"), str):
            node_id, _, path = value["$ref"].partition(".")
            output = outputs.get(TaskId(node_id))
            return output.get(path) if path and isinstance(output, Mapping) else output
        if isinstance(value.get("$template"), str):
            return _PLACEHOLDER.sub(
                lambda m: _as_text(outputs.get(TaskId(m.group(1)), m.group(0))),
                value["$template"],
            )
        return {k: resolve_args(v, outputs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_args(v, outputs) for v in value]
    return value


def strip_refs(value: Any, drop: set[TaskId]) -> Any:
    """`value` with references to the ids in `drop` removed (refs become None, placeholders '')."""
    if isinstance(value, Mapping):
        if isinstance(value.get("$ref"), str):
            return None if TaskId(value["$ref"].split(".", 1)[0]) in drop else dict(value)
        if isinstance(value.get("$template"), str):
            text = _PLACEHOLDER.sub(
                lambda m: "" if m.group(1) in drop else m.group(0), value["$template"]
            )
            return {"$template": text}
        return {k: strip_refs(v, drop) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strip_refs(v, drop) for v in value]
    return value


def rename_refs(value: Any, renames: Mapping[TaskId, TaskId]) -> Any:
    """`value` with references to renamed ids pointing at their new ids."""
    if isinstance(value, Mapping):
        if isinstance(value.get("$ref"), str):
            head, dot, path = value["$ref"].partition(".")
            return {"$ref": renames.get(TaskId(head), head) + dot + path}
        if isinstance(value.get("$template"), str):
            return {
                "$template": _PLACEHOLDER.sub(
                    lambda m: "{" + renames.get(TaskId(m.group(1)), m.group(1)) + "}",
                    value["$template"],
                )
            }
        return {k: rename_refs(v, renames) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rename_refs(v, renames) for v in value]
    return value


def validate_plan(
    nodes: Iterable[TaskNode],
    *,
    tools: Iterable[str],
    limits: PlanLimits = PlanLimits(),
    raw: str = "",
    known: Iterable[TaskId] = (),
) -> Plan:
    """Validate and repair `nodes` into a `Plan`, or raise `PlanError` carrying `raw`.

    `known` are ids of nodes finished in earlier rounds, which new nodes may reference.
    """
    repairs: list[str] = []
    fixer = _Fixer(tools=set(tools), known=set(known), repairs=repairs)
    kept = fixer.cap(list(nodes), limits.max_nodes)
    kept = fixer.unique_ids(kept)
    kept = fixer.merge_duplicates(kept)
    kept = [fixer.fix_node(n, {m.id for m in kept}) for n in kept]
    kept = fixer.break_cycles(kept)
    if not kept:
        raise PlanError("the plan has no nodes", raw=raw)
    plan = Plan(nodes=tuple(kept), repairs=tuple(repairs))
    depth = nx.dag_longest_path_length(plan.graph()) + 1
    if depth > limits.max_depth:
        raise PlanError(f"the plan is {depth} steps deep (limit {limits.max_depth})", raw=raw)
    return plan


@dataclass(kw_only=True)
class _Fixer:
    """The repairs `validate_plan` applies, each one recorded in `repairs`."""

    tools: set[str]
    known: set[TaskId]
    repairs: list[str]

    def cap(self, nodes: list[TaskNode], max_nodes: int) -> list[TaskNode]:
        if len(nodes) > max_nodes:
            self.repairs.append(f"kept the first {max_nodes} of {len(nodes)} nodes")
        return nodes[:max_nodes]

    def unique_ids(self, nodes: list[TaskNode]) -> list[TaskNode]:
        seen: set[TaskId] = set(self.known)
        out = []
        for node in nodes:
            if node.id in seen:
                new_id = _fresh_id(node.id, seen)
                self.repairs.append(f"renamed a second node {node.id} to {new_id}")
                node = replace(node, id=new_id)
            seen.add(node.id)
            out.append(node)
        return out

    def merge_duplicates(self, nodes: list[TaskNode]) -> list[TaskNode]:
        first_of: dict[str, TaskId] = {}
        renames: dict[TaskId, TaskId] = {}
        out = []
        for node in nodes:
            node = replace(node, args=rename_refs(node.args, renames))
            key = json.dumps([node.kind, node.tool, _normalise(node.args)], sort_keys=True)
            if key in first_of:
                renames[node.id] = first_of[key]
                self.repairs.append(f"merged {node.id} into its duplicate {first_of[key]}")
                continue
            first_of[key] = node.id
            out.append(node)
        return out

    def fix_node(self, node: TaskNode, ids: set[TaskId]) -> TaskNode:
        if node.kind == "tool" and node.tool not in self.tools:
            self.repairs.append(f"{node.id}: unknown tool {node.tool!r}, made a reasoning step")
            node = replace(node, kind=LLM_KIND, tool=None)
        bad = {d for d in node.deps if d == node.id or d not in ids | self.known}
        if bad:
            self.repairs.append(f"{node.id}: dropped references to {', '.join(sorted(bad))}")
            node = replace(node, args=strip_refs(node.args, bad))
        return node

    def break_cycles(self, nodes: list[TaskNode]) -> list[TaskNode]:
        """Remove, cycle by cycle, the weakest edge: the one pointing backwards in the order
        the nodes were written (a node can only sensibly use what was planned before it)."""
        order = {n.id: i for i, n in enumerate(nodes)}
        by_id = {n.id: n for n in nodes}
        plan = Plan(nodes=tuple(nodes))
        graph = plan.graph()
        graph.remove_nodes_from(self.known)
        while not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            source, target = max(cycle, key=lambda e: order[e[0]] - order[e[1]])[:2]
            graph.remove_edge(source, target)
            by_id[target] = replace(by_id[target], args=strip_refs(by_id[target].args, {source}))
            self.repairs.append(f"broke a cycle by dropping {target}'s reference to {source}")
        return [by_id[n.id] for n in nodes]


def _fresh_id(base: TaskId, taken: set[TaskId]) -> TaskId:
    index = 2
    while TaskId(f"{base}_{index}") in taken:
        index += 1
    return TaskId(f"{base}_{index}")


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _describe_value(value: Any) -> str:
    if isinstance(value, Mapping) and "$template" in value:
        return json.dumps(value["$template"], ensure_ascii=False)
    if isinstance(value, Mapping) and "$ref" in value:
        return "$" + str(value["$ref"])
    return json.dumps(value, ensure_ascii=False, default=str)[:60]
