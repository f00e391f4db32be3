"""Scoring end to end: a dataset file on disk, every planner, a scripted model, `summary.json`.

Each dataset family gets items whose final reply is written in one of the forms real models
write. The scripted model plays whichever planner asks (a plan, a ReAct step, a hybrid round,
a join, a direct answer) and always ends with that reply, so a wrong score can only come from
the path reply -> planner -> runner -> scorer -> summary. Expected figures are computed by hand
in the comments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow_evals.browsecomp import encrypt
from agentflow_evals.results import RunDirectory
from agentflow_evals.runner import EvalConfig, run_eval

PLANNERS = ["direct", "react", "dag", "hybrid", "scale"]


def planner_playing_model(replies: Mapping[str, str], judge: Any = None) -> FunctionModel:
    """Answers every planner's calls so that the run's final reply is `replies[question]`.

    The question is recognised by a key of `replies` appearing in the prompt. Grading prompts go
    to `judge(prompt)` when given.
    """

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        if prompt.startswith("Judge whether the following"):
            assert judge is not None, "a grading prompt reached a model without a judge script"
            return str(judge(prompt))
        final = next(text for key, text in replies.items() if key in prompt)
        fields = set((schema or {}).get("properties", {}))
        if fields == {"lookups", "steps"}:  # dag: one reasoning step, then the join
            return json.dumps(
                {"lookups": [], "steps": [{"id": "s1", "tool": "llm", "inputs": ["work"]}]}
            )
        if fields == {"enough", "answer", "missing"}:
            return json.dumps({"enough": True, "answer": final, "missing": ""})
        if fields == {"answer"}:
            return json.dumps({"answer": final})
        if fields == {"thought", "tool", "input"}:
            return json.dumps({"thought": "I know it", "tool": "finish", "input": final})
        if fields == {"queries", "answer"}:
            return json.dumps({"queries": [], "answer": final})
        if schema is not None:
            return "a finding"  # any other step the planner takes on the way
        return final

    return FunctionModel(reply, name="scripted")


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def evaluate(
    tmp_path: Path, dataset: str, planner: str, model: FunctionModel, **options: Any
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    out = tmp_path / f"run-{planner}"
    config = EvalConfig(dataset=dataset, planner=planner, out=out, concurrency=4, **options)
    summary = await run_eval(config, model)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    rows, problems = RunDirectory(out).read_results()
    assert problems == []
    return summary, {row["id"]: row for row in rows}


# --- AIME ---------------------------------------------------------------------------------------

AIME_GOLD = 33
AIME_REPLIES = {
    # the forms models write; True = must score correct
    "right-boxed": ("We count the pairs: 20 + 13.\n\n\\boxed{33}", True),
    "right-dollar-padded": ("The answer is $\\boxed{033}$.", True),
    "right-then-answer-prose": ("...so \\boxed{33}.\nAnswer: the total count is 33", True),
    "right-equation": ("Solving gives \\boxed{x = 33}", True),
    "right-degrees": ("The angle is \\boxed{33^\\circ}.", True),
    "right-fbox": ("Hence \\fbox{33}", True),
    "right-box-then-mention": (
        "Thus \\boxed{33}. I put the result in \\boxed as the problem asked.",
        True,
    ),
    "right-final-answer-line": ("Adding up the cases.\n**Final Answer:** 33", True),
    "wrong-boxed": ("\\boxed{34}", False),
    "wrong-truncated-intermediate": ("First we count the pairs:\n33", False),
    "wrong-unclosed-box": ("So the answer is \\boxed{3", False),
    # cut off by max_tokens inside the box holding the gold: scale used to close it (33)
    "wrong-unclosed-gold-box": ("So the answer is \\boxed{33", False),
    # truncated reasoning whose last equation is the gold: AIME used to read its right side
    "wrong-last-equation": ("Step 1: three groups of eleven.\nStep 2: 3 * 11 = 33", False),
    # ends on the bare gold: scale used to box its last line (33)
    "wrong-bare-gold-last-line": ("So the count is\n33", False),
}


@pytest.mark.parametrize("planner", PLANNERS)
async def test_aime_every_form_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    rows = [
        {"id": key, "problem": f"Problem {key}: count the pairs.", "answer": AIME_GOLD}
        for key in AIME_REPLIES
    ]
    write_jsonl(tmp_path / "data" / "math" / "aime2024.jsonl", rows)
    replies = {f"Problem {key}:": text for key, (text, _) in AIME_REPLIES.items()}
    summary, results = await evaluate(tmp_path, "aime2024", planner, planner_playing_model(replies))
    scored = {key: results[key]["samples"][0]["correct"] for key in AIME_REPLIES}
    assert scored == {key: right for key, (_, right) in AIME_REPLIES.items()}
    for key, (reply, _) in AIME_REPLIES.items():
        assert results[key]["samples"][0]["reply"] == reply.strip()  # kept whole for regrade
    # 8 right of 14
    assert summary["n"] == 14 and summary["accuracy"] == round(8 / 14, 4)
    assert summary["errors"] == 0 and summary["calibration_error"] is None
    # Wilson 95%: p = 8/14, z = 1.959964; centre (p + z^2/28) / (1 + z^2/14), half-width
    # z * sqrt(p(1-p)/14 + z^2/784) / (1 + z^2/14)
    z, n, p = 1.959964, 14, 8 / 14
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert summary["accuracy_ci95"] == pytest.approx([centre - half, centre + half], abs=1e-3)


# --- MATH / AMC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("planner", PLANNERS)
async def test_math_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    forms = {
        "m-frac": ("So $x = \\boxed{\\frac{1}{2}}$.", True),
        "m-short": ("\\boxed{\\frac12}\nAnswer: one half", True),
        "m-decimal": ("It is \\boxed{0.5}.", True),
        "m-wrong": ("\\boxed{\\frac{1}{3}}", False),
        # cut off inside the box (math-verify used to find 1/2 in it; scale used to close it)
        "m-cut": ("So $x = \\boxed{\\frac{1}{2}", False),
        "m-bare": ("Halving once.\n0.5", False),  # truncated reasoning ending on a number
        "m-answer-line": ("Halving once.\nAnswer: $\\frac{1}{2}$", True),
    }
    rows = [
        {"unique_id": k, "problem": f"Item {k}: solve.", "answer": "\\frac{1}{2}"} for k in forms
    ]
    # MATH-500's escaped-dollar golds (test/prealgebra/1203): no reply could score before
    forms["m-dollar"] = ("She pays $\\boxed{\\$36}$.", True)
    forms["m-dollar-plain"] = ("She pays \\boxed{36} dollars.", True)
    rows += [
        {"unique_id": k, "problem": f"Item {k}: solve.", "answer": "\\$36"}
        for k in ("m-dollar", "m-dollar-plain")
    ]
    # one line, no box, no Answer: line: the answer only when it is nothing but math; a line cut
    # off mid-reasoning used to score (math-verify found the gold in it)
    forms["m-line"] = ("x = \\frac{1}{2}", True)
    cut_off = {
        "m-cut-then": ("First compute 3*11 = 33 then", "33"),
        "m-cut-because": (
            "The answer is 12 because 5+7=12 and then we need to add 3 more to get",
            "12",
        ),
        "m-cut-or": ("I think 5 or 6", "6"),
        "m-cut-let": ("Let x = 5. Then 2x = 10, and", "10"),
    }
    rows.append({"unique_id": "m-line", "problem": "Item m-line: solve.", "answer": "\\frac12"})
    # a bare pi, as the 1.5B writes it: math-verify read it as p*i
    forms["m-pi"] = ("Answer: (3, pi/2)", True)
    rows.append(
        {"unique_id": "m-pi", "problem": "Item m-pi: polar?", "answer": "(3, \\frac{\\pi}{2})"}
    )
    for k, (reply, gold) in cut_off.items():
        forms[k] = (reply, False)
        rows.append({"unique_id": k, "problem": f"Item {k}: solve.", "answer": gold})
    write_jsonl(tmp_path / "data" / "math" / "math500.jsonl", rows)
    amc = [{"id": 7, "problem": "Item amc: how far?", "answer": 27.0}]
    write_jsonl(tmp_path / "data" / "math" / "amc23.jsonl", amc)
    replies = {f"Item {k}:": text for k, (text, _) in forms.items()}
    replies["Item amc:"] = "They meet after 1.5 hours, 27 miles from A: $\\boxed{27}$"
    model = planner_playing_model(replies)
    summary, results = await evaluate(tmp_path, "math500", planner, model)
    assert {k: r["samples"][0]["correct"] for k, r in results.items()} == {
        k: right for k, (_, right) in forms.items()
    }
    # right: m-frac, m-short, m-decimal, the answer line, $36 twice, m-line, m-pi: 8 of 15
    assert summary["accuracy"] == round(8 / 15, 4)
    amc_summary, _ = await evaluate(tmp_path / "amc", "amc23", planner, model)
    assert amc_summary["accuracy"] == 1.0


@pytest.mark.parametrize("planner", PLANNERS)
async def test_math_answers_of_words_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MATH-500's golds of words (`\\text{Evelyn}`, `\\text{(C)}`): the planners' joins answer
    "Evelyn" or "Answer: Evelyn", which math-verify could not read (every such item scored 0)."""
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    forms = {  # key: (gold, reply, right)
        "w-bare": ("\\text{Evelyn}", "Evelyn", True),
        "w-line": ("\\text{Evelyn}", "Comparing the slopes.\nAnswer: Evelyn.", True),
        "w-box": ("\\text{Evelyn}", "So \\boxed{\\text{Evelyn}}", True),
        "w-other": ("\\text{Evelyn}", "Answer: Navin", False),
        "w-prose": ("\\text{Evelyn}", "Evelyn ran the\nfarthest, I think", False),
        "w-choice": ("\\text{(C)}", "**(C)**", True),
        "w-choice-wrong": ("\\text{(C)}", "Answer: (D)", False),
        "w-cut": ("\\text{(C)}", "The choice is \\boxed{\\text{(C", False),
    }
    rows = [
        {"unique_id": k, "problem": f"Item {k}: who?", "answer": gold}
        for k, (gold, _, _) in forms.items()
    ]
    write_jsonl(tmp_path / "data" / "math" / "math500.jsonl", rows)
    replies = {f"Item {k}:": reply for k, (_, reply, _) in forms.items()}
    summary, results = await evaluate(tmp_path, "math500", planner, planner_playing_model(replies))
    assert {k: r["samples"][0]["correct"] for k, r in results.items()} == {
        k: right for k, (_, _, right) in forms.items()
    }
    # right: w-bare, w-line, w-box, w-choice: 4 of 8
    assert summary["accuracy"] == 0.5


# --- QA: EM/F1, ParallelQA numbers, FanOutQA lists ------------------------------------------------


@pytest.mark.parametrize("planner", PLANNERS)
async def test_short_answer_sets_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    parallel: list[dict[str, Any]] = [
        {"id": "p1", "question": "Q-p1 how deep, in km?", "answer": "7.61", "branch": 2},
        {"id": "p2", "question": "Q-p2 how many?", "answer": "3200", "branch": 2},
        {"id": "p3", "question": "Q-p3 which is faster?", "answer": "peregrine falcon"},
        {"id": "p4", "question": "Q-p4 how deep, in km?", "answer": "7.61", "branch": 2},
        {"id": "p5", "question": "Q-p5 which year?", "answer": "1999"},
        {"id": "p6", "question": "Q-p6 which year?", "answer": "1999"},
        {"id": "p7", "question": "Q-p7 who directed it?", "answer": "Tim Burton"},
        {"id": "p8", "question": "Q-p8 which year?", "answer": "1999"},
        {"id": "p9", "question": "Q-p9 which year?", "answer": "1999"},
    ]
    write_jsonl(tmp_path / "data" / "planning" / "parallelqa.jsonl", parallel)
    replies = {
        "Q-p1": "It is 7.6133 km deep after the change.\nAnswer: 7.6133 km",  # to gold's 2 dp
        "Q-p2": "**Answer:** 3,200",
        "Q-p3": "The falcon.\nFinal answer: Peregrine Falcon.",
        "Q-p4": "Answer: 7.62",  # a different number
        # the 1.5B's forms: the label after other words on the last line, right once read past it
        "Q-p5": "Step 4: in the format: Answer: 1999\nTherefore, the answer is: Answer: 1999",
        "Q-p6": "The film came out in 1999, the answer is 2001",  # no label: the line as it is
        # an "answer:" earlier in the text is not the label; the last line is the answer
        "Q-p7": "The question asks for the answer: who directed Ed Wood?\nTim Burton",
        # display math closing the reply (the 1.5B's math form): the answer is above the "\]"
        "Q-p8": "The film came out in\n\\[\n\\boxed{1999}\n\\]",
        "Q-p9": "So the year is\n$$\n1999\n$$",
    }
    summary, results = await evaluate(
        tmp_path, "parallelqa", planner, planner_playing_model(replies)
    )
    correct = {k: r["samples"][0]["correct"] for k, r in results.items()}
    assert correct == {
        "p1": True, "p2": True, "p3": True, "p4": False, "p5": True, "p6": False, "p7": True,
        "p8": True, "p9": True,
    }  # fmt: skip
    # EM (SQuAD normalisation drops the comma of "3,200") holds for p2, p3, p5, p7, p8 and p9:
    # 6/9; accuracy also compares numbers to gold's precision, which adds p1 (7.6133 -> 7.61): 7/9
    assert summary["accuracy"] == round(7 / 9, 4) and summary["em"] == round(6 / 9, 4)
    assert results["p8"]["samples"][0]["answer"] == "1999"  # what a person reads, too


@pytest.mark.parametrize("planner", PLANNERS)
async def test_fanoutqa_loose_accuracy_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    gold = {"Pat Burrell": "Right", "Mark Mulder": "Left"}
    rows: list[dict[str, Any]] = [
        {"id": "f1", "question": "F-1 batting hands?", "answer": gold},
        {"id": "f2", "question": "F-2 batting hands?", "answer": gold},
        {"id": "f3", "question": "F-3 population?", "answer": 5637000},
    ]
    write_jsonl(tmp_path / "data" / "planning" / "fanoutqa_dev.jsonl", rows)
    replies = {
        "F-1": "Answer:\n- Pat Burrell: Right\n- Mark Mulder: Left",
        "F-2": "Pat Burrell bats right. Mark Mulder is unknown.",  # 3 of the 4 strings
        "F-3": "Answer: about 5,637,000 people",
    }
    summary, results = await evaluate(tmp_path, "fanoutqa", planner, planner_playing_model(replies))
    loose = {k: r["samples"][0]["loose"] for k, r in results.items()}
    assert loose == {"f1": 1.0, "f2": 0.75, "f3": 1.0}
    correct = {k: r["samples"][0]["correct"] for k, r in results.items()}
    assert correct == {"f1": True, "f2": False, "f3": True}  # strict: every string found
    assert summary["loose_accuracy"] == round((1 + 0.75 + 1) / 3, 4)
    assert summary["accuracy"] == round(2 / 3, 4)


# --- a user's JSONL, several tasks in one file ------------------------------------------------


@pytest.mark.parametrize("planner", PLANNERS)
async def test_user_jsonl_through_every_planner(planner: str, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"id": "u1", "question": "U-1 capital of France?", "answer": "Paris"},
            {
                "id": "u2",
                "question": "U-2 capital of Italy?",
                "answer": "Rome",
                "aliases": ["Roma"],
            },
            {"id": "u3", "question": "U-3 how many?", "answer": 12, "task": "aime"},
            {"id": "u4", "question": "U-4 capital of Spain?", "answer": "Madrid"},
        ],
    )
    replies = {
        "U-1": "France's capital.\nAnswer: *Paris*",
        "U-2": "Exact Answer: Roma\nConfidence: 90%",
        "U-3": "Twelve of them: $\\boxed{12}$\nAnswer: twelve",
        "U-4": "Answer: Barcelona",
    }
    summary, results = await evaluate(tmp_path, str(path), planner, planner_playing_model(replies))
    correct = {k: r["samples"][0]["correct"] for k, r in results.items()}
    assert correct == {"u1": True, "u2": True, "u3": True, "u4": False}
    assert summary["accuracy"] == 0.75


# --- BrowseComp, judged by a scripted judge ------------------------------------------------------

CANARY = "BROWSECOMP-TEST-CANARY"


def write_browsecomp(path: Path, items: Mapping[str, tuple[str, str]]) -> Path:
    lines = ["id,problem,answer,canary"]
    for item_id, (question, answer) in items.items():
        lines.append(f"{item_id},{encrypt(question, CANARY)},{encrypt(answer, CANARY)},{CANARY}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def scripted_judge(style: Mapping[str, str]) -> Any:
    """Grades like a judge: `Exact Answer:` of the response against the gold, answered in the
    style the question's key names (schema JSON or free-text forms judges really write)."""

    def judge(prompt: str) -> str:
        response = prompt.split("[response]:", 1)[1].split("Your judgement must", 1)[0]
        gold = prompt.split("[correct_answer]:", 1)[1].split("\n", 1)[0].strip()
        exact = next(
            (line.split(":", 1)[1].strip() for line in response.splitlines() if "Exact" in line),
            "None",
        )
        verdict = "yes" if exact.lower() == gold.lower() else "no"
        key = next(k for k in style if k in prompt)
        form = style[key]
        if form == "json":
            body = {"extracted_final_answer": exact, "reasoning": "compared",
                    "correct": verdict, "confidence": 100}  # fmt: skip
            return json.dumps(body)
        return form.format(verdict=verdict, exact=exact)

    return judge


@pytest.mark.parametrize("planner", PLANNERS)
async def test_browsecomp_judged_with_calibration_through_every_planner(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    items = {
        "b1": ("B-1 which city?", "Paris"),
        "b2": ("B-2 which year?", "1987"),
        "b3": ("B-3 which river?", "Danube"),
        "b4": ("B-4 which band?", "Queen"),
    }
    write_browsecomp(tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", items)
    replies = {
        "B-1": "Explanation: it is the capital.\nExact Answer: Paris\nConfidence: 80%",
        "B-2": "Explanation: a guess.\nExact Answer: 1990\nConfidence: 30%",
        "B-3": "Explanation: it flows through Vienna.\nExact Answer: Danube",  # no confidence
        "B-4": "Explanation: unsure.\nExact Answer: Abba\n**Confidence:** 1%",
    }
    style = {
        "B-1": "json",
        "B-2": "extracted_final_answer: {exact}\n3. correct: {verdict}\nconfidence: 30",
        "B-3": "**Correct:** {verdict}",
        "B-4": "reasoning: differ\ncorrect: {verdict} (they do not match)",
    }
    model = planner_playing_model(replies, judge=scripted_judge(style))
    summary, results = await evaluate(tmp_path, "browsecomp", planner, model)
    samples = {k: r["samples"][0] for k, r in results.items()}
    assert {k: s["correct"] for k, s in samples.items()} == {
        "b1": True, "b2": False, "b3": True, "b4": False
    }  # fmt: skip
    assert {k: s["confidence"] for k, s in samples.items()} == {
        "b1": 80, "b2": 30, "b3": 100, "b4": 1
    }  # fmt: skip
    assert samples["b3"]["confidence_source"] == "missing"
    # one bin (4 < 100): mean confidence (80 + 30 + 100 + 1) / 4 = 52.75%, accuracy 50%
    assert summary["calibration_error"] == pytest.approx(2.75)
    assert summary["calibration_error_hle_convention"] is None  # undefined under 100, as HLE
    assert summary["confidence_missing"] == 1 and summary["confidence_stated"] == 3
    assert summary["accuracy"] == 0.5
    on_disk = (tmp_path / f"run-{planner}" / "results.jsonl").read_text()
    for question, answer in items.values():
        assert question not in on_disk and answer not in on_disk


async def test_browsecomp_maj_at_k_reads_the_votes_before_redaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    items = {"b1": ("B-1 which city?", "Paris"), "b2": ("B-2 which year?", "1987")}
    write_browsecomp(tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", items)
    answers = {"B-1": iter(["Paris", "PARIS", "Lyon"]), "B-2": iter(["1990", "1987", "1990"])}

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        if prompt.startswith("Judge whether the following"):
            return str(scripted_judge({"B-": "json"})(prompt))
        key = next(k for k in answers if k in prompt)
        return f"Explanation: x\nExact Answer: {next(answers[key])}\nConfidence: 50%"

    config = EvalConfig(
        dataset="browsecomp", out=tmp_path / "run", samples=3, concurrency=1, seed=1
    )
    summary = await run_eval(config, FunctionModel(reply))
    rows = {r["id"]: r for r in RunDirectory(tmp_path / "run").read_results()[0]}
    # b1: Paris, PARIS (the same answer normalised), Lyon -> 2 of 3 right, majority Paris: right
    # b2: 1990, 1987, 1990 -> 1 of 3 right, majority 1990: wrong
    assert rows["b1"]["maj_correct"] == 1.0 and rows["b2"]["maj_correct"] == 0.0
    assert summary["avg_at_k"] == round((2 / 3 + 1 / 3) / 2, 4)
    assert summary["maj_at_k"] == 0.5
