"""A cgroup v2 of its own for each run, where the host lets agentflow create one.

The run's memory (`memory.max`, tmpfs, SysV shm and memfd pages included, no swap) and its
process count (`pids.max`) are then bounded as a whole, not per process. agentflow looks for
the nearest cgroup, its own or an ancestor, on a cgroup v2 hierarchy that hands the `memory`
and `pids` controllers to its children and in which it may create directories: typically the
root cgroup or a delegated one when agentflow runs as root or under systemd delegation. Hosts
without one (cgroup v1, a read-only `/sys/fs/cgroup` in a container, no delegation) get None,
and the sandbox falls back to its per-process limits.

A run joins its cgroup through a tiny shell (`JOIN`) that moves itself there, then executes
the sandbox, so every process of the run starts inside it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

JOIN = 'echo 0 > "$1/cgroup.procs" || exit 125; shift; exec "$@"'
"""`sh -c JOIN sh CGROUP ARGV...`: runs ARGV inside CGROUP."""
_CONTROLLERS = {"memory", "pids"}
_REMOVE_SECONDS = 2.0


@dataclass(frozen=True, kw_only=True)
class RunGroup:
    """One run's cgroup."""

    path: Path

    def join(self, argv: list[str]) -> list[str]:
        """`argv`, run inside this cgroup."""
        return ["sh", "-c", JOIN, "sh", str(self.path), *argv]

    def oom_kills(self) -> int:
        """Processes the kernel killed for going over `memory.max`."""
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove it (waits up to 2 s for the kernel)."""
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + _REMOVE_SECONDS
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)


def parent(proc: Path = Path("/proc/self")) -> Path | None:
    """The cgroup under which runs get their own cgroups, or None where there is none."""
    mount = _cgroup2_mount(proc / "mountinfo")
    own = _own_cgroup(proc / "cgroup")
    if mount is None or own is None:
        return None
    path = mount / own.lstrip("/")
    while True:
        if _offers_children(path):
            return path
        if path == mount or path.parent == path:
            return None
        path = path.parent


def create(under: Path, *, memory_bytes: int, processes: int) -> RunGroup | None:
    """A new cgroup under `under` with those limits, or None if the host refuses one."""
    path = under / f"agentflow-python-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.mkdir()
    except OSError:
        return None
    group = RunGroup(path=path)
    try:
        (path / "memory.max").write_text(str(memory_bytes))
        (path / "pids.max").write_text(str(processes))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")
    except OSError:
        group.remove()
        return None
    return group


def _offers_children(path: Path) -> bool:
    try:
        enabled = set((path / "cgroup.subtree_control").read_text().split())
    except OSError:
        return False
    return _CONTROLLERS <= enabled and os.access(path, os.W_OK)


def _cgroup2_mount(mountinfo: Path) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted whole (its root, not a part of it)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if rest.split()[:1] == ["cgroup2"] and len(parts) > 4 and parts[3] == "/":
            return Path(parts[4])
    return None


def _own_cgroup(cgroup: Path) -> str | None:
    """This process's cgroup v2 path ("0::/path")."""
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None
