"""`manifest.json`: everything needed to reproduce a run, and the check that a resumed run is
the same run (same dataset bytes, planner, model and sampling) rather than a different one."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow import Model, __version__
from agentflow.exceptions import UserError
from agentflow.redaction import redact_secrets

if TYPE_CHECKING:
    from agentflow_evals.config import EvalConfig
    from agentflow_evals.datasets import Dataset

__all__ = ["build_manifest", "check_resumable", "now", "prompts_sha256"]

_MUST_MATCH = (
    "dataset_sha256", "planner", "model", "samples", "temperature", "max_tokens", "seed", "corpus",
    "max_model_calls", "allocation", "judge_model", "deadline", "mcp",
)  # fmt: skip
"""What makes two runs different runs: a resume must not mix their rows in one directory."""
_PROMPT_PACKAGES = ("agentflow", "agentflow_planners", "agentflow_evals")


def build_manifest(
    config: EvalConfig, dataset: Dataset, model: Model, judge: Model | None
) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "dataset_path": str(dataset.path),
        "dataset_sha256": dataset.sha256,
        "planner": config.planner,
        "model": model.name,
        "base_urls": list(config.base_urls),
        "judge_model": (judge or model).name if dataset.task == "browsecomp" else None,
        "judge_base_urls": _urls(judge or model) if dataset.task == "browsecomp" else None,
        "prompts_sha256": prompts_sha256(),
        "git_revision": git_revision(),
        "seed": config.seed,
        "samples": config.samples,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "max_model_calls": config.max_model_calls,
        "deadline": config.deadline,
        "allocation": _plain(config.allocation),
        "concurrency": config.concurrency,
        "corpus": list(config.corpus),
        "limit": config.limit,
        "started_at": now(),
        "finished_at": None,
        "agentflow_version": __version__,
        # Secrets in `--mcp` values are masked (the manifest is shared with the results).
        "command": redact_secrets(config.command),
        # Only when given: a manifest written before `--mcp` existed still matches a rerun.
        **({"mcp": [redact_secrets(spec) for spec in config.mcp]} if config.mcp else {}),
    }


def _urls(model: Model) -> list[str] | None:
    pool = getattr(model, "pool", None)  # an OpenAIModel's servers; fakes have none
    urls = getattr(pool, "base_urls", None)
    return list(urls) if urls else None


def _plain(value: Any) -> Any:
    """A JSON round trip, so the value compares equal to itself read back from disk."""
    return json.loads(json.dumps(value, default=str))


def check_resumable(old: dict[str, Any] | None, new: dict[str, Any], where: Path) -> None:
    """Refuse to mix two different runs in one directory."""
    if old is None:
        return
    differing = [k for k in _MUST_MATCH if old.get(k) != new.get(k)]
    if differing:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing)
        raise UserError(
            f"{where} holds a different run ({changes}); resume it with the same settings, "
            "or pass another --out"
        )
    new["started_at"] = old.get("started_at", new["started_at"])


def prompts_sha256() -> str:
    """One hash over every prompt file agentflow ships: a changed prompt is a different run."""
    digest = hashlib.sha256()
    for package in _PROMPT_PACKAGES:
        folder = resources.files(package) / "prompts"
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_file():
                digest.update(entry.name.encode() + b"\0" + entry.read_bytes())
    return digest.hexdigest()[:16]


def git_revision() -> str | None:
    """The commit of the agentflow checkout, `+dirty` when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
