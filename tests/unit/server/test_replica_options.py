"""`--replicas` without starting Ray (issue 22, item 10): the range, the TOML key, the error
without Ray Serve installed, the one-process path importing no Ray, and the shared run
directory's rules (a later state is never replaced by an earlier one; a response waits for
its run's publication)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentflow.cli._main import _parser, main
from agentflow.exceptions import UserError
from agentflow.server.cli import _replicas, ray_app
from agentflow.server.config_file import load_replicas
from agentflow.server.runs import RunId, RunRecord
from agentflow.server.shared_runs import MirroredRunStore, RunDirectory, RunSnapshot

MODEL_URL = ["--base-url", "http://127.0.0.1:9/v1"]


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_replicas_below_one_is_a_usage_error_naming_the_range(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--replicas", value, *MODEL_URL])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--replicas" in error
    assert "must be at least 1" in error or "is not a whole number" in error


def test_the_config_file_may_say_replicas(tmp_path: Path) -> None:
    agents = '[[agents]]\nid = "a"\n'
    path = tmp_path / "agents.toml"
    path.write_text(f"replicas = 3\n{agents}")
    assert load_replicas(path) == 3
    path.write_text(agents)
    assert load_replicas(path) is None
    path.write_text(f"replicas = 0\n{agents}")
    with pytest.raises(UserError, match="replicas"):
        load_replicas(path)


def test_the_command_line_says_replicas_before_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text('replicas = 3\n[[agents]]\nid = "a"\n')
    parser = _parser()[0]
    assert _replicas(parser.parse_args(["serve", "--config", str(path)])) == 3
    assert _replicas(parser.parse_args(["serve", "--config", str(path), "--replicas", "2"])) == 2
    assert _replicas(parser.parse_args(["serve"])) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic models, at import
def test_serve_run_builds_the_application_from_serve_options(tmp_path: Path) -> None:
    """`serve run agentflow.server.cli:ray_app options="..."` (no Ray needed to build it)."""
    from ray.serve import Application

    app = ray_app({"options": "--replicas 3 --api-key k --base-url http://127.0.0.1:9/v1"})
    assert isinstance(app, Application)
    with pytest.raises(UserError, match="cannot read the server config"):
        ray_app({"options": f"--config {tmp_path / 'missing.toml'}"})


def test_without_ray_serve_replicas_is_a_one_line_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ray", "ray.serve", "agentflow.server.replicas"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    monkeypatch.delattr("agentflow.server.replicas", raising=False)  # if imported before
    assert main(["serve", "--replicas", "2", *MODEL_URL]) == 1
    error = capsys.readouterr().err
    assert error == "error: --replicas 2 needs Ray Serve: pip install 'agentflow-dag[serve-ray]'\n"


def test_one_replica_is_the_one_process_server_with_no_ray() -> None:
    """`--replicas 1` (and no --replicas) start uvicorn as before; Ray is never imported."""
    script = textwrap.dedent(
        """
        import sys
        from agentflow.server import cli
        started = []
        cli._DrainingServer.run = lambda self: started.append(self.config.port)
        from agentflow.cli._main import _parser, main
        assert main(["serve", "--replicas", "1", "--port", "8766", *sys.argv[1:]]) == 0
        assert main(["serve", "--port", "8767", *sys.argv[1:]]) == 0
        assert started == [8766, 8767], started
        ray = [name for name in sys.modules if name == "ray" or name.startswith("ray.")]
        assert not ray, ray
        """
    )
    done = subprocess.run([sys.executable, "-c", script, *MODEL_URL], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _record(run_id: str, owner: str = "k") -> RunRecord:
    return RunRecord(id=RunId(run_id), model="m", question="q", owner=owner)


async def test_a_replica_publishes_each_state_and_keeps_no_finished_run() -> None:
    directory = RunDirectory(ttl=60, max_count=10, max_bytes=2**20)
    arrived: list[int] = []

    async def publish(snapshots: list[RunSnapshot]) -> None:
        for snapshot in snapshots:
            arrived.append(snapshot.version)
            directory.put(snapshot)

    async def lookup(run_id: RunId) -> RunSnapshot | None:
        return directory.get(run_id)

    store = MirroredRunStore(publish, lookup)
    record = _record("r1")
    store.add(record)
    await store.announced(record.id)
    assert directory.get(record.id) is not None
    record.status = "running"
    store.update(record)
    await store.announced(record.id)
    record.status, record.answer, record.finished = "ok", "Paris", 1e12
    store.finish(record)
    await store.settled(record.id)
    assert arrived == [0, 1, 2]
    again = _record("r1b")
    store.add(again)
    again.status, again.finished = "ok", 1e12
    store.finish(again)  # before the admission went out: only the end is sent
    await store.settled(again.id)
    assert arrived == [0, 1, 2, 2]
    assert store.get(record.id) is None  # finished runs live in the directory only
    found = await store.find(record.id)
    assert found is not None and found.owner == "k" and found.as_dict()["answer"] == "Paris"
    await store.aclose()


def test_a_late_publication_never_replaces_a_later_state() -> None:
    directory = RunDirectory(ttl=60, max_count=10, max_bytes=2**20)
    record = _record("r2")
    queued = RunSnapshot.of(record)
    record.status, record.finished = "ok", 1e12
    directory.put(RunSnapshot.of(record))
    directory.put(queued)  # arrives last
    kept = directory.get(record.id)
    assert kept is not None and kept.as_dict()["status"] == "ok"


def test_a_live_run_not_heard_of_for_the_ttl_is_closed_as_failed() -> None:
    """Its replica stopped mid-run: the shared store does not keep it running forever."""
    directory = RunDirectory(ttl=0.05, max_count=10, max_bytes=2**20)
    directory.put(RunSnapshot.of(_record("orphan")))
    time.sleep(0.1)
    directory.put(RunSnapshot.of(_record("new")))
    orphan, new = directory.get(RunId("orphan")), directory.get(RunId("new"))
    assert orphan is not None and orphan.as_dict()["status"] == "failed"
    assert "replica may have stopped" in str(orphan.as_dict()["error"])
    assert new is not None and new.finished is None
    late = _record("orphan")
    late.status, late.finished = "ok", time.time()
    directory.put(RunSnapshot.of(late))  # it was slow, not lost: its own end wins
    orphan = directory.get(RunId("orphan"))
    assert orphan is not None and orphan.as_dict()["status"] == "ok"
    kept = len(json.dumps(orphan.as_dict(), default=str))
    assert len(directory.runs) == 2 and directory.runs.bytes == kept  # counted once


async def test_settled_waits_for_the_end_to_be_published() -> None:
    release = asyncio.Event()
    directory = RunDirectory(ttl=60, max_count=10, max_bytes=2**20)

    async def slow_publish(snapshots: list[RunSnapshot]) -> None:
        if any(snapshot.finished is not None for snapshot in snapshots):
            await release.wait()
        for snapshot in snapshots:
            directory.put(snapshot)

    async def lookup(run_id: RunId) -> RunSnapshot | None:
        return directory.get(run_id)

    store = MirroredRunStore(slow_publish, lookup)
    record = _record("r3")
    store.add(record)
    record.status, record.finished = "ok", 1e12
    store.finish(record)
    waiting = asyncio.ensure_future(store.settled(record.id))
    await asyncio.sleep(0)
    assert not waiting.done()
    release.set()
    await waiting
    kept = directory.get(record.id)
    assert kept is not None and kept.as_dict()["status"] == "ok"
    await store.settled(record.id)  # once settled, at once
