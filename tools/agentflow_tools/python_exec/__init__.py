"""Run model-written Python in a separate, limited process: the tool for tool-integrated math.

Each call gets a fresh interpreter (`sys.executable -I -u -X utf8`), in its own session (process
group) so that it and any children are killed together. Before the model's code runs, a short
prelude in the child:

- sets resource limits: CPU time (`RLIMIT_CPU`, 10 s: seconds of real arithmetic, far more than
  a worked maths problem needs, and an endless loop is stopped by the kernel), address space
  (`RLIMIT_AS`, 1 GiB: room for numpy and sympy, while `[0] * 10**10` fails at once with
  `MemoryError` instead of pushing the machine into swap), file size (`RLIMIT_FSIZE`, 64 MiB),
  no core dumps, and in the namespace sandbox processes (`RLIMIT_NPROC`, 4, threads included);
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
PID (it sees and signals only its own processes, and they die with the call) and mount
namespaces. Its filesystem is a private read-only view of the system's programs and libraries
and the interpreter's environment, with a private tmpfs home (`/home/sandbox`, the working
directory) and `/tmp`; the host's homes, `/etc/shadow`, the project and its caches are not in
it. Memory across all its processes is bounded by processes x address space (4 GiB by default)
plus the two tmpfs (64 MiB each): a cgroup would bound it tighter, but is not writable
everywhere agentflow runs.

Where namespaces do not work, `run_python` refuses to run code (`UserError`, with the reason)
unless the user opts into the weak mode, `isolation="audit-hook"` or
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
from agentflow_tools.python_exec import _namespace

__all__ = [
    "ISOLATION_ENV",
    "MAX_CODE_CHARS",
    "Isolation",
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

ISOLATION_ENV = "AGENTFLOW_PYTHON_ISOLATION"
"""Read by `isolation="auto"`: "namespace" (the default) or "audit-hook" (weak, opt-in)."""
MAX_CODE_CHARS = 100_000
_DRAIN_GRACE = 1.0
"""Seconds to finish reading output after the process group is killed."""


class UnisolatedWarning(UserWarning):
    """A Python tool was built that runs model-written code without real isolation."""


# Runs in the child before the model's code; the limits arrive in sys.argv[1:].
_PRELUDE = r"""
def _sandbox():
    import ast, resource, sys, traceback, types
    cpu, memory, files, processes, block_network = (int(a) for a in sys.argv[1:])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    if processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
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


@dataclass(frozen=True, kw_only=True)
class PythonSandbox:
    """Limits for one run of model-written code."""

    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    """Address-space limit of each process; numpy and sympy import well within 1 GiB."""
    wall_seconds: float = 20.0
    output_bytes: int = 8_000
    """Bytes kept of each of stdout and stderr."""
    file_bytes: int = 64 << 20
    """Largest file the code may write."""
    max_processes: int = 4
    """Processes and threads the code may have at once (namespace mode): maths needs one, and
    with `memory_bytes` it bounds the memory of all of them together."""
    scratch_bytes: int = 64 << 20
    """Size of each of the private home and `/tmp` (tmpfs, so memory too; namespace mode)."""
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
    if namespace:
        await _require_namespaces()
    with tempfile.TemporaryDirectory(prefix="agentflow-python-") as workdir:
        (Path(workdir) / "main.py").write_text(code, encoding="utf-8")
        if namespace:
            (Path(workdir) / "root").mkdir()  # where the sandbox's own root is mounted
        argv = _command(namespace, workdir, sandbox)
        return await _execute(argv, workdir, sandbox, namespace=namespace)


def available_isolation() -> Literal["namespace"] | None:
    """The real isolation this machine supports: "namespace", or None."""
    return "namespace" if _namespace.probe().works else None


def chosen_isolation(isolation: Isolation) -> Literal["namespace", "audit-hook"]:
    """The mode `isolation` stands for; "auto" reads `AGENTFLOW_PYTHON_ISOLATION`."""
    if isolation != "auto":
        return isolation
    value = os.environ.get(ISOLATION_ENV, "").strip() or "namespace"
    if value not in ("namespace", "audit-hook"):
        raise UserError(f"{ISOLATION_ENV}={value!r}: expected 'namespace' or 'audit-hook'")
    return "namespace" if value == "namespace" else "audit-hook"


async def _require_namespaces() -> None:
    found = await asyncio.to_thread(_namespace.probe)
    if not found.works:
        raise UserError(
            f"run_python needs Linux namespaces to isolate code and they do not work here "
            f"({found.reason}); it runs nothing without them. To run model-written code with no "
            f"real isolation anyway, set {ISOLATION_ENV}=audit-hook"
        )


def _command(namespace: bool, workdir: str, sandbox: PythonSandbox) -> list[str]:
    processes = sandbox.max_processes if namespace else 0  # as our own uid it would count ours
    limits = (sandbox.cpu_seconds, sandbox.memory_bytes, sandbox.file_bytes, processes)
    python = [sys.executable, "-I", "-u", "-X", "utf8", "-c", _PRELUDE]
    python += [*map(str, limits), str(int(not namespace))]
    if not namespace:
        return python
    return _namespace.command(workdir, sandbox.scratch_bytes, python)


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
    argv: list[str], workdir: str, sandbox: PythonSandbox, *, namespace: bool
) -> PythonResult:
    stdout, stderr = _Capture(sandbox.output_bytes), _Capture(sandbox.output_bytes)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=_environment(_namespace.HOME if namespace else workdir),
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
    status = _Status.of(process.returncode, namespace=namespace)
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
    def of(cls, returncode: int | None, *, namespace: bool) -> _Status:
        """Statuses above 128 stand for signals when a shell is PID 1 (namespace mode)."""
        if returncode is None:
            return cls(exit_code=None, signal=None)
        if returncode < 0:
            return cls(exit_code=None, signal=-returncode)
        if namespace and 128 < returncode < 128 + signal.NSIG:
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
    """A Python tool bound to `sandbox` limits.

    The isolation mode is fixed here, so that the description the model reads stays true. In
    the weak mode this warns (`UnisolatedWarning`) and the description says the code is not
    isolated; in namespace mode, calls fail with `UserError` where namespaces do not work."""
    sandbox = sandbox or PythonSandbox()
    sandbox = replace(sandbox, isolation=chosen_isolation(sandbox.isolation))

    async def run_python(code: str) -> str:
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
