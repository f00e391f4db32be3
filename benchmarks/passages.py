"""Prompt tokens against answer recall for the ways search passages reach a prompt.

    python benchmarks/passages.py [--budgets 600,800,1000,1200,1500] [--k 5]

No model server: for each multi-hop question, the local search tool (pooled corpus, `k` hits)
is asked the question itself, as a planner's first look-up would be, and its passages are
rendered the way a step's prompt receives them:

- `json@1500`: the passages as JSON cut at 1,500 characters (what agentflow sent before);
- `lines@B`: `agentflow.passages.render_passages` at a budget of B characters (one line per
  hit, best hit first, whole sentences only).

Per rendering: mean prompt tokens (the embedded model's tokenizer) and answer recall, the share
of questions whose gold answer (SQuAD-normalised) appears in the rendered text. Questions whose
answer is in the question itself (the comparison type's "A or B", yes/no) are left out: any
rendering would "recall" them. The dev split (`hotpotqa-train`, `musique-train`: 200 questions)
is where a budget is chosen; the held-out split (`hotpotqa`, `musique` dev) is reported beside it
and never used to choose.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import table, write_result
from tokenizers import Tokenizer

from agentflow.passages import render_passages
from agentflow.runtime.weights import prepare_weights
from agentflow.settings import agentflow_home
from agentflow_evals.datasets import EvalItem, load_dataset
from agentflow_evals.qa import normalize_answer
from agentflow_tools.search import LocalIndex

DATA = Path(__file__).parents[1].parent / "shared" / "data"
SPLITS = {"dev": ("hotpotqa-train", "musique-train"), "held-out": ("hotpotqa", "musique")}
OLD_BUDGET = 1500


def as_json(hits: list[dict[str, Any]], budget: int) -> str:
    """How passages reached a prompt before `agentflow.passages`: JSON, cut at `budget`."""
    text = json.dumps(hits, ensure_ascii=False)
    return (
        text[:budget] + f"... [cut: {len(text) - budget} more characters]"
        if len(text) > budget
        else text
    )


def recallable(item: EvalItem) -> bool:
    question = normalize_answer(item.question)
    answers = [normalize_answer(a) for a in item.answers]
    return bool(answers) and not any(a in question or a in ("yes", "no") for a in answers)


def recalled(text: str, item: EvalItem) -> bool:
    seen = normalize_answer(text)
    return any(normalize_answer(a) and normalize_answer(a) in seen for a in item.answers)


def measure(
    items: list[EvalItem], index: LocalIndex, tokenizer: Tokenizer, budgets: list[int], k: int
) -> dict[str, dict[str, float]]:
    renderings: dict[str, list[tuple[int, bool]]] = {f"json@{OLD_BUDGET}": []}
    renderings.update({f"lines@{b}": [] for b in budgets})
    for item in items:
        hits = [
            {"id": h.id, "title": h.title, "text": h.text} for h in index.search(item.question, k)
        ]
        texts = {f"json@{OLD_BUDGET}": as_json(hits, OLD_BUDGET)}
        texts.update({f"lines@{b}": render_passages(hits, b).text for b in budgets})
        for name, text in texts.items():
            renderings[name].append((len(tokenizer.encode(text).ids), recalled(text, item)))
    return {
        name: {
            "tokens": round(statistics.mean(t for t, _ in rows), 1),
            "recall": round(statistics.mean(r for _, r in rows), 3),
        }
        for name, rows in renderings.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="600,800,1000,1200,1500")
    parser.add_argument("--k", type=int, default=5, help="hits per search (the tool's default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    index = LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl")))
    weights = prepare_weights(agentflow_home() / "models")  # the embedded model's, converted once
    tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
    results: dict[str, Any] = {}
    for split, datasets in SPLITS.items():
        items = [i for d in datasets for i in load_dataset(d, data_dir=DATA).items if recallable(i)]
        results[split] = {
            "questions": len(items),
            **measure(items, index, tokenizer, budgets, args.k),
        }
    renderings = [f"json@{OLD_BUDGET}", *(f"lines@{b}" for b in budgets)]
    rows = [
        [name, *(results[s][name][m] for s in SPLITS for m in ("tokens", "recall"))]
        for name in renderings
    ]
    headers = ["rendering", "dev tokens", "dev recall", "held-out tokens", "held-out recall"]
    print(
        f"questions: dev {results['dev']['questions']}, held-out {results['held-out']['questions']}"
    )
    print(table(headers, rows))
    print(f"written: {write_result('passages', {'k': args.k, 'results': results}, args.out)}")


if __name__ == "__main__":
    main()
