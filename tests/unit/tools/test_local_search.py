from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.tool import ToolError
from agentflow_tools.search import LocalIndex, make_search_tool
from agentflow_tools.search import local as local_module
from tests.devdata import DATA, needs


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))


def write_jsonl(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def corpora(tmp_path: Path) -> list[Path]:
    return [
        write_jsonl(
            tmp_path / "with_ids.jsonl",
            {"id": "p1", "title": "Lyon", "text": "Lyon is a city in France on the Rhone."},
            {"id": "p2", "title": "Danube", "text": "The Danube flows through Vienna."},
        ),
        write_jsonl(
            tmp_path / "no_ids.jsonl",
            {"title": "Marseille", "text": "Marseille is a port city in France."},
            "{this is not json",
            {"title": "Empty", "text": "   "},
            {"title": "Lyon", "text": "Lyon is a city in France on the Rhone."},  # duplicate
        ),
        write_jsonl(
            tmp_path / "sentences.jsonl",
            {"title": "Rhine", "sentences": ["The Rhine is a river.", " It flows to the sea."]},
        ),
    ]


def test_reads_every_record_shape_and_reports_bad_lines(corpora: list[Path]) -> None:
    index = LocalIndex.open(corpora)
    assert index.info.passages == 4
    assert index.info.duplicates == 1
    skipped = index.info.skipped_lines
    assert len(skipped) == 2
    assert f"{corpora[1]}:2: skipped" in skipped[0]
    assert f"{corpora[1]}:3: skipped" in skipped[1] and "no 'text'" in skipped[1]

    (rhine,) = index.search("Rhine river sea", k=1)
    assert rhine.id == "sentences:1"
    assert rhine.text == "The Rhine is a river. It flows to the sea."
    assert index.search("port city", k=1)[0].id == "no_ids:1"


def test_results_are_ranked_and_capped(corpora: list[Path]) -> None:
    hits = LocalIndex.open(corpora).search("city in France", k=2)
    assert {h.title for h in hits} == {"Lyon", "Marseille"}
    assert hits[0].score >= hits[1].score


def test_the_index_is_cached_by_content(
    corpora: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = LocalIndex.open(corpora)

    def no_rebuild(*args: object) -> None:
        raise AssertionError("rebuilt an index that was cached")

    with monkeypatch.context() as patched:
        patched.setattr(local_module, "_build", no_rebuild)
        assert LocalIndex.open(list(reversed(corpora))).info == first.info

    write_jsonl(corpora[0], {"id": "p9", "title": "Nile", "text": "The Nile is long."})
    changed = LocalIndex.open(corpora)
    assert changed.info.key != first.info.key
    assert changed.search("Nile")[0].id == "p9"


def test_an_index_from_an_older_version_is_rebuilt(corpora: list[Path]) -> None:
    info = LocalIndex.open(corpora).info
    meta = Path(info.path) / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "0"}))
    assert LocalIndex.open(corpora).info.version == local_module.INDEX_VERSION


def test_empty_and_huge_queries(corpora: list[Path]) -> None:
    index = LocalIndex.open(corpora)
    with pytest.raises(ToolError, match="empty"):
        index.search(" ?! ")
    huge = "Danube " + "x" * 100_000
    assert index.search(huge, k=1)[0].title == "Danube"


async def test_the_search_tool_returns_passages(corpora: list[Path]) -> None:
    search = make_search_tool(LocalIndex.open(corpora), k=1)
    assert search.name == "search"
    assert search.parameters["required"] == ["query"]
    (hit,) = await search.call({"query": "Vienna"})
    assert hit["title"] == "Danube" and "score" not in hit


def test_missing_corpus_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "x", "--corpus", str(tmp_path / "nope.jsonl")]) == 1
    assert "corpus file not found" in capsys.readouterr().err


@needs("corpus/hotpotqa_dev_paragraphs.jsonl")
def test_cli_search_json_on_the_shared_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = DATA / "corpus" / "hotpotqa_dev_paragraphs.jsonl"
    assert main(["search", "Corliss Archer", "--corpus", str(corpus), "--json", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3
    assert set(hits[0]) == {"id", "title", "text", "score"}
    assert "Corliss Archer" in hits[0]["title"]


def test_cli_index_build_and_info(corpora: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", "build", *map(str, corpora)]) == 0
    out = capsys.readouterr()
    assert "4 passages (1 duplicates dropped, 2 lines skipped)" in out.out
    assert "skipped" in out.err
    assert main(["index", "info"]) == 0
    assert '"passages": 4' in capsys.readouterr().out
