"""Generated tokens/s at several concurrency levels against one OpenAI-compatible server.

    python benchmarks/concurrency.py [--base-url URL] [--levels 1,4,16,32,64] [--max-tokens 64]
                                     [--prompt-tokens 0]

Each level sends `rounds x level` requests, `level` at a time, and divides the completion tokens
the server reports by the wall-clock of the level. This is the ceiling the executor's parallel
branches can reach on that server. With `--prompt-tokens N` every prompt is padded to about N
tokens, each unique from its first token (no prefix-cache help), and prompt plus generated
tokens/s is reported too: the saturated-server denominator of eval throughput (BENCHMARKS.md §3).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result

from agentflow.model import ModelSettings
from agentflow.models import OpenAIModel
from agentflow.settings import Settings

PROMPT = "Write a short story about a lighthouse keeper number {i} and the sea."
PADDING = "The keeper's log for day {n}: wind from the west, lamp lit at dusk."
PADDING_TOKENS = 18
"""About how many tokens one padding line costs (SmolLM2's tokenizer)."""


def prompt(i: int, prompt_tokens: int) -> str:
    lines = [PADDING.format(n=n) for n in range(prompt_tokens // PADDING_TOKENS)]
    return f"Request {i}. " + " ".join(lines) + " " + PROMPT.format(i=i)


async def measure_level(
    model: OpenAIModel, level: int, rounds: int, max_tokens: int, prompt_tokens: int = 0
) -> dict[str, float]:
    settings = ModelSettings(max_tokens=max_tokens, temperature=0.8, seed=0)
    gate = asyncio.Semaphore(level)
    tag = time.time_ns()  # a rerun against a warm prefix cache must not be served from it

    async def one(i: int) -> tuple[int, int]:
        async with gate:
            response = await model.complete(
                [{"role": "user", "content": prompt(tag + i, prompt_tokens)}], settings
            )
            return response.usage.prompt_tokens, response.usage.completion_tokens

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(level * rounds)))
    elapsed = time.perf_counter() - started
    prompt_total, generated = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    return {
        "concurrency": level,
        "requests": len(tokens),
        "completion_tokens": generated,
        "prompt_tokens": prompt_total,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(generated / elapsed, 1),
        "all_tokens_per_s": round((prompt_total + generated) / elapsed, 1),
    }


async def run(args: argparse.Namespace) -> list[dict[str, float]]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, max_concurrency=max(args.levels))
    try:
        await measure_level(model, 2, 1, 8)  # warm-up, not reported
        return [
            await measure_level(model, level, args.rounds, args.max_tokens, args.prompt_tokens)
            for level in args.levels
        ]
    finally:
        await model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="default: AGENTFLOW_BASE_URL or the embedded model")
    parser.add_argument("--model", help="default: AGENTFLOW_MODEL or the embedded model")
    parser.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32, 64]
    )
    parser.add_argument("--rounds", type=int, default=2, help="batches per level (default 2)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--prompt-tokens", type=int, default=0, help="pad each prompt to about this many tokens"
    )
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    path = write_result("concurrency", {"max_tokens": args.max_tokens, "levels": rows}, args.out)
    print(
        table(
            [
                "concurrent requests",
                "requests",
                "generated",
                "prompt",
                "seconds",
                "generated tokens/s",
                "prompt + generated tokens/s",
            ],
            [
                [
                    r["concurrency"],
                    r["requests"],
                    r["completion_tokens"],
                    r["prompt_tokens"],
                    r["seconds"],
                    r["tokens_per_s"],
                    r["all_tokens_per_s"],
                ]
                for r in rows
            ],
        )
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
