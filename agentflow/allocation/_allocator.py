"""`Allocator`: a node's difficulty becomes its `Budget`; `NodeAllocation` spends it.

The allocator is shared by every run of an agent. For each `llm` node the agent makes a
`NodeAllocation`, which the run context consults on the node's first model call: it estimates
the difficulty there (so estimators that draw fast answers draw the node's own request, and a
fast answer they vouch for is the node's answer at no further cost), picks fast or think by the
threshold tau (think iff difficulty > tau, as SCALE), and sends the request through the model
family's thinking adapter, with an early-stopping vote when the think budget has samples. What
was decided and spent goes into the node's trace record (`NodeRecord.allocation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentflow.allocation._adapters import ThinkingAdapter, adapter_for
from agentflow.allocation._budget import FAST, THINK, Budget, Draw, Strategy, VoteName
from agentflow.allocation._estimators import (
    Complete,
    DifficultyEstimator,
    Estimate,
    Step,
    estimator,
)
from agentflow.allocation._forcing import TextModel, force_budget, no_raw_text_route
from agentflow.allocation._sampling import draw_and_vote
from agentflow.allocation._streamed import Abandoned, stream_sample
from agentflow.allocation._threads import weave
from agentflow.allocation._vote import vote_rule
from agentflow.exceptions import ModelHTTPError, UserError
from agentflow.model import Message, Model, ModelResponse, ModelSettings
from agentflow.trace import Trace

__all__ = ["DEFAULT_TAU", "Allocator", "NodeAllocation"]

DEFAULT_TAU = 0.5
"""SCALE's default threshold; calibrate it (`agentflow allocate calibrate`)."""


@dataclass(frozen=True, kw_only=True)
class Allocator:
    """Turns a node's difficulty into a `Budget` and decides how System 2 is spent."""

    estimator: DifficultyEstimator
    tau: float = DEFAULT_TAU
    fast: Budget = FAST
    think: Budget = THINK
    adapter: str | None = None
    """A thinking adapter by name (`ADAPTERS`); None chooses by the model's name."""
    priorities: bool = False
    """Send vLLM request priorities (fast 0, think 1); needs `--scheduling-policy priority`."""
    strategy_bands: tuple[tuple[float, Strategy], ...] = ()
    """(lower bound, strategy), ascending: a think node whose difficulty is above a bound is
    spent by that band's strategy, unless its budget names one (`--strategy`)."""

    @classmethod
    def named(
        cls,
        name: str,
        *,
        tau: float = DEFAULT_TAU,
        vote: VoteName = "none",
        samples: int = 1,
        draw: Draw = "parallel",
        adapter: str | None = None,
    ) -> Allocator:
        """The allocator `--allocation NAME` means, with an early-stopping vote of up to
        `samples` samples in think mode when `vote` is not "none"."""
        if not 0.0 <= tau <= 1.0:
            raise UserError(f"tau must be between 0 and 1, got {tau}")
        think = THINK.with_vote(vote, samples, draw)
        return cls(estimator=estimator(name), tau=tau, think=think, adapter=adapter)

    def budget_for(self, difficulty: float) -> Budget:
        budget = self.think if difficulty > self.tau else self.fast
        if budget.mode == "think" and budget.strategy is None:
            bands = [strategy for above, strategy in self.strategy_bands if difficulty > above]
            budget = budget.with_strategy(bands[-1]) if bands else budget
        if self.priorities:
            budget = replace(budget, priority=0 if budget.mode == "fast" else 1)
        return budget

    def for_node(self, node_id: str, step: Step, trace: Trace, model: Model) -> NodeAllocation:
        return NodeAllocation(
            node_id=node_id,
            step=step,
            allocator=self,
            adapter=adapter_for(model.name, self.adapter),
            trace=trace,
            model=model,
        )


class NodeAllocation:
    """One node's allocation: decided on its first model call, applied to every call."""

    def __init__(
        self,
        *,
        node_id: str,
        step: Step,
        allocator: Allocator,
        adapter: ThinkingAdapter,
        trace: Trace,
        model: Model,
    ) -> None:
        self.node_id, self.step, self.allocator = node_id, step, allocator
        self.adapter, self.trace, self.model = adapter, trace, model
        self.budget: Budget | None = None
        self.strategy: Strategy | None = None
        """This node's own choice of how System 2 is spent (a planner may set it before the
        node's first call); None keeps the budget's."""
        self.record: dict[str, Any] = {"adapter": adapter.name, "notes": [], "tokens": {}}
        self._no_thinking_budget = False
        self._no_raw_text = False

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        complete: Complete,
        *,
        text: TextModel | None = None,
    ) -> ModelResponse:
        """The node's call `messages` under its budget (estimating it first if not yet done).
        `text`: raw-text continuation charged to the node, for the `threads` strategy (without
        it, threads run as one chain)."""
        if self.budget is None:
            estimate = await self._estimate(messages, settings, complete)
            self.budget = self.allocator.budget_for(estimate.difficulty)
            self._record_decision(estimate, self.budget)
            if self.budget.mode == "fast" and estimate.answer is not None:
                self._record_run(drawn=0, stopped_early=False)
                return estimate.answer  # the estimator's fast answer is the node's answer
        return await self._run(messages, settings, self.budget, complete, text)

    async def _estimate(
        self, messages: Sequence[Message], settings: ModelSettings, complete: Complete
    ) -> Estimate:
        async def estimating(
            messages: Sequence[Message],
            settings: ModelSettings,
            *,
            json_schema: Mapping[str, Any] | None = None,
        ) -> ModelResponse:
            quiet = self.adapter.quiet(settings)  # a rating is no place for thinking
            response = await complete(messages, quiet, json_schema=json_schema)
            return self._count("estimate", response)

        fast_budget = self.allocator.fast

        async def fast(extra: ModelSettings) -> ModelResponse:
            return await self._send(messages, settings, fast_budget, complete, extra)

        return await self.allocator.estimator.estimate(self.step, estimating, fast)

    async def _run(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        budget: Budget,
        complete: Complete,
        text: TextModel | None,
    ) -> ModelResponse:
        """The call spent by the strategy: the node's own choice (System 2 only), else the
        budget's. `critical_path_tokens` in the record: the longest chain of dependent tokens."""
        strategy = self.strategy if self.strategy and budget.mode == "think" else budget.how
        if strategy != budget.how:
            budget = budget.with_strategy(strategy)
        self.record["strategy"] = strategy
        if strategy == "threads":
            response = await self._threads(messages, settings, budget, complete, text)
            if response is not None:
                return response
        rule = vote_rule(budget.vote, budget.window) if strategy == "vote" else None
        if rule is None or budget.samples <= 1:
            response = await self._send(messages, settings, budget, complete, ModelSettings())
            self._record_run(drawn=len(response.choices), stopped_early=False)
            self._add_critical(response.usage.completion_tokens)
            return response
        return await self._vote(messages, settings, budget, complete)

    async def _vote(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        budget: Budget,
        complete: Complete,
    ) -> ModelResponse:
        """Samples under the budget's early-stopping vote. Critical path: the longest sample
        of each window's worth of samples, summed (exact when one window holds them all)."""
        rule = vote_rule(budget.vote, budget.window)
        assert rule is not None  # the caller checked
        sampled: list[int] = []
        abandoned = Abandoned()

        async def send(index: int, n: int) -> ModelResponse:
            extra = ModelSettings(n=n, sample=index)  # its seed: the run's, per sample
            if n == 1 and not self._no_thinking_budget:  # one a request: may be cancelled
                response = await self._stream(
                    messages, settings, budget, complete, extra, abandoned
                )
            else:
                response = await self._send(messages, settings, budget, complete, extra)
            sampled.extend([response.usage.completion_tokens // max(1, n)] * n)
            return response

        outcome = await draw_and_vote(send, budget, rule)
        if abandoned.samples:  # cancelled when the vote settled: decoded all the same
            self.trace.add_usage(abandoned.usage(), self.node_id)
            self._add_tokens(budget.mode, abandoned.pieces)
            self.record["estimated_tokens"] = abandoned.as_record()
        self.record["notes"].extend(outcome.notes)
        self.record["votes"] = outcome.counts
        self._record_run(drawn=outcome.drawn, stopped_early=outcome.stopped_early)
        window = max(1, budget.window)
        self._add_critical(
            sum(max(sampled[i : i + window]) for i in range(0, len(sampled), window))
        )
        return outcome.response

    async def _threads(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        budget: Budget,
        complete: Complete,
        text: TextModel | None,
    ) -> ModelResponse | None:
        """The `threads` strategy (`weave`); None when the outline named no thread: the
        caller then runs one chain, noted. A thinking model writes its threads with thinking
        off (the threads are the thinking), so the raw prompt is the one its JSON outline call
        was sent with."""
        mode = FAST if self.adapter.can_think else budget
        msgs, request = self.adapter.apply(messages, settings, mode)
        thinking = (budget.thinking_tokens or 0) if self.adapter.can_think else 0
        woven = await weave(
            msgs,
            request,
            total_tokens=budget.max_tokens + thinking,
            max_threads=budget.threads,
            complete=complete,
            text=text,
            trace=self.trace,
            node_id=self.node_id,
        )
        self.record["threads"] = woven.as_record()
        if woven.transport == "chat":
            self._note(
                "the model cannot continue raw text: the threads ran as chat turns after the "
                "outline (no byte-identical raw prefix)"
            )
        self._add_tokens(budget.mode, woven.outline_tokens)
        self._add_critical(woven.outline_tokens)
        if woven.response is None:
            self._note("the outline named no thread: the node ran one chain")
            return None
        self._add_tokens(budget.mode, woven.response.usage.completion_tokens - woven.outline_tokens)
        self._add_critical(woven.critical_path_tokens - woven.outline_tokens)
        self._record_run(drawn=1, stopped_early=False)
        return woven.response

    async def _send(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        budget: Budget,
        complete: Complete,
        extra: ModelSettings,
    ) -> ModelResponse:
        """One request in `budget`'s mode. A server that refuses `thinking_token_budget` is
        not sent it again for this node (`_without_thinking_budget`)."""
        msgs, request = self.adapter.apply(messages, settings, budget)
        request = request.merged(extra)
        if self._no_thinking_budget and request.thinking_token_budget is not None:
            response = await self._without_thinking_budget(msgs, request, complete)
        else:
            try:
                response = await complete(msgs, request)
            except ModelHTTPError as exc:
                refused = exc.status_code == 400 and "thinking_token_budget" in (exc.body or "")
                if not refused or request.thinking_token_budget is None:
                    raise
                self._no_thinking_budget = True
                response = await self._without_thinking_budget(msgs, request, complete)
        self._check_switch(response, budget)
        return self._count(budget.mode, response)

    async def _stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings,
        budget: Budget,
        complete: Complete,
        extra: ModelSettings,
        abandoned: Abandoned,
    ) -> ModelResponse:
        """One sample of a vote, streamed (`stream_sample`) and charged to the node as `_send`
        charges its calls; the run's caps are checked before the node's calls only, as for
        budget forcing. A refused `thinking_token_budget` goes the way `_send` handles it."""
        msgs, request = self.adapter.apply(messages, settings, budget)
        try:
            response = await stream_sample(self.model, msgs, request.merged(extra), abandoned)
        except ModelHTTPError as exc:
            if exc.status_code != 400 or request.thinking_token_budget is None:
                raise
            return await self._send(messages, settings, budget, complete, extra)
        self.trace.charge(response, self.node_id)
        self._check_switch(response, budget)
        return self._count(budget.mode, response)

    async def _without_thinking_budget(
        self, messages: list[Message], request: ModelSettings, complete: Complete
    ) -> ModelResponse:
        """Cap the thinking by budget forcing when the model can continue raw text and one
        sample is wanted (its two calls are charged to the node; the run's call cap is checked
        only before the node's calls through the context); else send the request without the
        field, the cap then holding through `max_tokens` only."""
        if isinstance(self.model, TextModel) and request.n == 1 and not self._no_raw_text:
            answer_tokens = (request.max_tokens or 0) - (request.thinking_token_budget or 0)
            cap = Budget(
                mode="think",
                max_tokens=max(1, answer_tokens),
                thinking_tokens=request.thinking_token_budget,
            )
            try:
                response = await force_budget(self.model, messages, request, cap)
            except ModelHTTPError as exc:
                if not no_raw_text_route(exc):
                    raise
                self._no_raw_text = True  # nor is it asked again for this node
                self._note("server has no /tokenize: budget forcing is not possible there")
            else:
                self._note(
                    "server refused thinking_token_budget: thinking capped by budget forcing "
                    "through /v1/completions"
                )
                self.trace.add_usage(response.usage, self.node_id)
                return response
        self._note("server refused thinking_token_budget: thinking capped by max_tokens only")
        return await complete(messages, replace(request, thinking_token_budget=None))

    def _note(self, note: str) -> None:
        if note not in self.record["notes"]:
            self.record["notes"].append(note)

    def _check_switch(self, response: ModelResponse, budget: Budget) -> None:
        """Note a model that ignores the thinking switch (it is not an error: the answer is
        still read from the content, never from the thinking)."""
        if not self.adapter.can_think or self.adapter.name == "always-thinking":
            return
        thought = any(c.reasoning for c in response.choices)
        note = None
        if budget.mode == "fast" and thought:
            note = "the model thought in fast mode: it ignores the thinking switch"
        elif budget.mode == "think" and not thought:
            note = "no thinking came back in think mode: the switch may be ignored"
        if note:
            self._note(note)

    def _count(self, purpose: str, response: ModelResponse) -> ModelResponse:
        self._add_tokens(purpose, response.usage.completion_tokens)
        return response

    def _add_tokens(self, purpose: str, count: int) -> None:
        tokens: dict[str, int] = self.record["tokens"]
        tokens[purpose] = tokens.get(purpose, 0) + count

    def _add_critical(self, count: int) -> None:
        self.record["critical_path_tokens"] = self.record.get("critical_path_tokens", 0) + count

    def _record_decision(self, estimate: Estimate, budget: Budget) -> None:
        if estimate.note:
            self.record["notes"].append(estimate.note)
        self.record.update(
            estimate_samples=estimate.samples,
            difficulty=round(estimate.difficulty, 4),
            estimator=estimate.estimator,
            tau=self.allocator.tau,
            mode=budget.mode,
            budget=budget.as_dict(),
        )
        node = self.trace.nodes.get(self.node_id)
        if node is not None:
            node.allocation = self.record
        self.trace.emit(
            "allocated",
            self.node_id,
            mode=budget.mode,
            difficulty=self.record["difficulty"],
            estimator=estimate.estimator,
        )

    def _record_run(self, *, drawn: int, stopped_early: bool) -> None:
        """`samples`: every sample of the node's own request, the estimator's fast ones too."""
        first = self.record.get("samples", self.record.get("estimate_samples", 0))
        self.record["samples"] = first + drawn
        self.record["stopped_early"] = self.record.get("stopped_early", False) or stopped_early
