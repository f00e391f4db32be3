"""How hard an eval drives its model servers: the default items in flight, and the servers' own
counters around the run (appended to `server.jsonl` in the run directory, one line per session,
so a resumed run keeps every earlier session's figures)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.runtime.vllm_metrics import ServerCounters, snapshot

__all__ = [
    "FALLBACK_CONCURRENCY",
    "ITEM_TOKENS",
    "ServerWatch",
    "concurrency_for",
    "describe",
]

FALLBACK_CONCURRENCY = 8
"""Items in flight when the servers do not say how much they hold (not vLLM, or unreachable)."""
ITEM_TOKENS = 8_000
"""KV-cache tokens one item holds at its widest: a `dag` item runs up to five look-up or step
requests at once, each with a prompt of about 1,500 tokens."""
MAX_CONCURRENCY = 64


def concurrency_for(kv_cache_sizes: Sequence[int | None]) -> tuple[int, str]:
    """Items in flight that fill the servers' KV caches (None: a server that does not say),
    and how that number was found."""
    known = [s for s in kv_cache_sizes if s]
    if not known:
        return FALLBACK_CONCURRENCY, "the server does not report its KV cache: the fallback"
    items = max(1, min(MAX_CONCURRENCY, sum(known) // ITEM_TOKENS))
    return items, f"{sum(known):,} KV-cache tokens / {ITEM_TOKENS:,} per item"


@dataclass
class ServerWatch:
    """Snapshots every server before the run; `finish` writes what the run added."""

    base_urls: Sequence[str]
    run_dir: Path
    before: dict[str, ServerCounters | None] | None = None
    started: float = 0.0

    async def start(self) -> None:
        self.before = {url: await snapshot(url) for url in self.base_urls}
        self.started = time.monotonic()

    def default_concurrency(self) -> tuple[int, str]:
        """Items in flight that fill the servers' KV caches, by the snapshots `start` took."""
        before = self.before or {}
        return concurrency_for([s.kv_cache_tokens if s else None for s in before.values()])

    async def finish(self, concurrency: int) -> dict[str, Any] | None:
        """The servers' figures for this session, appended to `server.jsonl`; None if no
        server reports vLLM metrics."""
        if self.before is None:
            return None
        seconds = time.monotonic() - self.started
        servers = {}
        for url, before in self.before.items():
            after = await snapshot(url)
            if before is not None and after is not None:
                servers[url] = after.since(before)
        if not servers:
            return None
        prompt = sum(s["prompt_tokens"] for s in servers.values())
        generated = sum(s["generated_tokens"] for s in servers.values())
        record = {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 1),
            "concurrency": concurrency,
            "tokens_per_s": round((prompt + generated) / seconds, 1) if seconds else None,
            "generated_tokens_per_s": round(generated / seconds, 2) if seconds else None,
            "servers": servers,
        }
        if not self.run_dir.is_dir():  # the run stopped before it made its directory
            return record
        with (self.run_dir / "server.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record


def describe(record: dict[str, Any]) -> str:
    """One line for the terminal: throughput and where the servers' time went."""
    parts = [f"servers: {record['tokens_per_s']} tokens/s (prompt + generated)"]
    for url, s in record["servers"].items():
        rate = s["prefix_cache_hit_rate"]
        parts.append(
            f"{url}: {s['requests']} requests, queue {s['mean_queue_time_s']} s, "
            f"prefill {s['mean_prefill_time_s']} s, decode {s['mean_decode_time_s']} s mean, "
            f"{s['requests_over_30_s']} over 30 s, prefix cache "
            f"{'n/a' if rate is None else f'{rate:.0%}'}"
        )
    return "; ".join(parts)
