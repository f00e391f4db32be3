"""How one sampled answer is scored, per task, and how samples vote.

A run gives two texts: the short `answer` (the planner's extraction: an `Answer:` line or the
last line) and the whole final `reply` it was read from. Every task's `Scorer` says which one
decides `correct`, because an extraction loses what an answer format needs (a `\\boxed{}` on an
earlier line, BrowseComp's Confidence line):

- `aime` reads the reply: the last real `\\boxed{}` (else an `Answer: N` line) is the gold
  integer.
- `math` reads the reply: math-verify finds the last boxed expression (else an `Answer:` line,
  else a one-line reply) equal to the gold.
- `browsecomp` reads the reply: the judge model says so; the confidence is read too. How the
  verdict was read is kept (`judge_parsed_with`): a verdict that could not be read ("failed")
  is scored wrong, counted apart and left out of calibration.
- `fanout` reads the reply: every gold string is in it (FanOutQA's strict accuracy); `loose` is
  the share found. EM/F1 are computed on the short answer beside it.
- `qa` reads the short answer: SQuAD exact match over the aliases; a numeric gold (ParallelQA)
  is also compared as a number. HotpotQA's items get HotpotQA's official F1 (0 when either
  side is yes/no/noanswer and they differ).

maj@k (`majority`) clusters the samples with each task's own equivalence (`Scorer.same`) and
votes; samples with no answer (failed, or nothing readable) vote together as "no answer", which
earns 0 when it wins. See `mathgrade.maj_at_k` for the clusters and the tie rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentflow import Model, RunContext, Toolset, Trace
from agentflow.exceptions import UserError
from agentflow_evals import browsecomp
from agentflow_evals.datasets import EvalItem
from agentflow_evals.judge_cache import JudgeCache
from agentflow_evals.mathgrade import (
    extract_aime_answer,
    extract_math_answer,
    last_boxed,
    maj_at_k,
    parse_aime_integer,
    same_math_answer,
    score_math,
)
from agentflow_evals.qa import (
    exact_match,
    f1,
    hotpotqa_f1,
    loose_accuracy,
    normalize_answer,
    numbers_match,
    rounded_number,
)

__all__ = [
    "SCORERS",
    "Judge",
    "SampleScore",
    "Scorer",
    "format_question",
    "majority",
    "score_sample",
]

BOXED_INSTRUCTION = "\n\nReason step by step, and put your final answer within \\boxed{}."

ConfidenceSource = Literal["response", "judge", "missing"]
JudgeParse = Literal["schema", "regex", "failed"]


@dataclass(frozen=True, kw_only=True)
class SampleScore:
    correct: bool
    em: float | None = None
    f1: float | None = None
    loose: float | None = None
    """FanOutQA's loose accuracy: the share of gold strings found."""
    confidence: int | None = None
    """The response's confidence, a percentage 0-100 (BrowseComp); 100 when it stated none."""
    confidence_source: ConfidenceSource | None = None
    """Where `confidence` came from: the response's own Confidence line, the judge's reading of
    the response, or neither (then 100, as HLE and the judge prompt count it)."""
    extracted: str | None = None
    """The answer as graded, normalised: what majority voting compares. For judged answers a
    hash of the judge's extraction, so a BrowseComp answer never reaches disk in plaintext."""
    judge_parsed_with: JudgeParse | None = None
    """Judged tasks: how the verdict was read, "schema", "regex" or "failed" (unreadable:
    scored wrong, but not an answer the judge rejected)."""


@dataclass(frozen=True)
class Judge:
    """The model that grades BrowseComp answers, with its verdicts cached by content hash."""

    model: Model
    cache: JudgeCache | None = None

    async def grade(self, question: str, response: str, gold: str) -> browsecomp.JudgeResult:
        key = self._key(question, response, gold)
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            return cached
        ctx = RunContext(
            model=self.model, tools=Toolset(), trace=Trace(question="", planner="judge")
        )
        result = await browsecomp.judge(ctx, question, response, gold)
        if self.cache is not None and result.parsed_with != "failed":
            self.cache.put(key, result)
        return result

    def _key(self, question: str, response: str, gold: str) -> str:
        prompt = browsecomp.grader_prompt(question, response, gold)
        settings = repr(browsecomp.JUDGE_SETTINGS)
        return hashlib.sha256("\0".join([self.model.name, settings, prompt]).encode()).hexdigest()


ScoreFunction = Callable[[EvalItem, str, str, Judge | None], Awaitable[SampleScore]]
Equivalence = Callable[[str, str], bool]


@dataclass(frozen=True, kw_only=True)
class Scorer:
    reads: Literal["reply", "answer"]
    """The text `correct` is decided on: the whole final reply, or the short answer."""
    score: ScoreFunction
    """`score(item, answer, reply, judge)`."""
    same: Equivalence | None = None
    """Whether two samples' `extracted` answers are the same answer, as the scorer would judge
    the second against the first in the gold's place (maj@k's clusters). None: equal strings,
    for tasks whose `extracted` is already normalised (an int, SQuAD's normal form, a hash)."""


def format_question(item: EvalItem) -> str:
    """The question as the agent sees it: math asks for a boxed answer, BrowseComp for its
    official answer format (explanation, exact answer, confidence)."""
    if item.task in ("aime", "math"):
        return item.question + BOXED_INSTRUCTION
    if item.task == "browsecomp":
        return browsecomp.query_prompt(item.question)
    return item.question


async def score_sample(
    item: EvalItem, *, answer: str, reply: str, judge: Judge | None
) -> SampleScore:
    """Score one sample of `item` with its task's scorer."""
    scorer = SCORERS.get(item.task)
    if scorer is None:
        raise UserError(f"item {item.id!r}: no scorer for task {item.task!r}")
    return await scorer.score(item, answer, reply, judge)


async def _aime(item: EvalItem, answer: str, reply: str, judge: Judge | None) -> SampleScore:
    value = extract_aime_answer(reply)
    expected = parse_aime_integer(item.answers[0])
    if expected is None:
        raise UserError(f"item {item.id!r}: gold {item.answers[0]!r} is not an AIME integer")
    return SampleScore(correct=value == expected, extracted=None if value is None else str(value))


async def _math(item: EvalItem, answer: str, reply: str, judge: Judge | None) -> SampleScore:
    # math-verify can take seconds on a nasty expression: keep it off the event loop (off the
    # main thread it checks in a child process with a hard time limit).
    correct = await asyncio.to_thread(score_math, reply, item.answers[0])
    return SampleScore(correct=correct, extracted=extract_math_answer(reply))


async def _browsecomp(item: EvalItem, answer: str, reply: str, judge: Judge | None) -> SampleScore:
    if judge is None:
        raise UserError("BrowseComp answers need a judge model (--judge-model)")
    verdict = await judge.grade(item.question, reply, item.answers[0])
    confidence, source = _confidence(reply, verdict)
    return SampleScore(
        correct=verdict.correct,
        confidence=confidence,
        confidence_source=source,
        extracted=browsecomp.answer_key(verdict.extracted_final_answer),
        judge_parsed_with=verdict.parsed_with,
    )


def _confidence(reply: str, verdict: browsecomp.JudgeResult) -> tuple[int, ConfidenceSource]:
    """The response's own Confidence line; else what the judge read in it (the judge answers
    100 for "none stated", which is counted as missing); else 100, counted as missing."""
    stated = browsecomp.confidence_from_response(reply)
    if stated is not None:
        return stated, "response"
    if verdict.parsed_with != "failed" and verdict.confidence != 100:
        return verdict.confidence, "judge"
    return 100, "missing"


async def _fanout(item: EvalItem, answer: str, reply: str, judge: Judge | None) -> SampleScore:
    loose = loose_accuracy(item.meta.get("raw_answer", item.answers[0]), reply)
    return SampleScore(
        correct=loose == 1.0,
        em=exact_match(answer, item.answers),
        f1=round(f1(answer, item.answers), 4),
        loose=round(loose, 4),
        extracted=normalize_answer(answer),
    )


async def _qa(item: EvalItem, answer: str, reply: str, judge: Judge | None) -> SampleScore:
    answer = last_boxed(answer) or answer  # "Answer: \\boxed{Paris}" is the answer Paris
    em = exact_match(answer, item.answers)
    token_f1 = round((hotpotqa_f1 if is_hotpotqa(item) else f1)(answer, item.answers), 4)
    if item.meta.get("numeric"):
        # A number decides alone: EM drops "." and "-", which would make 1.5 equal 15.
        number = rounded_number(answer, item.answers[0])
        return SampleScore(
            correct=numbers_match(answer, item.answers[0]),
            em=em,
            f1=token_f1,
            extracted=None if number is None else repr(number),
        )
    return SampleScore(correct=bool(em), em=em, f1=token_f1, extracted=normalize_answer(answer))


def is_hotpotqa(item: EvalItem) -> bool:
    """A HotpotQA item (the `hotpotqa` sets and `multihop-local`'s share name their source):
    scored with HotpotQA's official F1."""
    return bool(item.meta.get("source") == "hotpotqa")


SCORERS: dict[str, Scorer] = {
    "aime": Scorer(reads="reply", score=_aime),
    "math": Scorer(reads="reply", score=_math, same=same_math_answer),
    "browsecomp": Scorer(reads="reply", score=_browsecomp),
    "fanout": Scorer(reads="reply", score=_fanout),
    "qa": Scorer(reads="answer", score=_qa),
}


async def majority(item: EvalItem, samples: Sequence[dict[str, Any]]) -> float:
    """maj@k for one item, 0 to 1: the samples clustered by the task's own equivalence
    (`Scorer.same`, math-verify for math), then voted; a tie between the largest clusters
    earns 1/m (see `mathgrade.maj_at_k`). Every sample votes: a failed one (`error`: the run
    broke, or reached its deadline with no answer) and one with no readable answer vote
    together as "no answer", which earns 0 if it wins, so maj@k is not lifted above avg@k by
    leaving them out. Computed from the samples as scored, before anything is redacted."""
    scorer = SCORERS.get(item.task)
    same = scorer.same if scorer is not None and scorer.same is not None else operator.eq
    answers = [None if s.get("error") else s.get("extracted") or None for s in samples]
    correct = [not s.get("error") and bool(s["correct"]) for s in samples]
    # math-verify can take seconds per pair: off the event loop (a child process per check)
    return await asyncio.to_thread(maj_at_k, answers, correct, same)
