"""BrowseComp: the data's cipher, the answer and judge prompts, the judge, and calibration error.

Sources, read for this module:

- openai/simple-evals `browsecomp_eval.py`: the XOR cipher (`derive_key`/`decrypt`), the answer
  prompt `QUERY_TEMPLATE` and the judge prompt `GRADER_TEMPLATE`. Both templates are copied
  verbatim into `prompts/browsecomp_query.md` and `prompts/browsecomp_grader.md` (they come in turn
  from centerforaisafety/hle `hle_eval/run_model_predictions.py` and `run_judge_results.py`).
- centerforaisafety/hle `hle_eval/run_judge_results.py`: the judge's structured answer
  (`extracted_final_answer`, `reasoning`, `correct`, `confidence`) and `calib_err`.

Where this module differs from the references, on purpose:

- simple-evals reads the judge with `re.search(r"correct: (yes|no)")` and compares
  `match.group(0)` ("correct: yes") with "yes", so nothing is ever graded correct, and the
  unanchored pattern also matches "incorrect: yes". Here the judge answers through a JSON schema;
  if that fails, only the verdict the judge gives at the end counts: a JSON object that ends its
  reply, else its last `correct:` line (anchored at the line start) after everything it quoted
  (see `parse_verdict_text`); a verdict the judge only quoted or drafted is never read.
- simple-evals ignores the judge's confidence. The judge prompt says "Put 100 if there is no
  confidence score available", so a missing confidence is 100 here too.
- HLE's `calib_err` merges the remainder into the last bin, then skips that last bin, and raises
  an IndexError under 100 items. `calibration_error` uses the same bins and counts every one of
  them; `hle_convention_calibration_error` keeps HLE's convention (last bin left out, None
  where HLE's code fails). Neither is HLE's number to the digit under tied confidences: HLE
  sorts with `np.argsort`, whose default sort is not stable, so which tied items land on each
  side of a bin boundary depends on the input order and on the machine's numpy build (its
  SIMD sorts differ); "100%" ties are the common case. Here a tie group shares its accuracy
  (each tied item counts its group's mean correctness), which is what a random order of the
  ties gives each item on average and does not depend on any order. HLE also rounds to whole
  percent (`100 * round(err, 2)`); these are reported to two decimals.

The decrypted questions and answers exist in memory only: never write them to disk or logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentflow.context import RunContext
from agentflow.exceptions import ModelOutputError
from agentflow.model import ModelSettings

__all__ = [
    "GRADER_TEMPLATE",
    "JUDGE_SETTINGS",
    "QUERY_TEMPLATE",
    "JudgeResult",
    "JudgeVerdict",
    "answer_key",
    "calibration_error",
    "confidence_from_response",
    "decrypt",
    "encrypt",
    "exact_answer_from_response",
    "grader_prompt",
    "hle_convention_calibration_error",
    "judge",
    "parse_verdict_text",
    "query_prompt",
]


def _prompt(name: str) -> str:
    return (resources.files("agentflow_evals") / "prompts" / name).read_text("utf-8").strip()


QUERY_TEMPLATE = _prompt("browsecomp_query.md")
"""The answer prompt; `{Question}` is the question (str.format syntax)."""
GRADER_TEMPLATE = _prompt("browsecomp_grader.md")
"""The judge prompt; `{question}`, `{response}` and `{correct_answer}` (str.format syntax)."""

JUDGE_SETTINGS = ModelSettings(temperature=0.0, max_tokens=512)
"""The judge samples greedily unless told otherwise, so a rerun grades the same way; its verdict
is short, and the cap keeps a judge that rambles from holding an item until it times out."""


# --- the cipher -------------------------------------------------------------------------------


def _key(password: str, length: int) -> bytes:
    digest = hashlib.sha256(password.encode()).digest()
    return (digest * (length // len(digest) + 1))[:length]


def decrypt(ciphertext_b64: str, password: str) -> str:
    """base64(plaintext XOR SHA-256(password) repeated) back to the plaintext.

    Raises ValueError on bad base64 or bytes that are not UTF-8.
    """
    encrypted = base64.b64decode(ciphertext_b64, validate=True)
    key = _key(password, len(encrypted))
    return bytes(a ^ b for a, b in zip(encrypted, key, strict=True)).decode("utf-8")


def encrypt(plaintext: str, password: str) -> str:
    """The inverse of `decrypt`, for tests and for users who package their own items."""
    data = plaintext.encode("utf-8")
    key = _key(password, len(data))
    return base64.b64encode(bytes(a ^ b for a, b in zip(data, key, strict=True))).decode("ascii")


# --- prompts and the answering model's response ----------------------------------------------


def query_prompt(question: str) -> str:
    """The question in the official answer format (Explanation / Exact Answer / Confidence)."""
    return QUERY_TEMPLATE.format(Question=question)


def grader_prompt(question: str, response: str, correct_answer: str) -> str:
    return GRADER_TEMPLATE.format(
        question=question, response=response, correct_answer=correct_answer
    )


# A field line may carry markdown or list numbering around its name ("**Confidence:** 80%",
# "- correct: yes", "3. correct: yes"), but no word may stand before the name: "incorrect: yes"
# never reads as "correct: yes".
_LEAD = r"^[ \t*_#>\-]*(?:\d{1,2}[.)])?[ \t*_]*"  # "- ", "**", "3. " before a field name
_MID = r"[ \t*_]*:[ \t*_'\"`]*"
_FLAGS = re.IGNORECASE | re.MULTILINE
# The verdict word may be followed by a remark: "correct: yes (they match)".
_CORRECT_LINE = re.compile(_LEAD + r"correct" + _MID + r"(yes|no)\b[^\n]*$", _FLAGS)
_NUMBER = r"(\d+(?:\.\d+)?)[ \t]*(\\?%)?"
_CONFIDENCE_LINE = re.compile(_LEAD + r"confidence" + _MID + _NUMBER, _FLAGS)
_EXTRACTED_LINE = re.compile(_LEAD + r"extracted_final_answer" + _MID + r"(.*?)[ \t*]*$", _FLAGS)
_REASONING_LINE = re.compile(_LEAD + r"reasoning" + _MID + r"(.*?)[ \t*]*$", _FLAGS)
_EXACT_ANSWER_LINE = re.compile(_LEAD + r"exact[ \t_]answer" + _MID + r"(.*?)[ \t*]*$", _FLAGS)


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _confidence(match: re.Match[str] | None) -> int | None:
    """A percentage 0-100; a bare fraction like 0.85 (no % sign) is read as 85."""
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) is None and "." in match.group(1) and value <= 1:
        value *= 100
    return round(value) if 0 <= value <= 100 else None


def confidence_from_response(text: str) -> int | None:
    """The answering model's stated confidence (its last "Confidence: 85%" line), or None."""
    return _confidence(_last(_CONFIDENCE_LINE, text))


def exact_answer_from_response(text: str) -> str | None:
    """The answering model's last "Exact Answer: ..." line, or None."""
    match = _last(_EXACT_ANSWER_LINE, text)
    if match is None:
        return None
    return match.group(1).strip() or None


# --- the judge --------------------------------------------------------------------------------


class JudgeVerdict(BaseModel):
    """What the judge model must answer (sent to the server as its JSON schema)."""

    model_config = ConfigDict(extra="forbid")

    # Length caps are part of the schema the server enforces: a judge stuck repeating itself is
    # cut off inside a string and the JSON still closes with a verdict.
    extracted_final_answer: str = Field(max_length=300)
    reasoning: str = Field(max_length=800)
    correct: Literal["yes", "no"]
    confidence: int
    """The confidence the graded RESPONSE stated, 0-100 (100 when it stated none)."""

    @field_validator("confidence")
    @classmethod
    def _clamp(cls, value: int) -> int:
        return min(max(value, 0), 100)


@dataclass(frozen=True, kw_only=True)
class JudgeResult:
    correct: bool
    extracted_final_answer: str
    reasoning: str
    confidence: int
    """The response's stated confidence as the judge read it, 0-100."""
    judge_model: str
    parsed_with: Literal["schema", "regex", "failed"]
    """How the verdict was read: the JSON schema, the fallback (lenient JSON, then anchored
    regexes), or not at all: a refused, empty or unreadable verdict, scored wrong and flagged
    so that it is counted, kept out of calibration and can be judged again."""
    raw: str = field(default="", repr=False)
    """The judge's answer verbatim. It may quote the gold answer: keep BrowseComp's off disk."""
    cached: bool = False
    """Read from the judge cache: `extracted_final_answer` is then its `answer_key`."""


_KEY_PREFIX = "sha256:"


def answer_key(extracted: str) -> str | None:
    """What majority voting compares for a judged answer: a hash of its normalised form, so
    equal answers vote together and none reaches disk in plaintext. A key stays itself."""
    if extracted.startswith(_KEY_PREFIX):
        return extracted
    normalized = " ".join(re.sub(r"[^\w\s]", " ", extracted.lower()).split())
    if not normalized or normalized == "none":
        return None
    return _KEY_PREFIX + hashlib.sha256(normalized.encode()).hexdigest()[:16]


def parse_verdict_text(text: str) -> JudgeVerdict | None:
    """A judge's off-schema answer, read only where the judge gives its own verdict: at the end.

    - A JSON object that ends the reply (nothing but whitespace or a closing code fence after
      it) is the verdict, read leniently (extra fields, a code fence and prose before it,
      "Yes", a "85%" string); without a yes/no `correct` it is no verdict. An object the judge
      only quoted or drafted earlier ("I will output {...} if it matched") never counts.
    - Else the last `correct: yes|no` line (anchored at the line start, so never
      "incorrect: yes"), when it comes after everything quoted and only blank lines or verdict
      fields (`confidence:`, `reasoning:`, ...) follow it. Quoted is: a `>` line, a code block
      (one left open runs to the end), a JSON object that spans lines or never closes, and a
      quotation (`"..."`, `“...”`) that spans lines or never closes. So a reply cut off inside
      its final object, or after quoting a response's `correct: yes`, has no verdict.

    None when there is no verdict: the judge is then recorded as failed, never as the answer.
    """
    body, own_fence = _without_closing_fence(text)
    if body.endswith("}"):
        ending = _object_ending(body)
        if ending is not None:
            return _verdict_from_object(ending)
    spans = _quoted_spans(body, own_fence)
    after = max((end for _, end in spans), default=0)
    correct = _last(_CORRECT_LINE, body[after:])
    if correct is None:
        return None
    tail = body[after + correct.end() :]
    if any(line.strip() and not _FIELD_LINE.match(line) for line in tail.splitlines()):
        return None  # prose after the verdict line: it was quoted or drafted, not given
    confidence = _confidence(_unquoted_last(_CONFIDENCE_LINE, body, spans))
    extracted = _unquoted_last(_EXTRACTED_LINE, body, spans)
    reasoning = _unquoted_last(_REASONING_LINE, body, spans)
    return JudgeVerdict(
        extracted_final_answer=extracted.group(1) if extracted else "",
        reasoning=reasoning.group(1) if reasoning else "",
        correct="yes" if correct.group(1).lower() == "yes" else "no",
        confidence=100 if confidence is None else confidence,
    )


_FENCE = re.compile(r"^[ \t]*```[^\n]*$", re.MULTILINE)
_BLOCKQUOTE = re.compile(r"^[ \t]*>[^\n]*$", re.MULTILINE)
_OBJECT_START = re.compile(r"\{\s*\"")
_QUOTE = re.compile(r'(?<!\\)"|[“”]')
_FIELD_LINE = re.compile(
    _LEAD + r"(?:confidence|extracted_final_answer|reasoning|\[?correct_answer\]?)" + _MID, _FLAGS
)


def _without_closing_fence(text: str) -> tuple[str, int | None]:
    """`text` without trailing space and the fence closing a code block that ends it, and the
    offset of that block's opening fence (the judge's own block, not a quote); else None."""
    body = text.rstrip()
    fences = list(_FENCE.finditer(body))
    if len(fences) >= 2 and len(fences) % 2 == 0 and fences[-1].end() == len(body):
        return body[: fences[-1].start()].rstrip(), fences[-2].start()
    return body, None


def _object_ending(body: str) -> dict[str, Any] | None:
    """The outermost JSON object that ends `body`, or None."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(body) if char == "{"):
        try:
            value, end = decoder.raw_decode(body, start)
        except ValueError:
            continue
        if end == len(body) and isinstance(value, dict):
            return value
    return None


def _quoted_spans(body: str, own_fence: int | None) -> list[tuple[int, int]]:
    """(start, end) of what the judge quoted: see `parse_verdict_text`. Spans within one line
    are left out: they hide no line start, so no verdict line."""
    spans = [(m.start(), m.end()) for m in _BLOCKQUOTE.finditer(body)]
    fences = [m for m in _FENCE.finditer(body) if m.start() != own_fence]
    for i in range(0, len(fences), 2):
        closing = fences[i + 1].end() if i + 1 < len(fences) else len(body)
        spans.append((fences[i].start(), closing))
    for match in _OBJECT_START.finditer(body):
        spans.append((match.start(), _object_end(body, match.start())))
    quotes = list(_QUOTE.finditer(body))
    for i in range(0, len(quotes), 2):
        closing = quotes[i + 1].end() if i + 1 < len(quotes) else len(body)
        spans.append((quotes[i].start(), closing))
    return [(a, b) for a, b in spans if b == len(body) or "\n" in body[a:b]]


def _object_end(body: str, start: int) -> int:
    """Where the JSON-like object opening at `start` closes (string-aware); len(body) if it
    never does."""
    depth, in_string, i = 0, False, start
    while i < len(body):
        char = body[i]
        if in_string and char == "\\":
            i += 1
        elif char == '"':
            in_string = not in_string
        elif not in_string and char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                return i + 1
        i += 1
    return len(body)


def _unquoted_last(
    pattern: re.Pattern[str], body: str, spans: Sequence[tuple[int, int]]
) -> re.Match[str] | None:
    found = [m for m in pattern.finditer(body) if not any(a <= m.start() < b for a, b in spans)]
    return found[-1] if found else None


def _verdict_from_object(found: dict[str, Any]) -> JudgeVerdict | None:
    """The verdict in a judge's JSON object, read leniently; None without a yes/no `correct`."""
    if _yes_no(found.get("correct")) is None:
        return None
    confidence = _confidence(_CONFIDENCE_VALUE.fullmatch(str(found.get("confidence", "")).strip()))
    return JudgeVerdict(
        extracted_final_answer=_text_field(found.get("extracted_final_answer"), 300),
        reasoning=_text_field(found.get("reasoning"), 800),
        correct=_yes_no(found.get("correct")) or "no",
        confidence=100 if confidence is None else confidence,
    )


_CONFIDENCE_VALUE = re.compile(_NUMBER)


def _yes_no(value: Any) -> Literal["yes", "no"] | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    word = str(value).strip().strip("*").lower() if isinstance(value, str) else ""
    return "yes" if word == "yes" else "no" if word == "no" else None


def _text_field(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


async def judge(
    ctx: RunContext,
    question: str,
    response: str,
    correct_answer: str,
    *,
    settings: ModelSettings | None = None,
) -> JudgeResult:
    """Grade `response` against `correct_answer` with one call to the judge model `ctx.model`.

    The judge answers through the `JudgeVerdict` JSON schema. If its text is not the schema
    whole (`ModelOutputError`, e.g. a server without structured outputs, or a reply only
    salvaged), the text is read with `parse_verdict_text`; an unreadable verdict counts as
    wrong. HTTP errors and malformed
    bodies propagate: the judge's server failed, not the answer.
    """
    messages = [{"role": "user", "content": grader_prompt(question, response, correct_answer)}]
    judge_model = ctx.model.name
    try:
        verdict, reply = await ctx.complete_structured(
            messages, JudgeVerdict, settings or JUDGE_SETTINGS
        )
        # Salvage reads a reply's first JSON object, which may be one the judge only drafted
        # ("I will output {...} if it matched"): a reply that is not the schema whole is read
        # by `parse_verdict_text`'s rules instead.
        reply.parse(JudgeVerdict)
    except ModelOutputError as exc:  # off-schema text; a malformed body is the server's failure
        fallback = parse_verdict_text(exc.body)
        if fallback is None:
            return JudgeResult(
                correct=False,
                extracted_final_answer="",
                reasoning="",
                confidence=100,
                judge_model=judge_model,
                parsed_with="failed",
                raw=exc.body,
            )
        return _result(fallback, judge_model, "regex", exc.body)
    return _result(verdict, judge_model, "schema", reply.text)


def _result(
    verdict: JudgeVerdict,
    judge_model: str,
    parsed_with: Literal["schema", "regex"],
    raw: str,
) -> JudgeResult:
    return JudgeResult(
        correct=verdict.correct == "yes",
        extracted_final_answer=verdict.extracted_final_answer,
        reasoning=verdict.reasoning,
        confidence=verdict.confidence,
        judge_model=judge_model,
        parsed_with=parsed_with,
        raw=raw,
    )


# --- calibration ------------------------------------------------------------------------------


def _bins(confidences: Sequence[float], correct: Sequence[bool], bin_size: int) -> list[_Bin]:
    """HLE's binning: sorted by confidence, consecutive bins of `bin_size`, the remainder merged
    into the last bin (fewer than `bin_size` items: one bin). Confidences are percentages.
    Tied confidences share their accuracy, so no order of the ties changes a bin."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} verdicts")
    if bin_size < 1:
        raise ValueError(f"bin_size must be at least 1, not {bin_size}")
    if any(math.isnan(c) or not 0 <= c <= 100 for c in confidences):
        raise ValueError("confidences must be percentages in 0-100")
    pairs = _ties_shared(sorted(zip(confidences, correct, strict=True), key=_first))
    starts = list(range(0, max(len(pairs) // bin_size, 1) * bin_size, bin_size))
    ends = [*starts[1:], len(pairs)]
    return [
        _Bin(
            size=end - start,
            confidence=math.fsum(c for c, _ in pairs[start:end]) / (end - start) / 100,
            accuracy=math.fsum(a for _, a in pairs[start:end]) / (end - start),
        )
        for start, end in zip(starts, ends, strict=True)
        if end > start
    ]


def _ties_shared(pairs: Sequence[tuple[float, bool]]) -> list[tuple[float, float]]:
    """(confidence, accuracy) of sorted pairs, each tied item given its tie group's accuracy."""
    shared: list[tuple[float, float]] = []
    start = 0
    while start < len(pairs):
        end = start
        while end < len(pairs) and pairs[end][0] == pairs[start][0]:
            end += 1
        accuracy = sum(1 for _, ok in pairs[start:end] if ok) / (end - start)
        shared.extend((pairs[start][0], accuracy) for _ in range(start, end))
        start = end
    return shared


@dataclass(frozen=True, kw_only=True)
class _Bin:
    size: int
    confidence: float
    """Mean confidence of the bin as a fraction."""
    accuracy: float


def _rms(bins: Sequence[_Bin], total: int) -> float:
    """sqrt(sum(size / total * (confidence - accuracy)^2)), in percentage points."""
    return 100 * math.sqrt(sum(b.size / total * (b.confidence - b.accuracy) ** 2 for b in bins))


def calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bin_size: int = 100
) -> float:
    """RMS calibration error in percentage points, with HLE's bins and every bin counted.

    Confidences are percentages 0-100 (never guessed from the data: 1 means 1%). Bins as in
    HLE's `calib_err` (sorted, `bin_size` each, the remainder merged into the last bin; fewer
    than `bin_size` items make one bin), but unlike it the last bin counts: every item is in
    the error. Tied confidences share their accuracy (see the module's docstring), so the
    result does not depend on the order of the items. Raises ValueError for no items,
    mismatched lengths, values outside 0-100, NaN, or `bin_size < 1`.
    """
    if not confidences:
        raise ValueError("the calibration error of no items is undefined")
    return _rms(_bins(confidences, correct, bin_size), len(confidences))


def hle_convention_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bin_size: int = 100
) -> float | None:
    """HLE's `calib_err(p="2", beta=bin_size)` convention, times 100 (as HLE reports it).

    HLE merges the remainder into the last bin and then leaves that last bin out of the sum
    (while still dividing by every item), so 100-199 items give 0.0 whatever the answers;
    with fewer than `bin_size` items its code fails, and this returns None. Without tied
    confidences this is HLE's number before its rounding to whole percent; with ties HLE's own
    figure depends on numpy's unstable sort, and here tied items share their accuracy instead
    (see the module's docstring). Reported beside `calibration_error` for comparison with
    published HLE/BrowseComp figures.
    """
    if len(confidences) < bin_size:
        if len(confidences) != len(correct):
            raise ValueError(f"{len(confidences)} confidences but {len(correct)} verdicts")
        return None
    bins = _bins(confidences, correct, bin_size)
    return _rms(bins[:-1], len(confidences))


def _first(pair: tuple[float, bool]) -> float:
    return pair[0]
