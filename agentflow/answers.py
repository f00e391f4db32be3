"""Reading the final answer out of free text a model wrote."""

from __future__ import annotations

import re

__all__ = ["BOX_START", "extract_answer", "last_boxed", "number_text", "stated_answer"]

# "Answer:", "Final answer:", "**Answer:**", and BrowseComp's "Exact Answer:" (the official answer
# format ends with a "Confidence:" line, which must not be taken for the answer).
_ANSWER_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?\**\s*(?:final\s+|exact\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M
)


# "Answer:" after other words on its line ("Therefore, the answer is: Answer: 1999", as the 1.5B
# writes): the word must be followed by its colon, so "the answer is 12" is not taken for one.
_ANSWER_IN_LINE = re.compile(r"\b(?:final\s+|exact\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M)


BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
"""Where a `\\boxed{` or `\\fbox{` opens (closed or not)."""

# A line that only closes display math or a code block ("\]", "$$"): a reply ending "\[ x = 4
# \]" or "$$\boxed{4}$$" over three lines has its answer above it, not in it.
_CLOSER_ONLY = re.compile(r"^(?:\\\]|\\\)|\$\$?|```)$")


def extract_answer(text: str) -> str:
    """The last `Answer: ...` line; else the last line (not one that only closes display math:
    `\\]`, `$$`), past an `Answer:` inside it. A closed box in the answer is opened: "Answer:
    $\\boxed{391}$" and "The answer is $\\boxed{391}$." are 391. A box on an earlier line is
    not the answer: the reply may have gone on past it ("We get \\boxed{5}. But wait ...").

    Used for the short answer a person reads and EM/F1 compare. Scorers of an answer format
    (boxed math, BrowseComp's judge) read the whole reply instead, never this extraction.
    """
    answer, _ = _read_answer(text)
    return _unboxed(answer)


def stated_answer(text: str) -> str | None:
    """The answer a reply that may have been cut off states: what `extract_answer` reads when
    it reads an `Answer:` label or a closed box, None when it would only fall back on the last
    line (a reply cut off mid-thought has no answer, though its last line looks like one) or
    the answer's box was cut off inside."""
    answer, stated = _read_answer(text)
    if not stated or (BOX_START.search(answer) and last_boxed(answer) is None):
        return None
    return _unboxed(answer) or None


def _read_answer(text: str) -> tuple[str, bool]:
    """Where `extract_answer` finds the answer (its box not yet opened), and whether a label or
    a box states it there: the last `Answer:` line; else the last line that does not only close
    display math, past an `Answer:` inside it."""
    found = _ANSWER_LINE.findall(text)
    if found:
        return str(found[-1]).strip().strip("*").strip(), True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not _CLOSER_ONLY.match(line)] or lines
    if not lines:
        return "", False
    last = lines[-1]
    stated = bool(_ANSWER_IN_LINE.search(last) or BOX_START.search(last))
    return _after_last_label(last), stated


def number_text(value: float) -> str:
    """A finite number as an answer's text: a whole number without ".0" ("33.0" is "33")."""
    return str(int(value)) if value.is_integer() else repr(value)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{}` / `\\fbox{}` (braces matched), None if there is
    none or it was cut off."""
    matches = list(BOX_START.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    return None  # cut off inside the box


def _unboxed(answer: str) -> str:
    boxed = last_boxed(answer)
    return boxed.strip() if boxed is not None and boxed.strip() else answer


def _after_last_label(line: str) -> str:
    """`line` past its last `Answer:` label, if it has one. Only the last line is read so: an
    "answer:" earlier in the text ("the question asks for the answer: who ...") is not one."""
    labelled = False
    while (match := _ANSWER_IN_LINE.search(line)) is not None:
        line, labelled = match.group(1), True
    return line.strip().strip("*").strip() if labelled else line
