"""The run directory: `results.jsonl` (one line per finished item, appended the moment it is
done), `manifest.json` (how the run was made) and `summary.json` (what it scored).

A killed run leaves at most one partial last line; reading drops it (and reports it), and the
next append starts on a fresh line, so a resumed run recomputes exactly the unfinished items.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.exceptions import UserError

__all__ = ["RunDirectory", "incomplete"]


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @property
    def results(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    def read_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Finished items, and the lines that could not be read (`file:line: reason`)."""
        if not self.results.is_file():
            return [], []
        rows, problems = [], []
        raw = self.results.read_bytes()
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                _check_row(row)
                rows.append(row)
            except ValueError as exc:
                partial = number == len(lines) and not raw.endswith(b"\n")
                reason = "partial last line of a killed run" if partial else str(exc)[:100]
                problems.append(f"{self.results}:{number}: {reason} (item will be rerun)")
        return rows, problems

    def append_result(self, row: dict[str, Any]) -> None:
        """Append one finished item durably: flushed and synced before returning."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.results.open("ab") as out:
            if out.tell() and not self._ends_with_newline():
                out.write(b"\n")  # a killed run's partial line stays alone on its line
            out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())

    def _ends_with_newline(self) -> bool:
        with self.results.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            return existing.read(1) == b"\n"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for one run: a second `agentflow eval` on it fails at once
        instead of interleaving duplicate results."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = (self.path / ".lock").open("w")
        except OSError as exc:  # --out names a file, or a directory we may not write
            raise UserError(
                f"cannot use {self.path} as the run directory ({exc.strerror}); pass --out "
                "with a directory you can write"
            ) from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise UserError(
                    f"another agentflow eval is writing to {self.path}; wait for it, "
                    "or pass another --out"
                ) from exc
            yield

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.manifest.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise UserError(f"{self.manifest} is not valid JSON ({exc}); move it away") from exc
        return data if isinstance(data, dict) else None

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        temporary.replace(path)


def _check_row(row: Any) -> None:
    """The shape every reader needs: an id, samples, and a score."""
    if not isinstance(row, dict) or "id" not in row:
        raise ValueError("not a result object")
    samples = row.get("samples")
    if not isinstance(samples, list) or not samples:
        raise ValueError("a result row without samples")
    if not isinstance(row.get("correct"), int | float):
        raise ValueError("a result row without a number in 'correct'")


_SAMPLE_NUMBERS = ("prompt_tokens", "completion_tokens", "model_calls", "tool_calls")


def incomplete(row: dict[str, Any]) -> str | None:
    """What a row lacks that the summary needs (a hand-edited row), or None when complete."""
    if not isinstance(row.get("seconds"), int | float):
        return "no 'seconds'"
    for sample in row["samples"]:
        if not isinstance(sample, dict) or "correct" not in sample:
            return "a sample without 'correct'"
        missing = [k for k in _SAMPLE_NUMBERS if not isinstance(sample.get(k), int | float)]
        if missing:
            return f"a sample without {', '.join(missing)}"
    return None
