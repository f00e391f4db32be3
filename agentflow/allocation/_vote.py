"""Early-stopping votes over samples of one node, and the answer keys they compare.

ESC (Li et al., 2024) draws samples in windows of `w` and stops after the first window whose `w`
answers all agree. Adaptive-Consistency (Aggarwal et al., 2023) stops once the leading answer is
95% likely to stay ahead of the runner-up: with `a` votes for the leader and `b` for the
runner-up, the leader's share of the two under a uniform prior is Beta(a + 1, b + 1), and the
rule stops when P(share > 1/2) >= 0.95. For integer parameters that tail is a binomial sum
(`beta_tail_above_half`), so the rule needs no special functions and is exact.
"""

from __future__ import annotations

import math
import re
import string
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence

from agentflow.answers import BOX_START, extract_answer, last_boxed, number_text

__all__ = [
    "AdaptiveConsistency",
    "EarlyStoppingSelfConsistency",
    "VoteRule",
    "answer_key",
    "beta_tail_above_half",
    "last_boxed",
    "vote_rule",
]


class VoteRule(ABC):
    """Decides, after each answer arrives, whether the vote is settled."""

    @abstractmethod
    def settled(self, keys: Sequence[str | None]) -> bool:
        """`keys`: every answer so far in arrival order (None: did not parse)."""


class EarlyStoppingSelfConsistency(VoteRule):
    """ESC: stop when a complete window of `window` samples agrees on one parsed answer."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)

    def settled(self, keys: Sequence[str | None]) -> bool:
        if not keys or len(keys) % self.window:
            return False  # windows are judged whole
        last = keys[-self.window :]
        return last[0] is not None and all(k == last[0] for k in last)


class AdaptiveConsistency(VoteRule):
    """Stop once the leader is `confidence` likely to beat the runner-up (Beta posterior)."""

    def __init__(self, confidence: float = 0.95) -> None:
        self.confidence = confidence

    def settled(self, keys: Sequence[str | None]) -> bool:
        counts = Counter(k for k in keys if k is not None).most_common(2)
        if not counts:
            return False
        leader = counts[0][1]
        runner_up = counts[1][1] if len(counts) > 1 else 0
        return beta_tail_above_half(leader + 1, runner_up + 1) >= self.confidence


def beta_tail_above_half(alpha: int, beta: int) -> float:
    """P(X > 1/2) for X ~ Beta(alpha, beta), integer parameters: P(Binomial(a+b-1, 1/2) < a)."""
    n = alpha + beta - 1
    return float(sum(math.comb(n, j) for j in range(alpha)) / 2**n)


def vote_rule(name: str, window: int) -> VoteRule | None:
    """The rule a budget names; None for "none"."""
    if name == "esc":
        return EarlyStoppingSelfConsistency(window)
    if name == "adaptive":
        return AdaptiveConsistency()
    return None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_key(text: str) -> str | None:
    """What two samples must share to count as one answer: the last boxed expression, else the
    `Answer:` line (else the last line), SQuAD-normalised, numbers in one form ("33.0" is "33").
    None when nothing usable is left, or when the last box was cut off (no answer yet)."""
    if BOX_START.search(text):
        raw = last_boxed(text)
        if raw is None:
            return None
    else:
        raw = extract_answer(text)
    key = _normalise(raw)
    return key or None


def _normalise(text: str) -> str:
    text = text.replace("$", "").replace("\\!", "").replace(",", "").lower()
    if _NUMBER.fullmatch(text.strip()):
        value = float(text)
        return number_text(value)
    keep_math = set("+-*/^=()[]{}\\.")
    text = "".join(c for c in text if c not in string.punctuation or c in keep_math)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split()).rstrip(".")
