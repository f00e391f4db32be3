"""LocalServer's process handling, on stand-in processes instead of vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.exceptions import RuntimeSetupError
from agentflow.runtime import cpu
from agentflow.runtime import server as server_module
from agentflow.runtime.server import LocalServer, _alive
from agentflow.settings import Settings


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTFLOW_PORT", "1")  # nothing listens there: never "already up"
    monkeypatch.setattr(server_module, "prepare_weights", lambda models_dir, name: tmp_path)
    return LocalServer(Settings.from_env(), startup_timeout=30)


def _fake_command(local: LocalServer, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(local, "_command", lambda model_dir: [sys.executable, "-c", code])


def test_failed_start_reports_the_log_tail_and_leaves_nothing(
    local: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_command(local, monkeypatch, "import sys; print('CUDA out of memory'); sys.exit(1)")
    with pytest.raises(RuntimeSetupError) as caught:
        local.up()
    assert "CUDA out of memory" in str(caught.value)
    assert "hint:" in str(caught.value)
    assert not local.record_file.exists()


def test_ctrl_c_while_waiting_stops_the_server(
    local: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_command(local, monkeypatch, "import time; time.sleep(60)")
    pids = []

    def interrupt(elapsed: float, line: str) -> None:
        pids.append(json.loads(local.record_file.read_text())["pid"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        local.up(on_progress=interrupt)
    assert not _alive(pids[0])
    assert not local.record_file.exists()


def test_down_stops_only_the_process_it_started(local: LocalServer) -> None:
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    local.state_dir.mkdir(parents=True)
    record = {"pid": ours.pid, "start_time": server_module._process_start_time(ours.pid)}
    local.record_file.write_text(json.dumps(record))
    assert local.status().pid == ours.pid
    assert local.down() is True
    assert ours.wait(timeout=10) is not None
    assert local.down() is False


def test_down_ignores_a_recycled_pid(local: LocalServer) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        local.state_dir.mkdir(parents=True)
        # Same pid, but not the process we started (a different start time).
        local.record_file.write_text(json.dumps({"pid": stranger.pid, "start_time": "1"}))
        assert local.down() is False
        time.sleep(0.1)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_status_and_down_commands_when_nothing_runs(
    local: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "status"]) == 3
    assert "down" in capsys.readouterr().out
    assert main(["model", "down"]) == 0
    assert "no model server" in capsys.readouterr().out
    assert main(["model", "logs"]) == 0


def test_cpu_build_adds_enforce_eager(local: LocalServer) -> None:
    command = local._command(Path("/models/x"))
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert ("--enforce-eager" in command) == server_module._is_cpu_build()


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert "agentflow" in capsys.readouterr().out
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
    assert "ask" in capsys.readouterr().out


def test_ask_with_no_server_suggests_model_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "hi", "--base-url", "http://127.0.0.1:1/v1", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:1/v1" in err and "agentflow model up" in err


@pytest.mark.parametrize(
    ("flags", "kind"),
    [({"avx", "avx2", "avx512f", "avx512_bf16"}, "avx512"), ({"avx", "avx2", "fma"}, "avx2"),
     ({"sse4_2"}, "other"), (set(), "other")],
)  # fmt: skip
def test_the_cpu_kind_comes_from_its_flags(flags: set[str], kind: str) -> None:
    assert cpu.cpu_kind(flags) == kind


def test_an_avx2_machine_serves_float32_and_the_user_can_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTFLOW_CPU_PROFILE", raising=False)
    assert cpu.cpu_profile({"avx2"}).args[:2] == ("--dtype", "float32")
    assert cpu.cpu_profile({"avx512f"}).args == ()
    assert "float32" in cpu.cpu_profile({"avx2"}).describe()
    monkeypatch.setenv("AGENTFLOW_CPU_PROFILE", "none")
    assert cpu.cpu_profile({"avx2"}).args == ()
    monkeypatch.setenv("AGENTFLOW_CPU_PROFILE", "avx2")
    assert cpu.cpu_profile({"avx512f"}).kind == "avx2"


def test_the_compute_bound_model_gets_every_core_and_smollm2_keeps_the_reserved_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTFLOW_CPU_PROFILE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    qwen = cpu.cpu_profile({"avx512f"}, model="qwen2.5-coder-1.5b")
    assert qwen.env == {"VLLM_CPU_OMP_THREADS_BIND": "0-3", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    on_avx2 = cpu.cpu_profile({"avx2"}, model="qwen2.5-coder-1.5b")
    assert on_avx2.args[:2] == ("--dtype", "float32")
    assert on_avx2.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert (
        "VLLM_CPU_NUM_OF_RESERVED_CPU" not in cpu.cpu_profile({"avx512f"}, model="smollm2-135m").env
    )
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})  # not one range
    assert cpu.cpu_profile({"avx512f"}, model="qwen2.5-coder-1.5b").env == {}
    monkeypatch.setenv("AGENTFLOW_CPU_PROFILE", "none")
    assert cpu.cpu_profile({"avx512f"}, model="qwen2.5-coder-1.5b").env == {}


def test_the_embedded_server_schedules_by_priority_with_the_cpus_settings(
    local: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_is_cpu_build", lambda: True)
    monkeypatch.setenv("AGENTFLOW_CPU_PROFILE", "avx2")
    monkeypatch.setenv("AGENTFLOW_VLLM_ARGS", "--dtype bfloat16")
    command = local._command(Path("/models/x"))
    policy = command.index("--scheduling-policy")
    assert command[policy + 1] == "priority"
    # The profile's choice comes first, so the user's own flags win (argparse keeps the last).
    assert command.index("float32") < command.index("bfloat16")
    assert local._environment()["VLLM_CPU_KVCACHE_SPACE"] == "4"  # float32's bigger cache
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    assert local._environment()["VLLM_CPU_KVCACHE_SPACE"] == "1"  # the user's own wins


def test_model_up_says_whether_it_starts_the_server_or_found_it_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for healthy, said in ((True, "already running: "), (False, "starting: ")):
        status = server_module.ServerStatus(
            base_url="http://127.0.0.1:1/v1", healthy=healthy, pid=None, model="m",
            log_file=tmp_path / "server.log",
        )  # fmt: skip
        monkeypatch.setattr(LocalServer, "status", lambda self, s=status: s)
        monkeypatch.setattr(LocalServer, "cpu_profile", lambda self: None)
        monkeypatch.setattr(LocalServer, "up", lambda self, on_progress=None, s=status: s)
        assert main(["model", "up"]) == 0
        assert capsys.readouterr().err.startswith(f"{said}the embedded model at ")
