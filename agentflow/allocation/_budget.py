"""`Budget`: how much compute one node gets, System 1 (fast) or System 2 (think)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["FAST", "STRATEGIES", "THINK", "Budget", "Draw", "Mode", "Strategy", "VoteName"]

Mode = Literal["fast", "think"]
VoteName = Literal["none", "esc", "adaptive"]
Draw = Literal["parallel", "n"]
Strategy = Literal["chain", "vote", "threads"]
STRATEGIES: tuple[Strategy, ...] = ("chain", "vote", "threads")
"""How System 2 is spent: one long pass, parallel samples under a vote, or threads forked
from a shared prefix and joined (ThreadWeaver)."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What one `llm` node may spend. Frozen: the trace keeps the budget a node ran with."""

    mode: Mode
    max_tokens: int
    """Tokens for the answer itself, thinking not included."""
    thinking_tokens: int | None = None
    """Cap on thinking tokens (think mode of a thinking model); None for no thinking."""
    samples: int = 1
    """Most samples the vote may draw; 1 means one plain call."""
    vote: VoteName = "none"
    window: int = 3
    """ESC's window, and how many samples each wave draws for Adaptive-Consistency."""
    draw: Draw = "parallel"
    """`parallel`: one request per sample, cancelled when the vote settles; `n`: one request of
    `n=window` per wave (one shared prefill, judged after the wave)."""
    temperature: float | None = None
    """None keeps the planner's own; votes need a temperature above 0 to see disagreement."""
    priority: int | None = None
    """vLLM request priority (lower is earlier). None by default: vLLM refuses it unless the
    server runs `--scheduling-policy priority` (`Allocator(priorities=True)` sets it)."""
    strategy: Strategy | None = None
    """None: `vote` when the budget has a vote of several samples, else `chain`."""
    threads: int = 3
    """Most threads the `threads` strategy runs: a longer outline is cut to this many."""

    @property
    def how(self) -> Strategy:
        """The strategy this budget is spent by."""
        if self.strategy is not None:
            return self.strategy
        return "vote" if self.vote != "none" and self.samples > 1 else "chain"

    def with_strategy(
        self, strategy: Strategy, *, samples: int = 4, threads: int | None = None
    ) -> Budget:
        """This budget spent by `strategy`; `vote` without a vote yet gets ESC over up to
        `samples` samples."""
        budget = self
        if strategy == "vote" and (self.vote == "none" or self.samples <= 1):
            budget = self.with_vote("esc", max(2, samples))
        return _replace(budget, strategy=strategy, threads=threads or self.threads)

    def with_vote(self, vote: VoteName, samples: int, draw: Draw = "parallel") -> Budget:
        """This budget drawing up to `samples` samples under `vote` (temperature 0.7 if unset,
        since k samples at temperature 0 are k copies of one answer)."""
        if vote == "none" or samples <= 1:
            return self
        temperature = self.temperature if self.temperature else 0.7
        return _replace(self, vote=vote, samples=samples, temperature=temperature, draw=draw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _replace(budget: Budget, **changes: Any) -> Budget:
    return Budget(**{**asdict(budget), **changes})


FAST = Budget(mode="fast", max_tokens=160, temperature=0.0)
"""System 1: no thinking, a short answer, one sample."""
THINK = Budget(mode="think", max_tokens=640, thinking_tokens=4096)
"""System 2: thinking on (a step-by-step prompt for models without thinking), more tokens."""
