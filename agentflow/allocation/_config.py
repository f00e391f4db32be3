"""The calibrated thresholds on disk, and turning an `--allocation` name into an `Allocator`.

`agentflow allocate calibrate` writes one entry per estimator (its tau, the dev split it was
chosen on, the model, and the accuracy/token curve it was chosen from); `ask`, `eval` and the
Python API read the entry for the estimator they use. The file is untrusted input, so it is
validated (`extra="forbid"`) and a broken file is an error that names it, never ignored.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.allocation._allocator import DEFAULT_TAU, Allocator
from agentflow.allocation._budget import Draw, Strategy, VoteName
from agentflow.exceptions import UserError
from agentflow.settings import agentflow_home

__all__ = [
    "AllocationConfig",
    "Calibration",
    "CurvePoint",
    "StrategyBand",
    "config_path",
    "load_allocator",
    "read_config",
]

ALLOCATIONS = ("off", "uniform-fast", "uniform-think", "score", "agreement", "confidence", "static")
"""What `--allocation` accepts."""


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tau: float
    accuracy: float
    completion_tokens: float
    """Mean generated tokens per item at this tau."""
    think_share: float
    """Share of steps that ran in think mode."""


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tau: float = Field(ge=0.0, le=1.0)
    dev_split: str
    model: str
    items: int
    curve: list[CurvePoint] = Field(default_factory=list)


class StrategyBand(BaseModel):
    """Think-mode nodes whose difficulty is above `above` (and not above the next band's) spend
    System 2 by `strategy` (e.g. from `benchmarks/strategies.py`'s table)."""

    model_config = ConfigDict(extra="forbid")
    above: float = Field(ge=0.0, le=1.0)
    strategy: Strategy


class AllocationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    estimators: dict[str, Calibration] = Field(default_factory=dict)
    strategies: list[StrategyBand] = Field(default_factory=list)
    """Difficulty bands to strategies; none: every think node by its budget's strategy."""


def config_path() -> Path:
    """`$AGENTFLOW_ALLOCATION_CONFIG`, default `$AGENTFLOW_HOME/allocation.json`."""
    return Path(
        os.environ.get("AGENTFLOW_ALLOCATION_CONFIG") or agentflow_home() / "allocation.json"
    )


def read_config(path: Path | None = None) -> AllocationConfig:
    """The config at `path` (default `config_path()`); an empty one when there is no file."""
    path = path or config_path()
    if not path.exists():
        return AllocationConfig()
    try:
        return AllocationConfig.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise UserError(f"{path} is not an allocation config: {exc.errors()[0]['msg']}") from exc


def load_allocator(
    name: str,
    *,
    tau: float | None = None,
    vote: VoteName = "none",
    samples: int = 1,
    draw: Draw = "parallel",
    config: Path | None = None,
) -> Allocator | None:
    """The allocator `--allocation NAME` names (None for "off"). Its tau: `tau` if given,
    else the calibrated one in the config file, else `DEFAULT_TAU`."""
    if name not in ALLOCATIONS:
        raise UserError(f"unknown allocation {name!r}; choose one of {', '.join(ALLOCATIONS)}")
    if name == "off":
        return None
    stored = read_config(config)
    if tau is None:
        calibrated = stored.estimators.get(name)
        tau = calibrated.tau if calibrated else DEFAULT_TAU
    allocator = Allocator.named(name, tau=tau, vote=vote, samples=samples, draw=draw)
    bands = sorted((band.above, band.strategy) for band in stored.strategies)
    return replace(allocator, strategy_bands=tuple(bands)) if bands else allocator
