"""benchmarks/_time_spent.py: a dag question's wall-clock split by hand-placed requests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from _time_spent import time_spent

from agentflow import Trace
from agentflow.model import RequestTiming
from agentflow.trace import NodeRecord, TraceEvent


def request(start: float, end: float, node: str | None, **kw: float | int) -> RequestTiming:
    return RequestTiming(total_s=end - start, started_at=start, node_id=node, **kw)  # type: ignore[arg-type]


def test_a_plan_a_replan_and_two_joins_add_up_to_the_wall_time() -> None:
    """Plan 0-10 (streamed: a search starts at 6), search 6-12, join 12-30 asks for a replan,
    replan 30-40, an llm node 40-50 beside a search 38-45, final join 50-60, wall 62."""
    trace = Trace(question="q", planner="dag")
    trace.nodes["s1"] = NodeRecord(id="s1", kind="tool", deps=[], tool="search", round=0,
                                   started_at=6.0, finished_at=12.0)  # fmt: skip
    trace.nodes["r1s1"] = NodeRecord(id="r1s1", kind="tool", deps=[], tool="search", round=1,
                                     started_at=38.0, finished_at=45.0)  # fmt: skip
    trace.events += [TraceEvent(type="plan", at=10.0005), TraceEvent(type="replan", at=30.0005),
                     TraceEvent(type="plan", at=40.0005)]  # fmt: skip
    trace.requests += [
        request(0.0, 10.0, None, ttft_s=2.0, prompt_tokens=1000, cached_tokens=0),
        request(12.0, 30.0, None, ttft_s=8.0, prompt_tokens=1200, cached_tokens=600),
        request(30.0, 40.0, None, ttft_s=4.0, prompt_tokens=1300, cached_tokens=1000),
        request(40.0, 50.0, "r1n2", ttft_s=1.0, prompt_tokens=300),
        request(50.0, 60.0, None, prompt_tokens=1400),  # not streamed: no split
    ]
    spent = time_spent(trace, wall=62.0)
    assert spent["seconds"] == {"plan": 10.0, "replan": 10.0, "join": 28.0, "planner": 0.0,
                                "llm": 10.0, "tool": 2.0, "other": 2.0}  # fmt: skip
    assert sum(spent["seconds"].values()) == pytest.approx(62.0)
    planner = spent["requests"]["planner"]
    assert planner == {"requests": 4, "to_first_s": 24.0, "decode_s": 24.0, "prompt": 4900,
                       "cached": 1600}  # fmt: skip
    assert spent["requests"]["nodes"]["decode_s"] == 9.0


def test_a_planner_without_plan_events_has_its_requests_counted_as_planner() -> None:
    trace = Trace(question="q", planner="react")
    trace.requests += [request(0.0, 4.0, None), request(5.0, 9.0, None)]
    assert time_spent(trace, wall=10.0)["seconds"]["planner"] == 8.0
    assert time_spent(trace, wall=10.0)["seconds"]["other"] == 2.0
