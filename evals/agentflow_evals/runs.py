"""A finished eval run as the report reads it from its directory: the summary, the manifest and
every item's score."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow.exceptions import UserError
from agentflow_evals.results import RunDirectory

__all__ = ["Run", "load_run"]


@dataclass(frozen=True, kw_only=True)
class Run:
    """One finished eval run, as read from its directory."""

    path: Path
    """The run's directory."""
    summary: Mapping[str, object]
    """`summary.json`: the aggregate scores and costs."""
    manifest: Mapping[str, object] | None
    """`manifest.json`: how the run was made, or None when the directory has none."""
    scores: Mapping[str, float] = field(default_factory=dict)
    """Each finished item's score in [0, 1] (the fraction of its samples that were correct),
    by item id, from `results.jsonl`; empty when the run has none."""

    @property
    def name(self) -> str:
        """The directory name, which names the run in the report."""
        return self.path.name


def load_run(dir: Path) -> Run:
    """Read a run directory; raises `UserError` when it has no summary (the run is unfinished)."""
    path = Path(dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory: pass the output directory of an eval run")
    manifest_path = path / "manifest.json"
    manifest = _read_object(manifest_path) if manifest_path.is_file() else None
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise UserError(_unfinished_message(path, manifest))
    summary = _read_object(summary_path)
    scores = _scores(RunDirectory(path).read_results()[0])
    return Run(path=path, summary=summary, manifest=manifest, scores=scores)


def _scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Item id -> score. An item's first row counts, as when the runner resumes; rows without
    a score in [0, 1] are left out (unreadable lines were already dropped)."""
    scores: dict[str, float] = {}
    for row in rows:
        score = row.get("correct")
        if isinstance(score, bool) or not isinstance(score, int | float):
            continue
        if 0 <= score <= 1:
            scores.setdefault(str(row["id"]), float(score))
    return scores


def _read_object(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a JSON object, not {type(data).__name__}")
    return data


def _unfinished_message(path: Path, manifest: Mapping[str, object] | None) -> str:
    message = (
        f"{path} has no summary.json: the run is still in progress or was interrupted. "
        "Let it finish, or resume it by running its command again with the same output "
        "directory, then build the report."
    )
    command = manifest.get("command") if manifest is not None else None
    if isinstance(command, str) and command:
        message += f" Its command was: {command}"
    return message
