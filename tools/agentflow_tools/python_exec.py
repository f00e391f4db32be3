"""Run model-written Python in a separate, limited process: the tool for tool-integrated math.

Each call gets a fresh interpreter (`sys.executable -I -u -X utf8`) in a new temporary working
directory, which is removed afterwards, in its own session (process group) so that it and any
children are killed together. Before the model's code runs, a short prelude in the child:

- sets resource limits: CPU time (`RLIMIT_CPU`, 10 s: seconds of real arithmetic, far more than
  a worked maths problem needs, and an endless loop is stopped by the kernel), address space
  (`RLIMIT_AS`, 1 GiB: room for numpy and sympy, while `[0] * 10**10` fails at once with
  `MemoryError` instead of pushing the machine into swap), file size (`RLIMIT_FSIZE`, 64 MiB),
  and no core dumps;
- refuses to start processes (an audit hook on fork, exec, spawn and `subprocess`), since maths
  needs none and a fork bomb would outlive the limits of one process;
- compiles the code as `main.py`, runs it, prints the value of a final bare expression as a
  notebook would, and prints tracebacks without the prelude's own frames.

The parent enforces a wall-clock timeout (20 s, for code that sleeps or blocks) by killing the
whole process group, and keeps at most 8 kB of each of stdout and stderr (the first and last
halves, with a note of how many bytes were cut): about a page, enough for answers and
tracebacks, while a runaway `print` loop cannot flood the model's context or the parent's memory.

Isolation. Where `unshare` works (as root, or unprivileged with user namespaces), the child runs
in new network, PID and mount namespaces (`available_isolation() == "namespace"`):

- the network namespace has no interface up, so every connection, loopback included, fails
  with "Network is unreachable";
- in the mount namespace every mount is remounted read-only except the working directory, and
  the PID namespace shows and signals only the sandbox's own processes (it is torn down with
  them);
- every capability is dropped (`setpriv`), so the code cannot undo any of this or lift its
  limits, even as root. Reading is not restricted: the code can read what the parent can.

A shell is PID 1 of the namespace (an interpreter there would ignore SIGXCPU) and reports a
child killed by signal N as status 128 + N, so there an exit status above 128 is read as a kill.

Elsewhere (`"audit-hook"`) the audit hook also refuses socket connect/bind/send/resolve. That is
best effort only: audit hooks are no security boundary (`ctypes` can get around them), and the
filesystem is then as writable as for the parent process.

Whatever the code does, the outcome is data: `run_code` returns a `PythonResult` (exit status,
output, and why the process was killed, if it was). `ToolError` is raised only when the code
cannot be run at all (empty or too long).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentflow.exceptions import UserError
from agentflow.tool import Tool, ToolError, tool

__all__ = [
    "MAX_CODE_CHARS",
    "Isolation",
    "PythonResult",
    "PythonSandbox",
    "available_isolation",
    "make_python_tool",
    "run_code",
    "run_python",
]

Isolation = Literal["auto", "namespace", "audit-hook"]

MAX_CODE_CHARS = 100_000
_DRAIN_GRACE = 1.0
"""Seconds to finish reading output after the process group is killed."""

# Runs in the child before the model's code; the limits arrive in sys.argv[1:].
_PRELUDE = r"""
def _sandbox():
    import ast, resource, sys, traceback, types
    cpu, memory, files, block_network = (int(a) for a in sys.argv[1:])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    blocked = {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "pty.spawn",
    }
    if block_network:
        blocked |= {
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        }

    def deny(event, args):
        if event in blocked:
            raise PermissionError(f"{event}: not allowed in this sandbox")

    sys.addaudithook(deny)
    sys.argv = ["main.py"]
    main = types.ModuleType("__main__")
    main.__file__ = "main.py"
    sys.modules["__main__"] = main
    with open("main.py", encoding="utf-8") as file:
        source = file.read()
    try:
        tree = ast.parse(source, "main.py")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "main.py", "exec"), main.__dict__)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "main.py", "eval"), main.__dict__)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as exc:
        own = isinstance(exc, SyntaxError) and exc.filename == "main.py"
        traceback.print_exception(type(exc), exc, None if own else exc.__traceback__.tb_next)
        sys.exit(1)


_sandbox()
"""

# PID 1 of the new namespaces: make every mount read-only but the working directory ($1), drop
# all capabilities, run the interpreter and report its status. It does not `exec`: as PID 1 the
# interpreter would ignore SIGXCPU. A child killed by signal N exits here with 128 + N.
_SETUP = r"""
workdir=$1
shift
mount --bind "$workdir" "$workdir" || exit 125
while read -r _ mnt _; do
    mount -o remount,bind,ro "$(printf '%b' "$mnt")" 2>/dev/null
done < /proc/self/mounts
mount -o remount,bind,rw "$workdir" || exit 125
cd "$workdir" || exit 125
setpriv --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
exit $?
"""

# Passes only if the working directory is writable and the rest of the filesystem is not.
_PROBE = r"""
import errno, sys
open("probe", "w").close()
try:
    open(sys.argv[1], "w").close()
except OSError as exc:
    sys.exit(0 if exc.errno == errno.EROFS else 1)
sys.exit(1)
"""


@dataclass(frozen=True, kw_only=True)
class PythonSandbox:
    """Limits for one run of model-written code."""

    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    """Address-space limit; numpy and sympy import well within 1 GiB."""
    wall_seconds: float = 20.0
    output_bytes: int = 8_000
    """Bytes kept of each of stdout and stderr."""
    file_bytes: int = 64 << 20
    """Largest file the code may write."""
    isolation: Isolation = "auto"
    """"namespace" (needs `unshare`), "audit-hook", or "auto": namespaces where they work."""


@dataclass(frozen=True, kw_only=True)
class PythonResult:
    """What happened when the code ran."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The exit status, or None if the process was killed."""
    killed: str | None
    """Why the process was killed ("cpu time limit (10 s)", ...), or None."""
    stdout_cut: int = 0
    """Bytes of stdout left out of `stdout`."""
    stderr_cut: int = 0

    def render(self) -> str:
        """The result as the model reads it."""
        lines = [f"killed: {self.killed}" if self.killed else f"exit status {self.exit_code}"]
        if self.stdout:
            lines.append(f"stdout:\n{self.stdout.rstrip()}")
        if self.stderr:
            lines.append(f"stderr:\n{self.stderr.rstrip()}")
        if not (self.stdout or self.stderr):
            lines.append("(no output)")
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True)
class _Launch:
    namespace: bool
    """Run under `unshare`; statuses above 128 then stand for signals."""
    block_network: bool
    """Refuse socket use with the audit hook."""


async def run_code(code: str, sandbox: PythonSandbox | None = None) -> PythonResult:
    """Run `code` in a fresh sandboxed interpreter and report what happened."""
    sandbox = sandbox or PythonSandbox()
    if not code.strip():
        raise ToolError("there is no code to run")
    if len(code) > MAX_CODE_CHARS:
        raise ToolError(f"the code is too long ({len(code)} characters, at most {MAX_CODE_CHARS})")
    launch = await _launch(sandbox.isolation)
    with tempfile.TemporaryDirectory(prefix="agentflow-python-") as workdir:
        _write_code(Path(workdir), code)
        argv = _command(launch, workdir, sandbox)
        return await _execute(argv, workdir, sandbox, launch)


def available_isolation() -> Literal["namespace", "audit-hook"]:
    """How "auto" keeps code off the network on this machine."""
    return "namespace" if _namespace_prefix() is not None else "audit-hook"


async def _launch(isolation: Isolation) -> _Launch:
    if isolation == "audit-hook":
        return _Launch(namespace=False, block_network=True)
    if await asyncio.to_thread(_namespace_prefix) is not None:
        return _Launch(namespace=True, block_network=False)
    if isolation == "namespace":
        raise UserError("sandbox isolation by namespaces needs `unshare`, `mount` and `setpriv`")
    return _Launch(namespace=False, block_network=True)


def _command(launch: _Launch, workdir: str, sandbox: PythonSandbox) -> list[str]:
    limits = (sandbox.cpu_seconds, sandbox.memory_bytes, sandbox.file_bytes, launch.block_network)
    python = [sys.executable, "-I", "-u", "-X", "utf8", "-c", _PRELUDE, *map(str, map(int, limits))]
    prefix = _namespace_prefix() if launch.namespace else None
    return python if prefix is None else [*prefix, workdir, *python]


@functools.cache
def _namespace_prefix() -> tuple[str, ...] | None:
    """The command that starts a child in new namespaces, if that works on this machine."""
    unshare = shutil.which("unshare")
    if unshare is None or not (shutil.which("mount") and shutil.which("setpriv")):
        return None
    flags = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    prefix = (unshare, *flags, "--", "sh", "-c", _SETUP, "sh")
    with tempfile.TemporaryDirectory(prefix="agentflow-probe-") as workdir:
        outside = Path(workdir).with_name(Path(workdir).name + "-outside")
        probe = [*prefix, workdir, sys.executable, "-I", "-c", _PROBE, str(outside)]
        try:
            done = subprocess.run(probe, cwd=workdir, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            outside.unlink(missing_ok=True)
    return prefix if done.returncode == 0 else None


def _write_code(workdir: Path, code: str) -> None:
    (workdir / "main.py").write_text(code, encoding="utf-8")


def _environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        # One thread per numeric library: threads multiply the address space they reserve.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


async def _execute(
    argv: list[str], workdir: str, sandbox: PythonSandbox, launch: _Launch
) -> PythonResult:
    stdout, stderr = _Capture(sandbox.output_bytes), _Capture(sandbox.output_bytes)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=_environment(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.TaskGroup() as group:
            readers = [
                group.create_task(stdout.drain(process.stdout)),
                group.create_task(stderr.drain(process.stderr)),
            ]
            timed_out = await _wait(process, sandbox.wall_seconds)
            _kill_group(process.pid)
            # A process that left the group may hold the pipes open: stop waiting for it.
            _, pending = await asyncio.wait(readers, timeout=_DRAIN_GRACE)
            for reader in pending:
                reader.cancel()
    finally:
        _kill_group(process.pid)
        await process.wait()
    status = _Status.of(process.returncode, launch)
    return PythonResult(
        stdout=stdout.text(),
        stderr=stderr.text(),
        exit_code=status.exit_code,
        killed=_kill_reason(status.signal, timed_out, sandbox),
        stdout_cut=stdout.cut,
        stderr_cut=stderr.cut,
    )


async def _wait(process: asyncio.subprocess.Process, seconds: float) -> bool:
    """Wait for the process to exit; True if it had to be killed for taking too long."""
    try:
        async with asyncio.timeout(seconds):
            await process.wait()
    except TimeoutError:
        return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class _Status:
    exit_code: int | None
    signal: int | None

    @classmethod
    def of(cls, returncode: int | None, launch: _Launch) -> _Status:
        if returncode is None:
            return cls(exit_code=None, signal=None)
        if returncode < 0:
            return cls(exit_code=None, signal=-returncode)
        if launch.namespace and 128 < returncode < 128 + signal.NSIG:
            return cls(exit_code=None, signal=returncode - 128)
        return cls(exit_code=returncode, signal=None)


def _kill_reason(signum: int | None, timed_out: bool, sandbox: PythonSandbox) -> str | None:
    if timed_out:
        return f"wall-clock timeout ({sandbox.wall_seconds:g} s)"
    if signum is None:
        return None
    if signum in (signal.SIGXCPU, signal.SIGKILL):
        return f"cpu time limit ({sandbox.cpu_seconds} s)"
    try:
        return f"signal {signal.Signals(signum).name}"
    except ValueError:
        return f"signal {signum}"


class _Capture:
    """The first and last halves of a byte budget of a stream, and the count of bytes between."""

    def __init__(self, budget: int) -> None:
        self._half = max(budget // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    @property
    def cut(self) -> int:
        """Bytes read but not kept."""
        return self._total - len(self._head) - len(self._tail)

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(1 << 16):
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._half - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        del self._tail[: max(len(self._tail) - self._half, 0)]

    def text(self) -> str:
        """The kept text, with a note where bytes were cut."""
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {self.cut} bytes cut ...]\n{tail}" if self.cut else head + tail


def make_python_tool(
    sandbox: PythonSandbox | None = None, *, name: str = "run_python", max_concurrency: int = 4
) -> Tool:
    """A Python tool bound to `sandbox` limits."""
    sandbox = sandbox or PythonSandbox()

    async def run_python(code: str) -> str:
        return (await run_code(code, sandbox)).render()

    libraries = ", ".join(["math", "fractions", "itertools", *_installed("numpy", "sympy")])
    run_python.__doc__ = (
        "Run Python 3 code in a fresh sandbox and return its exit status, stdout and stderr. "
        "Use print() to show results (a final bare expression is printed too). Each call starts "
        f"from scratch: nothing is kept between calls. Available: {libraries}; no network."
    )
    timeout = sandbox.wall_seconds + 10
    return tool(name=name, timeout=timeout, max_concurrency=max_concurrency)(run_python)


def _installed(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is not None]


run_python = make_python_tool()
"""The tool for models, with the default limits."""
