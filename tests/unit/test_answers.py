"""`extract_answer`: the short answer a person reads and EM/F1 compare, from the forms models
write (an `Answer:` line, a box, display math closing the reply, a plain last line)."""

from __future__ import annotations

import pytest

from agentflow.answers import extract_answer, has_answer, last_boxed


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("It is deep.\nAnswer: 7.6 km", "7.6 km"),
        ("**Final answer:** Paris", "Paris"),
        ("Therefore, the answer is: Answer: 1999", "1999"),
        ("Answer: $\\boxed{391}$", "391"),
        ("17 * 23 = 391, so\n\\[\n\\boxed{391}\n\\]", "391"),  # the 1.5B's math form
        ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # nested braces
        ("So the year is\n$$\n1999\n$$", "1999"),  # a closer-only last line is passed over
        ("x = 4\n\\[ x = 4 \\]", "\\[ x = 4 \\]"),  # display math on one line is the line
        ("Work so far \\boxed{39", "Work so far \\boxed{39"),  # cut off: the line as written
        (
            "The film came out in 1999, the answer is 2001",
            "The film came out in 1999, the answer is 2001",
        ),
        ("We get \\boxed{5}. But wait.\nActually it is 6.", "Actually it is 6."),  # the last line
        ("\\]", "\\]"),  # nothing else: what there is
        ("", ""),
    ],
)
def test_the_short_answer_of_each_form(reply: str, answer: str) -> None:
    assert extract_answer(reply) == answer


def test_last_boxed_matches_braces_and_knows_a_cut_off_box() -> None:
    assert last_boxed("\\boxed{1} then \\fbox{\\sqrt{2}}") == "\\sqrt{2}"
    assert last_boxed("\\boxed{1} then \\boxed{2") is None
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("reply", "stated"),
    [
        ("17 * 23 = 391\nAnswer: 391", True),
        ("So the total is $\\boxed{391}$ and", True),
        ("**Final answer:** Rome", True),
        ("Let me count.\n4. \\(2*(3*4+5)+1 =", False),  # cut off: its last line is no answer
        ("The box is \\boxed{39", False),  # cut off inside the box
        ("", False),
    ],
)
def test_has_answer_tells_a_stated_answer_from_a_cut_off_reply(reply: str, stated: bool) -> None:
    assert has_answer(reply) is stated
