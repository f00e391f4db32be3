"""Sandbox probes: what model-written code tried against `run_python`, and what it must not get.

Each probe runs twice, as an attacker's code would meet the tool:

- "namespaces": on this machine with the default settings (skipped, with the reason, where the
  namespace sandbox does not work; CI runs as root on Debian with util-linux, where it does);
- "no unshare": in a fresh interpreter whose PATH has no `unshare`, with no isolation setting.
  There `run_python` used to fall back silently to an audit hook that `ctypes` walks around; now
  it must refuse to run the code at all.

The probes use `ctypes` because the audit hook already stops the usual Python calls: the kernel
has to stop these. Every assertion is on what leaked or happened on the host (a secret in the
output, a connection accepted, a file created, a process alive), not on an error message.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentflow
from agentflow_tools.python_exec import PythonSandbox, available_isolation, run_code

NAMESPACES = pytest.mark.skipif(
    available_isolation() is None, reason="the namespace sandbox does not work here"
)

WHERE = [
    pytest.param(
        "namespaces",
        marks=pytest.mark.skipif(
            available_isolation() is None, reason="the namespace sandbox does not work here"
        ),
    ),
    "no unshare",
]

_RUNNER = textwrap.dedent(
    """
    import asyncio, sys
    from agentflow_tools.python_exec import run_code
    try:
        print(asyncio.run(run_code(sys.stdin.read())).render())
    except Exception as exc:
        print(f"refused: {type(exc).__name__}: {exc}")
    """
)

_LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


async def _run(code: str, where: str, tmp_path: Path) -> str:
    """The text the model would read after running `code` (or why it was refused)."""
    if where == "namespaces":
        return (await run_code(code, PythonSandbox(wall_seconds=10))).render()
    bare = tmp_path / "no-unshare-bin"
    bare.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTFLOW_")}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _RUNNER),
        env={**env, "PATH": str(bare)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(code.encode()), timeout=60)
    return out.decode()


def _refused_or(output: str, where: str) -> bool:
    """Without namespaces the only right outcome is a refusal that names the opt-in."""
    if where == "no unshare":
        assert output.startswith("refused: UserError"), output
        assert "AGENTFLOW_PYTHON_ISOLATION=audit-hook" in output
        return True
    return False


@pytest.fixture
def secret_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A fake $HOME holding credentials, like ~/.npmrc, and the token in them."""
    home = tmp_path / "home"
    home.mkdir()
    token = secrets.token_hex(16)
    (home / ".npmrc").write_text(f"//registry.npmjs.org/:_authToken={token}\n")
    monkeypatch.setenv("HOME", str(home))
    return home / ".npmrc", token


@pytest.mark.parametrize("where", WHERE)
async def test_a_secret_in_the_home_cannot_be_read(
    where: str, secret_home: tuple[Path, str], tmp_path: Path
) -> None:
    path, token = secret_home
    code = f"print(open({str(path)!r}).read())"
    output = await _run(code, where, tmp_path)
    assert token not in output
    if not _refused_or(output, where):
        assert "FileNotFoundError" in output


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="this machine has no /etc/shadow")
@pytest.mark.parametrize("where", WHERE)
async def test_etc_shadow_and_the_project_are_not_there(where: str, tmp_path: Path) -> None:
    project = Path(agentflow.__file__)
    code = f"import os\nprint([os.path.exists(p) for p in ('/etc/shadow', {str(project)!r})])"
    output = await _run(code + "\nprint(open('/etc/shadow').read())", where, tmp_path)
    assert "root:" not in output
    if not _refused_or(output, where):
        assert "[False, False]" in output


@pytest.mark.parametrize("where", WHERE)
async def test_the_code_runs_as_nobody_without_capabilities(where: str, tmp_path: Path) -> None:
    code = "import os\nstatus = open('/proc/self/status').read()\n"
    code += "print(os.getuid(), os.getgid(), re.findall(r'CapEff:\\s*(\\w+)', status))"
    output = await _run("import re\n" + code, where, tmp_path)
    if not _refused_or(output, where):
        assert "65534 65534 ['0000000000000000']" in output


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A server on loopback, standing in for the model server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


@pytest.mark.parametrize("where", WHERE)
async def test_ctypes_cannot_connect(where: str, listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    code = _LIBC + textwrap.dedent(
        f"""
        import struct
        fd = libc.socket(2, 1, 0)
        address = struct.pack("=H", 2) + struct.pack("!H4s8x", {port}, bytes([127, 0, 0, 1]))
        print("connect", libc.connect(fd, address, len(address)), ctypes.get_errno())
        """
    )
    output = await _run(code, where, tmp_path)
    assert _accepted(listener) is None
    if not _refused_or(output, where):
        assert "connect -1" in output


@pytest.mark.parametrize("where", WHERE)
async def test_a_ctypes_shell_reaches_nothing_outside(
    where: str, secret_home: tuple[Path, str], tmp_path: Path
) -> None:
    path, token = secret_home
    outside = tmp_path / "escaped"
    command = f"id -u; cat {path} /etc/shadow; touch {outside}"
    output = await _run(_LIBC + f"libc.system({command.encode()!r})", where, tmp_path)
    assert token not in output
    assert "root:" not in output
    assert not outside.exists()
    if not _refused_or(output, where):
        assert re.search(r"^65534$", output, re.MULTILINE), output


def _accepted(listener: socket.socket) -> str | None:
    """The peer of a connection the server got, if it got one."""
    try:
        connection, peer = listener.accept()
    except BlockingIOError:
        return None
    connection.close()
    return str(peer)


@pytest.mark.parametrize("where", WHERE)
async def test_no_other_process_can_be_signalled(where: str, tmp_path: Path) -> None:
    # Signal 0 only asks whether a signal could be sent: kill(-1, 0) succeeds if any process
    # other than the caller would receive a kill(-1, SIGKILL).
    code = _LIBC + "print('kill', libc.kill(-1, 0), ctypes.get_errno())"
    output = await _run(code, where, tmp_path)
    if not _refused_or(output, where):
        assert "kill -1" in output, output


_FORKS = _LIBC + textwrap.dedent(
    """
    import mmap
    read, write = os.pipe()
    held = 0
    for _ in range(30):
        pid = libc.fork()
        if pid == 0:
            os.close(write)
            try:
                block = mmap.mmap(-1, 256 << 20)  # address space only: nothing is touched
                os.write(1, b"held\\n")
            except OSError:
                pass
            os.read(read, 1)
            os._exit(0)
        held += pid > 0
    os.write(1, f"forked {held}\\n".encode())  # one write: lines from children do not split it
    os.close(write)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    """
)


@pytest.mark.parametrize("where", WHERE)
async def test_processes_and_their_total_memory_are_capped(where: str, tmp_path: Path) -> None:
    output = await _run(_FORKS, where, tmp_path)
    if _refused_or(output, where):
        return
    cap, memory = 4, 1 << 30  # the default max_processes and memory_bytes
    forked = int(re.findall(r"forked (\d+)", output)[0])
    assert forked <= cap - 1  # the interpreter itself is one of them
    held = output.count("held") * (256 << 20) + memory
    assert held <= cap * memory


@pytest.mark.parametrize("where", WHERE)
async def test_no_process_outlives_the_call(where: str, tmp_path: Path) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.25"
    code = _LIBC + textwrap.dedent(
        f"""
        if libc.fork() == 0:
            libc.setsid()
            argv = (ctypes.c_char_p * 3)(b"sleep", b"{marker}", None)
            libc.execv(b"/bin/sleep", argv)
            os._exit(1)
        time.sleep(0.5)  # time for the child to leave the process group
        print("started")
        """
    )
    output = await _run("import time\n" + code, where, tmp_path)
    alive = _processes_with(marker)
    for pid in alive:  # a survivor sleeps for days: do not leave it behind
        os.kill(pid, signal.SIGKILL)
    assert alive == []
    if not _refused_or(output, where):
        assert "started" in output


def _processes_with(marker: str) -> list[int]:
    """Host processes whose command line holds `marker`."""
    return [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline") if marker in _read(p)]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


@NAMESPACES
@pytest.mark.parametrize("where", ["under /tmp, with spaces", "in the home"])
async def test_the_interpreter_may_live_anywhere(where: str, tmp_path: Path) -> None:
    """A clone or a venv under /tmp used to be hidden by the sandbox's own /tmp."""
    home = tmp_path / "home dir"
    venv = (home / "my project" if where == "in the home" else tmp_path / "a venv") / ".venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = await asyncio.create_subprocess_exec(
        *(base, "-m", "venv", "--without-pip", str(venv)), stderr=asyncio.subprocess.PIPE
    )
    _, error = await asyncio.wait_for(made.communicate(), timeout=120)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {error.decode(errors='replace')}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTFLOW_")}
    env |= {"HOME": str(home), "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    process = await asyncio.create_subprocess_exec(
        *(str(venv / "bin" / "python"), "-c", _RUNNER),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    code = b"import sys\nprint(sys.executable)"
    out, _ = await asyncio.wait_for(process.communicate(code), timeout=120)
    assert out.decode() == f"exit status 0\nstdout:\n{venv}/bin/python\n"


def _sysv_objects(key: int) -> dict[str, int]:
    """The host's System V IPC objects with `key`, by kind ("shm", "msg", "sem") and id."""
    found = {}
    for kind in ("shm", "msg", "sem"):
        for row in Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]:
            if int(row.split()[0]) == key:
                found[kind] = int(row.split()[1])
    return found


def _remove_sysv(key: int) -> dict[str, int]:
    """Remove what `key` left on the host (a leak from an old sandbox), and say what it was."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    found = _sysv_objects(key)
    for kind, ipc_id in found.items():
        if kind == "sem":
            libc.semctl(ipc_id, 0, 0)  # IPC_RMID
        else:
            getattr(libc, f"{kind}ctl")(ipc_id, 0, None)
    return found


_MAKE_IPC = _LIBC + textwrap.dedent(
    """
    key, create = {key}, 0o1000 | 0o600  # IPC_CREAT
    made = [libc.shmget(key, 1 << 20, create), libc.msgget(key, create)]
    made.append(libc.semget(key, 1, create))
    print("made", all(i >= 0 for i in made))
    """
)
_FIND_IPC = _LIBC + textwrap.dedent(
    """
    found = [libc.shmget({key}, 0, 0), libc.msgget({key}, 0), libc.semget({key}, 0, 0)]
    print("found", [i >= 0 for i in found])
    """
)


@NAMESPACES
async def test_system_v_ipc_does_not_outlive_the_call() -> None:
    key = secrets.randbelow(1 << 30) + 1
    try:
        first = await run_code(_MAKE_IPC.format(key=key) + _FIND_IPC.format(key=key))
        left_on_host = _sysv_objects(key)
        second = await run_code(_FIND_IPC.format(key=key))
    finally:
        leaked = _remove_sysv(key)
    assert first.stdout == "made True\nfound [True, True, True]\n", first.stderr
    assert left_on_host == {} == leaked
    assert second.stdout == "found [False, False, False]\n", second.stderr


# Lowered limits for the memory probes: each probe asks for 768 MiB in all, which old sandboxes
# granted and which this machine can spare.
_SMALL = PythonSandbox(memory_bytes=256 << 20, scratch_bytes=16 << 20, wall_seconds=60)
_ASKED = 768 << 20

_MEMFD = textwrap.dedent(
    f"""
    import os
    chunk, held = b"x" * (8 << 20), 0
    while held < {_ASKED}:
        fd = os.memfd_create("probe")  # 32 MiB each, under the file-size limit
        for _ in range(4):
            os.write(fd, chunk)
            held += len(chunk)
            os.write(1, f"held {{held}}\\n".encode())
    """
)

_SHM = _LIBC + textwrap.dedent(
    f"""
    libc.shmat.restype = ctypes.c_void_p
    size, held = 8 << 20, 0
    for offset in range({_ASKED} // size):
        segment = libc.shmget({{key}} + offset, size, 0o1000 | 0o600)
        if segment < 0:
            os.write(1, f"shmget: errno {{{{ctypes.get_errno()}}}}\\n".encode())
            break
        address = libc.shmat(segment, None, 0)
        ctypes.memset(address, 1, size)  # touched: the pages are really allocated
        libc.shmdt(ctypes.c_void_p(address))
        held += size
        os.write(1, f"held {{{{held}}}}\\n".encode())
    """
)


def _held(output: str) -> int:
    return max((int(n) for n in re.findall(r"^held (\d+)$", output, re.MULTILINE)), default=0)


def _bound(bound: str | None, sandbox: PythonSandbox) -> int:
    """The memory the run may hold in all: the cgroup's, else the per-process limits'."""
    if bound == "cgroup":
        return sandbox.memory_bytes
    assert bound == "rlimit"
    return sandbox.max_processes * sandbox.memory_bytes


@NAMESPACES
async def test_memfd_does_not_walk_past_the_memory_bound() -> None:
    result = await run_code(_MEMFD, _SMALL)
    held = _held(result.stdout)
    assert held <= _SMALL.memory_bytes, result.render()  # it once held all 768 MiB
    if result.memory_bound == "rlimit":
        assert held == 0
        assert "Function not implemented" in result.stderr


@NAMESPACES
async def test_system_v_shared_memory_is_sized_with_the_scratch() -> None:
    keys = secrets.randbelow(1 << 29) + 1
    try:
        result = await run_code(_SHM.format(key=keys), _SMALL)
    finally:
        leaked = [_remove_sysv(keys + offset) for offset in range(_ASKED // (8 << 20))]
    assert [found for found in leaked if found] == []
    held = _held(result.stdout)
    limit = _SMALL.scratch_bytes if result.memory_bound == "rlimit" else _SMALL.memory_bytes
    assert held <= limit, result.render()


_MANY = _LIBC + textwrap.dedent(
    """
    import select, time
    release, hold = os.pipe()
    for _ in range(8):
        if libc.fork() == 0:
            os.close(hold)
            try:
                block = b"x" * (160 << 20)  # touched, and under the per-process limit
            except MemoryError:
                os._exit(1)
            late = select.select([release], [], [], 0)[0]  # released before it was held
            os.write(1, b"late\\n" if late else b"held\\n")
            os.read(release, 1)
            os._exit(0)
    time.sleep(3)
    os.close(hold)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    """
)


@NAMESPACES
async def test_many_processes_each_under_the_limit_stay_under_the_bound() -> None:
    result = await run_code(_MANY, _SMALL)
    held = result.stdout.count("held") * (160 << 20)
    assert held <= _bound(result.memory_bound, _SMALL), result.render()
