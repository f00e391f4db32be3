"""Judge verdicts cached on disk by content hash, so a re-run or a re-grade costs no judge call.

The key is the SHA-256 of the judge model's name, its sampling settings and the full grading
prompt (question, response, gold answer): any change to one of them is a new key. The stored
value keeps what scoring needs (the verdict, the confidence the judge read, how it was parsed)
and a hash of the extracted answer for majority voting; never the judge's text or the extracted
answer itself, which may quote a BrowseComp gold answer. SQLite makes concurrent writers
(several evals, or Ray workers on one machine) safe.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from agentflow_evals.browsecomp import JudgeResult, answer_key

__all__ = ["JudgeCache"]


class JudgeCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str) -> JudgeResult | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return JudgeResult(
            correct=bool(value["correct"]),
            extracted_final_answer=value["answer_key"],
            reasoning="",
            confidence=int(value["confidence"]),
            judge_model=str(value["judge_model"]),
            parsed_with=value["parsed_with"],
            cached=True,
        )

    def put(self, key: str, result: JudgeResult) -> None:
        value = {
            "correct": result.correct,
            "answer_key": answer_key(result.extracted_final_answer) or "",
            "confidence": result.confidence,
            "judge_model": result.judge_model,
            "parsed_with": result.parsed_with,
        }
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO verdicts (key, value) VALUES (?, ?)",
                (key, json.dumps(value)),
            )

    @contextlib.contextmanager
    def _connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # commits, or rolls back on an error
                db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT)")
                yield db
        finally:
            db.close()
