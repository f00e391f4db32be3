"""Generated tokens/s at several concurrency levels against one OpenAI-compatible server.

    python benchmarks/concurrency.py [--base-url URL] [--levels 1,4,16,32,64] [--max-tokens 64]

Each level sends `rounds x level` requests, `level` at a time, and divides the completion tokens
the server reports by the wall-clock of the level. This is the ceiling the executor's parallel
branches can reach on that server.
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


async def measure_level(
    model: OpenAIModel, level: int, rounds: int, max_tokens: int
) -> dict[str, float]:
    settings = ModelSettings(max_tokens=max_tokens, temperature=0.8, seed=0)
    gate = asyncio.Semaphore(level)

    async def one(i: int) -> int:
        async with gate:
            response = await model.complete(
                [{"role": "user", "content": PROMPT.format(i=i)}], settings
            )
            return response.usage.completion_tokens

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(level * rounds)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": level,
        "requests": len(tokens),
        "completion_tokens": sum(tokens),
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(sum(tokens) / elapsed, 1),
    }


async def run(args: argparse.Namespace) -> list[dict[str, float]]:
    settings = Settings.from_env(base_url=args.base_url, model=args.model)
    model = OpenAIModel(settings.model, settings.base_url, max_concurrency=max(args.levels))
    try:
        await measure_level(model, 2, 1, 8)  # warm-up, not reported
        return [
            await measure_level(model, level, args.rounds, args.max_tokens) for level in args.levels
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
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    path = write_result("concurrency", {"max_tokens": args.max_tokens, "levels": rows}, args.out)
    print(
        table(
            ["concurrent requests", "requests", "tokens", "seconds", "tokens/s"],
            [
                [
                    r["concurrency"],
                    r["requests"],
                    r["completion_tokens"],
                    r["seconds"],
                    r["tokens_per_s"],
                ]
                for r in rows
            ],
        )
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
