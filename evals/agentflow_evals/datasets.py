"""Evaluation datasets: the benchmark files of the shared data folder, and users' own files.

`load_dataset("aime2024")` reads a known benchmark from the data folder (`data_dir`, else the
`AGENTFLOW_DATA` environment variable, else `shared/data` beside the repository).
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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
)

from agentflow.exceptions import UserError
from agentflow_evals.browsecomp import decrypt
from agentflow_evals.mathgrade import parse_aime_integer

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
class EvalItem:
    id: str
    question: str = field(repr=False)
    answers: tuple[str, ...] = field(repr=False)
    """The gold answer first, then its aliases."""
    task: str
    """The scorer: "qa", "math", "aime" or "browsecomp"."""
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def answer(self) -> str:
        return self.answers[0]


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


# --- record formats ---------------------------------------------------------------------------

Text = Annotated[str, Field(min_length=1)]


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1: a gold answer "1" nobody wrote
        raise ValueError("a gold answer must be a string or a number, not true/false")
    return value


Scalar = Annotated[str | int | float, BeforeValidator(_not_a_boolean)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Aime(_Record):
    id: Text
    problem: Text
    answer: int
    year: int | None = None
    contest: str | None = None
    problem_idx: int | None = None


class _Amc(_Record):
    id: int | str
    problem: Text
    answer: float | int
    url: str | None = None


class _Math500(_Record):
    unique_id: Text
    problem: Text
    answer: Text
    subject: str | None = None
    level: int | str | None = None


class _Spans(_Record):
    spans: list[str]


class _Passage(_Record):
    title: str
    is_supporting: bool = False


class _HotpotIrcot(_Record):
    question_id: Text
    question_text: Text
    answers_objects: list[_Spans]
    contexts: list[_Passage] = []
    type_derived: str | None = None


class _Hotpot(_Record):
    id: Text = Field(validation_alias="_id")
    question: Text
    answer: Text
    type: str | None = None
    supporting_facts: list[tuple[str, int]] = []


class _Musique(_Record):
    id: Text
    question: Text
    answer: Text
    answer_aliases: list[str] = []
    paragraphs: list[_Passage] = []


class _FanOut(_Record):
    id: Text
    question: Text
    answer: JsonValue


class _ParallelQA(_Record):
    id: int | str
    question: Text
    answer: Scalar
    branch: int | None = None


class _Bamboogle(_Record):
    idx: int | str
    question: Text
    answer: Text


class _User(_Record):
    id: int | str | None = None
    question: Text = Field(validation_alias=AliasChoices("question", "problem"))
    answer: Scalar
    aliases: list[str] = []
    task: Literal["qa", "math", "aime"] = "qa"


class _BrowseCompRow(_Record):
    id: Text
    problem: Text
    answer: Text
    canary: Text


_NUMERIC = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
"""A gold answer that is just a number: compared as a number (ParallelQA)."""


def _number_text(value: Scalar) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _answers(*candidates: str) -> tuple[str, ...]:
    answers = tuple(dict.fromkeys(a.strip() for a in candidates if a.strip()))
    if not answers:
        raise ValueError("no non-empty answer")
    return answers


def _titles(titles: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(titles))


def _answer_text(value: JsonValue) -> str:
    """FanOutQA's answers (string, number, list or dict) as one gold string."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_answer_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_answer_text(v) for v in value)
    if value is None:
        return ""
    return _number_text(value) if isinstance(value, int | float) else str(value)


def _aime(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Aime.model_validate(raw)
    meta = {"year": r.year, "contest": r.contest, "problem_idx": r.problem_idx}
    return EvalItem(id=r.id, question=r.problem, answers=(str(r.answer),), task="aime", meta=meta)


def _amc(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Amc.model_validate(raw)
    answers = (_number_text(r.answer),)
    return EvalItem(id=str(r.id), question=r.problem, answers=answers, task="math", meta={})


def _math500(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Math500.model_validate(raw)
    meta = {"subject": r.subject, "level": r.level}
    return EvalItem(
        id=r.unique_id, question=r.problem, answers=_answers(r.answer), task="math", meta=meta
    )


def _hotpotqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _HotpotIrcot.model_validate(raw)
    answers = _answers(*(span for obj in r.answers_objects for span in obj.spans))
    titles = _titles(c.title for c in r.contexts if c.is_supporting)
    meta = {"type": r.type_derived, "supporting_titles": titles}
    return EvalItem(
        id=r.question_id, question=r.question_text, answers=answers, task="qa", meta=meta
    )


def _hotpotqa_train(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Hotpot.model_validate(raw)
    meta = {"type": r.type, "supporting_titles": _titles(t for t, _ in r.supporting_facts)}
    return EvalItem(id=r.id, question=r.question, answers=_answers(r.answer), task="qa", meta=meta)


def _musique(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Musique.model_validate(raw)
    titles = _titles(p.title for p in r.paragraphs if p.is_supporting)
    meta = {"type": r.id.split("__")[0], "supporting_titles": titles}
    answers = _answers(r.answer, *r.answer_aliases)
    return EvalItem(id=r.id, question=r.question, answers=answers, task="qa", meta=meta)


def _fanoutqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _FanOut.model_validate(raw)
    answers = _answers(_answer_text(r.answer))
    meta = {"raw_answer": r.answer}
    return EvalItem(id=r.id, question=r.question, answers=answers, task="fanout", meta=meta)


def _parallelqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _ParallelQA.model_validate(raw)
    answers = _answers(_number_text(r.answer))
    meta = {"branch": r.branch, "numeric": _NUMERIC.fullmatch(answers[0]) is not None}
    return EvalItem(id=str(r.id), question=r.question, answers=answers, task="qa", meta=meta)


def _bamboogle(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Bamboogle.model_validate(raw)
    answers = _answers(r.answer)
    return EvalItem(id=str(r.idx), question=r.question, answers=answers, task="qa", meta={})


def _user(raw: dict[str, Any], line: int) -> EvalItem:
    r = _User.model_validate(raw)
    answers = _answers(_number_text(r.answer), *r.aliases)
    if r.task == "aime" and parse_aime_integer(answers[0]) is None:
        raise ValueError(f"task is aime but answer {answers[0]!r} is not an integer 0-999")
    item_id = str(line) if r.id is None else str(r.id)
    return EvalItem(id=item_id, question=r.question, answers=answers, task=r.task, meta={})


def _browsecomp(raw: dict[str, Any], line: int) -> EvalItem:
    r = _BrowseCompRow.model_validate(raw)
    question, answer = decrypt(r.problem, r.canary), decrypt(r.answer, r.canary)
    answers = _answers(answer)
    meta = {"sensitive": True, "canary": r.canary}  # the key that protects its reply on disk
    return EvalItem(id=r.id, question=question, answers=answers, task="browsecomp", meta=meta)


# --- known datasets ---------------------------------------------------------------------------

_Parser = Callable[[dict[str, Any], int], EvalItem]


@dataclass(frozen=True, kw_only=True)
class _Source:
    file: str
    """Relative to the data folder."""
    task: str
    parse: _Parser
    corpus: bool = False
    """The passages are in the pooled corpus: items get `meta["corpus"]`."""


_SOURCES: dict[str, _Source] = {
    "aime2024": _Source(file="math/aime2024.jsonl", task="aime", parse=_aime),
    "amc23": _Source(file="math/amc23.jsonl", task="math", parse=_amc),
    "math500": _Source(file="math/math500.jsonl", task="math", parse=_math500),
    "hotpotqa": _Source(
        file="multihop/hotpotqa_dev.jsonl", task="qa", parse=_hotpotqa, corpus=True
    ),
    "hotpotqa-train": _Source(
        file="multihop/hotpotqa_train100.jsonl", task="qa", parse=_hotpotqa_train, corpus=True
    ),
    "musique": _Source(file="multihop/musique_dev.jsonl", task="qa", parse=_musique, corpus=True),
    "musique-train": _Source(
        file="multihop/musique_train100.jsonl", task="qa", parse=_musique, corpus=True
    ),
    "fanoutqa": _Source(file="planning/fanoutqa_dev.jsonl", task="fanout", parse=_fanoutqa),
    "parallelqa": _Source(file="planning/parallelqa.jsonl", task="qa", parse=_parallelqa),
    "bamboogle": _Source(file="web/bamboogle.jsonl", task="qa", parse=_bamboogle),
    "browsecomp": _Source(
        file="web/browsecomp_subset50_encrypted.csv", task="browsecomp", parse=_browsecomp
    ),
}

_LOCAL = "multihop-local"
_LOCAL_PARTS = ("hotpotqa", "musique")


def dataset_names() -> list[str]:
    return sorted([*_SOURCES, _LOCAL])


def default_data_dir() -> Path:
    """`AGENTFLOW_DATA`, else `shared/data` beside the repository this package lives in."""
    configured = os.environ.get("AGENTFLOW_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_dataset(name_or_path: str, *, data_dir: Path | None = None) -> Dataset:
    """A known dataset by name (see `dataset_names()`), or a `.jsonl`/`.csv` file by path."""
    root = data_dir if data_dir is not None else default_data_dir()
    if name_or_path == _LOCAL:
        return _load_local(root)
    if name_or_path in _SOURCES:
        return _load_source(name_or_path, root)
    path = Path(name_or_path).expanduser()
    if path.suffix in (".jsonl", ".csv") or path.exists():
        return _load_path(path, root)
    raise DatasetError(
        f"unknown dataset {name_or_path!r}: not a known name and not a .jsonl/.csv file; "
        f"known names: {', '.join(dataset_names())}"
    )


def describe_datasets(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per known dataset: name, task, file, and items (a count, or "missing")."""
    root = data_dir if data_dir is not None else default_data_dir()
    rows = [
        {
            "name": name,
            "task": source.task,
            "file": source.file,
            "items": _count(root / source.file),
        }
        for name, source in _SOURCES.items()
    ]
    parts = [_count(root / _SOURCES[p].file) for p in _LOCAL_PARTS]
    total = sum(p for p in parts if isinstance(p, int))
    rows.append(
        {
            "name": _LOCAL,
            "task": "qa",
            "file": " + ".join(_SOURCES[p].file for p in _LOCAL_PARTS) + " + corpus/*.jsonl",
            "items": "missing" if "missing" in parts or not _corpus(root) else total,
        }
    )
    return sorted(rows, key=lambda row: str(row["name"]))


def _count(path: Path) -> int | str:
    if not path.is_file():
        return "missing"
    lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    return lines - 1 if path.suffix == ".csv" and lines else lines  # minus the header


# --- loading ----------------------------------------------------------------------------------


def _load_source(name: str, root: Path) -> Dataset:
    source = _SOURCES[name]
    path = root / source.file
    if not path.is_file():
        raise DatasetError(
            f"dataset {name!r} needs {path}, which does not exist; point AGENTFLOW_DATA "
            "(or --data-dir) at the folder holding math/, multihop/, planning/, web/"
        )
    dataset = _read(path, name, source.parse)
    corpus = _corpus(root) if source.corpus else []
    if not corpus:
        return dataset
    items = tuple(replace(i, meta={**i.meta, "corpus": list(corpus)}) for i in dataset.items)
    return replace(dataset, items=items)


def _load_local(root: Path) -> Dataset:
    corpus = _corpus(root)
    if not corpus:
        raise DatasetError(f"{_LOCAL} needs the passage files in {root / 'corpus'}: none found")
    parts = [_load_source(name, root) for name in _LOCAL_PARTS]
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


def _load_path(path: Path, root: Path) -> Dataset:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist (or is not a file)")
    for name, source in _SOURCES.items():
        if (root / source.file).resolve() == path.resolve():
            return _load_source(name, root)
    if path.suffix == ".jsonl":
        return _read(path, path.stem, _user)
    if path.suffix == ".csv":
        return _read(path, path.stem, _browsecomp)
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
