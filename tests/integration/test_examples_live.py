"""Every example against the live server (they read AGENTFLOW_BASE_URL / AGENTFLOW_MODEL)."""

from __future__ import annotations

import pytest

from ..examples import example_names, load_example


@pytest.mark.parametrize("name", example_names())
def test_example_runs_on_the_live_model(name: str) -> None:
    module = load_example(name)
    answer = module.main("What is the capital of France?") if name == "ask" else module.main()
    assert isinstance(answer, str)
