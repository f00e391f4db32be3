"""Reading the final answer out of free text a model wrote."""

from __future__ import annotations

import re

__all__ = ["extract_answer"]

# "Answer:", "Final answer:", "**Answer:**", and BrowseComp's "Exact Answer:" (the official answer
# format ends with a "Confidence:" line, which must not be taken for the answer).
_ANSWER_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?\**\s*(?:final\s+|exact\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M
)


def extract_answer(text: str) -> str:
    """The last `Answer: ...` line, or the last non-empty line when there is none.

    Used for the short answer a person reads and EM/F1 compare. Scorers of an answer format
    (boxed math, BrowseComp's judge) read the whole reply instead, never this extraction.
    """
    found = _ANSWER_LINE.findall(text)
    if found:
        return str(found[-1]).strip().strip("*").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
