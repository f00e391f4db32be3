"""Sharding an eval over a Ray cluster: each item is a Ray task, results come back to the
driver, which appends them to `results.jsonl` as they finish, exactly as a local run does.

Workers rebuild the model client from its name, base URLs and key (clients do not cross
processes), and keep one search index per corpus for their lifetime. Install with the `ray`
extra; `--ray local` starts a cluster on this machine, `--ray ADDRESS` joins one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agentflow import Model, OpenAIModel
from agentflow.exceptions import UserError
from agentflow_evals.config import EvalConfig
from agentflow_evals.datasets import EvalItem
from agentflow_evals.item import ToolCache, make_judge, run_item

__all__ = ["RayItemRunner"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What a worker needs to rebuild a model client."""

    name: str
    base_urls: list[str]
    api_key: str
    timeout: float
    idle_timeout: float | None = None

    @classmethod
    def of(cls, model: Model) -> ModelSpec:
        if not isinstance(model, OpenAIModel):
            raise UserError("--ray needs a model served over HTTP (an OpenAIModel)")
        return cls(
            name=model.name,
            base_urls=model.pool.base_urls,
            api_key=model.api_key,
            timeout=model.timeout,
            idle_timeout=model.idle_timeout,
        )

    def build(self) -> OpenAIModel:
        return OpenAIModel(
            self.name,
            self.base_urls,
            api_key=self.api_key,
            timeout=self.timeout,
            idle_timeout=self.idle_timeout,
        )


class RayItemRunner:
    def __init__(self, config: EvalConfig, model: Model, judge: Model | None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise UserError("--ray needs Ray: pip install 'agentflow-dag[ray]'") from exc
        if not ray.is_initialized():
            address = None if config.ray == "local" else config.ray
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._task = ray.remote(_run_item_in_worker)
        self._args = (config, ModelSpec.of(model), ModelSpec.of(judge) if judge else None)

    async def run(self, item: EvalItem) -> dict[str, Any]:
        row: dict[str, Any] = await self._task.remote(item, *self._args)
        return row


_WORKER_TOOLS = ToolCache()
"""Per worker process: a search index is opened once, not once per item."""


def _run_item_in_worker(
    item: EvalItem, config: EvalConfig, model: ModelSpec, judge: ModelSpec | None
) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        client, judge_client = model.build(), judge.build() if judge else None
        try:
            grader = make_judge(config, client, judge_client)
            return await run_item(
                item, config, client, grader, _WORKER_TOOLS.for_item(item, config.corpus)
            )
        finally:
            await client.aclose()
            if judge_client is not None:
                await judge_client.aclose()

    return asyncio.run(run())
