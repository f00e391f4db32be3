"""Grading math answers: the last `\\boxed{}`, AIME integers, math-verify, avg@k and maj@k.

AIME (integers 0-999): take the last `\\boxed{...}` or `\\fbox{...}` with brace matching, strip
`$`, spaces and `\\text{}`-like wrappers, parse to an int ("033" is 33, "33.0" is 33) and reject
anything out of range. Other math (MATH-500, AMC) goes through the `math-verify` package.

Both read an answer the same way: the last closed box; with no box, the last `Answer: ...` line;
with neither, the whole reply only when it is nothing but the answer (AIME: an integer; math:
one line of math, see `only_math`). A reply cut off inside its last box, reasoning that merely
ends on a number or an equation, and a one-line reply that stops mid-sentence ("First compute
3*11 = 33 then") have no answer and score 0. A gold of words (`\\text{Evelyn}`, `\\text{(C)}`)
is also met by those words as the answer: the box, the `Answer:` line or a one-line reply.

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
from collections.abc import Callable, Sequence
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Literal, TypeVar

__all__ = [
    "avg_at_k",
    "extract_aime_answer",
    "last_boxed",
    "box_cut_off",
    "extract_math_answer",
    "gold_latex",
    "maj_at_k",
    "only_math",
    "parse_aime_integer",
    "same_math_answer",
    "score_aime",
    "score_math",
]

T = TypeVar("T")

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
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]*\}")  # \\begin{pmatrix}
_COMMAND = re.compile(r"\\[A-Za-z]+")
_PROSE_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters or more, any alphabet
_SHORT_PROSE = re.compile(r"\b(?:[Aa][nst]|[Bb][ey]|[Ii][fst]|[Oo][fnr]|[Ss]o|[Tt]o|[Ww]e)\b")
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log exp max min gcd lcm mod "
    "det sqrt abc abcd xyz pqr uvw".split()
)
_ARITHMETIC = re.compile(r"\\(?:[dt]?frac|sqrt|cdot|times|div|left|right|pm|mp)(?![A-Za-z])")
_LEFT_SIDE = re.compile(r"^(.*?)(?<![<>!=])=(?!=)")
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
    content = _last_box(text)
    return None if content == _UNCLOSED else content


def box_cut_off(text: str) -> bool:
    """Whether the last real box's braces never close: a reply cut off inside its answer."""
    return _last_box(text) == _UNCLOSED


def _last_box(text: str) -> str | None:
    for match in reversed(list(_BOX.finditer(text))):
        content = _box_content(text, match.end())
        if content == _UNCLOSED:
            return _UNCLOSED
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


def parse_aime_integer(text: str, *, equation: bool = True) -> int | None:
    """An AIME answer (0-999) from a string like "033", "$33$", "\\(33\\)", "33.0",
    "\\text{33}.", "x = 33" (the right-hand side of the last `=`; not with
    `equation=False`), "33^\\circ", "33 \\text{ ways}" (words after the number) or
    "33 \\pmod{1000}"; else None."""
    previous = None
    while previous != text:
        previous, text = text, _WRAPPER.sub(r"\1", text)
    text = text.replace("\\$", "").replace("$", "")
    for delimiter in _SPACING + _MATH_DELIMITERS:
        text = text.replace(delimiter, " ")
    text = _MODULUS.sub("", _DEGREES.sub("", text))
    text = " ".join(text.split()).rstrip(".")
    if equation:
        text = text.rpartition("=")[2].strip()
    while text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    match = _AIME_INTEGER.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if value <= 999 else None


def extract_aime_answer(response: str) -> int | None:
    """The integer in the last box. Without a box: the last `Answer: N` line if N is just an
    integer, else the whole response if it is just an integer (no `=`: "3 * 11 = 33" is
    reasoning, not an answer; no prose, see `only_math`: "33 and then we add" is reasoning cut
    off). Anything else is None: a truncated reasoning whose last line happens to be a number
    or an equation does not score."""
    boxed = last_boxed(response)
    if boxed is not None:
        return parse_aime_integer(boxed)
    if box_cut_off(response):
        return None
    answer_lines = _ANSWER_LINE.findall(response)
    if answer_lines:
        return parse_aime_integer(answer_lines[-1].strip().strip("*"))
    if not only_math(response):  # "33 and then we add" is reasoning cut off, not "33 ways"
        return None
    return parse_aime_integer(response, equation=False)


# --- scoring ----------------------------------------------------------------------------------


def score_aime(response: str, gold: int | str) -> bool:
    """Whether the response's AIME answer equals `gold` as an integer.

    Raises ValueError when `gold` itself is not an AIME integer (a dataset error).
    """
    expected = gold if isinstance(gold, int) else parse_aime_integer(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not an AIME integer 0-999")
    return extract_aime_answer(response) == expected


def extract_math_answer(response: str) -> str | None:
    """What math-verify reads of a reply: the last box's content as inline math (`$...$`);
    without a box, the last `Answer: ...` line (as inline math when it is `only_math`); else
    the whole reply when it is `only_math` (one line of nothing but math). None for a reply
    cut off inside its last box and for reasoning with neither (several lines, or one line of
    prose: a truncated reply that ends on a number does not score). A bare `pi` ("(3, pi/2)",
    "2pi", as small models write it) is read as `\\pi`, which math-verify would take for p*i."""
    answer = _math_answer(response)
    return None if answer is None else _BARE_PI.sub(r"\\pi", answer)


_BARE_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")


def _answer_part(response: str) -> tuple[Literal["box", "line", "reply"], str] | None:
    """Where a reply's answer is, as written: the last box's content, else the last `Answer:`
    line's text, else the whole reply (stripped). None when the last box was cut off."""
    boxed = last_boxed(response)
    if boxed is not None:
        return "box", boxed
    if box_cut_off(response):
        return None
    answer_lines = _ANSWER_LINE.findall(response)
    if answer_lines:
        return "line", str(answer_lines[-1]).strip().strip("*").strip()
    return "reply", response.strip()


def _math_answer(response: str) -> str | None:
    match _answer_part(response):
        case ("box", boxed):
            return f"${boxed}$"
        case ("line", line):
            return (_as_math(line) if only_math(line) else line) or None
        case ("reply", text):
            return _as_math(text) if only_math(text) else None
    return None


def only_math(text: str) -> bool:
    """Whether `text` is one line of nothing but math: what a reply without a box or an
    `Answer:` line must be to count as its own answer.

    Not math: several lines; a word of three letters or more (any alphabet) outside LaTeX
    markup, other than an all-capitals name (`ABC`) or one of `_MATH_WORDS` (`sin`, `gcd`,
    `abc`, ...); a short English word (`or`, `is`, `so`, `if`, `to`, `we`, `an`, `as`, `at`,
    `be`, `by`, `it`, `of`, `on`, lower case or capitalised); an equation whose left side holds
    no letter (`3*11 = 33`, `1 - 1/2 = 1/2`: a computation, as AIME rules). LaTeX markup is
    command names (`\\frac`, `\\sqrt`, `\\pi`), `\\begin{..}`/`\\end{..}` and the content of
    `\\text{}`-like wrappers. So `x = 5`, `\\frac{1}{2}`, `(3, \\frac{\\pi}{2})`, `5\\sqrt{2}`,
    `12 cm`, `12\\text{ inches}` and `y = 2x + 3` are math; `12 inches`, `5 or 6`,
    `I think 5 or 6` and `Let x = 5. Then 2x = 10, and` are not.
    """
    line = text.strip()
    if not line or "\n" in line:
        return False
    previous = None
    while previous != line:
        previous, line = line, _WRAPPER.sub(" ", line)
    line = _ENVIRONMENT.sub(" ", line)
    equation = _LEFT_SIDE.match(line.replace("$", ""))
    if equation and not re.search(r"[A-Za-z]", _ARITHMETIC.sub(" ", equation.group(1))):
        return False
    words = _PROSE_WORD.findall(_COMMAND.sub(" ", line))
    prose = [w for w in words if not (w.isascii() and w.isupper()) and w not in _MATH_WORDS]
    return not prose and not _SHORT_PROSE.search(_COMMAND.sub(" ", line))


def _as_math(line: str) -> str:
    """One line of math as math-verify input: markdown bold and a closing full stop dropped,
    wrapped in `$...$` unless it holds a math delimiter already."""
    line = line.strip().strip("*").strip().rstrip(".").strip()
    has_delimiter = "$" in line.replace("\\$", "") or "\\(" in line or "\\[" in line
    return line if has_delimiter else f"${line}$"


def gold_latex(gold: str) -> str:
    """A dataset's gold answer as math-verify input: wrapped in `$...$` unless it already holds
    a math delimiter. An escaped dollar (`\\$36`, a currency sign) is not a delimiter."""
    return gold if "$" in gold.replace("\\$", "") else f"${gold}$"


def score_math(response: str, gold: str, *, timeout: int = 5) -> bool:
    """Whether the response's answer (see `extract_math_answer`) is mathematically equal to
    `gold` (LaTeX), as decided by math-verify; a gold of words (`\\text{Evelyn}`) is also met by
    the same words as the reply's answer (`_text_answer`), which math-verify cannot parse.

    `timeout` bounds each of math-verify's three steps (parse gold, parse answer, compare) in
    seconds. Off the main thread the check runs in a child process, killed after
    3 * timeout + 15 seconds; a check out of time counts as wrong, a crashed one is run again
    (up to 3 times in all).
    """
    words = _text_gold(gold)
    if words is not None and _words(_text_answer(response)) == words:
        return True  # math-verify reads a bare "Evelyn" as no answer: compared as words
    prediction = extract_math_answer(response)
    if prediction is None:
        return False
    return _check(gold_latex(gold), prediction, timeout)


_TEXT_GOLD = re.compile(r"\\(?:text|textbf|textrm|mbox)\s*\{([^{}]*[A-Za-z][^{}]*)\}")
_AROUND_WORDS = " \t$*.:"


def _text_gold(gold: str) -> str | None:
    """A gold answer that is words, not math (MATH-500's `\\text{Evelyn}`, `\\text{(C)}`,
    `\\text{east}`) as `_words`; None for every other gold."""
    match = _TEXT_GOLD.fullmatch(gold.strip())
    return _words(match.group(1)) if match else None


def _text_answer(response: str) -> str | None:
    """A reply's answer read as words: the last box, else the last `Answer:` line, else the
    whole reply when it is one line (a planner's short answer: "Evelyn"). None when the last box
    was cut off or several lines hold neither."""
    part = _answer_part(response)
    if part is None or (part[0] == "reply" and "\n" in part[1]):
        return None
    return part[1] or None


def _words(text: str | None) -> str | None:
    """Lower case, `\\text{}`-like wrappers opened, `$ * . :` and spaces trimmed from the ends,
    one pair of brackets around it dropped, spaces inside collapsed: "**(C)**", "C." and
    `\\text{(C)}` are all "c"; "Eve lyn" and "e*a*s*t" stay what they are."""
    if text is None:
        return None
    previous = None
    while previous != text:
        previous, text = text, _WRAPPER.sub(r"\1", text)
    text = text.strip(_AROUND_WORDS)
    if text.startswith("(") and text.endswith(")") and "(" not in text[1:-1]:
        text = text[1:-1]
    return " ".join(text.split()).lower() or None


def same_math_answer(first: str, other: str, *, timeout: int = 5) -> bool:
    """Whether two answers as `extract_math_answer` gives them are equal by math-verify, `first`
    in the gold's place: how maj@k clusters samples with the scorer's own equivalence."""
    return first == other or _check(first, other, timeout)


def _check(gold: str, prediction: str, timeout: int) -> bool:
    if threading.current_thread() is threading.main_thread():
        return _verify(gold, prediction, timeout)
    return _verify_in_child(gold, prediction, timeout)


def _verify(gold: str, prediction: str, timeout: int) -> bool:
    from math_verify import parse, verify  # type: ignore[import-untyped]  # heavy: sympy, antlr

    expected = parse(gold, parsing_timeout=timeout)
    if not expected:
        return False
    predicted = parse(prediction, parsing_timeout=timeout)
    return bool(verify(expected, predicted, timeout_seconds=timeout))


_CHILD_GRACE_SECONDS = 15
_EQUAL, _DIFFERENT = 10, 11
"""The child's verdicts: exit codes no crash gives (an uncaught exception exits 1, a signal
with a negative code), so a crashed check is told from a verdict."""
_CHILD_ATTEMPTS = 3
"""A child that crashed gave no verdict: try again, then count it as different (one that ran out
of time counts as different at once).
(A forkserver child crashed about once in 600 checks on a loaded 2-core machine: 3 of 500 gold
answers scored wrong.)"""


def _verify_in_child(gold: str, prediction: str, timeout: int) -> bool:
    for _ in range(_CHILD_ATTEMPTS):
        verdict = _child_verdict(gold, prediction, timeout)
        if verdict is not None:
            return verdict
    return False


def _child_verdict(gold: str, prediction: str, timeout: int) -> bool | None:
    process = _process_context().Process(
        target=_verify_and_exit, args=(gold, prediction, timeout), daemon=True
    )
    process.start()
    process.join(3 * timeout + _CHILD_GRACE_SECONDS)
    try:
        if process.is_alive():  # out of time: a verdict of its own, not tried again
            process.kill()
            process.join()
            return False
        return {_EQUAL: True, _DIFFERENT: False}.get(process.exitcode or 0)
    finally:
        process.close()


def _verify_and_exit(gold: str, prediction: str, timeout: int) -> None:
    """Runs in the child's main thread, where math-verify's own timeouts work."""
    sys.exit(_EQUAL if _verify(gold, prediction, timeout) else _DIFFERENT)


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


def maj_at_k(
    answers: Sequence[T | None], correct: Sequence[bool], same: Callable[[T, T], bool]
) -> float:
    """maj@k of one question: the credit its k samples' majority vote earns, 0 to 1.

    The samples are clustered first, then each cluster's size is its vote. Every correct
    sample is in the gold's cluster (each equals the gold by the scorer). A wrong sample
    without an answer (None: it failed, or gave nothing the scorer could read) is in the one
    "no answer" cluster, which votes like any other and, when it wins, earns 0: k samples
    that mostly never answered have no majority answer. Any other wrong sample joins the
    first cluster of wrong samples whose first member `m` has `same(m, answer)`, the scorer's
    own equivalence with `m` in the gold's place, so `\\frac{1}{2}`, `0.5` and `1/2` vote
    together whether they are right or wrong.

    The largest cluster wins. A tie between the m largest clusters ("no answer" included)
    earns 1/m when the gold's is one of them: the expected credit of breaking the tie uniformly
    at random, so a tie is neither given to the first sample nor counted as wrong. No samples
    earn 0.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} verdicts")
    gold_votes = sum(1 for ok in correct if ok)
    unanswered = sum(
        1 for answer, ok in zip(answers, correct, strict=True) if answer is None and not ok
    )
    clusters: list[tuple[T, int]] = []  # (first member, size) of each wrong answer
    for answer, ok in zip(answers, correct, strict=True):
        if ok or answer is None:
            continue
        found = next((i for i, (first, _) in enumerate(clusters) if same(first, answer)), None)
        if found is None:
            clusters.append((answer, 1))
        else:
            clusters[found] = (clusters[found][0], clusters[found][1] + 1)
    sizes = [size for _, size in clusters] + [unanswered, gold_votes]
    top = max(sizes)
    if top == 0 or gold_votes < top:
        return 0.0
    return 1 / sizes.count(top)
