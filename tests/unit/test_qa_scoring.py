import pytest

from agentflow_evals.qa import exact_match, f1, normalize_answer


def test_normalisation_follows_squad() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear") == "apple pear"


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f"),
    [
        ("Paris", ["paris"], 1.0, 1.0),
        ("the Paris", ["Paris, France", "Paris"], 1.0, 1.0),
        ("Paris France", ["Paris"], 0.0, 2 / 3),
        ("Lyon", ["Paris"], 0.0, 0.0),
        ("", ["Paris"], 0.0, 0.0),
        ("yes", [], 0.0, 0.0),
        ("the", ["a"], 1.0, 1.0),  # both normalise to nothing
    ],
)
def test_em_and_f1_take_the_best_alias(
    prediction: str, golds: list[str], em: float, f: float
) -> None:
    assert exact_match(prediction, golds) == em
    assert f1(prediction, golds) == pytest.approx(f)
