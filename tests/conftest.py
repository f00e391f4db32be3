"""Unit tests never reach a real model: only tests marked `vllm` see AGENTFLOW_BASE_URL."""

from __future__ import annotations

import os

import pytest

LIVE_BASE_URL = os.environ.get("AGENTFLOW_BASE_URL")
BLOCKED_URL = "http://model-requests-are-blocked-in-unit-tests.invalid/v1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.vllm)
    if LIVE_BASE_URL:
        return
    skip = pytest.mark.skip(reason="needs a live vLLM server: set AGENTFLOW_BASE_URL")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _block_live_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "vllm" not in request.keywords:
        monkeypatch.setenv("AGENTFLOW_BASE_URL", BLOCKED_URL)
