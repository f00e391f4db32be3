"""The run's trace events as short lines of progress for the reasoning channel of a chat reply.

Chat apps show reasoning apart from the answer and do not store it in the history, which is why
progress goes there and never into `content`. The lines reach end users, so they carry no
internal addresses: a cancelled node says only that (the run's failure is told once, in its
error), a failed node its error with addresses withheld.
"""

from __future__ import annotations

import re

from agentflow.trace import Trace, TraceEvent

__all__ = ["describe", "withhold_addresses"]

OUTPUT_CHARS = 160
"""How much of a node's result a progress line shows."""


def describe(event: TraceEvent, trace: Trace | None) -> str | None:
    """One line (newline-terminated) for `event`, or None for events not worth a line."""
    node = event.node_id or ""
    data = event.data
    if event.type == "planned":
        record = trace.nodes.get(node) if trace else None
        after = f" (after {', '.join(record.deps)})" if record and record.deps else ""
        return f"- planned {node}: {data.get('label', '')}{after}\n"
    if event.type == "started":
        return f"- running {node}\n"
    if event.type == "finished":
        record = trace.nodes.get(node) if trace else None
        output = _one_line(record.output or "") if record else ""
        return f"- done {node}: {output}\n"
    if event.type == "cancelled":  # by the run's own failure, which the client is told apart
        return f"- cancelled {node}\n"
    if event.type == "failed":  # a tool's or the model's own error: data, addresses withheld
        return f"- failed {node}: {_one_line(withhold_addresses(str(data.get('error') or '')))}\n"
    if event.type == "replan":
        return f"Replanning: {_one_line(str(data.get('reason', '')))}\n"
    if event.type == "plan" and data.get("error"):
        return f"The plan could not be used: {_one_line(str(data['error']))}\n"
    if event.type == "answer":
        return f"Answer found: {_one_line(str(data.get('text', '')))}\n"
    return None


_ADDRESS = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", re.I)


def withhold_addresses(text: str) -> str:
    """`text` without URLs and IP addresses: a node's error is shown to the end user, and an
    internal server's address is not theirs to see."""
    return _ADDRESS.sub("(address withheld)", text)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= OUTPUT_CHARS else flat[:OUTPUT_CHARS] + "..."
