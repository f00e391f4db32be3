from __future__ import annotations

import asyncio
import json

import pytest

from agentflow_evals import mathgrade
from agentflow_evals.datasets import PACKAGED_DATA
from agentflow_evals.mathgrade import (
    avg_at_k,
    extract_aime_answer,
    extract_math_answer,
    last_boxed,
    maj_at_k,
    only_math,
    parse_aime_integer,
    same_math_answer,
    score_aime,
    score_math,
)

DATA = PACKAGED_DATA  # the math sets ship inside agentflow_evals


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
    assert score_math("1/2", "\\frac12")  # no box: the whole response, when it is only math
    assert not score_math("I get 1/2 in the end", "\\frac12")  # prose is not an answer
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


def equal(a: object, b: object) -> bool:
    return a == b


@pytest.mark.parametrize(
    ("answers", "correct", "credit"),
    [
        # 2 right of 5 against 3 wrong that are one answer: the wrong answer wins
        (["1", "1", "7", "7", "7"], [True, True, False, False, False], 0.0),
        # 2 right against 1 + 1 + 1 different wrong answers: right wins
        (["1", "1", "7", "8", "9"], [True, True, False, False, False], 1.0),
        # a tie of two clusters (2 right, 2 wrong): half the credit, whichever came first
        (["7", "1", "1", "7"], [False, True, True, False], 0.5),
        (["1", "7", "7", "1"], [True, False, False, True], 0.5),
        # a three-way tie (1 right, 1 wrong, 1 other wrong): a third
        (["1", "7", "8"], [True, False, False], pytest.approx(1 / 3)),
        # wrong samples with no answer (failed, cut off) vote together as "no answer": before,
        # they abstained and 1 right of 4 won (1.0); now 3 unanswered beat it
        ([None, None, None, None], [True, False, False, False], 0.0),
        (["5", None, None], [True, False, False], 0.0),  # before 1.0 (avg@k is 1/3)
        (["5", "5", None, None], [True, True, False, False], 0.5),  # a tie with "no answer"
        (["5", None, "7"], [True, False, False], pytest.approx(1 / 3)),  # before 1/2
        (["5", "5", None, "7"], [True, True, False, False], 1.0),
        ([None, None], [False, False], 0.0),
        ([], [], 0.0),
    ],
)
def test_maj_at_k_clusters_then_votes_and_splits_ties(
    answers: list[str | None], correct: list[bool], credit: float
) -> None:
    assert maj_at_k(answers, correct, equal) == credit


def test_maj_at_k_clusters_wrong_answers_with_the_scorer_equivalence() -> None:
    # gold 1/3: two samples right, three wrong ones that are all one half, written three ways
    replies = ["\\boxed{\\frac{1}{3}}", "\\boxed{1/3}", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}",
               "\\boxed{1/2}"]  # fmt: skip
    answers = [extract_math_answer(r) for r in replies]
    correct = [score_math(r, "\\frac{1}{3}") for r in replies]
    assert correct == [True, True, False, False, False]
    assert maj_at_k(answers, correct, equal) == 1.0  # as strings the halves split 1/1/1
    assert maj_at_k(answers, correct, same_math_answer) == 0.0  # 3 halves beat 2 thirds
    with pytest.raises(ValueError):
        maj_at_k(["1"], [True, False], equal)


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


@pytest.mark.parametrize(
    ("reply", "gold", "right"),
    [
        # MATH-500 test/prealgebra/1203, test/algebra/2780, test/algebra/2626
        ("\\boxed{\\$36}", "\\$36", True),  # the gold itself
        ("So she pays $\\boxed{36}$.", "\\$36", True),
        ("\\boxed{\\$36.00}", "\\$36", True),
        ("\\boxed{\\$37}", "\\$36", False),
        ("\\boxed{\\$18.90}", "\\$18.90", True),
        ("\\boxed{18.9}", "\\$18.90", True),
        ("\\boxed{\\$32,\\!348}", "\\$32,\\!348", True),
        ("\\boxed{32348}", "\\$32,\\!348", True),
        ("\\boxed{32,348}", "\\$32,\\!348", True),
        ("\\boxed{32,349}", "\\$32,\\!348", False),
        ("\\boxed{5}", "$5$", True),  # a gold that brings its own delimiters stays as it is
    ],
)
def test_a_gold_with_an_escaped_dollar_scores(reply: str, gold: str, right: bool) -> None:
    assert score_math(reply, gold) is right


def math500_golds() -> list[str]:
    """The gold answers of the shared MATH-500 file (the test is skipped without it)."""
    path = DATA / "math" / "math500.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return [json.loads(line)["answer"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(
    ("reply", "gold", "right"),
    [
        ("Evelyn", "\\text{Evelyn}", True),  # a planner's short answer: math-verify reads nothing
        ("Answer: Evelyn.", "\\text{Evelyn}", True),
        ("**Evelyn**", "\\text{Evelyn}", True),
        ("Navin", "\\text{Evelyn}", False),
        ("Evelyn, since her\nslope is largest", "\\text{Evelyn}", False),  # lines, no answer
        ("Evelyn ran the farthest", "\\text{Evelyn}", False),  # more than the words
        ("C", "\\text{(C)}", True),
        ("Answer: (C)", "\\text{(C)}", True),
        ("\\boxed{\\text{(D)}}", "\\text{(C)}", False),
        ("\\boxed{\\text{(C", "\\text{(C)}", False),  # cut off in its box
        ("cents", "5.4 \\text{ cents}", False),  # a number with a unit is math, not words
        ("Eve lyn", "\\text{Evelyn}", False),  # other words, not the same ones spaced out
        ("Answer: even", "\\text{even}", True),
        ("Answer: odd", "\\text{even}", False),
    ],
)
def test_a_gold_of_words_is_met_by_those_words(reply: str, gold: str, right: bool) -> None:
    assert score_math(reply, gold) is right


def test_every_math500_gold_of_words_scores_written_bare() -> None:
    golds = math500_golds()
    words = [g for g in golds if g.startswith("\\text{")]
    assert len(words) == 8  # Evelyn, east, even, (C), (E), (B), ellipse, Navin
    assert [g for g in words if not score_math(g[len("\\text{") : -1], g)] == []


@pytest.mark.parametrize(
    ("reply", "gold", "right"),
    [
        ("(3, pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),  # the 1.5B's threads
        ("Answer: 2pi", "2\\pi", True),
        ("\\boxed{\\pi}", "\\pi", True),  # already LaTeX: unchanged
        ("Answer: 2pi", "2", False),  # read as p*i it matched nothing; as pi it is still not 2
        ("Answer: pie", "\\pi", False),  # only the word pi
    ],
)
def test_a_bare_pi_is_read_as_pi(reply: str, gold: str, right: bool) -> None:
    assert score_math(reply, gold) is right


def test_every_math500_gold_scores_against_itself() -> None:
    golds = math500_golds()
    assert len(golds) == 500
    assert [g for g in golds if not score_math(f"\\boxed{{{g}}}", g)] == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Step 1: 3 groups of 11.\nStep 2: so 3 * 11 = 33", None),  # reasoning, not an answer
        ("3 * 11 = 33", None),
        ("x = 33", None),  # an equation alone is not "just an integer"
        ("Answer: x = 33", 33),  # inside an answer the right-hand side is the answer
        ("\\boxed{x = 33}", 33),
        ("33", 33),
        ("$33$", 33),
        ("Answer: 33\nso it is \\boxed{3", None),  # the final box was cut off
    ],
)
def test_aime_reads_an_equation_only_inside_an_answer(reply: str, expected: int | None) -> None:
    assert extract_aime_answer(reply) == expected


@pytest.mark.parametrize(
    ("reply", "right"),
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", True),
        ("So $x = \\boxed{\\frac{1}{2}", False),  # cut off inside the box: math-verify read it
        ("Halving twice.\nAnswer: $\\frac{1}{2}$", True),
        ("First we halve.\n1 - 1/2 = 1/2", False),  # truncated reasoning ending on a number
        ("Working:\n0.5", False),
        ("1/2", True),  # the whole reply is the answer
    ],
)
def test_math_needs_a_closed_box_or_an_answer(reply: str, right: bool) -> None:
    assert score_math(reply, "\\frac{1}{2}") is right


@pytest.mark.parametrize(
    ("reply", "gold"),
    [
        # one line cut off mid-reasoning (max_tokens), no box, no Answer: line: math-verify used
        # to find the gold in each of these
        ("First compute 3*11 = 33 then", "33"),
        ("The answer is 12 because 5+7=12 and then we need to add 3 more to get", "12"),
        ("I think 5 or 6", "6"),
        ("Let x = 5. Then 2x = 10, and", "10"),
        ("I get 1/2 in the end", "\\frac12"),
        ("5 or 6", "6"),  # a short English word is prose too
        ("3*11 = 33", "33"),  # a computation, not an answer (as AIME rules)
        ("12 inches", "12"),  # a bare word of 3+ letters; `12\\text{ inches}` is math
    ],
)
def test_a_one_line_reply_that_is_prose_is_not_an_answer(reply: str, gold: str) -> None:
    assert extract_math_answer(reply) is None
    assert not score_math(reply, gold)


@pytest.mark.parametrize(
    ("reply", "gold"),
    [
        ("x = 5", "5"),
        ("\\frac{1}{2}", "0.5"),
        ("$\\frac{1}{2}$.", "0.5"),
        ("**12**", "12"),
        ("12 cm", "12"),
        ("12\\text{ inches}", "12"),
        ("y = 2x + 3", "y = 2x + 3"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        # math-verify needs `$...$` around these: before, a bare one scored wrong
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("5\\sqrt{2}", "5\\sqrt2"),
        ("Working it out.\nAnswer: 5\\sqrt{2}", "5\\sqrt2"),
    ],
)
def test_a_one_line_reply_that_is_only_math_is_the_answer(reply: str, gold: str) -> None:
    assert score_math(reply, gold)


def test_every_math500_gold_is_only_math() -> None:
    golds = math500_golds()
    assert [g for g in golds if not only_math(g)] == []  # any gold, written bare, is an answer


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("33 and then we add", None),  # cut off: used to read as 33, like "33 ways"
        ("33 ways", None),  # not only an integer (in a box or an Answer: line it is 33)
        ("Answer: 33 ways", 33),
        ("\\boxed{33 \\text{ ways}}", 33),
        ("33.", 33),
    ],
)
def test_aime_reads_a_whole_reply_only_when_it_is_only_the_integer(
    reply: str, expected: int | None
) -> None:
    assert extract_aime_answer(reply) == expected


def test_a_crashed_check_is_run_again_not_scored_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forkserver child crashed about once in 600 checks under load, and a crash read as
    'different': 3 of 500 boxed golds scored wrong. No verdict now means another try."""
    verdicts = iter([None, None, True])
    monkeypatch.setattr(
        mathgrade, "_child_verdict", lambda gold, prediction, timeout: next(verdicts)
    )
    assert mathgrade._verify_in_child("$10$", "$10$", 5) is True
    always_crashing = iter([None] * 3)
    monkeypatch.setattr(
        mathgrade, "_child_verdict", lambda gold, prediction, timeout: next(always_crashing)
    )
    assert mathgrade._verify_in_child("$10$", "$10$", 5) is False  # three crashes: no verdict


def test_the_child_verdict_is_an_exit_code_no_crash_gives() -> None:
    assert mathgrade._child_verdict("$10$", "$10$", 5) is True
    assert mathgrade._child_verdict("$10$", "$11$", 5) is False
