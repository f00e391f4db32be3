"""`/metrics` in Prometheus text format: runs in flight and queued, finished and failed runs,
tokens, and latency histograms. One registry per app, so two apps in one process (tests, a
benchmark) do not count into each other."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentflow.model import Usage

__all__ = ["ServerMetrics"]

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServerMetrics:
    def __init__(self, in_flight: Callable[[], float], queued: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        Gauge("agentflow_runs_in_flight", "Runs holding a slot", registry=registry).set_function(
            in_flight
        )
        Gauge("agentflow_runs_queued", "Runs waiting for a slot", registry=registry).set_function(
            queued
        )
        self.runs = Counter(
            "agentflow_runs", "Finished runs by outcome", ["status"], registry=registry
        )
        self.rejected = Counter(
            "agentflow_rejected_requests", "Requests refused before a run", ["status"],
            registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "agentflow_tokens", "Model tokens of finished runs", ["kind"], registry=registry
        )
        self.run_seconds = Histogram(
            "agentflow_run_seconds", "Run duration, queueing included", buckets=LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.first_content_seconds = Histogram(
            "agentflow_first_content_seconds", "From the request to the answer's first piece",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip

    def finished(self, status: str, seconds: float, usage: Usage) -> None:
        self.runs.labels(status=status).inc()
        self.run_seconds.observe(seconds)
        self.tokens.labels(kind="prompt").inc(usage.prompt_tokens)
        self.tokens.labels(kind="completion").inc(usage.completion_tokens)

    def text(self) -> bytes:
        return generate_latest(self.registry)
