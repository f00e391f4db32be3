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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NewType

import networkx as nx

from agentflow.exceptions import PlanError
from agentflow.passages import is_passages, render_passages
from agentflow.tool import delimit

__all__ = [
    "LLM_KIND",
    "Plan",
    "PlanBuilder",
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
_to_json = json.JSONEncoder(ensure_ascii=False, default=str).encode
"""`json.dumps(value, ensure_ascii=False, default=str)`, without building an encoder per call
(every node's label goes through it)."""


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
    found: set[TaskId] = set()

    def on_ref(marker: Mapping[str, Any]) -> None:
        found.add(TaskId(marker["$ref"].split(".", 1)[0]))

    def on_template(marker: Mapping[str, Any]) -> None:
        found.update(TaskId(m) for m in _PLACEHOLDER.findall(marker["$template"]))

    _rewrite(value, on_ref, on_template)
    return found


def resolve_args(value: Any, outputs: Mapping[TaskId, Any], *, fence: bool = False) -> Any:
    """`value` with every reference replaced by the referenced node's output.

    With `fence`, an output written into a `$template` string is fenced as data (`delimit`):
    the string is a prompt (an `llm` node's question), and a search result pasted raw into a
    prompt could carry instructions. Tool inputs (a search query) take the output as it is.
    A prompt that names the same node twice (`{l1} {l2} {l2}`, as small models write) gets its
    output once and `[result l2 above]` after: the same passages again cost prefill, add nothing.
    """

    def on_ref(marker: Mapping[str, Any]) -> Any:
        node_id, _, path = marker["$ref"].partition(".")
        output = outputs.get(TaskId(node_id))
        return output.get(path) if path and isinstance(output, Mapping) else output

    def on_template(marker: Mapping[str, Any]) -> str:
        fenced: set[TaskId] = set()

        def fill(match: re.Match[str]) -> str:
            node_id = TaskId(match.group(1))
            if node_id not in outputs:
                return match.group(0)
            if not fence:
                return _as_text(outputs[node_id])
            if node_id in fenced:
                return f"[result {node_id} above]"
            fenced.add(node_id)
            return delimit(node_id, _as_text(outputs[node_id]))

        return _PLACEHOLDER.sub(fill, marker["$template"])

    return _rewrite(value, on_ref, on_template)


def strip_refs(value: Any, drop: set[TaskId]) -> Any:
    """`value` with references to the ids in `drop` removed (refs become None, placeholders '')."""

    def on_ref(marker: Mapping[str, Any]) -> Any:
        return None if TaskId(marker["$ref"].split(".", 1)[0]) in drop else dict(marker)

    def on_template(marker: Mapping[str, Any]) -> dict[str, str]:
        text = _PLACEHOLDER.sub(
            lambda m: "" if m.group(1) in drop else m.group(0), marker["$template"]
        )
        return {"$template": text}

    return _rewrite(value, on_ref, on_template)


def rename_refs(value: Any, renames: Mapping[TaskId, TaskId]) -> Any:
    """`value` with references to renamed ids pointing at their new ids."""

    def on_ref(marker: Mapping[str, Any]) -> dict[str, str]:
        head, dot, path = marker["$ref"].partition(".")
        return {"$ref": renames.get(TaskId(head), head) + dot + path}

    def on_template(marker: Mapping[str, Any]) -> dict[str, str]:
        text = _PLACEHOLDER.sub(
            lambda m: "{" + renames.get(TaskId(m.group(1)), m.group(1)) + "}",
            marker["$template"],
        )
        return {"$template": text}

    return _rewrite(value, on_ref, on_template)


Marker = Callable[[Mapping[str, Any]], Any]


def _rewrite(value: Any, on_ref: Marker, on_template: Marker) -> Any:
    """The one walk over argument values: each `$ref` / `$template` marker is replaced by what
    its callback returns; mappings and lists are rebuilt around them, other values kept."""
    if isinstance(value, str):  # the common leaf: cheaper than the ABC check below
        return value
    if isinstance(value, _MAPPING):
        if isinstance(value.get("$ref"), str):
            return on_ref(value)
        if isinstance(value.get("$template"), str):
            return on_template(value)
        return {k: _rewrite(v, on_ref, on_template) for k, v in value.items()}
    if isinstance(value, _SEQUENCE):
        return [_rewrite(v, on_ref, on_template) for v in value]
    return value


_MAPPING = (dict, Mapping)
"""A plain dict matches without the ABC machinery (a tuple: `dict | Mapping` written inside
`isinstance` builds a new union on every call)."""
_SEQUENCE = (list, tuple)


class PlanBuilder:
    """Validates and repairs nodes one at a time, in an order where references point back.

    This is what lets a streamed plan start running early: each node is checked against the
    nodes before it, so what `add` returns can run as soon as its dependencies finish.
    Repairs: duplicate ids renamed, duplicate sub-questions merged, unknown tools turned into
    reasoning steps, dangling and self references dropped, nodes past the caps dropped.
    """

    def __init__(
        self,
        *,
        tools: Iterable[str],
        limits: PlanLimits = PlanLimits(),
        known: Iterable[TaskId] = (),
        finished: Iterable[TaskNode] = (),
        raw: str = "",
    ) -> None:
        """`known`: ids of earlier rounds' nodes a node may use. `finished`: earlier rounds'
        nodes that succeeded; a node that repeats one is merged into it, its result reused."""
        self.tools = set(tools)
        self.limits = limits
        self.raw = raw
        self.repairs: list[str] = []
        self.nodes: list[TaskNode] = []
        self._depth: dict[TaskId, int] = dict.fromkeys(known, 0)
        self._renames: dict[TaskId, TaskId] = {}
        self._signatures: dict[str, TaskId] = {}
        self._too_deep: set[TaskId] = set()
        self._dropped = 0
        self.merged = 0
        """Nodes merged into an earlier one (this round's or a finished one)."""
        for done in finished:
            self._signatures.setdefault(_signature(done), done.id)
            self._depth.setdefault(done.id, 0)

    def add(self, node: TaskNode) -> TaskNode | None:
        """The repaired node, or None when it was merged into an earlier one or dropped."""
        if len(self.nodes) >= self.limits.max_nodes:
            self._dropped += 1
            return None
        node = self._unique_id(node)
        node = replace(node, args=rename_refs(node.args, self._renames))
        node = self._known_tool(node)
        lost = node.deps & self._too_deep
        if lost:
            self.repairs.append(f"dropped {node.id}: it needs dropped {', '.join(sorted(lost))}")
            self._too_deep.add(node.id)
            return None
        node = self._drop_bad_refs(node)
        signature = _signature(node)
        if signature in self._signatures:
            first = self._signatures[signature]
            self._renames[node.id] = first
            self.merged += 1
            self.repairs.append(f"merged {node.id} into its duplicate {first}")
            return None
        depth = 1 + max((self._depth[d] for d in node.deps), default=0)
        if depth > self.limits.max_depth:
            self.repairs.append(f"dropped {node.id}: deeper than {self.limits.max_depth} steps")
            self._too_deep.add(node.id)
            return None
        self._signatures[signature] = node.id
        self._depth[node.id] = depth
        self.nodes.append(node)
        return node

    def build(self) -> Plan:
        if self._dropped:
            self.repairs.append(
                f"kept the first {self.limits.max_nodes} nodes, dropped {self._dropped} more"
            )
        if not self.nodes:
            raise PlanError("the plan has no usable nodes", raw=self.raw)
        return Plan(nodes=tuple(self.nodes), repairs=tuple(self.repairs))

    def _unique_id(self, node: TaskNode) -> TaskNode:
        if node.id in self._depth or not node.id:
            new_id = _fresh_id(node.id or TaskId("n"), set(self._depth))
            self.repairs.append(f"renamed a second node {node.id or '(no id)'} to {new_id}")
            return replace(node, id=new_id)
        return node

    def _known_tool(self, node: TaskNode) -> TaskNode:
        if node.kind == "tool" and node.tool not in self.tools:
            self.repairs.append(f"{node.id}: unknown tool {node.tool!r}, made a reasoning step")
            return replace(node, kind=LLM_KIND, tool=None)
        return node

    def _drop_bad_refs(self, node: TaskNode) -> TaskNode:
        bad = {d for d in node.deps if d == node.id or d not in self._depth}
        if not bad:
            return node
        self.repairs.append(f"{node.id}: dropped references to {', '.join(sorted(bad))}")
        return replace(node, args=strip_refs(node.args, bad))


def validate_plan(
    nodes: Iterable[TaskNode],
    *,
    tools: Iterable[str],
    limits: PlanLimits = PlanLimits(),
    raw: str = "",
    known: Iterable[TaskId] = (),
) -> Plan:
    """Validate and repair a whole plan, or raise `PlanError` carrying `raw`.

    References may point forwards here; cycles are broken at their weakest edge, the one that
    points furthest backwards in the order the nodes were written (a node can only sensibly
    use what was planned before it). `known` are ids finished in earlier rounds.
    """
    written = list(nodes)
    if len(written) > limits.max_nodes * 10:  # do not build a graph of 10,000 junk nodes
        written = written[: limits.max_nodes * 10]
    builder = PlanBuilder(tools=tools, limits=limits, known=known, raw=raw)
    for node in _acyclic_order(written, builder.repairs):
        builder.add(node)
    return builder.build()


def _acyclic_order(nodes: list[TaskNode], repairs: list[str]) -> list[TaskNode]:
    order: dict[TaskId, int] = {}
    for index, node in enumerate(nodes):
        order.setdefault(node.id, index)  # a duplicate id is renamed later; edges use the first
    graph: nx.DiGraph[TaskId] = nx.DiGraph()
    graph.add_nodes_from(order)
    for node in nodes:
        graph.add_edges_from((d, node.id) for d in node.deps if d in order and d != node.id)
    patched = {n.id: n for n in reversed(nodes)}
    while not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        source, target = max(cycle, key=lambda e: order[e[0]] - order[e[1]])[:2]
        graph.remove_edge(source, target)
        patched[target] = replace(patched[target], args=strip_refs(patched[target].args, {source}))
        repairs.append(f"broke a cycle by dropping {target}'s reference to {source}")
    ranked = {
        node_id: rank
        for rank, node_id in enumerate(
            nx.lexicographical_topological_sort(graph, key=lambda n: order[n])
        )
    }
    first_of_id = [n for i, n in enumerate(nodes) if order[n.id] == i]
    duplicates = [n for i, n in enumerate(nodes) if order[n.id] != i]
    ordered = sorted(first_of_id, key=lambda n: ranked[n.id])
    return [patched[n.id] for n in ordered] + duplicates


def _fresh_id(base: TaskId, taken: set[TaskId]) -> TaskId:
    index = 2
    while TaskId(f"{base}_{index}") in taken:
        index += 1
    return TaskId(f"{base}_{index}")


def _signature(node: TaskNode) -> str:
    """What makes two nodes the same work: kind, tool and arguments, case and spacing aside."""
    return json.dumps([node.kind, node.tool, _normalise(node.args)], sort_keys=True)


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


TEMPLATE_PASSAGES_BUDGET = 1500
"""Characters of search hits pasted into a template, as the findings give each search."""


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if is_passages(value):  # one line per hit, as everywhere else a prompt shows them
        return render_passages(value, TEMPLATE_PASSAGES_BUDGET).text
    return _to_json(value)


LABEL_TEXT_CHARS = 300
"""How much of a text argument a node's label keeps: a sub-question or a query whole (the dag
planner caps a step's input at 300 characters), cut with an ellipsis inside the quotes."""


def _describe_value(value: Any) -> str:
    if isinstance(value, _MAPPING):
        if "$template" in value:
            return json.dumps(value["$template"], ensure_ascii=False)
        if "$ref" in value:
            return "$" + str(value["$ref"])
    if isinstance(value, str):
        cut = value if len(value) <= LABEL_TEXT_CHARS else value[:LABEL_TEXT_CHARS] + "…"
        return _to_json(cut)
    return _to_json(value)[:60]
