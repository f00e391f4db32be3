"""vLLM's own counters (its Prometheus `/metrics`), read around a run to say where time went.

`snapshot(base_url)` reads the counters once, with the server's configuration (how many tokens
its KV cache holds); `ServerCounters.since(before)` is what one run added: requests, prompt and
generated tokens, prefix-cache hit rate, and the server's mean queue wait, prefill, decode and
time to first token per request. Servers that are not vLLM, or that do not answer, give `None`:
the counters explain a run, they never stop one.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx2

__all__ = ["ServerCounters", "parse", "snapshot"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_TIMES = ("queue_time", "prefill_time", "decode_time", "time_to_first_token", "e2e_latency")
_TIME_METRIC = {
    "queue_time": "vllm:request_queue_time_seconds",
    "prefill_time": "vllm:request_prefill_time_seconds",
    "decode_time": "vllm:request_decode_time_seconds",
    "time_to_first_token": "vllm:time_to_first_token_seconds",
    "e2e_latency": "vllm:e2e_request_latency_seconds",
}
SLOW_REQUEST_SECONDS = 30.0
"""Requests slower than this end to end are counted (BENCHMARKS.md's soak figure)."""


@dataclass(frozen=True, kw_only=True)
class ServerCounters:
    """Cumulative counters of one vLLM server at one moment, summed over its label sets."""

    totals: dict[str, float]
    """Counter and histogram `_sum` / `_count` values by metric name."""
    buckets: dict[str, dict[float, float]]
    """Histogram buckets: metric name -> upper bound -> cumulative count."""
    info: dict[str, dict[str, str]]
    """The labels of each `*_info` gauge: the server's configuration."""

    @property
    def kv_cache_tokens(self) -> int | None:
        """Tokens the server's KV cache holds (vLLM's `cache_config_info`), None if unknown."""
        try:
            return int(self.info["vllm:cache_config_info"]["kv_cache_size_tokens"])
        except (KeyError, ValueError):
            return None

    def since(self, before: ServerCounters) -> dict[str, Any]:
        """What happened on the server between `before` and this snapshot."""

        def delta(name: str) -> float:
            return self.totals.get(name, 0.0) - before.totals.get(name, 0.0)

        requests = delta("vllm:e2e_request_latency_seconds_count")
        queries = delta("vllm:prefix_cache_queries_total")
        hits = delta("vllm:prefix_cache_hits_total")
        report: dict[str, Any] = {
            "requests": int(requests),
            "prompt_tokens": int(delta("vllm:prompt_tokens_total")),
            "generated_tokens": int(delta("vllm:generation_tokens_total")),
            "preemptions": int(delta("vllm:num_preemptions_total")),
            "prefix_cache_queried_tokens": int(queries),
            "prefix_cache_hit_tokens": int(hits),
            "prefix_cache_hit_rate": round(hits / queries, 4) if queries else None,
        }
        for short in _TIMES:
            name = _TIME_METRIC[short]
            count = delta(f"{name}_count")
            report[f"mean_{short}_s"] = round(delta(f"{name}_sum") / count, 3) if count else None
        report[f"requests_over_{SLOW_REQUEST_SECONDS:g}_s"] = self._count_above(
            before, "vllm:e2e_request_latency_seconds", SLOW_REQUEST_SECONDS
        )
        report["e2e_latency_histogram"] = self._histogram(
            before, "vllm:e2e_request_latency_seconds"
        )
        return report

    def _histogram(self, before: ServerCounters, name: str) -> dict[str, int]:
        """Requests per latency band of the server's histogram: `{"<=1": 3, ..., ">60": 1}`."""
        now, then = self.buckets.get(name, {}), before.buckets.get(name, {})
        bands: dict[str, int] = {}
        below, previous = 0.0, 0.0
        for bound in sorted(now):
            cumulative = now[bound] - then.get(bound, 0.0)
            label = f">{previous:g}" if bound == math.inf else f"<={bound:g}"
            bands[label] = int(cumulative - below)
            below, previous = cumulative, bound
        return bands

    def _count_above(self, before: ServerCounters, name: str, bound: float) -> int | None:
        """Requests above `bound` by the histogram: all minus those in the bucket `le=bound`
        (None when the histogram has no bucket at exactly that bound)."""
        now, then = self.buckets.get(name, {}), before.buckets.get(name, {})
        if bound not in now or math.inf not in now:
            return None
        total = now[math.inf] - then.get(math.inf, 0.0)
        within = now[bound] - then.get(bound, 0.0)
        return int(total - within)


def parse(text: str) -> ServerCounters:
    """Counters, histograms and `*_info` labels from Prometheus text."""
    totals: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    info: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(labels_text or ""))
        if name.endswith("_info"):
            info[name] = labels
        elif name.endswith("_bucket") and "le" in labels:
            buckets[name.removesuffix("_bucket")][float(labels["le"])] += value
        elif not name.endswith("_created"):
            totals[name] += value
    return ServerCounters(
        totals=dict(totals), buckets={k: dict(v) for k, v in buckets.items()}, info=info
    )


def _metrics_url(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"


_TIMEOUT = 5.0
"""Seconds for one read of /metrics: counters explain a run and must never hold one up."""


async def _fetch(base_url: str) -> str | None:
    try:
        async with httpx2.AsyncClient(timeout=_TIMEOUT) as client:
            response = await client.get(_metrics_url(base_url))
    except httpx2.HTTPError:
        return None
    if response.status_code != 200 or "vllm:" not in response.text:
        return None
    return response.text


async def snapshot(base_url: str) -> ServerCounters | None:
    """The server's counters now, or None if it does not serve vLLM metrics."""
    text = await _fetch(base_url)
    return None if text is None else parse(text)
