"""One item of an eval: its samples run through an agent, each scored, as one results row."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentflow import Agent, ExecutionError, Model, ModelSettings, PlanError, RunLimits, Trace
from agentflow.allocation import Allocator, allocator_from_settings
from agentflow.exceptions import DeadlineExceededError, ModelError
from agentflow.tool import Tool, ToolSource
from agentflow_evals.browsecomp import encrypt
from agentflow_evals.config import EvalConfig
from agentflow_evals.datasets import EvalItem
from agentflow_evals.failures import InfrastructureFailure, classify
from agentflow_evals.judge_cache import JudgeCache
from agentflow_evals.scoring import Judge, SampleScore, format_question, majority, score_sample

__all__ = ["ToolCache", "make_judge", "run_item", "score_fields"]


def make_judge(config: EvalConfig, model: Model, judge_model: Model | None) -> Judge:
    """The judge of judged tasks: `judge_model` (default: the model under test), its verdicts
    cached where the config says."""
    cache = JudgeCache(config.judge_cache) if config.judge_cache else None
    return Judge(judge_model or model, cache)


async def run_item(
    item: EvalItem,
    config: EvalConfig,
    model: Model,
    judge: Judge | None,
    tools: list[Tool],
) -> dict[str, Any]:
    """All samples of one item, scored: the row `results.jsonl` gets."""
    started = time.perf_counter()
    question = format_question(item)
    try:  # one sample failing on the server cancels its siblings: no orphaned requests
        async with asyncio.TaskGroup() as group:
            runs = [
                group.create_task(_run_sample(item, question, sample_model, config, tools, judge))
                for sample_model in (_sample_model(model, config, i) for i in range(config.samples))
            ]
    except* InfrastructureFailure as failed:
        raise failed.exceptions[0] from None
    samples = [run.result() for run in runs]
    correct = [s["correct"] for s in samples]
    # Voting reads the samples as scored: redaction below removes what it compares.
    maj_correct = await majority(item, samples) if config.samples > 1 else None
    sensitive = bool(item.meta.get("sensitive"))
    if sensitive:  # BrowseComp: no plaintext question, gold or (possibly equal) answer on disk
        samples = [_redacted(s, str(item.meta.get("canary", ""))) for s in samples]
    return {
        "id": item.id,
        "question": None if sensitive else item.question,
        "answers": None if sensitive else list(item.answers),
        "task": item.task,
        "samples": samples,
        "correct": sum(correct) / len(correct),
        "maj_correct": maj_correct,
        "seconds": round(time.perf_counter() - started, 3),
    }


async def _run_sample(
    item: EvalItem,
    question: str,
    model: Model,
    config: EvalConfig,
    tools: list[Tool],
    judge: Judge | None,
) -> dict[str, Any]:
    agent = Agent(
        model=model,
        planner=config.planner,
        tools=[*tools, *_mcp_servers(config)],
        limits=RunLimits(max_model_calls=config.max_model_calls, deadline=config.deadline),
        node_timeout=config.node_timeout,
        allocation=_allocation(config),
    )
    started = time.perf_counter()
    trace: Trace | None = None
    answer, reply, failure, deadline_hit = "", "", None, False
    try:
        result = await agent.run(question)
        answer, reply, trace = result.answer, result.reply, result.trace
        deadline_hit = result.deadline_hit
    except (ExecutionError, PlanError) as exc:
        deadline_hit = isinstance(exc, DeadlineExceededError)
        failure = classify(exc)
        if failure.infrastructure:  # no answer at all: never recorded as a wrong one
            raise InfrastructureFailure(failure, item.id) from exc
        partial = exc.trace if isinstance(exc, ExecutionError) else None
        trace = partial if isinstance(partial, Trace) else None
    seconds = time.perf_counter() - started
    score = SampleScore(correct=False)  # the system under test failed: wrong, with its error
    if failure is None:
        try:
            score = await score_sample(item, answer=answer, reply=reply, judge=judge)
        except ModelError as exc:  # the judge's server
            raise InfrastructureFailure(classify(exc), item.id) from exc
    return (
        {"answer": answer, "reply": reply}
        | score_fields(score)
        | _cost_fields(trace, seconds)
        | {
            "error": None if failure is None else failure.message,
            "error_kind": None if failure is None else failure.kind,
            "deadline_hit": deadline_hit,
        }
    )


def _allocation(config: EvalConfig) -> Allocator | str | None:
    if config.allocation is None:
        return None  # the planner's own default
    return allocator_from_settings(dict(config.allocation)) or "off"


def score_fields(score: SampleScore) -> dict[str, Any]:
    return {
        "correct": score.correct,
        "em": score.em,
        "f1": score.f1,
        "loose": score.loose,
        "confidence": score.confidence,
        "confidence_source": score.confidence_source,
        "extracted": score.extracted,
        "judge_parsed_with": score.judge_parsed_with,
    }


def _cost_fields(trace: Trace | None, seconds: float) -> dict[str, Any]:
    usage = trace.usage if trace is not None else None
    return {
        "seconds": round(seconds, 3),
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "model_calls": usage.calls if usage else 0,
        "tool_calls": sum(1 for n in trace.nodes.values() if n.tool) if trace else 0,
    } | _request_fields(trace)


SLOW_REQUEST_S = 30.0


def _request_fields(trace: Trace | None) -> dict[str, Any]:
    """Why a sample was slow, from its requests' timings: the slowest request (its node, its
    queue wait, prefill and decode tokens), the total wait for the endpoints' slots, and how
    many requests took over 30 s. Optional fields: rows written before them still load."""
    timings = trace.requests if trace is not None else []
    if not timings:
        return {"slowest_request": None, "queue_wait_s": 0.0, "requests_over_30s": 0}
    slowest = max(timings, key=lambda t: t.total_s)
    return {
        "slowest_request": slowest.as_dict(),
        "queue_wait_s": round(sum(t.queued_s for t in timings), 3),
        "requests_over_30s": sum(1 for t in timings if t.total_s > SLOW_REQUEST_S),
    }


def _redacted(sample: dict[str, Any], canary: str) -> dict[str, Any]:
    """A BrowseComp sample for disk: the answer only as a hash, the reply encrypted with the
    item's own canary (the dataset's scheme), so `eval regrade` can judge it again. The
    `extracted` vote key is already a hash."""
    answer = str(sample["answer"])
    digest = hashlib.sha256(answer.encode()).hexdigest()[:16]
    encrypted = encrypt(str(sample["reply"]), canary) if canary else None
    return {
        **sample,
        "answer": None,
        "answer_sha256": digest,
        "reply": None,
        "reply_encrypted": encrypted,
    }


def _sample_model(model: Model, config: EvalConfig, index: int) -> Model:
    temperature = config.temperature
    if temperature is None and config.samples > 1:
        temperature = 0.7  # k samples at temperature 0 would be k copies of one answer
    overrides = ModelSettings(
        temperature=temperature,
        max_tokens=config.max_tokens,
        seed=None if config.seed is None else config.seed + index,
    )
    return model.with_overrides(overrides) if overrides != ModelSettings() else model


def _mcp_servers(config: EvalConfig) -> list[ToolSource]:
    """The `--mcp` servers: each sample's run opens its own session with each."""
    if not config.mcp:
        return []
    from agentflow_tools.cli import mcp_servers

    return mcp_servers(config.mcp, config.mcp_timeout)


class ToolCache:
    """One search index per corpus set, opened once and shared by every item that needs it."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, ...], list[Tool]] = {}

    def for_item(self, item: EvalItem, override: Sequence[str] = ()) -> list[Tool]:
        corpus = tuple(override or item.meta.get("corpus") or ())
        if not corpus:
            return []
        if corpus not in self._tools:
            from agentflow_tools.search import LocalIndex, make_search_tool

            self._tools[corpus] = [make_search_tool(LocalIndex.open([Path(p) for p in corpus]))]
        return self._tools[corpus]
