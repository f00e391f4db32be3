"""The retrieval ceiling every planner works under: index build time, query latency, recall.

    python benchmarks/retrieval.py [--synthetic 200000] [--queries 500]

For the pooled corpus (every file in ../shared/data/corpus) and for a synthetic corpus of
`--synthetic` passages (the pooled passages plus generated filler, written to a temporary
JSONL): build time (fresh cache), query latency p50/p99 over the HotpotQA dev questions, and
recall@5 / recall@10 of the gold supporting paragraphs with the question text as the query
(the fraction of a question's gold paragraph titles found in the top k, averaged).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result

from agentflow_tools.search import LocalIndex

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def hotpot_questions() -> list[tuple[str, set[str]]]:
    lines = (DATA / "multihop" / "hotpotqa_dev.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    return [
        (i["question_text"], {c["title"] for c in i["contexts"] if c["is_supporting"]})
        for i in items
    ]


def synthetic_corpus(base: list[Path], size: int, folder: Path) -> Path:
    """The pooled passages plus random filler passages made of the pooled vocabulary."""
    words: list[str] = []
    count = 0
    for path in base:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            words += (record.get("text") or " ".join(record.get("sentences", []))).split()[:40]
            count += 1
    rng = random.Random(0)
    out = folder / "synthetic.jsonl"
    with out.open("w") as handle:
        for path in base:
            handle.write(path.read_text())
        for index in range(max(0, size - count)):
            text = " ".join(rng.choices(words, k=rng.randint(40, 120)))
            title = " ".join(rng.choices(words, k=3))
            handle.write(json.dumps({"id": f"syn{index}", "title": title, "text": text}) + "\n")
    return out


def measure(name: str, files: list[Path], questions: list[tuple[str, set[str]]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        index = LocalIndex.open(files, cache_dir=Path(cache), progress=False)
        build = time.perf_counter() - started
        latencies, recall5, recall10 = [], [], []
        for question, gold in questions:
            started = time.perf_counter()
            hits = index.search(question, k=10)
            latencies.append(time.perf_counter() - started)
            titles = [h.title for h in hits]
            recall5.append(len(gold & set(titles[:5])) / len(gold))
            recall10.append(len(gold & set(titles)) / len(gold))
    latencies.sort()
    return {
        "corpus": name,
        "passages": index.info.passages,
        "build_s": round(build, 2),
        "query_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "query_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
        "recall@5": round(statistics.mean(recall5), 3),
        "recall@10": round(statistics.mean(recall10), 3),
        "questions": len(questions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synthetic", type=int, default=200_000, help="passages (0 to skip)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pooled = sorted((DATA / "corpus").glob("*.jsonl"))
    questions = hotpot_questions()
    rows = [measure("pooled", pooled, questions)]
    if args.synthetic:
        with tempfile.TemporaryDirectory() as folder:
            big = synthetic_corpus(pooled, args.synthetic, Path(folder))
            rows.append(measure(f"synthetic {args.synthetic // 1000}k", [big], questions))
    headers = ["corpus", "passages", "build s", "query p50 ms", "query p99 ms", "recall@5",
               "recall@10"]  # fmt: skip
    keys = ["corpus", "passages", "build_s", "query_p50_ms", "query_p99_ms", "recall@5",
            "recall@10"]  # fmt: skip
    print(table(headers, [[row[k] for k in keys] for row in rows]))
    print(f"\n{len(questions)} HotpotQA dev questions; recall = gold supporting titles in top k")
    print(f"written to {write_result('retrieval', {'rows': rows}, args.out)}")


if __name__ == "__main__":
    main()
