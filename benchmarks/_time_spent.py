"""Where a question's wall-clock went, from the timings its trace keeps (issue 24 item 1).

The run's clock is swept from 0 to the question's wall time, and every instant goes to the most
pressing thing running then, in this order:

- `plan`, `replan`, `join`: the planner's own model requests (those made for no node). A request
  that ended before the first `plan` event planned; one that ended after a `replan` event and
  before the next `plan` event replanned; the others joined. Planners that emit no `plan` event
  (react, hybrid, direct) have their own requests counted as `planner`.
- `llm`: a node's model request;
- `tool`: a tool node running (its search, fetch or Python);
- `other`: nothing of the above: the executor, the client, the scorer's share of the clock.

Only one category counts at an instant, so the categories add up to the wall time: a tool that
ran beside a join costs nothing here, since the join was holding the answer up anyway. Requests
are also split into prefill-and-queue (until the first streamed piece: the server's queue and
prefill) and decode (the rest of a streamed request), with prompt and prefix-cached tokens
(`cached_tokens`, reported when the server runs with `--enable-prompt-tokens-details`).
"""

from __future__ import annotations

import bisect
from typing import Any

from agentflow import Trace
from agentflow.model import RequestTiming

ORDER = ("plan", "replan", "join", "planner", "llm", "tool")
"""The most pressing first: at an instant the first of these running takes the time."""
EPSILON = 1e-3
"""A request's end and the event its planner emits after it are this close on the clock."""

Interval = tuple[float, float, str]


def time_spent(trace: Trace, wall: float) -> dict[str, Any]:
    """Seconds per category (they sum to `wall`) and the requests' prefill/decode split."""
    intervals = _request_intervals(trace) + _tool_intervals(trace)
    seconds = dict.fromkeys((*ORDER, "other"), 0.0)
    cuts = sorted({0.0, wall, *(t for s, e, _ in intervals for t in (s, e) if 0.0 < t < wall)})
    for start, end in zip(cuts, cuts[1:], strict=False):
        middle = (start + end) / 2
        running = {c for s, e, c in intervals if s <= middle < e}
        category = next((c for c in ORDER if c in running), "other")
        seconds[category] += end - start
    return {
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "requests": _request_split(trace.requests),
    }


def _request_intervals(trace: Trace) -> list[Interval]:
    plans = sorted(e.at for e in trace.events if e.type == "plan")
    replans = sorted(e.at for e in trace.events if e.type == "replan")
    intervals = []
    for request in trace.requests:
        if request.started_at is None:
            continue
        end = request.started_at + request.total_s
        category = "llm" if request.node_id is not None else _planner_side(end, plans, replans)
        intervals.append((request.started_at, end, category))
    return intervals


def _planner_side(end: float, plans: list[float], replans: list[float]) -> str:
    """plan, replan or join, by where the request ended among the planner's events."""
    if not plans:
        return "planner"
    if end <= plans[0] + EPSILON:
        return "plan"
    next_plan = bisect.bisect_left(plans, end - EPSILON)
    if next_plan == len(plans):
        return "join"  # after the last plan: the joins that answered or asked for a replan
    last_replan = bisect.bisect_left(replans, end - EPSILON) - 1  # the last one before its end
    if last_replan >= 0 and replans[last_replan] > plans[next_plan - 1]:
        return "replan"  # between a replan decision and the plan it produced
    return "join"


def _tool_intervals(trace: Trace) -> list[Interval]:
    return [
        (n.started_at, n.finished_at, "tool")
        for n in trace.nodes.values()
        if n.tool and n.started_at is not None and n.finished_at is not None
    ]


def _request_split(requests: list[RequestTiming]) -> dict[str, dict[str, float]]:
    """Per side (the planner's own requests, the nodes'): seconds to the first piece (queue
    and prefill), seconds after it (decode), prompt and cached tokens, summed over requests."""
    split: dict[str, dict[str, float]] = {}
    for request in requests:
        side = split.setdefault(
            "planner" if request.node_id is None else "nodes",
            dict.fromkeys(("requests", "to_first_s", "decode_s", "prompt", "cached"), 0.0),
        )
        to_first = request.ttft_s if request.ttft_s is not None else request.total_s
        side["requests"] += 1
        side["to_first_s"] += to_first
        side["decode_s"] += request.total_s - to_first
        side["prompt"] += request.prompt_tokens
        side["cached"] += request.cached_tokens or 0
    return {k: {n: round(v, 3) for n, v in side.items()} for k, side in split.items()}
