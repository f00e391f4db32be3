"""`/metrics` in Prometheus text format: runs in flight and queued, finished runs and failures
per agent, HTTP responses by status, tokens, and latency histograms (runs, queue wait, first
answer piece, model calls). One registry per app, so two apps in one process (tests, a
benchmark) do not count into each other.

Every run series carries the agent (the model id clients ask for), so one slow or failing
agent of a `--config` file shows apart from the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentflow.model import RequestTiming, Usage

__all__ = ["ServerMetrics"]

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CALL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self, in_flight: Callable[[], float], queued: Callable[[], float]) -> None:
        self.registry = registry = CollectorRegistry()
        Gauge("agentflow_runs_in_flight", "Runs holding a slot", registry=registry).set_function(
            in_flight
        )
        Gauge("agentflow_runs_queued", "Runs waiting for a slot", registry=registry).set_function(
            queued
        )
        self.runs = Counter(
            "agentflow_runs", "Finished runs by outcome", ["agent", "status"], registry=registry
        )
        self.failures = Counter(
            "agentflow_run_failures", "Failed runs by cause (model_timeout, model_unreachable, "
            "limit...)", ["agent", "kind"], registry=registry,
        )  # fmt: skip
        self.rejected = Counter(
            "agentflow_rejected_requests", "Requests refused before a run", ["status"],
            registry=registry,
        )  # fmt: skip
        self.responses = Counter(
            "agentflow_http_responses", "HTTP responses by route and status",
            ["method", "route", "status"], registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "agentflow_tokens", "Model tokens of finished runs", ["agent", "kind"],
            registry=registry,
        )  # fmt: skip
        self.model_retries = Counter(
            "agentflow_model_call_retries", "Model requests that failed and were sent again "
            "(a run's failed calls are in agentflow_run_failures)", ["agent"], registry=registry,
        )  # fmt: skip
        self._histograms(registry)

    def _histograms(self, registry: CollectorRegistry) -> None:
        def histogram(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            return Histogram(name, doc, ["agent"], buckets=tuple(buckets), registry=registry)

        self.run_seconds = histogram(
            "agentflow_run_seconds", "Run duration, queueing included", LATENCY_BUCKETS
        )
        self.queue_seconds = histogram(
            "agentflow_queue_seconds", "Waiting for a slot before the run starts", LATENCY_BUCKETS
        )
        self.first_content_seconds = histogram(
            "agentflow_first_content_seconds", "From the request to the answer's first piece",
            LATENCY_BUCKETS,
        )  # fmt: skip
        self.model_call_seconds = histogram(
            "agentflow_model_call_seconds", "One model request, queueing and retries included "
            "(calls that report their timing)", CALL_BUCKETS,
        )  # fmt: skip

    def finished(self, agent: str, status: str, seconds: float, usage: Usage) -> None:
        self.runs.labels(agent=agent, status=status).inc()
        self.run_seconds.labels(agent=agent).observe(seconds)
        self.tokens.labels(agent=agent, kind="prompt").inc(usage.prompt_tokens)
        self.tokens.labels(agent=agent, kind="completion").inc(usage.completion_tokens)

    def model_calls(self, agent: str, timings: Iterable[RequestTiming]) -> None:
        histogram = self.model_call_seconds.labels(agent=agent)
        retries = self.model_retries.labels(agent=agent)
        for timing in timings:
            histogram.observe(timing.total_s)
            retries.inc(timing.attempts - 1)

    def text(self) -> bytes:
        return generate_latest(self.registry)
