"""The eval's default items in flight, from what the servers' KV caches hold."""

from __future__ import annotations

from agentflow_evals.server_load import FALLBACK_CONCURRENCY, ITEM_TOKENS, concurrency_for


def test_items_fill_the_kv_cache_of_every_server() -> None:
    assert concurrency_for([93_184])[0] == 93_184 // ITEM_TOKENS  # the embedded server: 11
    assert concurrency_for([93_184, 93_184])[0] == 2 * 93_184 // ITEM_TOKENS
    assert concurrency_for([93_184, None])[0] == 93_184 // ITEM_TOKENS  # one server not vLLM


def test_bounds_and_the_fallback() -> None:
    assert concurrency_for([100])[0] == 1  # a tiny cache still runs one item
    assert concurrency_for([10**9])[0] == 64
    count, why = concurrency_for([None])
    assert count == FALLBACK_CONCURRENCY and "fallback" in why
