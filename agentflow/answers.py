"""Reading the final answer out of free text a model wrote."""

from __future__ import annotations

import re

__all__ = ["extract_answer"]

# "Answer:", "Final answer:", "**Answer:**", and BrowseComp's "Exact Answer:" (the official answer
# format ends with a "Confidence:" line, which must not be taken for the answer).
_ANSWER_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?\**\s*(?:final\s+|exact\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M
)


# "Answer:" after other words on its line ("Therefore, the answer is: Answer: 1999", as the 1.5B
# writes): the word must be followed by its colon, so "the answer is 12" is not taken for one.
_ANSWER_IN_LINE = re.compile(r"\b(?:final\s+|exact\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M)


def extract_answer(text: str) -> str:
    """The last `Answer: ...` line; else the last non-empty line, past an `Answer:` inside it.

    Used for the short answer a person reads and EM/F1 compare. Scorers of an answer format
    (boxed math, BrowseComp's judge) read the whole reply instead, never this extraction.
    """
    found = _ANSWER_LINE.findall(text)
    if found:
        return str(found[-1]).strip().strip("*").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _after_last_label(lines[-1]) if lines else ""


def _after_last_label(line: str) -> str:
    """`line` past its last `Answer:` label, if it has one. Only the last line is read so: an
    "answer:" earlier in the text ("the question asks for the answer: who ...") is not one."""
    labelled = False
    while (match := _ANSWER_IN_LINE.search(line)) is not None:
        line, labelled = match.group(1), True
    return line.strip().strip("*").strip() if labelled else line
