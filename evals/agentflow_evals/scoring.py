"""How one sampled answer is scored, per task, and how samples vote.

- `qa`: exact match and token F1 over every alias (SQuAD normalisation); correct = exact match.
- `aime`: the last boxed integer, compared as an integer.
- `math`: math-verify on the last boxed expression.
- `browsecomp`: the judge model reads the response against the gold answer; the response's own
  stated confidence is kept for the calibration error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentflow import Model, RunContext, Toolset, Trace
from agentflow_evals import browsecomp
from agentflow_evals.datasets import EvalItem
from agentflow_evals.mathgrade import (
    extract_aime_answer,
    last_boxed,
    maj_at_k,
    score_aime,
    score_math,
)
from agentflow_evals.qa import exact_match, f1, normalize_answer

__all__ = ["Judge", "SampleScore", "format_question", "majority", "score_sample"]

BOXED_INSTRUCTION = "\n\nReason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True, kw_only=True)
class SampleScore:
    correct: bool
    em: float | None = None
    f1: float | None = None
    confidence: float | None = None
    """The response's stated confidence, 0-100 (BrowseComp)."""
    extracted: str | None = None
    """The answer as graded, normalised: what majority voting compares."""


@dataclass(frozen=True)
class Judge:
    """The model that grades BrowseComp answers, and its token use kept apart from the run's."""

    model: Model

    async def grade(self, question: str, response: str, gold: str) -> browsecomp.JudgeResult:
        ctx = RunContext(
            model=self.model, tools=Toolset(), trace=Trace(question=question, planner="judge")
        )
        return await browsecomp.judge(ctx, question, response, gold)


def format_question(item: EvalItem) -> str:
    """The question as the agent sees it: math asks for a boxed answer, BrowseComp for its
    official answer format (explanation, exact answer, confidence)."""
    if item.task in ("aime", "math"):
        return item.question + BOXED_INSTRUCTION
    if item.task == "browsecomp":
        return browsecomp.query_prompt(item.question)
    return item.question


async def score_sample(item: EvalItem, answer: str, judge: Judge) -> SampleScore:
    if item.task == "aime":
        value = extract_aime_answer(answer)
        return SampleScore(
            correct=score_aime(answer, item.answers[0]),
            extracted=None if value is None else str(value),
        )
    if item.task == "math":
        # math-verify can take seconds on a nasty expression: keep it off the event loop (off
        # the main thread it checks in a child process with a hard time limit).
        correct = await asyncio.to_thread(score_math, answer, item.answers[0])
        return SampleScore(correct=correct, extracted=last_boxed(answer) or answer)
    if item.task == "browsecomp":
        verdict = await judge.grade(item.question, answer, item.answers[0])
        return SampleScore(
            correct=verdict.correct,
            confidence=browsecomp.confidence_from_response(answer),
            extracted=normalize_answer(verdict.extracted_final_answer),
        )
    return SampleScore(
        correct=bool(exact_match(answer, item.answers)),
        em=exact_match(answer, item.answers),
        f1=round(f1(answer, item.answers), 4),
        extracted=normalize_answer(answer),
    )


def majority(item: EvalItem, samples: Sequence[dict[str, Any]]) -> bool:
    """maj@k for one item: is the most common extracted answer among the samples correct?"""
    votes = [s.get("extracted") or None for s in samples]
    verdict = {s.get("extracted"): bool(s["correct"]) for s in samples if s.get("extracted")}
    return maj_at_k(votes, item, lambda answer, _: verdict.get(answer, False))
