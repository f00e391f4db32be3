"""maj@k and HotpotQA's F1 end to end (issue 19, items 4 and 6): a dataset on disk, the eval
runner, every planner, `summary.json`. Expected figures are worked out by hand in comments."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow_evals.results import RunDirectory
from agentflow_evals.runner import EvalConfig, run_eval
from tests.unit.evals.test_scoring_end_to_end import PLANNERS, planner_playing_model, write_jsonl


def sampling_model(replies: Mapping[str, Sequence[str]]) -> FunctionModel:
    """The direct planner's one call per sample: each call for the question keyed `key` gets
    the next of `replies[key]`. A vote reads its samples as a multiset, so the order in which
    concurrent samples take them does not matter."""
    pending = {key: list(texts) for key, texts in replies.items()}

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        return pending[next(k for k in pending if k in prompt)].pop(0)

    return FunctionModel(reply, name="scripted")


VOTES = {
    # gold 1/3: two samples right, three wrong that are all one half written three ways.
    # Before: the right ones voted as one (2), the halves split 1/1/1 -> maj 1. Now 3 > 2 -> 0.
    "V-half": ["\\boxed{\\frac{1}{3}}", "\\boxed{1/3}", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}",
               "\\boxed{1/2}"],
    # two right, two wrong that are one answer (0.5 and 1/2): a tie -> 1/2. Before, the tie
    # went to whichever answer came first.
    "V-tie": ["\\boxed{0.5}", "\\boxed{\\frac13}", "\\boxed{1/2}", "\\boxed{0.3333333333333333}",
              "Cut off: \\boxed{1/"],  # the fifth has no answer and does not vote
    # three right, two wrong but different: right wins -> 1
    "V-win": ["\\boxed{1/3}", "\\boxed{\\dfrac{1}{3}}", "\\boxed{2}", "\\boxed{\\frac{1}{3}}",
              "\\boxed{3}"],
}  # fmt: skip


async def test_maj_at_k_clusters_samples_like_the_scorer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    rows = [{"unique_id": k, "problem": f"{k}: find it.", "answer": "\\frac{1}{3}"} for k in VOTES]
    write_jsonl(tmp_path / "data" / "math" / "math500.jsonl", rows)
    config = EvalConfig(dataset="math500", out=tmp_path / "run", samples=5, concurrency=1)
    summary = await run_eval(config, sampling_model(VOTES))
    results = {r["id"]: r for r in RunDirectory(tmp_path / "run").read_results()[0]}
    assert {k: r["maj_correct"] for k, r in results.items()} == {
        "V-half": 0.0, "V-tie": 0.5, "V-win": 1.0
    }  # fmt: skip
    assert {k: r["correct"] for k, r in results.items()} == {
        "V-half": 0.4, "V-tie": 0.4, "V-win": 0.6
    }  # fmt: skip
    assert summary["maj_at_k"] == 0.5  # (0 + 0.5 + 1) / 3
    assert summary["avg_at_k"] == round((0.4 + 0.4 + 0.6) / 3, 4)


HOTPOT = {
    # (gold, reply): SQuAD's F1 -> HotpotQA's official F1
    "h1": ("no", "Answer: no way"),  # 2 * (1/2 * 1) / 1.5 = 0.6667 -> 0 (yes/no differ)
    "h2": ("yes", "Answer: Yes."),  # 1 -> 1
    "h3": ("Eiffel Tower", "Answer: the Eiffel Tower in Paris"),  # 2/3 -> 2/3
    "h4": ("Paris", "Answer: yes"),  # 0 -> 0
}


@pytest.mark.parametrize("planner", PLANNERS)
async def test_hotpotqa_sets_report_hotpotqa_official_f1(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("AGENTFLOW_DATA", str(data))
    rows = [
        {"_id": k, "question": f"Q-{k}: which?", "answer": gold, "type": "comparison",
         "supporting_facts": []}
        for k, (gold, _) in HOTPOT.items()
    ]  # fmt: skip
    write_jsonl(data / "multihop" / "hotpotqa_train100.jsonl", rows)
    write_jsonl(data / "corpus" / "tiny.jsonl", [{"title": "Paris", "text": "Capital of France."}])
    model = planner_playing_model({f"Q-{k}:": reply for k, (_, reply) in HOTPOT.items()})
    out = tmp_path / "run"
    config = EvalConfig(dataset="hotpotqa-train", planner=planner, out=out)
    summary = await run_eval(config, model)
    results = {r["id"]: r["samples"][0] for r in RunDirectory(out).read_results()[0]}
    assert {k: s["f1"] for k, s in results.items()} == {
        "h1": 0.0, "h2": 1.0, "h3": 0.6667, "h4": 0.0
    }  # fmt: skip
    assert summary["f1"] == round((0 + 1 + 0.6667 + 0) / 4, 4)  # SQuAD's F1 gave 0.5833
    assert summary["em"] == 0.25 and json.loads((out / "summary.json").read_text()) == summary
