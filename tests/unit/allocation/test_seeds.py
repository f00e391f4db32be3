"""`eval --seed` and votes: every sample of a vote goes out with a seed of its own, derived from
the run's base seed, whether drawn one per request or as `n` in one request (vLLM seeds the
i-th of `n` with the request's seed + i). The server here answers like vLLM under a seed: the
same seed, the same answer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agentflow.cli import main
from agentflow.model import ModelSettings, sample_seed
from tests.unit.scripted_server import Reply, reply_chat, reply_json, scripted_server


def _by_seed(refuse_n: bool = False) -> Any:
    def answer(path: str, body: dict[str, Any]) -> Reply:
        n, seed = int(body.get("n", 1)), body.get("seed")
        if refuse_n and n > 1:
            return reply_json({"error": {"message": "n must be 1", "code": 400}}, status=400)
        seeds = [random.randrange(10**9) if seed is None else seed + i for i in range(n)]
        return reply_chat(body, [f"Answer: {s % 1000}" for s in seeds])

    return answer


def _eval(tmp_path: Path, url: str, *options: str) -> int:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": "2+2?", "answer": "4"}) + "\n")
    args = ["eval", str(questions), "--base-url", url, "--model", "m", "--seed", "0"]
    return main([*args, "--out", str(tmp_path / "run"), *options])


def _drawn_seeds(requests: list[dict[str, Any]]) -> list[int]:
    """The seed of every sample the server drew (a request of n: seed, seed + 1, ...)."""
    chat = [r for r in requests if r["path"] == "/chat/completions"]
    return [r["seed"] + i for r in chat for i in range(int(r.get("n", 1)))]


VOTE = ["--allocation", "uniform-think", "--vote", "esc", "--vote-samples", "8"]


def test_eval_seed_gives_each_sample_of_a_vote_its_own_seed(tmp_path: Path) -> None:
    """Before: all five requests went out with seed 0, the first window agreed on one answer
    and the vote was one sample three times over."""
    with scripted_server(_by_seed()) as server:
        assert _eval(tmp_path, server.base_url, *VOTE) == 0
    seeds = _drawn_seeds(server.requests)
    assert len(seeds) == 8 and len(set(seeds)) == 8


def test_samples_drawn_as_n_get_distinct_seeds_across_waves(tmp_path: Path) -> None:
    with scripted_server(_by_seed()) as server:
        assert _eval(tmp_path, server.base_url, *VOTE, "--vote-draw", "n") == 0
    assert [r.get("n") for r in server.requests] == [3, 3, 2]
    seeds = _drawn_seeds(server.requests)
    assert len(set(seeds)) == 8  # before: three waves of the same three seeds


def test_agreement_samples_drawn_one_by_one_get_distinct_seeds(tmp_path: Path) -> None:
    with scripted_server(_by_seed(refuse_n=True)) as server:
        assert _eval(tmp_path, server.base_url, "--allocation", "agreement") == 0
    one_by_one = [r for r in server.requests if r.get("n", 1) == 1][:3]
    assert len({r["seed"] for r in one_by_one}) == 3  # before: 0, 0, 0


def test_a_run_with_the_same_seed_draws_the_same_seeds(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        with scripted_server(_by_seed()) as server:
            assert _eval(tmp_path / name, server.base_url, *VOTE) == 0
        runs.append(sorted(_drawn_seeds(server.requests)))
    assert runs[0] == runs[1]


def test_sample_seeds_of_neighbouring_base_seeds_do_not_overlap() -> None:
    """An eval's k runs of an item have the bases seed + j: their votes must not share draws."""
    drawn = [{sample_seed(base, i) for i in range(64)} for base in range(32)]
    assert all(len(d) == 64 for d in drawn)
    assert len(set().union(*drawn)) == 32 * 64


def test_the_seed_sent_is_the_base_unless_the_request_is_one_of_several_samples() -> None:
    assert ModelSettings(seed=5).request_seed == 5
    assert ModelSettings(sample=2).request_seed is None
    assert ModelSettings(seed=5, sample=2).request_seed == sample_seed(5, 0) + 2
    overridden = ModelSettings(n=3, sample=4).merged(ModelSettings(seed=7))
    assert overridden.request_seed == sample_seed(7, 4)  # an override keeps the sample apart
