"""Re-score a finished run with today's scorers (and, for judged tasks, another judge) without
running the model again.

Each sample is scored again from what the run kept: its whole final reply (decrypted with the
item's canary for BrowseComp, whose replies are stored encrypted) and the short answer read
from it today (`extract_answer`: a run scored before the reading improved gains what it
missed), and the dataset's gold answers. Runs written before replies were kept are scored
from the short answer and say so. The results as this regrade found them are kept beside the
new ones as `results.before-regrade.jsonl`; `summary.json` is rewritten and the manifest
records when and with which judge.

With `only_failed_judge` only the samples whose judge gave no readable verdict
(`judge_parsed_with == "failed"`) are judged again; every other sample keeps its score.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.answers import extract_answer
from agentflow.exceptions import UserError
from agentflow_evals.browsecomp import decrypt
from agentflow_evals.datasets import EvalItem, dataset_names, load_dataset
from agentflow_evals.item import score_fields
from agentflow_evals.manifest import now
from agentflow_evals.results import RunDirectory
from agentflow_evals.scoring import Judge, majority, score_sample
from agentflow_evals.summary import summarize

__all__ = ["Regrade", "regrade"]


@dataclass(frozen=True, kw_only=True)
class Regrade:
    """What a re-grade changed."""

    summary: dict[str, Any]
    before: float
    """Accuracy before."""
    after: float
    gained: list[str]
    """Items whose score rose."""
    lost: list[str]
    """Items whose score fell."""
    from_short_answer: int
    """Samples scored from the short answer because the run kept no reply."""
    rescored: int = 0
    """Samples scored again (all of them, or with `only_failed_judge` the failed verdicts)."""


async def regrade(path: Path, judge: Judge | None, *, only_failed_judge: bool = False) -> Regrade:
    """Re-score the run in `path`; `judge` grades judged tasks (None: they cannot be re-graded).
    `only_failed_judge`: re-judge only the samples whose verdict could not be read."""
    run_dir = RunDirectory(path)
    manifest = run_dir.read_manifest()
    if manifest is None:
        raise UserError(f"{path} has no manifest.json: not an eval run directory")
    with run_dir.lock():
        rows, problems = run_dir.read_results()
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        if not rows:
            raise UserError(f"{run_dir.results} holds no finished items: nothing to re-grade")
        items = _items(manifest)
        counts = _Counts(only_failed_judge=only_failed_judge)
        new_rows = [await _regrade_row(row, items, judge, counts) for row in rows]
        old_summary = _read_summary(run_dir)
        summary = summarize(new_rows, manifest, wall=0.0, new_rows=[])
        for key in ("wall_seconds", "throughput_tokens_per_s"):  # costs of the original run
            summary[key] = old_summary.get(key, summary[key])
        _replace_results(run_dir, new_rows)
        run_dir.write_json(run_dir.summary, summary)
        manifest["regraded_at"] = now()
        manifest["regrade_judge_model"] = judge.model.name if judge else None
        manifest["regrade_only_failed_judge"] = only_failed_judge
        run_dir.write_json(run_dir.manifest, manifest)
    return _changes(rows, new_rows, summary, counts)


def _items(manifest: dict[str, Any]) -> dict[str, EvalItem]:
    """The run's dataset, checked to be the same bytes the run used."""
    name = str(manifest.get("dataset") or "")
    source = name if name in dataset_names() else str(manifest.get("dataset_path") or name)
    dataset = load_dataset(source)
    if manifest.get("dataset_sha256") and dataset.sha256 != manifest["dataset_sha256"]:
        raise UserError(
            f"{source} changed since the run (its SHA-256 differs from the manifest's): "
            "re-grading against other gold answers would mix two datasets"
        )
    return {item.id: item for item in dataset.items}


@dataclass(kw_only=True)
class _Counts:
    only_failed_judge: bool
    from_short_answer: int = 0
    rescored: int = 0


async def _regrade_row(
    row: dict[str, Any], items: dict[str, EvalItem], judge: Judge | None, counts: _Counts
) -> dict[str, Any]:
    item = items.get(str(row["id"]))
    if item is None:
        raise UserError(f"item {row['id']!r} of the run is not in its dataset any more")
    scored = []
    for sample in row["samples"]:
        if sample.get("error"):
            scored.append(sample)  # never answered: nothing to score
            continue
        if counts.only_failed_judge and sample.get("judge_parsed_with") != "failed":
            scored.append(sample)  # its verdict stands
            continue
        reply, answer, from_answer = _texts(sample, item)
        counts.from_short_answer += from_answer
        counts.rescored += 1
        score = await score_sample(item, answer=answer, reply=reply, judge=judge)
        scored.append({**sample, "answer": answer, **score_fields(score)})
    correct = [bool(s["correct"]) for s in scored]
    maj = await majority(item, scored) if len(scored) > 1 else None
    return {**row, "samples": scored, "correct": sum(correct) / len(correct), "maj_correct": maj}


def _texts(sample: dict[str, Any], item: EvalItem) -> tuple[str, str, int]:
    """(reply, short answer, 1 if the reply had to be stood in for by the short answer)."""
    reply = sample.get("reply")
    if reply is None and sample.get("reply_encrypted"):
        try:
            reply = decrypt(str(sample["reply_encrypted"]), str(item.meta.get("canary", "")))
        except ValueError as exc:  # bad base64 or not UTF-8 once decrypted
            raise UserError(
                f"item {item.id!r}: its stored reply cannot be decrypted ({exc})"
            ) from exc
    answer = sample.get("answer")
    if reply is None:
        if answer is None:
            raise UserError(f"item {item.id!r}: the run kept neither its reply nor its answer")
        return str(answer), str(answer), 1
    return str(reply), extract_answer(str(reply)), 0  # today's reading of the reply, too


def _read_summary(run_dir: RunDirectory) -> dict[str, Any]:
    try:
        data = json.loads(run_dir.summary.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _replace_results(run_dir: RunDirectory, rows: list[dict[str, Any]]) -> None:
    """Keep the old results beside the new ones; the swap itself is one atomic rename."""
    backup = (
        run_dir.path / "results.before-regrade.jsonl"
    )  # the results as the last regrade found them
    backup.write_bytes(run_dir.results.read_bytes())
    temporary = run_dir.results.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(run_dir.results)


def _changes(
    old: list[dict[str, Any]], new: list[dict[str, Any]], summary: dict[str, Any], counts: _Counts
) -> Regrade:
    before = {str(r["id"]): float(r["correct"]) for r in old}
    after = {str(r["id"]): float(r["correct"]) for r in new}
    return Regrade(
        summary=summary,
        before=round(sum(before.values()) / len(before), 4),
        after=round(sum(after.values()) / len(after), 4),
        gained=sorted(k for k in after if after[k] > before[k]),
        lost=sorted(k for k in after if after[k] < before[k]),
        from_short_answer=counts.from_short_answer,
        rescored=counts.rescored,
    )
