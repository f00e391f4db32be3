"""The namespace sandbox: the command that runs the interpreter as nobody in a private view.

`unshare` starts a shell as PID 1 of new mount, PID and network namespaces (and, when agentflow
is not root, a user namespace mapping it to root there). The shell (`_SETUP`):

1. builds a new root on a small tmpfs with read-only, nosuid bind mounts of only what the
   interpreter needs (`/usr`, the merged-/usr links, `/etc/ld.so.cache`, and the prefixes of
   `sys.executable`'s environment), a `/proc` of the new PID namespace, a `/dev` holding null,
   zero, full, random and urandom, and two size-limited tmpfs: `/tmp` and the home
   `/home/sandbox`, into which it copies `main.py`;
2. pivots into it and detaches the host's filesystem, so the host's home, `/etc/shadow`, the
   project and its caches are not hidden but absent;
3. drops to uid/gid 65534 (as root; `setpriv`), then enters a user namespace of its own
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

HOME = "/home/sandbox"
"""The code's working directory and home inside the sandbox."""
NOBODY = 65534
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
"""The sandbox's PATH, which its setup uses too."""
_TOOLS = ("unshare", "mount", "umount", "pivot_root", "setpriv")

# $1 new root (an empty directory), $2 main.py on the host, $3 tmpfs size, $4 owner of the home
# (the uid that becomes nobody), then read-only paths up to "--", then the command.
_SETUP = r"""
set -eu
new=$1 code=$2 scratch=$3 owner=$4
shift 4
mount -t tmpfs -o mode=755,size=1m,nosuid,nodev tmpfs "$new"
mkdir -p "$new/proc" "$new/dev" "$new/tmp" "$new/etc" "$new/home/sandbox"
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
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t tmpfs -o mode=755,size=64k,nosuid,noexec tmpfs "$new/dev"
for node in null zero full random urandom; do
    : > "$new/dev/$node"
    mount --bind "/dev/$node" "$new/dev/$node"
done
mount -t tmpfs -o "mode=1777,size=$scratch,nosuid,nodev" tmpfs "$new/tmp"
mount -t tmpfs -o "mode=700,uid=$owner,gid=$owner,size=$scratch,nosuid,nodev" tmpfs \
    "$new/home/sandbox"
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

# Passes only if the code runs as nobody in the private view with a writable home.
_PROBE = r"""
import os, sys
open("probe", "w").close()
sys.exit(0 if os.getuid() == 65534 and os.getcwd() == "/home/sandbox"
         and not os.path.exists(sys.argv[1]) else 1)
"""


@dataclass(frozen=True, kw_only=True)
class Probe:
    """Whether the namespace sandbox works here, and if not, why."""

    works: bool
    reason: str


def command(workdir: str, scratch_bytes: int, python: list[str]) -> list[str]:
    """The argv that runs `python` (an interpreter command line) in the sandbox.

    `workdir` is an empty host directory holding `main.py`; the new root is mounted on its
    `root` subdirectory, which the caller creates."""
    unshare = [_which("unshare"), "--net", "--pid", "--fork", "--kill-child", "--mount"]
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
    return [
        *setup,
        str(scratch_bytes),
        str(owner),
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
    home = os.path.realpath(os.path.expanduser("~"))
    for path in sorted(prefixes):
        if _within(home, path):  # an interpreter at / or in ~ itself would show all of it
            continue
        if not any(_within(path, kept) for kept in found):
            found.append(path)
    return found


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _which(name: str) -> str:
    """`name` on agentflow's PATH, or in the system directories that a user's PATH may lack."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


@functools.cache
def probe() -> Probe:
    """Run a tiny program in the sandbox once per process: it either works here or it does not."""
    missing = [name for name in _TOOLS if _which(name) == name]
    if missing:
        return Probe(works=False, reason=f"{', '.join(missing)} not found")
    with tempfile.TemporaryDirectory(prefix="agentflow-probe-") as workdir:
        (Path(workdir) / "root").mkdir()
        (Path(workdir) / "main.py").write_text("")
        argv = command(workdir, 1 << 20, [sys.executable, "-I", "-c", _PROBE, workdir])
        try:
            env = {"PATH": PATH, "LANG": "C.UTF-8"}
            done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            return Probe(works=False, reason=str(exc))
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        return Probe(works=False, reason=error[-1] if error else f"status {done.returncode}")
    return Probe(works=True, reason="")
