"""Reading passages out of JSONL corpora, in the record shapes users bring.

Accepted records: `{id, title, text}`, `{title, text}` and `{title, sentences: [...]}` (HotpotQA's
shape; its sentences carry their own leading spaces). A record without an `id` gets
`<file stem>:<line number>`. A line that is not JSON, or a record with no text, is skipped and
reported with its file and line number: a corpus is never silently shortened.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.exceptions import UserError

__all__ = ["CorpusIssue", "Passage", "corpus_fingerprint", "read_passages"]


@dataclass(frozen=True, kw_only=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True, kw_only=True)
class CorpusIssue:
    """A line that was skipped, and why."""

    path: Path
    line: int
    reason: str
    skipped: bool = True
    """False for a line that was indexed after a repair (bytes that are not UTF-8 replaced)."""

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {'skipped' if self.skipped else 'repaired'}: {self.reason}"
        )


def read_passages(path: Path, issues: list[CorpusIssue]) -> Iterator[Passage]:
    """The passages of one JSONL file; skipped lines are appended to `issues`."""
    if not path.is_file():
        raise UserError(f"corpus file not found: {path}")
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = _decode(raw, path, number, issues)
            if not line.strip():
                continue
            try:
                yield _passage(json.loads(line), path, number)
            except (ValueError, TypeError) as exc:
                issues.append(CorpusIssue(path=path, line=number, reason=str(exc)[:200]))


def _decode(raw: bytes, path: Path, number: int, issues: list[CorpusIssue]) -> str:
    """A line as text; bytes that are not UTF-8 are replaced, and the line is reported."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"bytes that are not UTF-8 (from byte {exc.start + 1}) were replaced with U+FFFD"
        issues.append(CorpusIssue(path=path, line=number, reason=reason, skipped=False))
        return raw.decode("utf-8", errors="replace")


def _passage(record: Any, path: Path, number: int) -> Passage:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if text is None and isinstance(record.get("sentences"), list):
        text = "".join(str(s) for s in record["sentences"])
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no 'text' (or 'sentences') in the record")
    title = record.get("title") or ""
    if not isinstance(title, str):
        raise ValueError("'title' is not a string")
    passage_id = record.get("id")
    return Passage(
        id=str(passage_id) if passage_id not in (None, "") else f"{path.stem}:{number}",
        title=" ".join(title.split()),
        text=" ".join(text.split()),
    )


def corpus_fingerprint(paths: Sequence[Path], version: str) -> str:
    """A key for the index built from `paths`: their contents (not names or times) and the
    index format version, so an edited corpus or a newer agentflow gets a fresh index."""
    digest = hashlib.sha256(version.encode())
    for path in sorted(paths, key=lambda p: str(p.resolve())):
        file_digest = hashlib.sha256()
        with path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    return digest.hexdigest()[:20]
