from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentflow_evals.mathgrade import (
    avg_at_k,
    extract_aime_answer,
    last_boxed,
    maj_at_k,
    majority_answer,
    parse_aime_integer,
    score_aime,
    score_math,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2} and finally \\boxed{3}", "3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("$\\boxed{ 17 }$", "17"),
        ("\\fbox{5}", "5"),
        ("\\boxed 5.", "5"),
        ("\\boxed {42}", "42"),
        ("\\boxed{}", None),
        ("\\boxed{  }", None),
        ("\\boxed{1} and then \\boxed{\\frac{1}{2}", None),  # truncated: last box never closes
        ("no box at all: 42", None),
        ("\\boxeddot{3}", None),
        ("\\boxed{\\boxed{7}}", "7"),
        ("", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("033", 33),
        ("33.0", 33),
        ("33.", 33),
        ("$33$", 33),
        (" 17 ", 17),
        ("\\text{204}", 204),
        ("\\mathrm{ 9 }", 9),
        ("{12}", 12),
        ("0", 0),
        ("999", 999),
        ("1000", None),
        ("1,000", None),
        ("-5", None),
        ("33.5", None),
        ("1/2", None),
        ("x = 5", 5),  # the right-hand side of an equation
        ("33^\\circ", 33),
        ("33^{\\circ}", 33),
        ("33°", 33),
        ("x = 5 = y", None),
        ("\\(33\\)", 33),  # inline math delimiters
        ("\\[33\\]", 33),
        ("33 \\text{ ways}", 33),  # a unit or noun after the number
        ("33\\text{ meters}", 33),
        ("33 \\pmod{1000}", 33),
        ("33 or 34", None),
        ("", None),
        ("٣٣", None),  # non-ASCII digits
    ],
)
def test_parse_aime_integer(text: str, expected: int | None) -> None:
    assert parse_aime_integer(text) == expected


def test_score_aime() -> None:
    assert score_aime("thus $\\boxed{033}$", 33)
    assert score_aime("\\boxed{33.0}", "33")
    assert score_aime("first \\boxed{12}, no wait \\boxed{34}", 34)
    assert not score_aime("first \\boxed{34}, no wait \\boxed{12}", 34)
    assert not score_aime("\\boxed{1000}", 0)
    assert not score_aime("\\boxed{}", 0)
    assert score_aime("204", 204)  # no box: the whole response when it is only an integer
    assert not score_aime("the answer is 204", 204)
    with pytest.raises(ValueError, match="not an AIME integer"):
        score_aime("\\boxed{1}", "1/2")
    assert extract_aime_answer("\\fbox{5}") == 5


def _math500_first_answer() -> str:
    line = (DATA / "math" / "math500.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return str(json.loads(line)["answer"])


def test_score_math_with_math_verify() -> None:
    assert score_math("so the answer is $\\boxed{0.5}$", "\\frac{1}{2}")
    assert score_math("\\boxed{\\frac{1}{2}}", "0.5")
    assert not score_math("\\boxed{\\frac{1}{3}}", "0.5")
    assert score_math("\\boxed{27}", "27")
    assert score_math("I get 1/2 in the end", "\\frac12")  # no box: the whole response
    assert not score_math("", "27")


def test_score_math_on_the_math500_answer_format() -> None:
    gold = "\\left( 3, \\frac{\\pi}{2} \\right)"
    if (DATA / "math" / "math500.jsonl").is_file():
        assert _math500_first_answer() == gold
    assert score_math("polar: $\\boxed{(3, \\frac{\\pi}{2})}$", gold)
    assert not score_math("\\boxed{(3, \\pi)}", gold)


async def test_score_math_off_the_main_thread_runs_in_a_child_process() -> None:
    verdicts = await asyncio.gather(
        asyncio.to_thread(score_math, "\\boxed{\\frac{2}{4}}", "0.5"),
        asyncio.to_thread(score_math, "\\boxed{3}", "4"),
    )
    assert list(verdicts) == [True, False]


def test_avg_at_k() -> None:
    assert avg_at_k([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([])


def test_majority_vote() -> None:
    assert majority_answer(["1", "2", "2", None, None, None]) == "2"
    assert majority_answer(["3", "1", "1", "3"]) == "3"  # a tie goes to the first seen
    assert majority_answer([None, None]) is None
    assert majority_answer([]) is None

    def same(answer: str, gold: str) -> bool:
        return answer == gold

    assert maj_at_k(["1", "2", "2"], "2", same)
    assert not maj_at_k(["1", "1", "2"], "2", same)
    assert not maj_at_k([None, None], "2", same)
    aime = [extract_aime_answer(r) for r in ("\\boxed{033}", "\\boxed{33}", "\\boxed{7}")]
    assert maj_at_k(aime, 33, lambda a, g: a == g)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("- Answer: 33", 33),  # a bulleted answer line
        ("Answer: \\(33\\)", 33),
        ("so the count is\n33", None),  # a last line that is a bare number is not an answer
        ("\\boxed{33}. I wrote the result in \\boxed{} as asked.", 33),  # an empty box is prose
    ],
)
def test_extract_aime_answer_from_a_reply(reply: str, expected: int | None) -> None:
    assert extract_aime_answer(reply) == expected
