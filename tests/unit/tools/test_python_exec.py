"""The Python sandbox: output, errors, limits, cleanup and isolation, through real processes.

Limits are set low here so that each kill comes in about a second; assertions are on what the
result says, never on how long a run took.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.exceptions import UserError
from agentflow.tool import ToolError
from agentflow_tools.python_exec import (
    ISOLATION_ENV,
    MAX_CODE_CHARS,
    PythonSandbox,
    UnisolatedWarning,
    _cgroup,
    _namespace,
    available_isolation,
    make_python_tool,
    run_code,
    run_python,
)

needs_namespaces = pytest.mark.skipif(
    available_isolation() is None, reason="the namespace sandbox does not work here"
)


def _exists(path: Path) -> bool:
    return path.exists()


ISOLATIONS = [
    pytest.param("namespace", marks=needs_namespaces),
    pytest.param("audit-hook"),
]


async def test_prints_come_back_on_stdout() -> None:
    result = await run_code("print('hello')\nprint(6 * 7)")
    assert (result.stdout, result.stderr, result.exit_code, result.killed) == (
        "hello\n42\n",
        "",
        0,
        None,
    )


async def test_a_final_expression_is_printed_like_in_a_notebook() -> None:
    assert (await run_code("x = 2\nx ** 10")).stdout == "1024\n"
    assert (await run_code("from fractions import Fraction\nFraction(1, 3) * 3")).stdout == (
        "Fraction(1, 1)\n"
    )
    assert (await run_code("print('once')")).stdout == "once\n"


async def test_an_exception_gives_a_traceback_of_the_code_only() -> None:
    result = await run_code("def f():\n    return 1 / 0\n\nf()")
    assert result.exit_code == 1
    assert 'File "main.py", line 2, in f' in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "<string>" not in result.stderr
    assert "exit status 1" in result.render()


async def test_a_syntax_error_points_at_the_line() -> None:
    result = await run_code("x = 1\ny = (")
    assert result.exit_code == 1
    assert 'File "main.py", line 2' in result.stderr
    assert "SyntaxError" in result.stderr


async def test_the_exit_status_is_reported() -> None:
    result = await run_code("import sys\nsys.exit(3)")
    assert (result.exit_code, result.killed) == (3, None)
    assert result.render() == "exit status 3\n(no output)"


async def test_an_endless_loop_is_killed_by_the_cpu_limit() -> None:
    code = "print('started')\nwhile True:\n    pass"
    result = await run_code(code, PythonSandbox(cpu_seconds=1, wall_seconds=120))
    assert result.killed == "cpu time limit (1 s)"
    assert result.exit_code is None
    assert result.stdout == "started\n"  # output from before the kill is kept
    assert result.render().startswith("killed: cpu time limit (1 s)\nstdout:\nstarted")


async def test_sleeping_is_killed_by_the_wall_clock_timeout() -> None:
    result = await run_code("import time\ntime.sleep(60)", PythonSandbox(wall_seconds=0.5))
    assert result.killed == "wall-clock timeout (0.5 s)"
    assert result.exit_code is None


async def test_a_huge_allocation_fails_with_memory_error() -> None:
    result = await run_code("block = bytearray(100 * 1024**3)")
    assert result.exit_code == 1
    assert "MemoryError" in result.stderr


async def test_growing_memory_stops_at_the_limit() -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024**2))"
    result = await run_code(code, PythonSandbox(memory_bytes=256 * 1024**2))
    assert result.exit_code == 1
    assert "MemoryError" in result.stderr


async def test_output_is_cut_to_the_budget_keeping_both_ends() -> None:
    code = "print('START' + 'x' * 100_000 + 'END')"
    result = await run_code(code, PythonSandbox(output_bytes=1_000))
    assert result.stdout.startswith("STARTxxx")
    assert result.stdout.endswith("xxxEND\n")
    assert result.stdout_cut == len("START") + 100_000 + len("END\n") - 1_000
    assert f"[... {result.stdout_cut} bytes cut ...]" in result.stdout
    assert result.stderr_cut == 0


async def test_stderr_is_cut_too() -> None:
    code = "import sys\nsys.stderr.write('e' * 50_000)"
    result = await run_code(code, PythonSandbox(output_bytes=100))
    assert result.stderr_cut == 50_000 - 100
    assert "bytes cut" in result.stderr


async def test_nothing_is_left_on_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = "import os\nopen('scratch.txt', 'w').write('data')\nprint(os.getcwd())"
    result = await run_code(code)
    assert result.stdout == f"{_namespace.HOME}\n"
    assert os.listdir(tmp_path) == []


async def test_each_run_starts_from_scratch() -> None:
    await run_code("open('left-behind.txt', 'w').write('x')\nvalue = 1")
    result = await run_code("import os\nprint(os.listdir('.'), 'value' in globals())")
    assert result.stdout == "['main.py'] False\n"


async def test_starting_processes_is_refused() -> None:
    result = await run_code("import subprocess\nsubprocess.run(['true'])")
    assert result.exit_code == 1
    assert "PermissionError: subprocess.Popen: not allowed in this sandbox" in result.stderr


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


def _connect_code(server: socket.socket) -> str:
    port = server.getsockname()[1]
    return f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('on')"


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_network_is_refused(listener: socket.socket, isolation: str) -> None:
    sandbox = PythonSandbox(isolation=isolation)  # type: ignore[arg-type]
    result = await run_code(_connect_code(listener), sandbox)
    assert result.exit_code == 1
    assert "on" not in result.stdout
    expected = "Network is unreachable" if isolation == "namespace" else "PermissionError"
    assert expected in result.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()


@needs_namespaces
async def test_namespaces_make_the_rest_of_the_filesystem_read_only() -> None:
    result = await run_code("open('/usr/agentflow-outside.txt', 'w').write('x')")
    assert "Read-only file system" in result.stderr
    assert not _exists(Path("/usr/agentflow-outside.txt"))
    result = await run_code("open('/tmp/x', 'w').write('x')\nopen('/x', 'w')")
    assert "Read-only file system: '/x'" in result.stderr


@needs_namespaces
async def test_the_home_and_tmp_are_small() -> None:
    code = "block = b'x' * (1 << 20)\nwith open('{}/big', 'wb') as f:\n    for _ in range(3):\n"
    code += "        f.write(block)"
    for where in ("/tmp", "."):
        result = await run_code(code.format(where), PythonSandbox(scratch_bytes=2 << 20))
        assert "No space left on device" in result.stderr


def test_the_view_never_holds_the_root_or_the_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    venv = tmp_path / "venv"
    for prefix in ("/", str(tmp_path), str(venv)):
        monkeypatch.setattr(sys, "prefix", prefix)
        paths = _namespace.readable_paths()
        assert "/" not in paths
        assert str(tmp_path) not in paths
    assert str(venv) in paths  # a virtualenv inside the home is fine: only it is shown
    assert "/usr" in paths


def test_the_view_never_holds_what_the_sandbox_mounts_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for prefix in ("/tmp", tempfile.gettempdir(), "/dev", "/proc", _namespace.HOME):
        monkeypatch.setattr(sys, "prefix", prefix)
        assert prefix not in _namespace.readable_paths()
    monkeypatch.setattr(sys, "prefix", "/tmp/a venv")
    assert "/tmp/a venv" in _namespace.readable_paths()  # bound on top of the private /tmp


def _fake_cgroups(tmp_path: Path) -> Path:
    """A cgroup v2 tree on disk whose `/a` hands memory and pids to its children, and the
    `/proc/self` of a process in `/a/b`."""
    root = tmp_path / "cgroup"
    (root / "a" / "b").mkdir(parents=True)
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (root / "a" / "cgroup.subtree_control").write_text("memory pids\n")
    (root / "a" / "b" / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw\n")
    (proc / "cgroup").write_text("0::/a/b\n")
    return proc


def test_runs_get_cgroups_under_the_nearest_one_that_offers_them(tmp_path: Path) -> None:
    parent = _cgroup.parent(_fake_cgroups(tmp_path))
    assert parent == tmp_path / "cgroup" / "a"
    group = _cgroup.create(parent, memory_bytes=1 << 28, processes=6)
    assert group is not None
    assert group.path.parent == parent
    assert (group.path / "memory.max").read_text() == str(1 << 28)
    assert (group.path / "pids.max").read_text() == "6"
    (group.path / "memory.events").write_text("oom 2\noom_kill 1\n")
    assert group.oom_kills() == 1


def test_without_a_cgroup_v2_that_offers_memory_and_pids_there_is_none(tmp_path: Path) -> None:
    proc = _fake_cgroups(tmp_path)
    (tmp_path / "cgroup" / "a" / "cgroup.subtree_control").write_text("memory\n")
    (tmp_path / "cgroup" / "cgroup.subtree_control").write_text("cpu\n")
    assert _cgroup.parent(proc) is None
    cgroup_v1 = "30 23 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    (proc / "mountinfo").write_text(cgroup_v1)
    assert _cgroup.parent(proc) is None


@needs_namespaces
async def test_a_run_with_a_cgroup_joins_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel's enforcement needs a real cgroup v2; this checks what agentflow does with one.
    parent = _cgroup.parent(_fake_cgroups(tmp_path))
    assert parent is not None
    found = _namespace.Probe(works=True, reason="", cgroups=parent)
    monkeypatch.setattr(_namespace, "probe", lambda: found)
    monkeypatch.setattr(_cgroup, "_REMOVE_SECONDS", 0.0)
    monkeypatch.delenv(ISOLATION_ENV, raising=False)
    result = await run_code("import os\nos.memfd_create('x')\nprint('memfd')")
    assert (result.stdout, result.memory_bound) == ("memfd\n", "cgroup")  # charged to it
    [group] = [path for path in parent.iterdir() if path.name.startswith("agentflow-python-")]
    assert (group / "cgroup.procs").read_text() == "0\n"  # the run moved itself there
    assert (group / "pids.max").read_text() == str(PythonSandbox().max_processes + 2)


@needs_namespaces
async def test_without_a_cgroup_memfd_is_refused_and_the_result_says_so() -> None:
    if _namespace.probe().cgroups is not None:
        pytest.skip("runs get a cgroup here, which bounds memfd memory instead")
    result = await run_code("import os\nos.memfd_create('x')")
    assert "OSError: [Errno 38] Function not implemented" in result.stderr
    assert result.memory_bound == "rlimit"
    result = await run_code("b = bytearray(1 << 40)")
    assert "MemoryError" in result.stderr
    assert f"memory bound: {result.memory_bound}" in result.render()


def _no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = _namespace.Probe(works=False, reason="unshare not found", unsupported=True)
    monkeypatch.setattr(_namespace, "probe", lambda: broken)
    monkeypatch.delenv(ISOLATION_ENV, raising=False)


@pytest.mark.parametrize("isolation", ["auto", "namespace"])
async def test_without_namespaces_nothing_runs(
    monkeypatch: pytest.MonkeyPatch, isolation: str
) -> None:
    _no_namespaces(monkeypatch)
    sandbox = PythonSandbox(isolation=isolation)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=f"unshare not found.*{ISOLATION_ENV}=audit-hook"):
        await run_code("print('ran')", sandbox)
    with pytest.raises(UserError):
        await make_python_tool(sandbox).call({"code": "print('ran')"})


async def test_a_sandbox_that_fails_to_start_says_why_without_offering_the_weak_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = "setpriv: failed to execute /x/bin/python: No such file or directory"
    broken = _namespace.Probe(works=False, reason=reason)
    monkeypatch.setattr(_namespace, "probe", lambda: broken)
    monkeypatch.delenv(ISOLATION_ENV, raising=False)
    with pytest.raises(UserError, match="sandbox failed to start") as raised:
        await run_code("print('ran')")
    assert reason in str(raised.value)
    assert "namespaces" not in str(raised.value)
    assert "audit-hook" not in str(raised.value)


def test_a_refused_unshare_means_no_namespaces_here() -> None:
    assert _namespace._unsupported("unshare: unshare failed: Operation not permitted")
    assert _namespace._unsupported("x; unshare: write failed /proc/self/uid_map: Permission denied")
    assert not _namespace._unsupported("setpriv: failed to execute /x: No such file or directory")


async def test_the_weak_mode_is_opt_in_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_namespaces(monkeypatch)
    monkeypatch.setenv(ISOLATION_ENV, "audit-hook")
    with pytest.warns(UnisolatedWarning, match="WITHOUT isolation"):
        weak = make_python_tool()
    assert "WITHOUT isolation" in weak.description
    assert "no network" not in weak.description
    assert await weak.call({"code": "print('ran')"}) == "exit status 0\nstdout:\nran"


async def test_the_isolation_is_fixed_when_the_tool_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_namespaces(monkeypatch)
    strict = make_python_tool()
    assert "no network" in strict.description
    monkeypatch.setenv(ISOLATION_ENV, "audit-hook")  # too late: the description said isolated
    with pytest.raises(UserError):
        await strict.call({"code": "print('ran')"})


async def test_an_unknown_isolation_setting_fails_the_calls_with_the_valid_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ISOLATION_ENV, "nmaespace")
    typo = make_python_tool()  # no error yet: the tools must still import
    expected = f"{ISOLATION_ENV}='nmaespace' is not a valid setting: use 'namespace'.*'audit-hook'"
    with pytest.raises(UserError, match=expected) as raised:
        await typo.call({"code": "print('ran')"})
    assert "\n" not in str(raised.value)
    monkeypatch.setenv(ISOLATION_ENV, "audit-hook")  # the setting was read when the tool was made
    with pytest.raises(UserError, match="nmaespace"):
        await typo.call({"code": "print('ran')"})
    monkeypatch.setenv(ISOLATION_ENV, "none")
    with pytest.raises(UserError, match=expected.replace("nmaespace", "none")):
        await run_code("print('ran')")


def test_an_unknown_isolation_setting_leaves_other_commands_alone() -> None:
    code = "from agentflow.cli import main\nmain(['--version'])"
    env = {**os.environ, ISOLATION_ENV: "nmaespace"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("agentflow ")


@needs_namespaces
async def test_namespaces_show_only_the_sandbox_processes() -> None:
    code = "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\npids"
    result = await run_code(code + " == [1, os.getpid()]")
    assert result.stdout == "True\n"


async def test_numpy_and_sympy_fit_in_the_limits() -> None:
    result = await run_code("import numpy, sympy\nprint(numpy.arange(4).sum(), sympy.isprime(97))")
    assert result.stdout == "6 True\n", result.stderr


async def test_empty_or_huge_code_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="no code"):
        await run_code("  \n")
    with pytest.raises(ToolError, match="too long"):
        await run_code("#" * (MAX_CODE_CHARS + 1))


async def test_the_tool_returns_text_for_the_model() -> None:
    assert run_python.name == "run_python"
    assert run_python.parameters["required"] == ["code"]
    assert await run_python.call({"code": "print(2 + 2)"}) == "exit status 0\nstdout:\n4"
    quick = make_python_tool(PythonSandbox(cpu_seconds=1, wall_seconds=120), name="quick_python")
    assert quick.name == "quick_python"
    text = await quick.call({"code": "while True: pass"})
    assert text.startswith("killed: cpu time limit (1 s)")
