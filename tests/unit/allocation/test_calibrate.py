"""Calibration: the dev split, the curve priced from two runs per item, and the tau chosen."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.exceptions import ModelTimeoutError, UserError
from agentflow.testing import FunctionModel
from agentflow_evals.allocate import choose_tau, curve, dev_split, probe
from agentflow_evals.datasets import EvalItem
from agentflow_evals.failures import InfrastructureFailure

ROWS = [
    {"id": "a", "difficulty": 0.1, "fast_correct": True, "fast_tokens": 10},
    {"id": "b", "difficulty": 0.6, "fast_correct": False, "fast_tokens": 10},
    {"id": "c", "difficulty": 0.9, "fast_correct": False, "fast_tokens": 10},
]
for row, think_correct in zip(ROWS, (True, True, False), strict=True):
    row.update(think_correct=think_correct, think_tokens=100)


def test_each_tau_is_priced_from_the_fast_and_think_runs() -> None:
    points = {p.tau: p for p in curve(ROWS)}
    assert (points[0.0].accuracy, points[0.0].completion_tokens) == (2 / 3, 100)
    assert (points[0.1].accuracy, points[0.1].completion_tokens) == (2 / 3, 70)  # a runs fast
    assert (points[0.6].accuracy, points[0.6].completion_tokens) == (1 / 3, 40)  # 0.6 > 0.6 no
    assert (points[0.9].accuracy, points[0.9].completion_tokens) == (1 / 3, 10)
    assert points[0.5].think_share == pytest.approx(2 / 3)


def test_the_cheapest_tau_within_tolerance_of_the_best_accuracy_wins() -> None:
    points = curve(ROWS)
    assert choose_tau(points, tolerance=0.0) == 0.1
    assert choose_tau(points, tolerance=0.34) == 0.9


def test_dev_split_takes_every_kth_item() -> None:
    items = tuple(EvalItem(id=str(k), question="q", answers=("1",), task="math") for k in range(60))
    assert [i.id for i in dev_split(items, "every:25", None)] == ["0", "25", "50"]
    assert [i.id for i in dev_split(items, "every:25", 2)] == ["0", "25"]
    assert dev_split(items, "every:25", 0) == []  # `--multihop 0` asks for none, not all
    with pytest.raises(UserError, match="every:K"):
        dev_split(items, "random", None)


async def test_a_server_failure_is_never_priced_as_a_wrong_answer() -> None:
    item = EvalItem(id="x", question="2+2?", answers=("4",), task="math")

    def timing_out(*_: Any) -> str:
        raise ModelTimeoutError("no answer in 120 s", base_url="http://m/v1")

    with pytest.raises(InfrastructureFailure, match="timeout"):
        await probe(item, FunctionModel(timing_out), "direct", "uniform-think")
    right = await probe(item, FunctionModel(lambda *_: "\\boxed{4}"), "direct", "uniform-fast")
    assert right.correct and right.calls == 1 and right.tokens == {"fast": 1}
