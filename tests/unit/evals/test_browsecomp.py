from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agentflow.context import RunContext
from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow.tool import Toolset
from agentflow.trace import Trace
from agentflow_evals.browsecomp import (
    GRADER_TEMPLATE,
    QUERY_TEMPLATE,
    JudgeVerdict,
    calibration_error,
    confidence_from_response,
    decrypt,
    encrypt,
    exact_answer_from_response,
    grader_prompt,
    hle_convention_calibration_error,
    judge,
    parse_verdict_text,
    query_prompt,
)


def test_cipher_round_trip_on_made_up_text() -> None:
    text = "A made-up question, with ünïcode, long enough to repeat the 32-byte key." * 2
    ciphertext = encrypt(text, "canary")
    assert ciphertext != text
    assert decrypt(ciphertext, "canary") == text
    with pytest.raises(ValueError):
        decrypt("not base64!", "canary")


def test_templates_are_the_official_ones() -> None:
    prompt = query_prompt("What is X?")
    assert prompt.startswith("What is X?\n\nYour response should be in the following format:")
    assert "Exact Answer: {your succinct, final answer}" in prompt
    assert prompt.endswith(
        "Confidence: {your confidence score between 0% and 100% for your answer}"
    )
    assert QUERY_TEMPLATE.count("{Question}") == 1
    graded = grader_prompt("Q?", "R.", "C")
    assert "[question]: Q?\n\n[response]: R." in graded and "[correct_answer]: C" in graded
    assert GRADER_TEMPLATE.endswith("Put 100 if there is no confidence score available.")


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("extracted_final_answer: x\nreasoning: r\ncorrect: yes\nconfidence: 80", "yes"),
        ("incorrect: yes\ncorrect: no", "no"),
        ("correct: no\n...on reflection...\ncorrect: yes", "yes"),  # the last match wins
        ("**correct:** yes", "yes"),
        ("**Correct:** yes", "yes"),
        ("- Correct: NO", "no"),
        ("3. correct: yes", "yes"),  # a numbered list, as judges often write the fields
        ("correct: yes (they match)", "yes"),  # a remark after the verdict word
        ("correct: yes, because it matches", "yes"),
        ("correct: no - the years differ", "no"),
        ("correct: 'yes'", "yes"),
    ],
)
def test_verdict_lines(text: str, correct: str) -> None:
    verdict = parse_verdict_text(text)
    assert verdict is not None and verdict.correct == correct


@pytest.mark.parametrize(
    "text",
    [
        "incorrect: yes",
        "the answer is correct: yes",
        "correct: yesterday",
        "correct: nope",
        "correct: Answer 'yes' if extracted_final_answer matches",
        "",
    ],
)
def test_no_verdict(text: str) -> None:
    assert parse_verdict_text(text) is None


QUOTED_THEN_CUT_OFF = (
    'I will output {"extracted_final_answer": "Rome", "reasoning": "x", "correct": "yes", '
    '"confidence": 90} if it matched. It does not match Paris, so my verdict is '
    '{"extracted_final_answer": "Rome", "reasoning": "differs", "correct": "no"'
)


@pytest.mark.parametrize(
    "text",
    [
        # the judge drafted a "yes" object, then was cut off inside its real one: before, 'yes'
        QUOTED_THEN_CUT_OFF,
        # cut off right after quoting the response's own "correct: yes": before, 'yes'
        "extracted_final_answer: Rome\nreasoning: The response ends with\n"
        "> Exact Answer: Rome\n> correct: yes",
        "extracted_final_answer: Rome\nreasoning: The response reads:\n```\n"
        "Exact Answer: Rome\ncorrect: yes",
        'extracted_final_answer: Rome\nreasoning: The response insists: "Exact Answer: Rome\n'
        "correct: yes",
        "The response says:\nExact Answer: Rome\ncorrect: yes\nConfidence: 80%\n"
        "But Rome is not Paris, so",  # prose after the line: it was quoted, not given
        "correct: no\n> correct: yes",  # a quote after the verdict
        '{"correct": "yes"} is what I would write if it matched, but',  # JSON not at the end
    ],
)
def test_a_verdict_the_judge_only_quoted_is_no_verdict(text: str) -> None:
    assert parse_verdict_text(text) is None


@pytest.mark.parametrize(
    ("text", "correct", "extracted"),
    [
        # a drafted object, then the final one that ends the reply
        ('I will output {"correct": "yes"} if it matched. It does not, so: '
         '{"extracted_final_answer": "Rome", "reasoning": "differs", "correct": "no"}',
         "no", "Rome"),
        # the response's lines quoted, then the judge's own verdict after them
        ("> Exact Answer: Paris\n> correct: yes\nextracted_final_answer: Rome\n"
         "reasoning: differs from Paris\ncorrect: no\nconfidence: 100", "no", "Rome"),
        ('reasoning: the response says "Exact Answer: Rome\ncorrect: yes" but the gold is Paris'
         "\nextracted_final_answer: Rome\ncorrect: no", "no", "Rome"),
        # the judge's own code block ending the reply is its verdict, not a quote
        ("Verdict:\n```\nextracted_final_answer: Paris\ncorrect: yes\nconfidence: 100\n```",
         "yes", "Paris"),
        ('```json\n{"extracted_final_answer": "Paris", "correct": "yes"}\n```\n', "yes", "Paris"),
    ],
)  # fmt: skip
def test_the_verdict_the_judge_gives_at_the_end_is_read(
    text: str, correct: str, extracted: str
) -> None:
    verdict = parse_verdict_text(text)
    assert verdict is not None
    assert (verdict.correct, verdict.extracted_final_answer) == (correct, extracted)


@pytest.mark.parametrize(
    "text",
    [
        QUOTED_THEN_CUT_OFF,  # before: yes, "schema" (salvage read the drafted first object)
        "extracted_final_answer: Rome\nreasoning: The response ends with\n"
        "> Exact Answer: Rome\n> correct: yes",  # before: yes, "regex"
    ],
)
async def test_a_judge_cut_off_after_a_quoted_verdict_is_a_failed_verdict(text: str) -> None:
    result = await judge(_ctx(FunctionModel(lambda *_: text)), "Q?", "R", "C")
    assert (result.correct, result.parsed_with) == (False, "failed")


def test_verdict_fields_and_missing_confidence() -> None:
    verdict = parse_verdict_text(
        "extracted_final_answer: Paris\nreasoning: same city\ncorrect: yes"
    )
    assert verdict == JudgeVerdict(
        extracted_final_answer="Paris", reasoning="same city", correct="yes", confidence=100
    )
    off_schema = parse_verdict_text('{"correct": "no", "confidence": "85%", "note": 1}')
    assert off_schema is not None and (off_schema.correct, off_schema.confidence) == ("no", 85)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Explanation: e\nExact Answer: Paris\nConfidence: 85%", 85),
        ("**Confidence:** 40 %", 40),
        ("Confidence: 0.9", 90),
        ("Confidence: 70%\nConfidence: 20%", 20),
        ("Confidence: 250%", None),
        ("my confidence: 90%", None),
        ("no confidence given", None),
    ],
)
def test_confidence_from_response(text: str, expected: int | None) -> None:
    assert confidence_from_response(text) == expected


def test_exact_answer_from_response() -> None:
    assert (
        exact_answer_from_response("Explanation: e\nExact Answer: Paris \nConfidence: 1%")
        == "Paris"
    )
    assert exact_answer_from_response("nothing") is None


def _ctx(model: FunctionModel) -> RunContext:
    return RunContext(model=model, tools=Toolset(), trace=Trace(question="q", planner="judge"))


async def test_judge_through_the_json_schema() -> None:
    seen: list[Mapping[str, Any] | None] = []

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        seen.append(schema)
        assert "[correct_answer]: Paris" in messages[0]["content"]
        assert settings.temperature == 0.0
        verdict = {
            "extracted_final_answer": "Paris",
            "reasoning": "r",
            "correct": "yes",
            "confidence": 90,
        }
        return json.dumps(verdict)

    result = await judge(
        _ctx(FunctionModel(reply, name="judge-x")), "Q?", "Exact Answer: Paris", "Paris"
    )
    assert result.correct and result.confidence == 90
    assert (result.judge_model, result.parsed_with, result.extracted_final_answer) == (
        "judge-x",
        "schema",
        "Paris",
    )
    assert seen[0] is not None and seen[0]["additionalProperties"] is False
    assert set(seen[0]["required"]) == {
        "extracted_final_answer",
        "reasoning",
        "correct",
        "confidence",
    }


async def test_judge_falls_back_to_anchored_last_match_regexes() -> None:
    free_text = (
        "extracted_final_answer: Lyon\nreasoning: different city\nincorrect: yes\ncorrect: no"
    )
    result = await judge(_ctx(FunctionModel(lambda *_: free_text)), "Q?", "Lyon", "Paris")
    assert not result.correct
    assert (result.parsed_with, result.extracted_final_answer, result.confidence) == (
        "regex",
        "Lyon",
        100,
    )
    assert result.judge_model == "function-model"

    yes = await judge(
        _ctx(FunctionModel(lambda *_: "correct: yes\nconfidence: 35")), "Q?", "R", "C"
    )
    assert yes.correct and yes.confidence == 35 and yes.parsed_with == "regex"


async def test_an_unreadable_verdict_is_wrong() -> None:
    result = await judge(_ctx(FunctionModel(lambda *_: "I think so.")), "Q?", "R", "C")
    assert not result.correct and result.parsed_with == "failed" and result.raw == "I think so."


async def test_judge_confidence_is_clamped() -> None:
    verdict = {"extracted_final_answer": "a", "reasoning": "r", "correct": "no", "confidence": 150}
    result = await judge(_ctx(FunctionModel(lambda *_: json.dumps(verdict))), "Q?", "R", "C")
    assert result.confidence == 100 and result.parsed_with == "schema"


# --- calibration ------------------------------------------------------------------------------


def test_calibration_all_correct_and_confident_is_zero() -> None:
    assert calibration_error([100] * 30, [True] * 30) == 0.0
    assert calibration_error([100] * 250, [True] * 250) == 0.0


def test_calibration_is_percent_never_guessed_from_the_data() -> None:
    # Four answers at 1% confidence, all wrong: off by 0.01, i.e. 1 percentage point. The old
    # scale guess read "1" as 100% here and reported 100 points.
    assert calibration_error([1, 1, 1, 1], [False] * 4) == pytest.approx(1.0)
    assert calibration_error([100, 100], [False, False]) == pytest.approx(100.0)
    # the same four answers at 100% are 100 times worse calibrated than at 1%
    one_percent = calibration_error([1] * 4, [False] * 4)
    assert calibration_error([100] * 4, [False] * 4) == pytest.approx(100 * one_percent)


def test_calibration_under_100_items_is_one_bin() -> None:
    # one bin: mean confidence 0.8, accuracy 0.5 -> 30 points
    assert calibration_error([80] * 10, [True] * 5 + [False] * 5) == pytest.approx(30.0)
    # HLE's code fails under 100 items
    assert hle_convention_calibration_error([80] * 10, [True] * 5 + [False] * 5) is None


def test_calibration_exactly_100_items() -> None:
    confidences = [50] * 50 + [100] * 50
    correct = [False] * 50 + [True] * 50
    # one bin: mean confidence 0.75, accuracy 0.5 -> 25 points; HLE skips its only bin -> 0
    assert calibration_error(confidences, correct) == pytest.approx(25.0)
    assert hle_convention_calibration_error(confidences, correct) == 0.0


def test_calibration_merges_the_remainder_into_the_last_bin() -> None:
    # 250 items, given unsorted. Sorted: 100 at 20% (all wrong) form bin 1; 100 at 60% (60
    # right) and 50 at 90% (all right) form bin 2 (the remainder is merged, as HLE does):
    # bin 2 has mean confidence (60 + 45) / 150 = 0.7 and accuracy 110 / 150.
    confidences = [90] * 50 + [60] * 100 + [20] * 100
    correct = [True] * 50 + [True] * 60 + [False] * 40 + [False] * 100
    bin1 = 100 * (0.2 - 0.0) ** 2
    bin2 = 150 * (0.7 - 110 / 150) ** 2
    assert calibration_error(confidences, correct) == pytest.approx(
        100 * math.sqrt((bin1 + bin2) / 250)
    )  # = 12.9099...
    # HLE leaves the last bin out but still divides by all 250 items: 100 * sqrt(4 / 250)
    hle = hle_convention_calibration_error(confidences, correct)
    assert hle == pytest.approx(100 * math.sqrt(0.016))
    # one bin of everything: mean confidence (50*90 + 100*60 + 100*20) / 250 = 50%, accuracy
    # 110 / 250 = 44% -> 6 points
    assert calibration_error(confidences, correct, bin_size=1000) == pytest.approx(6.0)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="undefined"):
        calibration_error([], [])
    with pytest.raises(ValueError):
        calibration_error([0.5], [True, False])
    with pytest.raises(ValueError):
        calibration_error([120], [True])
    with pytest.raises(ValueError):
        calibration_error([float("nan")], [True])
    with pytest.raises(ValueError):
        calibration_error([0.5], [True], bin_size=0)
    with pytest.raises(ValueError):
        calibration_error([-1], [True])


# 200 samples: 50 at 40% (all wrong), 150 at 90% (90 right). Sorted, bin 1 holds the 50 at
# 40% and 50 of the tied 90s; bin 2 the other 100 at 90%. Which 90s fall in bin 1 is only
# the order of the ties.
TIED = [40.0] * 50 + [90.0] * 150


def tied_correct(right_first: bool) -> list[bool]:
    tied = [True] * 90 + [False] * 60
    return [False] * 50 + (tied if right_first else tied[::-1])


def test_calibration_under_ties_does_not_depend_on_the_order() -> None:
    # Tied items share their accuracy, 90 / 150 = 0.6: bin 1 has mean confidence
    # (50 * .4 + 50 * .9) / 100 = .65 and accuracy (50 * 0 + 50 * .6) / 100 = .3; bin 2
    # confidence .9, accuracy .6. HLE's convention counts bin 1 only, over all 200 items.
    hle = 100 * math.sqrt(100 / 200 * 0.35**2)  # 24.7487
    every = 100 * math.sqrt(100 / 200 * 0.35**2 + 100 / 200 * 0.3**2)  # 32.5960
    for right_first in (True, False):
        correct = tied_correct(right_first)
        assert hle_convention_calibration_error(TIED, correct) == pytest.approx(hle)
        assert calibration_error(TIED, correct) == pytest.approx(every)
    # Before, a stable sort kept the input order: the same answers gave 10.61 (right ones
    # first: bin 1 accuracy .5) or 45.96 (wrong ones first: accuracy 0) for HLE's figure.


def hle_calib_err(confidence: Any, correct: Any, beta: int = 100) -> float:
    """centerforaisafety/hle `calib_err(p="2")`, the arithmetic as published (np.argsort)."""
    np = pytest.importorskip("numpy")
    idxs = np.argsort(confidence)
    confidence, correct = confidence[idxs], correct[idxs]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    cerr = 0.0
    for start, end in bins[:-1]:
        difference = np.abs(np.nanmean(confidence[start:end]) - np.nanmean(correct[start:end]))
        cerr += (end - start) / len(confidence) * np.square(difference)
    return float(np.sqrt(cerr))


def test_without_ties_the_hle_convention_is_hle_calib_err() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    for n in (100, 250, 437):
        confidences = rng.permutation(np.arange(n)) * 100 / n  # distinct percentages
        correct = rng.random(n) < confidences / 100
        ours = hle_convention_calibration_error(confidences.tolist(), correct.tolist())
        assert ours == pytest.approx(100 * hle_calib_err(confidences / 100, correct), abs=1e-9)
