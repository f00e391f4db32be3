"""Grading math answers: the last `\\boxed{}`, AIME integers, math-verify, avg@k and maj@k.

AIME (integers 0-999): take the last `\\boxed{...}` or `\\fbox{...}` with brace matching, strip
`$`, spaces and `\\text{}`-like wrappers, parse to an int ("033" is 33, "33.0" is 33) and reject
anything out of range. Other math (MATH-500, AMC) goes through the `math-verify` package.

math-verify bounds its parsing and comparison with `signal.alarm`, which only works in the main
thread. `score_math` therefore uses those timeouts in the main thread and, from any other thread
(`asyncio.to_thread`, thread pools), runs the check in a child process that it kills when the
time is up: a call can be slow, never stuck.
"""

from __future__ import annotations

import functools
import multiprocessing
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import TypeVar

__all__ = [
    "avg_at_k",
    "extract_aime_answer",
    "last_boxed",
    "maj_at_k",
    "majority_answer",
    "parse_aime_integer",
    "score_aime",
    "score_math",
]

T = TypeVar("T", bound=Hashable)
G = TypeVar("G")

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_TOKEN = re.compile(r"[^\s$]+")
_BARE_ANSWER = re.compile(r"[-+\\(]?[0-9]")
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\ ", "~")
_AIME_INTEGER = re.compile(r"([0-9]+)(?:\.0*)?(?: [A-Za-z]+)*")  # "33", "33.0", "33 ways"
_MATH_DELIMITERS = ("\\(", "\\)", "\\[", "\\]")
_MODULUS = re.compile(r"\\pmod\s*\{[^{}]*\}|\\(?:bmod|mod)\s*\{?\s*[0-9]+\s*\}?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_ANSWER_LINE = re.compile(
    r"^\s*(?:[-•]\s*)?\**\s*(?:final\s+)?answer\s*\**\s*[:：]\s*(.+)$", re.I | re.M
)


# --- extraction -------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces matched).

    `\\boxed 5` (no braces) gives "5". A box that is only mentioned (`\\boxed{}` empty, or
    `\\boxed` followed by a word, as in "I wrote it in \\boxed above") is passed over for the
    box before it. None when there is no box, or when the last box's braces never close (a
    truncated answer): an earlier box is not used instead, since the final one was cut off.
    """
    for match in reversed(list(_BOX.finditer(text))):
        content = _box_content(text, match.end())
        if content == _UNCLOSED:
            return None
        if content is not None and content.strip():
            return content.strip()
    return None


_UNCLOSED = "\0unclosed"
"""`_box_content`'s marker for a `{` that never closes."""


def _box_content(text: str, start: int) -> str | None:
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        bare = _BARE_TOKEN.match(text, i)
        token = bare.group(0).rstrip(".,;") if bare else ""
        return token if _BARE_ANSWER.match(token) else None  # "\\boxed 5", not "\\boxed to"
    depth = 0
    j = i
    while j < len(text):
        char = text[j]
        if char == "\\":  # `\{`, `\}` and `\\` are not grouping braces
            j += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return _UNCLOSED


def parse_aime_integer(text: str) -> int | None:
    """An AIME answer (0-999) from a string like "033", "$33$", "\\(33\\)", "33.0",
    "\\text{33}.", "x = 33" (the right-hand side of the last `=`), "33^\\circ",
    "33 \\text{ ways}" (words after the number) or "33 \\pmod{1000}"; else None."""
    previous = None
    while previous != text:
        previous, text = text, _WRAPPER.sub(r"\1", text)
    text = text.replace("\\$", "").replace("$", "")
    for delimiter in _SPACING + _MATH_DELIMITERS:
        text = text.replace(delimiter, " ")
    text = _MODULUS.sub("", _DEGREES.sub("", text))
    text = " ".join(text.split()).rstrip(".").rpartition("=")[2].strip()
    while text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    match = _AIME_INTEGER.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if value <= 999 else None


def extract_aime_answer(response: str) -> int | None:
    """The integer in the last box. Without a box: the last `Answer: N` line if N is just an
    integer, else the whole response if it is just an integer. Anything else is None: a
    truncated reasoning whose last line happens to be a number does not score."""
    boxed = last_boxed(response)
    if boxed is not None:
        return parse_aime_integer(boxed)
    answer_lines = _ANSWER_LINE.findall(response)
    if answer_lines:
        return parse_aime_integer(answer_lines[-1].strip().strip("*"))
    return parse_aime_integer(response)


# --- scoring ----------------------------------------------------------------------------------


def score_aime(response: str, gold: int | str) -> bool:
    """Whether the response's AIME answer equals `gold` as an integer.

    Raises ValueError when `gold` itself is not an AIME integer (a dataset error).
    """
    expected = gold if isinstance(gold, int) else parse_aime_integer(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not an AIME integer 0-999")
    return extract_aime_answer(response) == expected


def score_math(response: str, gold: str, *, timeout: int = 5) -> bool:
    """Whether the response's last boxed answer (or, with no box, the whole response) is
    mathematically equal to `gold` (LaTeX, without `$`), as decided by math-verify.

    `timeout` bounds each of math-verify's three steps (parse gold, parse answer, compare) in
    seconds. Off the main thread the check runs in a child process, killed after
    3 * timeout + 15 seconds; a killed or crashed check counts as wrong.
    """
    boxed = last_boxed(response)
    prediction = response if boxed is None else f"${boxed}$"
    gold_latex = gold if "$" in gold else f"${gold}$"
    if threading.current_thread() is threading.main_thread():
        return _verify(gold_latex, prediction, timeout)
    return _verify_in_child(gold_latex, prediction, timeout)


def _verify(gold: str, prediction: str, timeout: int) -> bool:
    from math_verify import parse, verify  # type: ignore[import-untyped]  # heavy: sympy, antlr

    expected = parse(gold, parsing_timeout=timeout)
    if not expected:
        return False
    predicted = parse(prediction, parsing_timeout=timeout)
    return bool(verify(expected, predicted, timeout_seconds=timeout))


_CHILD_GRACE_SECONDS = 15


def _verify_in_child(gold: str, prediction: str, timeout: int) -> bool:
    process = _process_context().Process(
        target=_verify_and_exit, args=(gold, prediction, timeout), daemon=True
    )
    process.start()
    process.join(3 * timeout + _CHILD_GRACE_SECONDS)
    if process.is_alive():
        process.kill()
        process.join()
    try:
        return process.exitcode == 0
    finally:
        process.close()


def _verify_and_exit(gold: str, prediction: str, timeout: int) -> None:
    """Runs in the child's main thread, where math-verify's own timeouts work."""
    sys.exit(0 if _verify(gold, prediction, timeout) else 1)


@functools.cache
def _process_context() -> ForkServerContext | SpawnContext:
    """A fork server that has math-verify imported already, so each check starts in ~50 ms.

    Never plain fork: forking a process that runs threads can deadlock the child.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["math_verify"])
        return context
    return multiprocessing.get_context("spawn")


# --- several samples per question -------------------------------------------------------------


def avg_at_k(correct: Sequence[bool]) -> float:
    """The fraction of the k samples that are correct. Raises ValueError for k == 0."""
    if not correct:
        raise ValueError("avg@k of no samples is undefined")
    return sum(1 for ok in correct if ok) / len(correct)


def majority_answer(answers: Sequence[T | None]) -> T | None:
    """The most frequent answer; ties go to the one seen first; None answers do not vote.

    Answers are grouped by equality, so pass them normalised (e.g. AIME answers as ints).
    """
    votes = [answer for answer in answers if answer is not None]
    if not votes:
        return None
    counts = Counter(votes)
    return max(dict.fromkeys(votes), key=counts.__getitem__)  # max keeps the first of a tie


def maj_at_k(answers: Sequence[T | None], gold: G, equal: Callable[[T, G], bool]) -> bool:
    """Whether the majority answer (see `majority_answer`) is correct by `equal(answer, gold)`.

    No votes at all (every answer None) is wrong.
    """
    winner = majority_answer(answers)
    return winner is not None and equal(winner, gold)
