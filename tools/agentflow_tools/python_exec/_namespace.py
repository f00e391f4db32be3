"""The namespace sandbox: the command that runs the interpreter as nobody in a private view.

`unshare` starts a shell as PID 1 of new mount, PID, network and IPC namespaces (and, when
agentflow is not root, a user namespace mapping it to root there). The shell (`_SETUP`):

1. builds a new root on a small tmpfs: first what the sandbox owns, a `/proc` of the new PID
   namespace, a `/dev` holding null, zero, full, random and urandom, and three size-limited
   tmpfs, `/dev/shm`, `/tmp` and the home `/home/sandbox` (into which it copies `main.py`);
   then, on top, read-only, nosuid bind mounts of only what the interpreter needs (`/usr`, the
   merged-/usr links, `/etc/ld.so.cache`, and the prefixes of `sys.executable`'s environment),
   so an interpreter that lives under `/tmp` is still there;
2. caps System V IPC in the run's own IPC namespace (shared memory at the scratch size, a few
   queues and semaphore sets): nothing of it outlives the run or is seen by another;
3. pivots into the new root and detaches the host's filesystem, so the host's home,
   `/etc/shadow`, the project and its caches are not hidden but absent;
4. drops to uid/gid 65534 (as root; `setpriv`), then enters a user namespace of its own
   (`unshare --user`): the process limit (`RLIMIT_NPROC`, set by the prelude) counts processes
   per user per user namespace, so each run gets its own count instead of sharing one with
   every other run as nobody. In it, the shell forbids further user namespaces (so the code
   cannot gain capabilities in a nested one) and drops every capability, with no-new-privs,
   before starting the interpreter.

The shell stays PID 1 (an interpreter there would ignore SIGXCPU) and reports a child killed by
signal N as status 128 + N. When it exits, the kernel kills whatever is left in the namespace.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentflow_tools.python_exec import _cgroup

HOME = "/home/sandbox"
"""The code's working directory and home inside the sandbox."""
NOBODY = 65534
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
"""The sandbox's PATH, which its setup uses too."""
_TOOLS = ("unshare", "mount", "umount", "pivot_root", "setpriv")

# $1 new root (an empty directory), $2 main.py on the host, $3 tmpfs size, $4 owner of the home
# (the uid that becomes nobody), $5 the tmpfs size in pages, then read-only paths up to "--",
# then the command.
_SETUP = r"""
set -eu
new=$1 code=$2 scratch=$3 owner=$4 pages=$5
shift 5
mount -t tmpfs -o mode=755,size=1m,nosuid,nodev tmpfs "$new"
mkdir -p "$new/proc" "$new/dev" "$new/tmp" "$new/etc" "$new/home/sandbox"
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t tmpfs -o mode=755,size=64k,nosuid,noexec tmpfs "$new/dev"
for node in null zero full random urandom; do
    : > "$new/dev/$node"
    mount --bind "/dev/$node" "$new/dev/$node"
done
mkdir "$new/dev/shm"
for dir in /dev/shm /tmp; do
    mount -t tmpfs -o "mode=1777,size=$scratch,nosuid,nodev" tmpfs "$new$dir"
done
mount -t tmpfs -o "mode=700,uid=$owner,gid=$owner,size=$scratch,nosuid,nodev" tmpfs \
    "$new/home/sandbox"
while [ "$1" != -- ]; do
    if [ -L "$1" ]; then
        mkdir -p "$new$(dirname "$1")"
        ln -s "$(readlink "$1")" "$new$1"
    elif [ -d "$1" ]; then
        mkdir -p "$new$1"
        mount --bind -o ro,nosuid,nodev "$1" "$new$1"
    elif [ -f "$1" ]; then
        mkdir -p "$new$(dirname "$1")"
        : > "$new$1"
        mount --bind -o ro,nosuid,nodev "$1" "$new$1"
    fi
    shift
done
shift
ipc=/proc/sys/kernel
echo "$scratch" > $ipc/shmmax
echo "$pages" > $ipc/shmall
echo 16 > $ipc/shmmni
echo 16 > $ipc/msgmni
echo 32 256 32 16 > $ipc/sem
echo 16 > /proc/sys/fs/mqueue/queues_max
cp "$code" "$new/home/sandbox/main.py"
chown "$owner:$owner" "$new/home/sandbox/main.py"
printf 'nobody:x:65534:65534:nobody:/home/sandbox:/bin/false\n' > "$new/etc/passwd"
cd "$new"
pivot_root . .
umount -l .
mount -o remount,bind,ro,nosuid,nodev /
cd /home/sandbox
set +e
"$@"
exit $?
"""

# Runs as nobody with capabilities in its own user namespace, then drops them for good.
_DROP = r"""
echo 0 > /proc/sys/user/max_user_namespaces || exit 125
exec setpriv --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
"""

# Passes only if the code runs as nobody in the private view with a writable home, and in
# the run's cgroup if it has one (argv[2], its name).
_PROBE = r"""
import os, sys
open("probe", "w").close()
cgroup = open("/proc/self/cgroup").read()
if os.getuid() != 65534 or os.getcwd() != "/home/sandbox" or os.path.exists(sys.argv[1]):
    sys.exit("the probe found itself outside the sandbox's view")
if sys.argv[2] and "/" + sys.argv[2] + "\n" not in cgroup:
    sys.exit("the probe is not in its cgroup: " + cgroup.strip())
"""


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Whether the namespace sandbox works here, and if not, why."""

    works: bool
    reason: str
    """Why not: the sandbox's own error (the last lines it wrote), or what is missing."""
    unsupported: bool = False
    """The machine offers agentflow no namespaces (tools missing, not permitted), as opposed
    to a sandbox that should work but failed to start."""
    cgroups: Path | None = None
    """Where each run gets a cgroup of its own (`_cgroup`); None: per-process limits only."""


def command(workdir: str, scratch_bytes: int, python: list[str]) -> list[str]:
    """The argv that runs `python` (an interpreter command line) in the sandbox.

    `workdir` is an empty host directory holding `main.py`; the new root is mounted on its
    `root` subdirectory, which the caller creates."""
    namespaces = ["--ipc", "--net", "--pid", "--fork", "--kill-child", "--mount"]
    unshare = [_which("unshare"), *namespaces]
    owner = NOBODY
    become_nobody = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    if os.geteuid() != 0:  # root only in our own user namespace: nobody comes from mapping
        unshare.append("--map-root-user")
        owner, become_nobody = 0, []
    own_namespace = ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}"]
    setup = [*unshare, "--", "sh", "-c", _SETUP, "sh", f"{workdir}/root", f"{workdir}/main.py"]
    pages = max(scratch_bytes // os.sysconf("SC_PAGE_SIZE"), 1)
    return [
        *setup,
        *map(str, (scratch_bytes, owner, pages)),
        *readable_paths(),
        "--",
        *become_nobody,
        *own_namespace,
        "--keep-caps",
        "--",
        *("sh", "-c", _DROP, "sh"),
        *python,
    ]


def readable_paths() -> list[str]:
    """What the sandbox sees of the host: the system's programs and libraries, the interpreter."""
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache"]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes |= {os.path.realpath(path) for path in prefixes}
    prefixes.add(os.path.dirname(os.path.realpath(sys.executable)))
    found = [path for path in system if os.path.lexists(path)]
    # Never show a directory that holds the home, the host's scratch (other runs' code) or
    # what the sandbox mounts privately: an interpreter at / or in ~ itself would show all.
    hidden = [os.path.realpath(os.path.expanduser("~")), tempfile.gettempdir(), *_PRIVATE]
    for path in sorted(prefixes):
        if any(_within(secret, path) for secret in hidden):
            continue
        if not any(_within(path, kept) for kept in found):
            found.append(path)
    return found


_PRIVATE = ("/tmp", "/dev", "/proc", "/etc", HOME)
"""Mounted by the sandbox itself; a host path below one of them is bound on top."""


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _which(name: str) -> str:
    """`name` on agentflow's PATH, or in the system directories that a user's PATH may lack."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


@functools.cache
def probe() -> Probe:
    """Run a tiny program in the sandbox once per process: it either works here or it does not.

    Where the host offers a cgroup for runs, the program runs in one first; if that fails, the
    sandbox is tried without (and each run is then bounded by per-process limits)."""
    missing = [name for name in _TOOLS if _which(name) == name]
    if missing:
        names = ", ".join(missing)
        return Probe(works=False, reason=f"{names} not found (util-linux)", unsupported=True)
    cgroups = _cgroup.parent()
    if cgroups is not None:
        found = _try(cgroups)
        if found.works:
            return found
    return _try(None)


def _try(cgroups: Path | None) -> Probe:
    group = None
    if cgroups is not None:
        group = _cgroup.create(cgroups, memory_bytes=1 << 30, processes=16)
        if group is None:
            return Probe(works=False, reason=f"cannot create a cgroup in {cgroups}")
    try:
        with tempfile.TemporaryDirectory(prefix="agentflow-probe-") as workdir:
            (Path(workdir) / "root").mkdir()
            (Path(workdir) / "main.py").write_text("")
            name = group.path.name if group else ""
            python = [sys.executable, "-I", "-c", _PROBE, workdir, name]
            argv = command(workdir, 1 << 20, python)
            done = _run(group.join(argv) if group else argv, workdir)
    finally:
        if group is not None:
            group.remove()
    if isinstance(done, str) or done.returncode != 0:
        reason = done if isinstance(done, str) else _failure(done)
        return Probe(works=False, reason=reason, unsupported=_unsupported(reason))
    return Probe(works=True, reason="", cgroups=cgroups)


def _run(argv: list[str], workdir: str) -> subprocess.CompletedProcess[bytes] | str:
    try:
        env = {"PATH": PATH, "LANG": "C.UTF-8"}
        return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)


def _failure(done: subprocess.CompletedProcess[bytes]) -> str:
    """The last lines of what the sandbox wrote on failing, which name the step that failed."""
    lines = [line.strip() for line in done.stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return f"the sandbox exited with status {done.returncode} and no message"
    return "; ".join(lines[-3:])


def _unsupported(reason: str) -> bool:
    """Whether `reason` says that namespaces are not allowed here (not a broken sandbox)."""
    refused = ("Operation not permitted", "Permission denied", "No space left on device")
    lines = [line for line in reason.split("; ") if line.startswith("unshare: ")]
    return any(word in line for line in lines for word in refused)
