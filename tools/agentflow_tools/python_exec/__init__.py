"""Run model-written Python in a separate, limited process: the tool for tool-integrated math.

Each call gets a fresh interpreter (`sys.executable -I -u -X utf8`), in its own session (process
group) so that it and any children are killed together. Before the model's code runs, a short
prelude in the child:

- sets resource limits: CPU time (`RLIMIT_CPU`, 10 s: seconds of real arithmetic, far more than
  a worked maths problem needs, and an endless loop is stopped by the kernel), address space
  (`RLIMIT_AS`, 1 GiB: room for numpy and sympy, while `[0] * 10**10` fails at once with
  `MemoryError` instead of pushing the machine into swap), file size (`RLIMIT_FSIZE`, 64 MiB),
  no core dumps, and in the namespace sandbox processes (`RLIMIT_NPROC`, 4, threads included)
  and open files (`RLIMIT_NOFILE`, 64); where the run has no cgroup, `memfd_create` is refused
  (`_prelude`);
- refuses to start processes (an audit hook on fork, exec, spawn and `subprocess`), since maths
  needs none: a friendly error for the usual ways, while `RLIMIT_NPROC` stops the others;
- compiles the code as `main.py`, runs it, prints the value of a final bare expression as a
  notebook would, and prints tracebacks without the prelude's own frames.

The parent enforces a wall-clock timeout (20 s, for code that sleeps or blocks) by killing the
whole process group, and keeps at most 8 kB of each of stdout and stderr (the first and last
halves, with a note of how many bytes were cut): about a page, enough for answers and
tracebacks, while a runaway `print` loop cannot flood the model's context or the parent's memory.

Isolation. By default the code runs in the namespace sandbox (`_namespace`): as uid 65534 with
no capabilities, in new network (no interface up: every connection, loopback included, fails),
PID (it sees and signals only its own processes, and they die with the call), IPC (System V
objects die with the call) and mount namespaces. Its filesystem is a private read-only view of
the system's programs and libraries and the interpreter's environment, with a private tmpfs
home (`/home/sandbox`, the working directory), `/tmp` and `/dev/shm`; the host's homes,
`/etc/shadow`, the project and its caches are not in it.

Memory (`PythonResult.memory_bound`). Where the host lets agentflow create a cgroup v2
(`_cgroup`), each run gets one: `memory.max` (`memory_bytes`, tmpfs and shared memory
included) and `pids.max` bound all its processes together. Elsewhere ("rlimit") the bound is
processes x address space (4 GiB by default) plus the three tmpfs and SysV shared memory (64
MiB each), with memfd refused, since its pages count against no per-process limit.

Where the sandbox cannot start, `run_python` refuses to run code (`UserError`, naming the
cause); where namespaces are not available at all, it says so and names the weak mode, which
the user must opt into: `isolation="audit-hook"` or
`AGENTFLOW_PYTHON_ISOLATION=audit-hook`. That mode is no sandbox: an audit hook refuses sockets
and processes, but `ctypes` gets around it, and the code can read and write what agentflow can.
Building a tool in that mode warns (`UnisolatedWarning`) and says so in the tool's description.

Whatever the code does, the outcome is data: `run_code` returns a `PythonResult` (exit status,
output, and why the process was killed, if it was). `ToolError` is raised only when the code
cannot be run at all (empty or too long), `UserError` when it may not be (no isolation).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agentflow.exceptions import UserError
from agentflow.tool import Tool, ToolError, tool
from agentflow_tools.python_exec import _cgroup, _namespace
from agentflow_tools.python_exec._prelude import PRELUDE, Settings

__all__ = [
    "ISOLATION_ENV",
    "MAX_CODE_CHARS",
    "Isolation",
    "MemoryBound",
    "PythonResult",
    "PythonSandbox",
    "UnisolatedWarning",
    "available_isolation",
    "chosen_isolation",
    "make_python_tool",
    "run_code",
    "run_python",
]

Isolation = Literal["auto", "namespace", "audit-hook"]
MemoryBound = Literal["cgroup", "rlimit"]

ISOLATION_ENV = "AGENTFLOW_PYTHON_ISOLATION"
"""Read by `isolation="auto"`: "namespace" (the default) or "audit-hook" (weak, opt-in)."""
MAX_CODE_CHARS = 100_000
_DRAIN_GRACE = 1.0
"""Seconds to finish reading output after the process group is killed."""
_DESCRIPTORS = 64
"""Open files per process in the namespace sandbox: plenty for maths, and few memfds or
pipes."""


class UnisolatedWarning(UserWarning):
    """A Python tool was built that runs model-written code without real isolation."""


@dataclass(frozen=True, kw_only=True)
class PythonSandbox:
    """Limits for one run of model-written code."""

    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    """Address-space limit of each process (numpy and sympy import well within 1 GiB), and the
    memory of the whole run where it has a cgroup."""
    wall_seconds: float = 20.0
    output_bytes: int = 8_000
    """Bytes kept of each of stdout and stderr."""
    file_bytes: int = 64 << 20
    """Largest file the code may write."""
    max_processes: int = 4
    """Processes and threads the code may have at once (namespace mode): maths needs one, and
    with `memory_bytes` it bounds the memory of all of them together."""
    scratch_bytes: int = 64 << 20
    """Size of each of the private home, `/tmp` and `/dev/shm` (tmpfs, so memory too), and of all
    System V shared memory together (namespace mode)."""
    isolation: Isolation = "auto"
    """"namespace" (refuses to run where it does not work), "audit-hook" (weak: no sandbox,
    explicit opt-in only), or "auto": `AGENTFLOW_PYTHON_ISOLATION` if set, else "namespace"."""


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
    memory_bound: MemoryBound | None = None
    """How the run's memory was bounded: "cgroup" (`memory.max` and `pids.max` over the whole
    run), "rlimit" (per-process limits, no memfd, tmpfs and SysV shm at the scratch size), or
    None (audit-hook mode: per-process limits only, no sandbox)."""

    def render(self) -> str:
        """The result as the model reads it; a run killed or out of memory also says how its
        memory was bounded."""
        lines = [f"killed: {self.killed}" if self.killed else f"exit status {self.exit_code}"]
        if self.stdout:
            lines.append(f"stdout:\n{self.stdout.rstrip()}")
        if self.stderr:
            lines.append(f"stderr:\n{self.stderr.rstrip()}")
        if not (self.stdout or self.stderr):
            lines.append("(no output)")
        if self.memory_bound and (self.killed or "MemoryError" in self.stderr):
            lines.append(_BOUNDS[self.memory_bound])
        return "\n".join(lines)


_BOUNDS: dict[MemoryBound, str] = {
    "cgroup": "memory bound: cgroup (one limit for all of the run's processes)",
    "rlimit": "memory bound: rlimit (a limit per process; memfd_create is not available)",
}


async def run_code(code: str, sandbox: PythonSandbox | None = None) -> PythonResult:
    """Run `code` in a fresh sandboxed interpreter and report what happened.

    Raises `UserError` if the namespace sandbox is required (the default) but does not work
    here: code is never run with less isolation than was asked for."""
    sandbox = sandbox or PythonSandbox()
    if not code.strip():
        raise ToolError("there is no code to run")
    if len(code) > MAX_CODE_CHARS:
        raise ToolError(f"the code is too long ({len(code)} characters, at most {MAX_CODE_CHARS})")
    namespace = chosen_isolation(sandbox.isolation) == "namespace"
    found = await _require_namespaces() if namespace else None
    with tempfile.TemporaryDirectory(prefix="agentflow-python-") as workdir:
        (Path(workdir) / "main.py").write_text(code, encoding="utf-8")
        run = _contain(found, workdir, sandbox)
        try:
            return await _execute(_command(run, workdir, sandbox), workdir, sandbox, run)
        finally:
            if run.group is not None:
                await asyncio.to_thread(run.group.remove)


def available_isolation() -> Literal["namespace"] | None:
    """The real isolation this machine supports: "namespace", or None."""
    return "namespace" if _namespace.probe().works else None


def chosen_isolation(isolation: Isolation) -> Literal["namespace", "audit-hook"]:
    """The mode `isolation` stands for; "auto" reads `AGENTFLOW_PYTHON_ISOLATION`."""
    if isolation != "auto":
        return isolation
    value = os.environ.get(ISOLATION_ENV, "").strip() or "namespace"
    if value not in ("namespace", "audit-hook"):
        raise UserError(
            f"{ISOLATION_ENV}={value!r} is not a valid setting: use 'namespace' (the default, "
            f"a sandbox) or 'audit-hook' (no sandbox)"
        )
    return "namespace" if value == "namespace" else "audit-hook"


async def _require_namespaces() -> _namespace.Probe:
    found = await asyncio.to_thread(_namespace.probe)
    if found.works:
        return found
    if found.unsupported:
        raise UserError(
            f"run_python cannot isolate code on this machine: {found.reason}. It runs nothing "
            f"without isolation; to run model-written code unisolated anyway (no sandbox), set "
            f"{ISOLATION_ENV}=audit-hook"
        )
    raise UserError(
        f"run_python's sandbox failed to start, so it runs nothing: {found.reason} "
        f"(interpreter {sys.executable})"
    )


@dataclass(frozen=True, kw_only=True)
class _Run:
    """How one run is contained."""

    namespace: bool
    group: _cgroup.RunGroup | None = None
    """The run's own cgroup, where the host offers one (namespace mode)."""

    @property
    def memory_bound(self) -> MemoryBound | None:
        if not self.namespace:
            return None
        return "cgroup" if self.group is not None else "rlimit"


def _contain(found: _namespace.Probe | None, workdir: str, sandbox: PythonSandbox) -> _Run:
    if found is None:
        return _Run(namespace=False)
    (Path(workdir) / "root").mkdir()  # where the sandbox's own root is mounted
    if found.cgroups is None:
        return _Run(namespace=True)
    # Besides the code's processes, the run holds unshare and the sandbox's shell (PID 1).
    processes = sandbox.max_processes + 2
    group = _cgroup.create(found.cgroups, memory_bytes=sandbox.memory_bytes, processes=processes)
    return _Run(namespace=True, group=group)


def _command(run: _Run, workdir: str, sandbox: PythonSandbox) -> list[str]:
    settings = Settings(
        cpu_seconds=sandbox.cpu_seconds,
        memory_bytes=sandbox.memory_bytes,
        file_bytes=sandbox.file_bytes,
        processes=sandbox.max_processes if run.namespace else 0,  # as us it would count ours
        descriptors=_DESCRIPTORS if run.namespace else 0,
        block_network=not run.namespace,
        deny_memfd=run.memory_bound == "rlimit",
    )
    python = [sys.executable, "-I", "-u", "-X", "utf8", "-c", PRELUDE, *settings.arguments()]
    if not run.namespace:
        return python
    argv = _namespace.command(workdir, sandbox.scratch_bytes, python)
    return run.group.join(argv) if run.group is not None else argv


def _environment(home: str) -> dict[str, str]:
    return {
        "PATH": _namespace.PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": "/tmp" if home == _namespace.HOME else home,
        # One thread per numeric library: threads multiply the address space they reserve.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


async def _execute(
    argv: list[str], workdir: str, sandbox: PythonSandbox, run: _Run
) -> PythonResult:
    stdout, stderr = _Capture(sandbox.output_bytes), _Capture(sandbox.output_bytes)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=_environment(_namespace.HOME if run.namespace else workdir),
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
    status = _Status.of(process.returncode, namespace=run.namespace)
    out_of_memory = run.group is not None and run.group.oom_kills() > 0
    return PythonResult(
        stdout=stdout.text(),
        stderr=stderr.text(),
        exit_code=status.exit_code,
        killed=_kill_reason(status.signal, timed_out, sandbox, out_of_memory=out_of_memory),
        stdout_cut=stdout.cut,
        stderr_cut=stderr.cut,
        memory_bound=run.memory_bound,
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
    def of(cls, returncode: int | None, *, namespace: bool) -> _Status:
        """Statuses above 128 stand for signals when a shell is PID 1 (namespace mode)."""
        if returncode is None:
            return cls(exit_code=None, signal=None)
        if returncode < 0:
            return cls(exit_code=None, signal=-returncode)
        if namespace and 128 < returncode < 128 + signal.NSIG:
            return cls(exit_code=None, signal=returncode - 128)
        return cls(exit_code=returncode, signal=None)


def _kill_reason(
    signum: int | None, timed_out: bool, sandbox: PythonSandbox, *, out_of_memory: bool = False
) -> str | None:
    if timed_out:
        return f"wall-clock timeout ({sandbox.wall_seconds:g} s)"
    if signum is None:
        return None
    if out_of_memory:
        return f"memory limit ({sandbox.memory_bytes >> 20} MiB for the whole run)"
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
    """A Python tool bound to `sandbox` limits.

    The isolation mode is fixed here, so that the description the model reads stays true. In
    the weak mode this warns (`UnisolatedWarning`) and the description says the code is not
    isolated; in namespace mode, calls fail with `UserError` where namespaces do not work. An
    invalid `AGENTFLOW_PYTHON_ISOLATION` fails every call with `UserError`, not this function:
    a typo breaks only `run_python`, not the import of the tools (or `agentflow --version`)."""
    sandbox = sandbox or PythonSandbox()
    setting_error = ""
    try:
        sandbox = replace(sandbox, isolation=chosen_isolation(sandbox.isolation))
    except UserError as exc:
        setting_error = str(exc)

    async def run_python(code: str) -> str:
        if setting_error:
            raise UserError(setting_error)
        return (await run_code(code, sandbox)).render()

    libraries = ", ".join(["math", "fractions", "itertools", *_installed("numpy", "sympy")])
    run_python.__doc__ = (
        "Run Python 3 code in a fresh sandbox and return its exit status, stdout and stderr. "
        "Use print() to show results (a final bare expression is printed too). Each call starts "
        f"from scratch: nothing is kept between calls. Available: {libraries}; no network."
    )
    if sandbox.isolation == "audit-hook":
        warnings.warn(_UNISOLATED, UnisolatedWarning, stacklevel=2)
        run_python.__doc__ = (
            "Run Python 3 code and return its exit status, stdout and stderr. Use print() to show "
            f"results. Available: {libraries}. {_UNISOLATED}"
        )
    timeout = sandbox.wall_seconds + 10
    return tool(name=name, timeout=timeout, max_concurrency=max_concurrency)(run_python)


_UNISOLATED = (
    "WARNING: this Python runs WITHOUT isolation (audit-hook mode, chosen by the user): it is "
    "not a sandbox, and code can read and write files, reach the network and start processes "
    "as the agent's own user."
)


def _installed(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is not None]


run_python = make_python_tool()
"""The tool for models, with the default limits."""
