"""Reading vLLM's /metrics: what a run added, computed by hand from two small snapshots."""

from __future__ import annotations

from agentflow.runtime.vllm_metrics import parse

BEFORE = """
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
vllm:prompt_tokens_total{engine="0",model_name="m"} 100.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e+09
vllm:generation_tokens_total{engine="0",model_name="m"} 10.0
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 0.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="m"} 1.0
vllm:request_queue_time_seconds_count{engine="0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="30.0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0
vllm:cache_config_info{block_size="128",kv_cache_size_tokens="93184",engine="0"} 1.0
"""

AFTER = """
vllm:prompt_tokens_total{engine="0",model_name="m"} 1100.0
vllm:generation_tokens_total{engine="0",model_name="m"} 60.0
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1100.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 250.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="m"} 7.0
vllm:request_queue_time_seconds_count{engine="0",model_name="m"} 6.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="30.0",model_name="m"} 5.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 6.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 80.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 6.0
"""


def test_a_run_is_the_difference_of_two_snapshots() -> None:
    before, after = parse(BEFORE), parse(AFTER)
    run = after.since(before)
    assert run["requests"] == 4
    assert run["prompt_tokens"] == 1000
    assert run["generated_tokens"] == 50
    assert run["prefix_cache_hit_rate"] == 0.25  # 250 of 1,000 queried tokens
    assert run["mean_queue_time_s"] == 1.5  # (7 - 1) s over (6 - 2) requests
    assert run["mean_e2e_latency_s"] == 19.0  # (80 - 4) / 4
    assert run["requests_over_30_s"] == 1  # 4 new requests, 3 of them within 30 s
    assert run["e2e_latency_histogram"] == {"<=30": 3, ">30": 1}
    assert run["mean_prefill_time_s"] is None  # not in these snapshots: unknown, not zero
    assert before.info["vllm:cache_config_info"]["kv_cache_size_tokens"] == "93184"
    assert before.kv_cache_tokens == 93_184 and after.kv_cache_tokens is None


def test_text_that_is_not_prometheus_gives_empty_counters() -> None:
    counters = parse("<html>not metrics</html>\nvllm:broken{ 12")
    assert counters.totals == {} and counters.info == {}
