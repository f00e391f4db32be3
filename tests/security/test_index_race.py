"""Several processes opening the same corpus on a cold cache: one builds, the others adopt it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.exceptions import UserError
from agentflow_tools.search import LocalIndex

OPEN_AND_SEARCH = """
import sys
from pathlib import Path
from agentflow_tools.search import LocalIndex
index = LocalIndex.open([Path(sys.argv[1])], cache_dir=Path(sys.argv[2]))
print(len(index.search("river", 5)))
"""


def test_concurrent_builds_of_one_index_all_succeed(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": f"d{i}", "title": f"River {i}", "text": f"the river number {i} " * 20}
            for i in range(800)]  # fmt: skip
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "cache"
    command = [sys.executable, "-c", OPEN_AND_SEARCH, str(corpus), str(cache)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outcomes = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err  # was: OSError Directory not empty in the rename
        assert out.strip() == "5"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_an_empty_or_corrupt_corpus_is_an_error_not_an_empty_index(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('not json\n{"title": "no text"}\n')
    with pytest.raises(UserError, match="no usable passages .* 2 lines skipped"):
        LocalIndex.open([corpus], cache_dir=tmp_path / "cache")


def test_bytes_that_are_not_utf8_are_repaired_and_reported(tmp_path: Path) -> None:
    corpus = tmp_path / "latin1.jsonl"
    corpus.write_bytes(b'{"title": "Caf\xe9", "text": "A caf\xe9 in Paris"}\n')
    index = LocalIndex.open([corpus], cache_dir=tmp_path / "cache")
    assert index.info.passages == 1
    assert "repaired: bytes that are not UTF-8" in index.info.skipped_lines[0]
