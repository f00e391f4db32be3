"""`extract_answer`: the short answer a person reads and EM/F1 compare, from the forms models
write (an `Answer:` line, a box, display math closing the reply, a plain last line)."""

from __future__ import annotations

import pytest

from agentflow.answers import extract_answer, last_boxed, stated_answer


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
        ("17 * 23 = 391\nAnswer: 391", "391"),
        ("So the total is $\\boxed{391}$ and", "391"),
        ("**Final answer:** Rome", "Rome"),
        ("So, therefore the final answer: 391", "391"),  # a label inside the last line
        ("We get \\boxed{5}\n\\]", "5"),  # display math's closer is not the last line
        ("Let me count.\n4. \\(2*(3*4+5)+1 =", None),  # cut off: its last line is no answer
        ("We get \\boxed{5}. But wait, let me check.\n4. \\(2*(3*4+5) =", None),  # went on
        ("The box is \\boxed{39", None),  # cut off inside the box
        ("Answer: \\boxed{39", None),  # the same, on the Answer line
        ("", None),
    ],
)
def test_stated_answer_tells_an_answer_from_where_a_cut_off_reply_stopped(
    reply: str, stated: str | None
) -> None:
    assert stated_answer(reply) == stated
