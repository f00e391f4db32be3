"""Scoring rules one at a time, for the cases a probe of the harness found scored wrong."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.exceptions import ModelResponseError
from agentflow.testing import FunctionModel
from agentflow_evals.datasets import EvalItem
from agentflow_evals.qa import loose_accuracy
from agentflow_evals.scoring import Judge, majority, score_sample


def item(task: str, gold: str, **meta: Any) -> EvalItem:
    return EvalItem(id="i", question="Q?", answers=(gold,), task=task, meta=meta)


async def score(entry: EvalItem, answer: str) -> bool:
    return (await score_sample(entry, answer=answer, reply=answer, judge=None)).correct


@pytest.mark.parametrize(
    ("answer", "gold", "right"),
    [
        ("194", "1.94", False),  # EM drops the ".": these used to be equal
        ("15", "1.5", False),
        ("-3", "3", False),
        ("7.5", "75", False),
        ("1.94", "1.94", True),
        ("$1.94", "1.94", True),
        ("1,234.5", "1234.50", True),
    ],
)
async def test_a_numeric_gold_is_decided_by_the_number_alone(
    answer: str, gold: str, right: bool
) -> None:
    assert await score(item("qa", gold, numeric=True), f"Answer: {answer}") is right


async def test_a_boxed_short_answer_is_read_inside_its_box() -> None:
    assert await score(item("qa", "Paris"), "\\boxed{Paris}")


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        ("$145,786", "It cost $145,786 in total."),
        ("The Lion King (2019)", "That is The Lion King (2019)."),
        ("Miami (Fla.)", "Miami (Fla.) won."),
        ("C++", "C++ is the language."),
    ],
)
def test_fanoutqa_finds_golds_that_start_or_end_with_punctuation(gold: str, reply: str) -> None:
    assert loose_accuracy([gold], reply) == 1.0
    assert loose_accuracy([gold], "something else entirely") == 0.0


async def test_equal_answers_written_differently_vote_together() -> None:
    math_item = item("math", "\\frac{1}{2}")
    samples = [
        {"correct": False, "extracted": "$3$", "error": None},
        {"correct": True, "extracted": "$\\dfrac{1}{2}$", "error": None},
        {"correct": True, "extracted": "$0.5$", "error": None},
    ]
    assert await majority(math_item, samples) == 1.0  # two of three are the gold
    wrong = [{**s, "correct": False, "extracted": "$3$"} for s in samples[:2]] + [samples[2]]
    assert await majority(math_item, wrong) == 0.0
    # wrong answers that are one number vote as one: 3, 3.0 and 6/2 outvote two right ones
    threes = [{"correct": False, "extracted": e, "error": None} for e in ("$3$", "$3.0$", "$6/2$")]
    assert await majority(math_item, threes + samples[1:]) == 0.0
    # a failed sample votes "no answer", whatever it extracted: 2 failed tie 2 right -> 1/2
    failed = {"correct": False, "extracted": "$3$", "error": "the plan was unusable"}
    assert await majority(math_item, [failed, failed, *samples[1:]]) == 0.5


NO_ANSWER_BY_THE_DEADLINE = {"extracted": None, "correct": False, "error": "deadline"}
CUT_OFF = {"extracted": None, "correct": False, "error": None}  # answered, nothing readable


@pytest.mark.parametrize("unanswered", [NO_ANSWER_BY_THE_DEADLINE, CUT_OFF])
async def test_samples_without_an_answer_vote_together_and_can_win(
    unanswered: dict[str, Any],
) -> None:
    five = EvalItem(id="x", question="q", answers=("5",), task="math")
    right = {"extracted": "$5$", "correct": True, "error": None}
    # 1 right, 2 without an answer: avg@k 1/3; "no answer" wins 2 to 1 -> 0 (before: 1.0, the
    # two were left out and the one right sample was a unanimous majority)
    assert await majority(five, [right, unanswered, unanswered]) == 0.0
    # 2 right, 2 without an answer: a tie of two clusters -> 1/2
    assert await majority(five, [right, right, unanswered, unanswered]) == 0.5
    # 2 right, 1 without an answer, 1 wrong: right wins
    wrong = {"extracted": "$7$", "correct": False, "error": None}
    assert await majority(five, [right, right, unanswered, wrong]) == 1.0


@pytest.mark.parametrize(
    ("answer", "gold", "f1"),
    [
        # HotpotQA's official rule: a yes/no side that differs is 0, whatever tokens it shares
        ("no", "no way", 0.0),  # SQuAD's F1: 2 * (1 * 0.5) / 1.5 = 0.6667
        ("yes it is", "yes", 0.0),  # SQuAD's: 2 * (1/3 * 1) / (4/3) = 0.5
        ("Yes.", "yes", 1.0),  # equal once normalised
        ("noanswer", "no answer", 0.0),
        # "eiffel tower in paris": precision 2/4, recall 2/2 -> 2 * .5 * 1 / 1.5 = 2/3
        ("the Eiffel Tower in Paris", "Eiffel Tower", 2 / 3),
    ],
)
async def test_hotpotqa_items_get_hotpotqa_official_f1(answer: str, gold: str, f1: float) -> None:
    hotpot = item("qa", gold, type="comparison", supporting_titles=[], source="hotpotqa")
    scored = await score_sample(hotpot, answer=answer, reply=answer, judge=None)
    assert scored.f1 == pytest.approx(f1, abs=1e-4)
    untagged = item("qa", gold, type="comparison")  # a user's file: SQuAD's F1
    squad = (await score_sample(untagged, answer=answer, reply=answer, judge=None)).f1
    assert squad is not None and scored.f1 is not None and squad >= scored.f1


async def test_other_qa_sets_keep_squad_f1() -> None:
    musique = item("qa", "no way", type="2hop", source="musique")
    scored = await score_sample(musique, answer="no", reply="no", judge=None)
    assert scored.f1 == pytest.approx(0.6667, abs=1e-4)  # 2 * (1 * 0.5) / 1.5


async def test_a_judge_server_sending_a_malformed_body_is_a_failure_not_a_verdict() -> None:
    def garbage(*_: Any) -> str:
        raise ModelResponseError("the server's body is not JSON", body="garbage")

    entry = item("browsecomp", "Paris")
    with pytest.raises(ModelResponseError):
        await score_sample(
            entry, answer="Paris", reply="Exact Answer: Paris", judge=Judge(FunctionModel(garbage))
        )
