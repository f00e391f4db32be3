"""Every example against the live server (they read AGENTFLOW_BASE_URL / AGENTFLOW_MODEL).

`mcp_server` is not a client of the model but an MCP server a run starts over stdio: its live
test is `test_mcp_tools_live.py` (a dag run on the live model with its tools)."""

from __future__ import annotations

import pytest

from ..examples import example_names, load_example

SERVERS = {"mcp_server"}
"""Examples that serve rather than ask: calling their `main` would serve on the test's stdin."""


@pytest.mark.parametrize("name", [n for n in example_names() if n not in SERVERS])
def test_example_runs_on_the_live_model(name: str) -> None:
    module = load_example(name)
    answer = module.main("What is the capital of France?") if name == "ask" else module.main()
    assert isinstance(answer, str)


def test_the_server_examples_left_out_still_exist() -> None:
    assert SERVERS <= set(example_names())
