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
    # two right, two wrong that are one answer (0.5 and 1/2), one with no answer: a tie of the
    # two largest -> 1/2. Before, the tie went to whichever answer came first.
    "V-tie": ["\\boxed{0.5}", "\\boxed{\\frac13}", "\\boxed{1/2}", "\\boxed{0.3333333333333333}",
              "Cut off: \\boxed{1/"],  # the fifth has no answer: "no answer" votes 1
    # two right, three cut off with no answer: "no answer" wins 3 to 2 -> 0. Before, the three
    # were left out of the vote and the two right ones won -> 1
    "V-unanswered": ["\\boxed{1/3}", "\\boxed{\\frac{1}{3}}", "Cut off: \\boxed{\\frac{1}",
                     "First we compute 1/3 then", "Working:\n0.333"],
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
        "V-half": 0.0, "V-tie": 0.5, "V-win": 1.0, "V-unanswered": 0.0
    }  # fmt: skip
    assert {k: r["correct"] for k, r in results.items()} == {
        "V-half": 0.4, "V-tie": 0.4, "V-win": 0.6, "V-unanswered": 0.4
    }  # fmt: skip
    assert summary["maj_at_k"] == 0.375  # (0 + 0.5 + 1 + 0) / 4
    assert summary["avg_at_k"] == round((0.4 + 0.4 + 0.6 + 0.4) / 4, 4)


FAILING = {
    # (replies of the samples that get a usable plan, samples whose plan is unusable): k = 3
    "F-one": (["\\boxed{5}"], 2),  # 1 right, 2 failed: "no answer" wins -> 0 (before: 1)
    "F-two": (["\\boxed{5}", "\\boxed{5.0}"], 1),  # 2 right, 1 failed -> 1
    "F-three": (["\\boxed{5}", "\\boxed{7}"], 1),  # right, wrong, failed: a 3-way tie -> 1/3
}


def dag_failing_some_plans() -> FunctionModel:
    """The dag planner's calls for 3 samples per item: the first `len(replies)` plan calls of
    an item get a plan (each join the next reply), every later one an unusable plan, so that
    many samples fail with a plan error (recorded wrong, with their error)."""
    plans = {key: len(replies) for key, (replies, _) in FAILING.items()}
    joins = {key: list(replies) for key, (replies, _) in FAILING.items()}

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        key = next(k for k in FAILING if f"{k}:" in prompt)
        fields = set((schema or {}).get("properties", {}))
        if fields == {"lookups", "steps"}:
            plans[key] -= 1
            if plans[key] < 0:
                return "not a plan at all"
            return json.dumps(
                {"lookups": [], "steps": [{"id": "s1", "tool": "llm", "inputs": ["work"]}]}
            )
        if fields == {"enough", "answer", "missing"}:
            return json.dumps({"enough": True, "answer": joins[key].pop(0), "missing": ""})
        return "a finding"

    return FunctionModel(reply, name="scripted")


async def test_failed_samples_vote_as_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    rows = [{"unique_id": k, "problem": f"{k}: find it.", "answer": "5"} for k in FAILING]
    write_jsonl(tmp_path / "data" / "math" / "math500.jsonl", rows)
    config = EvalConfig(
        dataset="math500", planner="dag", out=tmp_path / "run", samples=3, concurrency=1
    )
    summary = await run_eval(config, dag_failing_some_plans())
    results = {r["id"]: r for r in RunDirectory(tmp_path / "run").read_results()[0]}
    failed = {k: sum(1 for s in r["samples"] if s["error"]) for k, r in results.items()}
    assert failed == {k: n for k, (_, n) in FAILING.items()}
    assert {k: r["correct"] for k, r in results.items()} == {
        "F-one": pytest.approx(1 / 3), "F-two": pytest.approx(2 / 3),
        "F-three": pytest.approx(1 / 3)
    }  # fmt: skip
    assert {k: r["maj_correct"] for k, r in results.items()} == {
        "F-one": 0.0, "F-two": 1.0, "F-three": pytest.approx(1 / 3)
    }  # fmt: skip
    assert summary["maj_at_k"] == round((0 + 1 + 1 / 3) / 3, 4)  # before: (1 + 1 + 1/2) / 3
    assert summary["avg_at_k"] == round((1 / 3 + 2 / 3 + 1 / 3) / 3, 4)


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
