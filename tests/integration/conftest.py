"""Integration tests share one live vLLM server (AGENTFLOW_BASE_URL; `make test` starts the
embedded one with `agentflow model up`, the way users start it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentflow.models import OpenAIModel
from agentflow.settings import Settings


@pytest.fixture(scope="session")
def live_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
async def live_model(live_settings: Settings) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel(live_settings.model, live_settings.base_url, api_key=live_settings.api_key)
    yield model
    await model.aclose()
