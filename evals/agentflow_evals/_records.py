"""Benchmark records in their public formats, each read into an `EvalItem`.

One parser per format: the records are validated by pydantic (untrusted input), and a record
that cannot be an item raises `ValueError` with the reason, which the loader reports per line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from agentflow_evals.browsecomp import decrypt
from agentflow_evals.mathgrade import parse_aime_integer


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


def aime(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Aime.model_validate(raw)
    meta = {"year": r.year, "contest": r.contest, "problem_idx": r.problem_idx}
    return EvalItem(id=r.id, question=r.problem, answers=(str(r.answer),), task="aime", meta=meta)


def amc(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Amc.model_validate(raw)
    answers = (_number_text(r.answer),)
    return EvalItem(id=str(r.id), question=r.problem, answers=answers, task="math", meta={})


def math500(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Math500.model_validate(raw)
    meta = {"subject": r.subject, "level": r.level}
    return EvalItem(
        id=r.unique_id, question=r.problem, answers=_answers(r.answer), task="math", meta=meta
    )


def hotpotqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _HotpotIrcot.model_validate(raw)
    answers = _answers(*(span for obj in r.answers_objects for span in obj.spans))
    titles = _titles(c.title for c in r.contexts if c.is_supporting)
    meta = {"type": r.type_derived, "supporting_titles": titles, "source": "hotpotqa"}
    return EvalItem(
        id=r.question_id, question=r.question_text, answers=answers, task="qa", meta=meta
    )


def hotpotqa_train(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Hotpot.model_validate(raw)
    titles = _titles(t for t, _ in r.supporting_facts)
    meta = {"type": r.type, "supporting_titles": titles, "source": "hotpotqa"}
    return EvalItem(id=r.id, question=r.question, answers=_answers(r.answer), task="qa", meta=meta)


def musique(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Musique.model_validate(raw)
    titles = _titles(p.title for p in r.paragraphs if p.is_supporting)
    meta = {"type": r.id.split("__")[0], "supporting_titles": titles}
    answers = _answers(r.answer, *r.answer_aliases)
    return EvalItem(id=r.id, question=r.question, answers=answers, task="qa", meta=meta)


def fanoutqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _FanOut.model_validate(raw)
    answers = _answers(_answer_text(r.answer))
    meta = {"raw_answer": r.answer}
    return EvalItem(id=r.id, question=r.question, answers=answers, task="fanout", meta=meta)


def parallelqa(raw: dict[str, Any], line: int) -> EvalItem:
    r = _ParallelQA.model_validate(raw)
    answers = _answers(_number_text(r.answer))
    meta = {"branch": r.branch, "numeric": _NUMERIC.fullmatch(answers[0]) is not None}
    return EvalItem(id=str(r.id), question=r.question, answers=answers, task="qa", meta=meta)


def bamboogle(raw: dict[str, Any], line: int) -> EvalItem:
    r = _Bamboogle.model_validate(raw)
    answers = _answers(r.answer)
    return EvalItem(id=str(r.idx), question=r.question, answers=answers, task="qa", meta={})


def user(raw: dict[str, Any], line: int) -> EvalItem:
    r = _User.model_validate(raw)
    answers = _answers(_number_text(r.answer), *r.aliases)
    if r.task == "aime" and parse_aime_integer(answers[0]) is None:
        raise ValueError(f"task is aime but answer {answers[0]!r} is not an integer 0-999")
    item_id = str(line) if r.id is None else str(r.id)
    return EvalItem(id=item_id, question=r.question, answers=answers, task=r.task, meta={})


def browsecomp(raw: dict[str, Any], line: int) -> EvalItem:
    r = _BrowseCompRow.model_validate(raw)
    question, answer = decrypt(r.problem, r.canary), decrypt(r.answer, r.canary)
    answers = _answers(answer)
    meta = {"sensitive": True, "canary": r.canary}  # the key that protects its reply on disk
    return EvalItem(id=r.id, question=question, answers=answers, task="browsecomp", meta=meta)
