"""Difficulty estimators: how hard one node is, on a 0-1 scale, before System 2 is spent on it.

- `score` (SCALE): one short fast-mode call rates the step given the problem and the earlier
  steps with their answers; an unusable rating gets one retry, then a recorded default.
- `agreement`: a few fast samples of the node's own request; the share that disagrees with the
  leader is the difficulty, and when they agree the leader is the node's answer (no thinking).
- `confidence`: one fast answer with log-probabilities; difficulty = 1 - exp(mean log-prob),
  one minus the geometric-mean token probability. The fast answer is kept for a fast node.
- `static`: the `difficulty` the planner wrote on the node.
- `constant`: the uniform baselines (`uniform-fast` is 0, `uniform-think` is 1).
"""

from __future__ import annotations

import asyncio
import json
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Protocol

from agentflow.allocation._vote import answer_key
from agentflow.exceptions import ModelHTTPError, UserError
from agentflow.model import Message, ModelResponse, ModelSettings
from agentflow.slots import lend_slot

__all__ = [
    "ESTIMATORS",
    "Agreement",
    "Complete",
    "Confidence",
    "Constant",
    "DifficultyEstimator",
    "Estimate",
    "FastDraw",
    "Score",
    "Static",
    "Step",
    "estimator",
]

DEFAULT_DIFFICULTY = 1.0
"""What an estimator that could not estimate reports: think, since a wrong "easy" costs the
answer while a wrong "hard" costs only tokens. Always recorded with a note."""


class Complete(Protocol):
    """A model call charged to the node (limits checked, usage in the trace)."""

    def __call__(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Awaitable[ModelResponse]: ...


FastDraw = Callable[[ModelSettings], Awaitable[ModelResponse]]
"""Sends the node's own request in fast mode, with these settings (n, logprobs) on top."""


@dataclass(frozen=True, kw_only=True)
class Step:
    """What an estimator sees of one node."""

    problem: str
    """The question the run answers."""
    question: str
    """What this node is asked."""
    earlier: tuple[tuple[str, str], ...] = ()
    """The steps this node builds on, each (what it asked, what it answered)."""
    difficulty: float | None = None
    """The planner's own rating, if it wrote one."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    difficulty: float
    estimator: str
    answer: ModelResponse | None = None
    """A fast answer already drawn (agreement, confidence): the node's answer if it runs fast."""
    samples: int = 0
    """Fast samples of the node's own request the estimate drew."""
    note: str | None = None
    """A fallback taken (unparseable score, no logprobs, rejected `n`), for the trace."""


class DifficultyEstimator(ABC):
    name: str

    @abstractmethod
    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        """Rate `step`; `complete` for calls of its own, `fast` for the node's own request."""


class Constant(DifficultyEstimator):
    def __init__(self, name: str, value: float) -> None:
        self.name, self.value = name, value

    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        return Estimate(difficulty=self.value, estimator=self.name)


class Static(DifficultyEstimator):
    name = "static"

    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        if step.difficulty is None:
            note = "the planner wrote no difficulty on this node"
            return Estimate(difficulty=DEFAULT_DIFFICULTY, estimator=self.name, note=note)
        return Estimate(difficulty=min(1.0, max(0.0, step.difficulty)), estimator=self.name)


SCORE_SCHEMA = {
    "type": "object",
    "properties": {"difficulty": {"type": "number"}},
    "required": ["difficulty"],
    "additionalProperties": False,
}


class Score(DifficultyEstimator):
    """SCALE's rating call: 64 tokens, temperature 0, fast mode."""

    name = "score"
    settings = ModelSettings(temperature=0.0, max_tokens=64)

    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        messages = [{"role": "user", "content": _score_prompt(step)}]
        bad: list[str] = []
        for _ in range(2):  # one bounded retry, then the recorded default
            response = await complete(messages, self.settings, json_schema=SCORE_SCHEMA)
            value = parse_score(response.text)
            if value is not None:
                note = f"first rating unusable: {bad[0]!r}" if bad else None
                return Estimate(difficulty=value, estimator=self.name, note=note)
            bad.append(response.text[:80])
        note = f"no usable rating in 2 tries ({bad[-1]!r}): default {DEFAULT_DIFFICULTY}"
        return Estimate(difficulty=DEFAULT_DIFFICULTY, estimator=self.name, note=note)


def parse_score(text: str) -> float | None:
    """The rating in `{"difficulty": x}` or a bare number; None unless a finite 0 <= x <= 1."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("difficulty") if isinstance(data, dict) else data
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _score_prompt(step: Step) -> str:
    template = (resources.files("agentflow") / "prompts" / "difficulty_score.md").read_text(
        encoding="utf-8"
    )
    earlier = "\n".join(f"- {q[:300]} -> {a[:300]}" for q, a in step.earlier) or "(none)"
    values = {"problem": step.problem[:3000], "earlier": earlier, "step": step.question[:1000]}
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


class Agreement(DifficultyEstimator):
    """`k` fast samples at temperature 0.7, drawn as one `n=k` request (one shared prefill)."""

    name = "agreement"

    def __init__(self, samples: int = 3, temperature: float = 0.7) -> None:
        self.samples, self.temperature = max(2, samples), temperature

    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        settings = ModelSettings(n=self.samples, temperature=self.temperature, sample=0)
        note = None
        try:
            response = await fast(settings)
        except ModelHTTPError as exc:
            if exc.status_code != 400:
                raise
            note = f"server refused n={self.samples} (HTTP 400): drew the samples one by one"
            response = await _one_by_one(fast, replace(settings, n=1), self.samples)
        keys = [answer_key(c.text) for c in response.choices]
        counts = Counter(k for k in keys if k is not None)
        if not counts:
            note = "no fast sample had a parseable answer"
            return Estimate(difficulty=DEFAULT_DIFFICULTY, estimator=self.name, note=note)
        leader, votes = counts.most_common(1)[0]
        first = keys.index(leader)  # the leader's first sample answers for the node
        chosen = replace(response, choices=(response.choices[first],))
        difficulty = 1.0 - votes / len(keys)
        return Estimate(
            difficulty=difficulty, estimator=self.name, answer=chosen, samples=len(keys), note=note
        )


async def _one_by_one(fast: FastDraw, settings: ModelSettings, count: int) -> ModelResponse:
    """`count` single-sample requests at once, merged into one response; each in an executor
    slot of its own while the node lends its slot (`agentflow.slots`)."""

    async def one(slot: AbstractAsyncContextManager[None], index: int) -> ModelResponse:
        async with slot:  # each its own sample: its own seed when the run has one
            return await fast(replace(settings, sample=index))

    async with lend_slot() as slot:
        responses = await asyncio.gather(*(one(slot, i) for i in range(count)))
    usage = responses[0].usage
    for extra in responses[1:]:
        usage = usage + extra.usage
    choices = tuple(c for r in responses for c in r.choices)
    return replace(responses[0], choices=choices, usage=usage)


class Confidence(DifficultyEstimator):
    """One fast answer with logprobs: low mean token log-probability means a hard node."""

    name = "confidence"

    async def estimate(self, step: Step, complete: Complete, fast: FastDraw) -> Estimate:
        response = await fast(ModelSettings(logprobs=True))
        logprobs = response.choices[0].logprobs
        if not logprobs:
            note = "the server returned no logprobs"
            return Estimate(difficulty=DEFAULT_DIFFICULTY, estimator=self.name, note=note)
        difficulty = 1.0 - math.exp(sum(logprobs) / len(logprobs))
        return Estimate(difficulty=difficulty, estimator=self.name, answer=response, samples=1)


ESTIMATORS: dict[str, Callable[[], DifficultyEstimator]] = {
    "score": Score,
    "agreement": Agreement,
    "confidence": Confidence,
    "static": Static,
    "uniform-fast": lambda: Constant("uniform-fast", 0.0),
    "uniform-think": lambda: Constant("uniform-think", 1.0),
}
"""Estimators by their `--allocation` name."""


def estimator(name: str) -> DifficultyEstimator:
    if name not in ESTIMATORS:
        raise UserError(f"unknown allocation {name!r}; known: off, {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]()
