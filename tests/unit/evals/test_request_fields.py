"""Each eval sample's row says why it was slow, from its requests' timings."""

from __future__ import annotations

import json
from typing import Any

from agentflow.model import RequestTiming
from agentflow.trace import Trace
from agentflow_evals.item import _cost_fields
from agentflow_evals.summary import summarize


def test_a_samples_row_names_its_slowest_request_and_its_queue_wait() -> None:
    trace = Trace(question="q", planner="dag")
    trace.add_request(RequestTiming(total_s=2.0, queued_s=0.5, prompt_tokens=10), "n1")
    trace.add_request(RequestTiming(total_s=41.0, queued_s=1.0, completion_tokens=900), "n2")
    trace.add_request(RequestTiming(total_s=31.0, queued_s=0.25), None)
    row = _cost_fields(trace, 50.0)
    assert row["requests_over_30s"] == 2 and row["queue_wait_s"] == 1.75
    slowest = row["slowest_request"]
    assert (slowest["node_id"], slowest["total_s"], slowest["completion_tokens"]) == (
        "n2",
        41.0,
        900,
    )
    json.dumps(row)  # rows are JSON lines


def test_a_sample_without_requests_has_empty_request_fields() -> None:
    row = _cost_fields(None, 1.0)
    assert row["slowest_request"] is None and row["requests_over_30s"] == 0


def test_the_summary_counts_slow_requests_and_old_rows_add_none() -> None:
    def row(item: str, **sample: Any) -> dict[str, Any]:
        fields = {"prompt_tokens": 1, "completion_tokens": 1, "model_calls": 1, "tool_calls": 0}
        return {"id": item, "correct": False, "seconds": 1.0,
                "samples": [{**fields, "error": None, "em": 0.0, "f1": 0.0, **sample}]}  # fmt: skip

    manifest = {"dataset": "d", "planner": "p", "model": "m", "samples": 1}
    rows = [row("a", requests_over_30s=2), row("b", requests_over_30s=1), row("old")]
    assert summarize(rows, manifest, wall=1.0, new_rows=rows)["requests_over_30s"] == 3
