from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from agentflow.exceptions import UserError
from agentflow_evals import datasets
from agentflow_evals.browsecomp import encrypt
from agentflow_evals.datasets import (
    GOLD_META_KEYS,
    PACKAGED_DATA,
    DatasetError,
    dataset_names,
    default_data_dir,
    describe_datasets,
    load_dataset,
)
from tests.devdata import DATA, needs

BESIDE_THE_CLONE = Path(__file__).resolve().parents[3].parent / "shared" / "data"
FILES = {
    "aime2024": "math/aime2024.jsonl",
    "amc23": "math/amc23.jsonl",
    "math500": "math/math500.jsonl",
    "hotpotqa": "multihop/hotpotqa_dev.jsonl",
    "hotpotqa-train": "multihop/hotpotqa_train100.jsonl",
    "musique": "multihop/musique_dev.jsonl",
    "musique-train": "multihop/musique_train100.jsonl",
    "fanoutqa": "planning/fanoutqa_dev.jsonl",
    "parallelqa": "planning/parallelqa.jsonl",
    "bamboogle": "web/bamboogle.jsonl",
    "browsecomp": "web/browsecomp_subset50_encrypted.csv",
}
PACKAGED = ("aime2024", "amc23", "math500")
needs_all = needs(*FILES.values(), "corpus/*.jsonl")

COUNTS = {
    "aime2024": 30,
    "amc23": 40,
    "math500": 500,
    "hotpotqa": 256,
    "hotpotqa-train": 100,
    "musique": 51,
    "musique-train": 100,
    "fanoutqa": 155,
    "parallelqa": 113,
    "bamboogle": 125,
    "browsecomp": 50,
    "multihop-local": 256 + 51,
}


def test_default_data_dir_is_beside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFLOW_DATA", raising=False)
    assert default_data_dir() == BESIDE_THE_CLONE
    monkeypatch.setenv("AGENTFLOW_DATA", "/somewhere/else")
    assert default_data_dir() == Path("/somewhere/else")


def _with_its_data(name: str) -> object:
    if name in PACKAGED:
        return name
    if name == "multihop-local":
        return pytest.param(name, marks=needs(FILES["hotpotqa"], FILES["musique"], "corpus/*"))
    corpus = ["corpus/*.jsonl"] if "hotpotqa" in name or "musique" in name else []
    return pytest.param(name, marks=needs(FILES[name], *corpus))


@pytest.mark.parametrize("name", [_with_its_data(name) for name in sorted(COUNTS)])
def test_every_known_dataset_loads_cleanly(name: str) -> None:
    dataset = load_dataset(name, data_dir=None if name in PACKAGED else DATA)
    assert len(dataset.items) == COUNTS[name]
    assert dataset.issues == ()
    assert len({item.id for item in dataset.items}) == len(dataset.items)
    assert all(item.question.strip() and item.answers for item in dataset.items)
    assert all(a.strip() for item in dataset.items for a in item.answers)
    assert {item.task for item in dataset.items} == {dataset.task}
    assert len(dataset.sha256) == 64


def test_names_are_listed() -> None:
    assert set(dataset_names()) == set(COUNTS)


@needs_all
def test_describe_counts_items_without_parsing() -> None:
    rows = {row["name"]: row for row in describe_datasets(DATA)}
    assert {name: row["items"] for name, row in rows.items()} == COUNTS
    assert rows["aime2024"]["task"] == "aime"


def test_describe_marks_missing_files_and_counts_the_packaged_sets(tmp_path: Path) -> None:
    rows = {row["name"]: row["items"] for row in describe_datasets(tmp_path)}
    assert {rows.pop(name) for name in PACKAGED} == {COUNTS[name] for name in PACKAGED}
    assert set(rows.values()) == {"missing"}


@pytest.mark.parametrize("name", PACKAGED)
def test_the_math_sets_ship_in_the_package_and_load_with_no_data_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(datasets, "_DEV_DATA", tmp_path / "no-checkout-here")
    dataset = load_dataset(name)
    assert dataset.path == PACKAGED_DATA / FILES[name] and len(dataset.items) == COUNTS[name]
    assert (PACKAGED_DATA / "README.md").read_text().count("MIT") >= 3  # the attribution
    if (DATA / FILES[name]).is_file():  # the copy is the development file, byte for byte
        assert dataset.sha256 == load_dataset(name, data_dir=DATA).sha256


def test_agentflow_data_wins_over_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "math").mkdir()
    _write(
        tmp_path / "math" / "aime2024.jsonl", [json.dumps({"id": "x", "problem": "p", "answer": 7})]
    )
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path))
    assert [item.answer for item in load_dataset("aime2024").items] == ["7"]


def test_a_missing_set_names_its_files_and_the_public_original(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("hotpotqa", data_dir=tmp_path)
    message = str(info.value)
    assert "multihop/hotpotqa_dev.jsonl" in message and str(tmp_path) in message
    assert "AGENTFLOW_DATA" in message and "github.com/xindili-cmu/anlp-project-multihop" in message
    with pytest.raises(DatasetError, match=r"multihop/musique_dev.jsonl"):
        load_dataset("multihop-local", data_dir=tmp_path)


def test_math_formats() -> None:
    aime = load_dataset("aime2024")
    first = aime.items[0]
    assert (first.id, first.answers, first.task) == ("2024-I-1", ("204",), "aime")
    assert first.meta["year"] == 2024
    amc = load_dataset("amc23")
    assert amc.task == "math"
    assert amc.items[0].answers == ("27",)  # 27.0 in the file
    math500 = load_dataset("math500")
    assert math500.items[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500.items[0].id == "test/precalculus/807.json"
    assert "solution" not in math500.items[0].meta


@needs(FILES["hotpotqa"], "corpus/*.jsonl")
def test_hotpotqa_types_titles_and_corpus() -> None:
    hotpot = load_dataset("hotpotqa", data_dir=DATA)
    types = Counter(item.meta["type"] for item in hotpot.items)
    assert types == {"comparison": 127, "bridge": 129}
    item = hotpot.items[0]
    assert item.answers == ("Chief of Protocol",)
    assert len(item.meta["supporting_titles"]) == 2
    corpus = item.meta["corpus"]
    assert len(corpus) == 5 and all(Path(p).is_file() for p in corpus)


@needs_all
def test_no_gold_paragraphs_leak_into_questions_or_meta() -> None:
    raw = json.loads((DATA / "multihop" / "musique_dev.jsonl").read_text().splitlines()[0])
    gold = next(p["paragraph_text"] for p in raw["paragraphs"] if p["is_supporting"])
    for name in ("hotpotqa", "musique", "hotpotqa-train", "musique-train", "multihop-local"):
        for item in load_dataset(name, data_dir=DATA).items:
            assert set(item.meta) <= {"type", "supporting_titles", "corpus", "source"}
            assert gold not in item.question


@needs(FILES["musique"], FILES["musique-train"])
def test_musique_aliases_follow_the_answer() -> None:
    musique = load_dataset("musique", data_dir=DATA)
    assert all("hop" in item.meta["type"] for item in musique.items)
    with_aliases = [item for item in musique.items if len(item.answers) > 1]
    assert with_aliases
    train = load_dataset("musique-train", data_dir=DATA)
    assert train.items[0].answers == ("G. Stanley Hall", "Stanley Hall")


@needs(FILES["hotpotqa-train"])
def test_hotpotqa_train_reads_the_original_format() -> None:
    item = load_dataset("hotpotqa-train", data_dir=DATA).items[0]
    assert (item.id, item.answer) == ("5a77ec115542992a6e59dff7", "a spirit")
    assert item.meta["supporting_titles"] == ["Alû", "Lilu (mythology)"]


@needs(FILES["hotpotqa"], FILES["musique"], "corpus/*.jsonl")
def test_multihop_local_pools_both_sets_with_prefixed_ids() -> None:
    local = load_dataset("multihop-local", data_dir=DATA)
    prefixes = Counter(item.id.split("/")[0] for item in local.items)
    assert prefixes == {"hotpotqa": 256, "musique": 51}
    assert all(item.meta["corpus"] for item in local.items)
    assert len(local.files) == 2 and local.task == "qa"


@needs(FILES["fanoutqa"])
def test_fanoutqa_answers_become_one_string() -> None:
    items = {item.id: item for item in load_dataset("fanoutqa", data_dir=DATA).items}
    first = items["7dcbbbdc7f1120cd"]
    assert first.answer.startswith("Pat Burrell: Right, Mark Mulder: Left")
    assert first.meta["raw_answer"]["JD Drew"] == "Left"
    assert "raw_answer" in GOLD_META_KEYS


@needs(FILES["parallelqa"], FILES["bamboogle"])
def test_parallelqa_and_bamboogle() -> None:
    parallel = load_dataset("parallelqa", data_dir=DATA).items[0]
    assert (parallel.id, parallel.answer, parallel.meta["branch"]) == ("1", "Mariana Trench", 2)
    bamboogle = load_dataset("bamboogle", data_dir=DATA).items[0]
    assert (bamboogle.id, bamboogle.answer) == ("1", "james madison")


@needs(FILES["browsecomp"])
def test_browsecomp_decrypts_in_memory_without_showing_plaintext() -> None:
    dataset = load_dataset("browsecomp", data_dir=DATA)
    assert dataset.task == "browsecomp"
    empty = sum(1 for item in dataset.items if not item.question.strip() or not item.answer)
    assert empty == 0
    assert all(item.meta["sensitive"] is True for item in dataset.items)
    assert all(set(item.meta) == {"sensitive", "canary"} for item in dataset.items)
    assert "question" not in repr(dataset.items[0]) and "answers" not in repr(dataset.items[0])


def test_a_known_file_by_path_loads_as_its_dataset() -> None:
    dataset = load_dataset(str(PACKAGED_DATA / "math" / "aime2024.jsonl"))
    assert dataset.name == "aime2024" and dataset.task == "aime"


# --- users' files -----------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_jsonl_with_aliases_tasks_and_missing_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"id": "a", "question": "Capital of France?", "answer": "Paris"}),
            json.dumps({"question": "2+2?", "answer": 4, "task": "math", "extra": 1}),
            "",
            json.dumps({"id": 7, "problem": "AIME?", "answer": "033", "task": "aime"}),
            json.dumps({"question": "Q", "answer": "X", "aliases": ["x", " X "]}),
        ],
    )
    dataset = load_dataset(str(path))
    assert [item.id for item in dataset.items] == ["a", "2", "7", "5"]
    assert dataset.items[1].answers == ("4",)
    assert dataset.items[3].answers == ("X", "x")
    assert [item.task for item in dataset.items] == ["qa", "math", "aime", "qa"]
    assert dataset.task == "mixed" and dataset.name == "mine"
    assert dataset.issues == ()


def test_corrupt_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    good = [json.dumps({"id": str(i), "question": f"q{i}", "answer": "a"}) for i in range(4)]
    path = _write(
        tmp_path / "mixed.jsonl",
        [
            *good,
            "{not json",
            json.dumps(["a", "list"]),
            json.dumps({"id": "x", "question": "no answer"}),
            json.dumps({"id": "0", "question": "dup", "answer": "a"}),
        ],
    )
    dataset = load_dataset(str(path))
    assert len(dataset.items) == 4
    assert [issue.split(": ")[0] for issue in dataset.issues] == [
        f"{path}:5",
        f"{path}:6",
        f"{path}:7",
        f"{path}:8",
    ]
    assert "not JSON" in dataset.issues[0]
    assert "JSON object" in dataset.issues[1]
    assert "answer" in dataset.issues[2]
    assert "duplicate id '0'" in dataset.issues[3]


def test_mostly_bad_file_raises(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [json.dumps({"id": "1", "question": "q", "answer": "a"}), "oops", "{", "[]"],
    )
    with pytest.raises(DatasetError, match=r"3 of 4 records") as info:
        load_dataset(str(path))
    assert f"{path}:2" in str(info.value)
    assert isinstance(info.value, UserError)


def test_empty_missing_and_unknown(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DatasetError, match="no records"):
        load_dataset(str(empty))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.jsonl"))
    with pytest.raises(DatasetError, match="known names: aime2024, amc23"):
        load_dataset("aime2025")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(tmp_path / "notes.txt"))


def test_aime_task_needs_an_integer_answer(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "aime.jsonl",
        [
            json.dumps({"question": "q", "answer": "12", "task": "aime"}),
            json.dumps({"question": "q", "answer": "1/2", "task": "aime"}),
        ],
    )
    dataset = load_dataset(str(path))
    assert len(dataset.items) == 1 and "not an integer" in dataset.issues[0]


def test_browsecomp_scheme_csv_of_made_up_items(tmp_path: Path) -> None:
    canary = "made-up canary"
    rows = ["id,problem,answer,canary"]
    rows += [
        f"{i},{encrypt(f'Question {i}?', canary)},{encrypt('Answer', canary)},{canary}"
        for i in range(3)
    ]
    rows.append("9,not-base64!,x,c")
    path = _write(tmp_path / "mine.csv", rows)
    dataset = load_dataset(str(path))
    assert [item.question for item in dataset.items] == [
        "Question 0?",
        "Question 1?",
        "Question 2?",
    ]
    assert dataset.items[0].answers == ("Answer",) and dataset.task == "browsecomp"
    assert len(dataset.issues) == 1 and dataset.issues[0].startswith(f"{path}:5: ")


def test_csv_without_the_browsecomp_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "other.csv", ["a,b", "1,2"])
    with pytest.raises(DatasetError, match="expected the BrowseComp columns"):
        load_dataset(str(path))
