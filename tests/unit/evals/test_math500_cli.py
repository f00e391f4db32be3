"""`agentflow eval math500` through the CLI against a scripted server over loopback (issue 19's
done-when): every gold in `\\boxed{}` scores 500 of 500 (the three escaped-dollar golds
included), and replies cut off inside their box or ending on the bare gold score 0."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow_evals import mathgrade, scoring
from agentflow_evals.datasets import DatasetError, EvalItem, load_dataset
from tests.unit.scripted_server import Reply, chat_body, reply_json, scripted_server


def math500() -> list[EvalItem]:
    try:
        return list(load_dataset("math500").items)
    except DatasetError as exc:
        pytest.skip(f"math/math500.jsonl is missing: {exc}")


def answering(items: list[EvalItem], form: Any) -> Any:
    """A server that finds the item in the prompt and answers `form(gold, index)`."""
    by_length = sorted(enumerate(items), key=lambda pair: -len(pair[1].question))

    def answer(path: str, body: dict[str, Any]) -> Reply:
        prompt = str(body["messages"][-1]["content"])
        index, item = next((i, it) for i, it in by_length if it.question in prompt)
        return reply_json(chat_body([form(item.answers[0], index)]))

    return answer


@pytest.fixture(autouse=True)
def patient_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generous time limits: on a loaded test machine a check killed after 30 s counts wrong,
    and timeouts are not what these tests are about."""
    monkeypatch.setattr(mathgrade, "_CHILD_GRACE_SECONDS", 600)
    monkeypatch.setattr(scoring, "score_math", functools.partial(mathgrade.score_math, timeout=60))


def run(tmp_path: Path, url: str, *options: str) -> dict[str, Any]:
    out = tmp_path / "run"
    args = ["eval", "math500", "--base-url", url, "--model", "m", "--out", str(out)]
    assert main([*args, "--concurrency", "8", *options]) == 0
    return dict(json.loads((out / "summary.json").read_text()))


def test_every_gold_in_a_box_scores_500_of_500(tmp_path: Path) -> None:
    items = math500()
    assert len(items) == 500
    with scripted_server(answering(items, lambda gold, _: f"So: $\\boxed{{{gold}}}$")) as server:
        summary = run(tmp_path, server.base_url)
    # before: 497, the escaped-dollar golds (\$36, \$18.90, \$32,\!348) never scored
    assert summary["n"] == 500 and summary["accuracy"] == 1.0 and summary["errors"] == 0


def test_cut_off_and_unboxed_replies_score_nothing(tmp_path: Path) -> None:
    items = math500()[:40]

    def form(gold: str, index: int) -> str:
        if index % 2:
            return f"Let me work it out.\nThe answer is $\\boxed{{{gold}"  # cut off by max_tokens
        return f"Let me work it out.\n{gold}"  # truncated reasoning ending on the bare gold

    with scripted_server(answering(items, form)) as server:
        summary = run(tmp_path, server.base_url, "--limit", "40")
    # before: 16 of 40 scored (math-verify read the gold out of the cut-off or bare text)
    assert summary["n"] == 40 and summary["accuracy"] == 0.0
