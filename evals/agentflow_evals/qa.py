"""Short answers: exact match and token F1 (SQuAD, HotpotQA), FanOutQA's loose accuracy, numbers.

Normalisation (as in the SQuAD v1.1 evaluation script): lower-case, drop punctuation, drop the
articles a/an/the, collapse whitespace. The score of a prediction is its best over the aliases.
HotpotQA's official script (`hotpot_evaluate_v1.py`) adds one rule to SQuAD's F1: when either
normalised side is "yes", "no" or "noanswer" and the two differ, F1 is 0 (`hotpotqa_f1`).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator

from pydantic import JsonValue

__all__ = [
    "exact_match",
    "f1",
    "hotpotqa_f1",
    "loose_accuracy",
    "normalize_answer",
    "numbers_match",
    "parse_number",
    "rounded_number",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    predicted = normalize_answer(prediction)
    return max((float(predicted == normalize_answer(g)) for g in golds), default=0.0)


def f1(prediction: str, golds: Iterable[str]) -> float:
    return max((_f1(prediction, g) for g in golds), default=0.0)


def hotpotqa_f1(prediction: str, golds: Iterable[str]) -> float:
    """HotpotQA's official F1: SQuAD's, except that it is 0 when either normalised side is
    yes/no/noanswer and they differ ("no" against "no way" scores 0.67 by SQuAD's F1, 0 here).
    Like the official script, two empty sides score 0."""
    return max((_hotpotqa_f1(prediction, g) for g in golds), default=0.0)


_HOTPOTQA_SPECIAL = ("yes", "no", "noanswer")


def _hotpotqa_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction), normalize_answer(gold)
    if predicted != expected and (predicted in _HOTPOTQA_SPECIAL or expected in _HOTPOTQA_SPECIAL):
        return 0.0
    if not predicted or not expected:
        return 0.0
    return _f1(prediction, gold)


def _f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


# --- FanOutQA -----------------------------------------------------------------------------------


def loose_accuracy(gold: JsonValue, prediction: str) -> float:
    """FanOutQA's loose accuracy: the share of the gold answer's strings found in the prediction.

    As `answer_in_text` in zhudotexe/fanoutqa `fanoutqa/eval/string.py`: a list counts each
    item, a dict each key and each value, booleans read "yes"/"no"; a string is found when its
    normalised form occurs in the normalised prediction between word boundaries. FanOutQA's
    normaliser also lemmatises with spaCy; this one does not (no spaCy model at run time), so a
    gold "Left" does not match a predicted "lefts" here: slightly stricter than the original.
    """
    strings = list(_gold_strings(gold))
    if not strings:
        return 0.0
    candidate = _fanout_normalize(prediction)
    found = sum(1 for s in strings if _found(_fanout_normalize(s), candidate))
    return found / len(strings)


def _gold_strings(gold: JsonValue) -> Iterator[str]:
    if isinstance(gold, dict):
        for key, value in gold.items():
            yield key
            yield from _gold_strings(value)
    elif isinstance(gold, list):
        for value in gold:
            yield from _gold_strings(value)
    elif isinstance(gold, bool):
        yield "yes" if gold else "no"
    elif gold is not None:
        yield str(gold)


def _found(needle: str, haystack: str) -> bool:
    # Not `\b`: a gold that starts or ends with "$", "(" or "+" ("$145786", "Miami (Fla)",
    # "C++") has no word boundary at that edge, and would never be found.
    pattern = rf"(?<!\w){re.escape(needle)}(?!\w)"
    return bool(needle) and re.search(pattern, haystack) is not None


_THOUSANDS = re.compile(r"(\d+,)+\d+(\.\d+)?")
_FANOUT_PUNCTUATION = re.compile(r"[,.?!:;]")


def _fanout_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", str(text).lower())
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    return " ".join(_FANOUT_PUNCTUATION.sub("", text).split())


# --- numbers (ParallelQA) -----------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """The one number in `text` ("$5,931.80", "about 40.9 km", "-3"), or None when there is
    none or more than one (which of several numbers is the answer cannot be told)."""
    found = _NUMBER.findall(text)
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def rounded_number(prediction: str, gold: str) -> float | None:
    """The prediction's number rounded to gold's precision (what `numbers_match` compares), so
    7.6133 and 7.61 vote as one answer for gold "7.61"; None without exactly one number."""
    predicted = parse_number(prediction)
    return None if predicted is None else round(predicted, _decimals(gold))


def _decimals(gold: str) -> int:
    return len(gold.strip().rpartition(".")[2]) if "." in gold else 0


def numbers_match(prediction: str, gold: str) -> bool:
    """Whether `prediction` states the number `gold` to gold's own precision: gold "7.61"
    accepts 7.61, 7.610 and 7.6133 (rounded to two decimals), not 7.62; gold "3200" accepts
    3200 and "3,200.4" but not 3201."""
    expected, predicted = parse_number(gold), parse_number(prediction)
    if expected is None or predicted is None:
        return False
    decimals = _decimals(gold)
    return abs(round(predicted, decimals) - expected) < 0.5 * 10.0**-decimals
