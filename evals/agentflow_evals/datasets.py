"""Evaluation datasets: known benchmarks by name, and users' own files.

`load_dataset("aime2024")` reads a known benchmark from the data folder (`data_dir`, else the
`AGENTFLOW_DATA` environment variable, else the development data folder `shared/data` beside the
repository). The small math sets (AIME 2024, AMC 23, MATH-500) also ship inside this package
(`data/`, with their sources and licenses in `data/README.md`) and are read from there when the
data folder lacks them, so an installed agentflow runs them anywhere.
`load_dataset("my.jsonl")` reads records `{"id", "question", "answer", "aliases"?, "task"?}`;
a `.csv` path is read in the BrowseComp scheme (columns id, problem, answer, canary).

A line that cannot be read is never dropped silently: it lands in `Dataset.issues` as
"file:line: reason", and a file with more bad lines than good raises `DatasetError`.

Some `EvalItem.meta` keys are derived from the gold answer (`GOLD_META_KEYS`): use them for
metrics, never show them to the agent. `meta["corpus"]` lists the passage files a search tool
should index. BrowseComp items are decrypted in memory and carry `meta["sensitive"] = True`:
their question and answer must not be written to disk or logs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from agentflow.exceptions import UserError
from agentflow_evals import _records as records
from agentflow_evals._records import EvalItem

__all__ = [
    "GOLD_META_KEYS",
    "Dataset",
    "DatasetError",
    "EvalItem",
    "dataset_names",
    "default_data_dir",
    "describe_datasets",
    "load_dataset",
]

GOLD_META_KEYS = frozenset({"raw_answer", "supporting_titles"})
"""Meta keys derived from the gold answer: for scoring and retrieval metrics, not for the agent."""

_ISSUES_IN_ERROR = 5


class DatasetError(UserError):
    """A dataset cannot be found or read."""


@dataclass(frozen=True, kw_only=True)
class Dataset:
    name: str
    path: Path
    """The source file (for `multihop-local`, the folder of its two files)."""
    items: tuple[EvalItem, ...] = field(repr=False)
    task: str
    """The items' scorer, or "mixed" for a user file that mixes them (then use `item.task`)."""
    sha256: str
    """Of the source file's bytes (of all source files' bytes in order, for `multihop-local`)."""
    issues: tuple[str, ...] = ()
    """Lines that were skipped, as "file:line: reason"."""
    files: tuple[Path, ...] = ()
    """Every source file."""


# --- known datasets ---------------------------------------------------------------------------

_Parser = Callable[[dict[str, Any], int], EvalItem]


@dataclass(frozen=True, kw_only=True)
class _Source:
    file: str
    """Relative to the data folder."""
    task: str
    parse: _Parser
    origin: str
    """Where the public original is, for the error that says a file is missing."""
    corpus: bool = False
    """The passages are in the pooled corpus: items get `meta["corpus"]`."""
    packaged: bool = False
    """A copy ships in this package's `data/` folder."""


_MATHARENA = "github.com/eth-sri/matharena @ 81f103e, data/aime/"
_QWEN_MATH = "github.com/QwenLM/Qwen2.5-Math @ a45202b, evaluation/data/amc23/test.jsonl"
_SIMPLERL = (
    "github.com/hkust-nlp/simpleRL-reason @ cf1c785, "
    "examples/simplelr_math_eval/data/math500/test.jsonl"
)
_IRCOT_HOTPOT = (
    "github.com/xindili-cmu/anlp-project-multihop @ 11ba729, "
    "processed_data/hotpotqa/dev_subsampled.jsonl"
)
_HIPPORAG = "github.com/OSU-NLP-Group/HippoRAG @ 3d95d25"
_KAG = "github.com/OpenSPG/KAG @ b754d91 (MuSiQue dev, answerable)"
_FANOUT = "github.com/zhudotexe/fanoutqa @ 989f4c4, fanoutqa/data/fanout-final-dev.json"
_LLMCOMPILER = "github.com/SqueezeAILab/LLMCompiler @ a00c9d3, datasets/parallelqa_dataset.json"
_BAMBOOGLE = "github.com/RUCAIBox/R1-Searcher @ 631167c"
_BROWSECOMP = "openaipublic.blob.core.windows.net/simple-evals/browse_comp_test_set.csv"

_SOURCES: dict[str, _Source] = {
    "aime2024": _Source(
        file="math/aime2024.jsonl",
        task="aime",
        parse=records.aime,
        origin=_MATHARENA,
        packaged=True,
    ),
    "amc23": _Source(
        file="math/amc23.jsonl", task="math", parse=records.amc, origin=_QWEN_MATH, packaged=True
    ),
    "math500": _Source(
        file="math/math500.jsonl",
        task="math",
        parse=records.math500,
        origin=_SIMPLERL,
        packaged=True,
    ),
    "hotpotqa": _Source(
        file="multihop/hotpotqa_dev.jsonl",
        task="qa",
        parse=records.hotpotqa,
        origin=_IRCOT_HOTPOT,
        corpus=True,
    ),
    "hotpotqa-train": _Source(
        file="multihop/hotpotqa_train100.jsonl",
        task="qa",
        parse=records.hotpotqa_train,
        origin=_HIPPORAG,
        corpus=True,
    ),
    "musique": _Source(
        file="multihop/musique_dev.jsonl",
        task="qa",
        parse=records.musique,
        origin=_KAG,
        corpus=True,
    ),
    "musique-train": _Source(
        file="multihop/musique_train100.jsonl",
        task="qa",
        parse=records.musique,
        origin=_HIPPORAG,
        corpus=True,
    ),
    "fanoutqa": _Source(
        file="planning/fanoutqa_dev.jsonl", task="fanout", parse=records.fanoutqa, origin=_FANOUT
    ),
    "parallelqa": _Source(
        file="planning/parallelqa.jsonl", task="qa", parse=records.parallelqa, origin=_LLMCOMPILER
    ),
    "bamboogle": _Source(
        file="web/bamboogle.jsonl", task="qa", parse=records.bamboogle, origin=_BAMBOOGLE
    ),
    "browsecomp": _Source(
        file="web/browsecomp_subset50_encrypted.csv",
        task="browsecomp",
        parse=records.browsecomp,
        origin=_BROWSECOMP + " (the subset is from github.com/dayoon-ko/HybridDeepSearcher)",
    ),
}
PACKAGED_DATA = Path(__file__).resolve().parent / "data"
"""The question sets that ship with this package (`_Source.packaged`)."""

_LOCAL = "multihop-local"
_LOCAL_PARTS = ("hotpotqa", "musique")


def dataset_names() -> list[str]:
    return sorted([*_SOURCES, _LOCAL])


def default_data_dir() -> Path:
    """`AGENTFLOW_DATA`, else the development data folder beside the repository."""
    configured = os.environ.get("AGENTFLOW_DATA")
    return Path(configured).expanduser() if configured else _DEV_DATA


_DEV_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
"""The development data folder of a checkout (`shared/data` beside the repository)."""


def load_dataset(name_or_path: str, *, data_dir: Path | None = None) -> Dataset:
    """A known dataset by name (see `dataset_names()`), or a `.jsonl`/`.csv` file by path.

    Known datasets are looked for in `data_dir` if given, else in `AGENTFLOW_DATA` and then the
    development data folder; the packaged math sets are found in this package last."""
    roots = _roots(data_dir)
    if name_or_path == _LOCAL:
        return _load_local(roots)
    if name_or_path in _SOURCES:
        return _load_source(name_or_path, roots)
    path = Path(name_or_path).expanduser()
    if path.suffix in (".jsonl", ".csv") or path.exists():
        return _load_path(path, roots)
    raise DatasetError(
        f"unknown dataset {name_or_path!r}: not a known name and not a .jsonl/.csv file; "
        f"known names: {', '.join(dataset_names())}"
    )


def describe_datasets(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per known dataset: name, task, file, and items (a count, or "missing")."""
    roots = _roots(data_dir)
    rows = []
    for name, source in _SOURCES.items():
        found = _locate(source, roots)
        items = _count(found[0]) if found else "missing"
        rows.append({"name": name, "task": source.task, "file": source.file, "items": items})
    parts = [_locate(_SOURCES[p], roots) for p in _LOCAL_PARTS]
    complete = all(parts) and all(_corpus(found[1]) for found in parts if found)
    rows.append(
        {
            "name": _LOCAL,
            "task": "qa",
            "file": " + ".join(_SOURCES[p].file for p in _LOCAL_PARTS) + " + corpus/*.jsonl",
            "items": sum(_count(f[0]) for f in parts if f) if complete else "missing",
        }
    )
    return sorted(rows, key=lambda row: str(row["name"]))


def _roots(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir]
    configured = os.environ.get("AGENTFLOW_DATA")
    return [Path(configured).expanduser(), _DEV_DATA] if configured else [_DEV_DATA]


def _locate(source: _Source, roots: list[Path]) -> tuple[Path, Path] | None:
    """The first copy of `source`'s file, and the data folder it is in (for its corpus)."""
    candidates = [*roots, PACKAGED_DATA] if source.packaged else roots
    for root in candidates:
        if (root / source.file).is_file():
            return root / source.file, root
    return None


def _count(path: Path) -> int:
    lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    return lines - 1 if path.suffix == ".csv" and lines else lines  # minus the header


# --- loading ----------------------------------------------------------------------------------


def _load_source(name: str, roots: list[Path]) -> Dataset:
    source = _SOURCES[name]
    found = _locate(source, roots)
    if found is None:
        raise _missing(name, [source.file], roots)
    path, root = found
    dataset = _read(path, name, source.parse)
    corpus = _corpus(root) if source.corpus else []
    if not corpus:
        return dataset
    items = tuple(replace(i, meta={**i.meta, "corpus": list(corpus)}) for i in dataset.items)
    return replace(dataset, items=items)


def _missing(name: str, files: list[str], roots: list[Path]) -> DatasetError:
    where = " or ".join(str(root) for root in roots)
    origins = (
        "; ".join(f"{s.file}: {s.origin}" for s in _SOURCES.values() if s.file in files)
        or "HotpotQA, MuSiQue and 2WikiMultihopQA paragraphs (see the data folder's README)"
    )
    return DatasetError(
        f"dataset {name!r} needs {', '.join(files)}, not found in {where}. Point "
        f"AGENTFLOW_DATA at a folder holding them; the public originals: {origins}"
    )


def _load_local(roots: list[Path]) -> Dataset:
    found = {name: _locate(_SOURCES[name], roots) for name in _LOCAL_PARTS}
    missing = [_SOURCES[name].file for name, where in found.items() if where is None]
    first = found[_LOCAL_PARTS[0]]
    if missing or first is None:
        raise _missing(_LOCAL, missing, roots)
    root = first[1]
    corpus = _corpus(root)
    if not corpus:
        raise _missing(_LOCAL, [str(Path("corpus") / "*.jsonl")], [root])
    parts = [_load_source(name, [root]) for name in _LOCAL_PARTS]
    items = tuple(
        replace(item, id=f"{part.name}/{item.id}", meta={**item.meta, "source": part.name})
        for part in parts
        for item in part.items
    )
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.path.read_bytes())
    return Dataset(
        name=_LOCAL,
        path=root / "multihop",
        items=items,
        task="qa",
        sha256=digest.hexdigest(),
        issues=tuple(issue for part in parts for issue in part.issues),
        files=tuple(part.path for part in parts),
    )


def _corpus(root: Path) -> list[str]:
    folder = root / "corpus"
    return sorted(str(p) for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def _load_path(path: Path, roots: list[Path]) -> Dataset:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist (or is not a file)")
    for name, source in _SOURCES.items():
        for root in [*roots, PACKAGED_DATA] if source.packaged else roots:
            if (root / source.file).resolve() == path.resolve():
                return _load_source(name, [root])
    if path.suffix == ".jsonl":
        return _read(path, path.stem, records.user)
    if path.suffix == ".csv":
        return _read(path, path.stem, records.browsecomp)
    raise DatasetError(
        f"cannot read {path}: expected a .jsonl file of {{id, question, answer}} records "
        "or a BrowseComp-scheme .csv (columns id, problem, answer, canary)"
    )


def _read(path: Path, name: str, parse: _Parser) -> Dataset:
    data = path.read_bytes()
    if path.suffix == ".csv":
        records = _csv_records(path, data)
    else:
        records = _jsonl_records(data)
    parsed: list[tuple[int, EvalItem]] = []
    issues: list[str] = []
    for line, record in records:
        if isinstance(record, ValueError):
            issues.append(f"{path}:{line}: {_reason(record)}")
            continue
        try:
            parsed.append((line, parse(record, line)))
        except ValueError as exc:
            issues.append(f"{path}:{line}: {_reason(exc)}")
    items = _unique(path, parsed, issues)
    _check(path, len(records), issues)
    tasks = {item.task for item in items}
    return Dataset(
        name=name,
        path=path,
        items=tuple(items),
        task=tasks.pop() if len(tasks) == 1 else "mixed",
        sha256=hashlib.sha256(data).hexdigest(),
        issues=tuple(issues),
        files=(path,),
    )


_Line = tuple[int, dict[str, Any] | ValueError]
"""A record's line number, and the record or why it cannot be one."""


def _jsonl_records(data: bytes) -> list[_Line]:
    """Every non-blank line."""
    records: list[_Line] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            records.append((number, exc))
            continue
        if not isinstance(value, dict):
            value = ValueError(f"expected a JSON object, not {type(value).__name__}")
        records.append((number, value))
    return records


def _csv_records(path: Path, data: bytes) -> list[_Line]:
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        rows = [(reader.line_num, dict(row)) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} is not a readable UTF-8 CSV file: {exc}") from exc
    columns = set(reader.fieldnames or ())
    if not {"id", "problem", "answer", "canary"} <= columns:
        raise DatasetError(
            f"{path}: expected the BrowseComp columns id, problem, answer, canary; "
            f"found {', '.join(sorted(columns)) or 'none'}"
        )
    return [(line, _csv_row(row)) for line, row in rows]


def _csv_row(row: dict[str | Any, Any]) -> dict[str, Any] | ValueError:
    if None in row:
        return ValueError(f"{len(row) - 1 + len(row[None])} fields, more than the header's")
    return row


def _reason(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    return str(exc)


def _unique(path: Path, parsed: list[tuple[int, EvalItem]], issues: list[str]) -> list[EvalItem]:
    first_line: dict[str, int] = {}
    items: list[EvalItem] = []
    for line, item in parsed:
        if item.id in first_line:
            issues.append(
                f"{path}:{line}: duplicate id {item.id!r} (first on line {first_line[item.id]})"
            )
            continue
        first_line[item.id] = line
        items.append(item)
    return items


def _check(path: Path, records: int, issues: list[str]) -> None:
    if records == 0:
        raise DatasetError(f"{path} holds no records")
    if 2 * len(issues) > records:
        shown = "\n  ".join(issues[:_ISSUES_IN_ERROR])
        raise DatasetError(
            f"{path}: {len(issues)} of {records} records cannot be read; the first:\n  {shown}"
        )
