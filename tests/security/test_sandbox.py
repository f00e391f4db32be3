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
