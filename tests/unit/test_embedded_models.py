"""Several embedded models: names that reach each one's server, ports and state apart, `model
status` listing them all, and the converter tying the output layer when a GGUF file has none."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.exceptions import UserError
from agentflow.runtime import server as server_module
from agentflow.runtime import weights
from agentflow.runtime.server import LocalServer
from agentflow.settings import DEFAULT_MODEL, QWEN_CODER, SMOLLM2, Settings, embedded_model


@pytest.fixture
def no_server_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AGENTFLOW_BASE_URL", "AGENTFLOW_MODEL", "AGENTFLOW_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))


@pytest.mark.usefixtures("no_server_env")
def test_short_and_served_names_reach_each_models_embedded_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = Settings.from_env()
    assert (default.base_url, default.model) == ("http://127.0.0.1:8100/v1", DEFAULT_MODEL)
    qwen = Settings.from_env(model="qwen2.5-coder-1.5b")
    assert (qwen.base_url, qwen.model) == ("http://127.0.0.1:8101/v1", QWEN_CODER.served_name)
    assert Settings.from_env(model="Qwen2.5-Coder-1.5B-Instruct").base_url.endswith(":8101/v1")
    assert Settings.from_env(model="smollm2-135m").model == DEFAULT_MODEL
    # Another server's model name is passed through, as before.
    other = Settings.from_env(model="Qwen/Qwen3-8B", base_url="http://gpu:8000/v1")
    assert (other.base_url, other.model) == ("http://gpu:8000/v1", "Qwen/Qwen3-8B")

    monkeypatch.setenv("AGENTFLOW_PORT", "9000")
    assert Settings.from_env(model="qwen2.5-coder-1.5b").base_url == "http://127.0.0.1:9001/v1"
    monkeypatch.setenv("AGENTFLOW_MODEL", "qwen2.5-coder-1.5b")
    assert Settings.from_env().base_url == "http://127.0.0.1:9001/v1"


@pytest.mark.usefixtures("no_server_env")
def test_base_url_precedence_with_short_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_BASE_URL", "http://remote:8000/v1")
    # A short name on the command line names the embedded server, whatever the environment says.
    assert Settings.from_env(model="qwen2.5-coder-1.5b").base_url == "http://127.0.0.1:8101/v1"
    # --base-url still wins; a served name keeps the environment's server.
    flagged = Settings.from_env(model="qwen2.5-coder-1.5b", base_url="http://b:1/v1")
    assert flagged.base_url == "http://b:1/v1"
    assert Settings.from_env(model=DEFAULT_MODEL).base_url == "http://remote:8000/v1"
    # A short name from the environment is a default like AGENTFLOW_BASE_URL: that one wins.
    monkeypatch.setenv("AGENTFLOW_MODEL", "qwen2.5-coder-1.5b")
    from_env = Settings.from_env()
    assert (from_env.base_url, from_env.model) == ("http://remote:8000/v1", QWEN_CODER.served_name)


def test_the_cli_model_option_maps_short_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflow.cli._common import CommandContext

    parser = CommandContext().connection_options()
    args = parser.parse_args(["--model", "qwen2.5-coder-1.5b"])
    settings = CommandContext().settings(args)
    assert settings.model == QWEN_CODER.served_name
    assert settings.base_url.endswith(f":{settings.local_port + 1}/v1")
    assert embedded_model("nope") is None


@pytest.mark.usefixtures("no_server_env")
def test_each_model_has_its_own_port_state_and_served_name(tmp_path: Path) -> None:
    settings = Settings.from_env()
    smol = LocalServer(settings)
    qwen = LocalServer(settings, model=QWEN_CODER)
    assert (smol.port, qwen.port) == (8100, 8101)
    assert smol.record_file == tmp_path / "server" / "server.json"  # where it always was
    assert qwen.record_file == tmp_path / "server" / QWEN_CODER.name / "server.json"
    command = qwen._command(Path("/models/q"))
    assert command[command.index("--served-model-name") + 1] == QWEN_CODER.served_name
    assert command[command.index("--port") + 1] == "8101"
    assert qwen.status().model == QWEN_CODER.served_name


def test_model_status_lists_every_embedded_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTFLOW_PORT", "1")  # nothing listens on 1 or 2
    assert main(["model", "status"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{SMOLLM2.name}: down: http://127.0.0.1:1/v1 {SMOLLM2.served_name}",
        f"{QWEN_CODER.name}: down: http://127.0.0.1:2/v1 {QWEN_CODER.served_name}",
    ]
    assert main(["model", "status", "--json"]) == 3
    status = json.loads(capsys.readouterr().out)
    assert status["model"] == SMOLLM2.served_name and status["healthy"] is False
    assert [m["name"] for m in status["models"]] == [SMOLLM2.name, QWEN_CODER.name]
    assert main(["model", "status", "--model", QWEN_CODER.name, "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["base_url"] == "http://127.0.0.1:2/v1"


def test_up_for_a_model_not_pulled_says_how_to_pull_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTFLOW_PORT", "1")
    monkeypatch.setattr(server_module.LocalServer, "cpu_profile", lambda self: None)
    assert main(["model", "up", "--model", QWEN_CODER.name]) != 0
    err = capsys.readouterr().err
    assert f"agentflow model pull {QWEN_CODER.name}" in err
    with pytest.raises(UserError, match="no embedded model"):
        weights.prepare_weights(tmp_path, "gpt-17")


@pytest.mark.parametrize(
    ("names", "tied"),
    [({"model.embed_tokens.weight"}, True),
     ({"model.embed_tokens.weight", "lm_head.weight"}, False)],
)  # fmt: skip
def test_the_output_is_tied_exactly_when_the_gguf_has_none(names: set[str], tied: bool) -> None:
    assert weights.output_is_tied(names) is tied


def _write_gguf(path: Path, *, output: bool, vocab: int = 40, dim: int = 16) -> None:
    """A tiny qwen2 GGUF file with random float32 weights and a byte-level BPE vocabulary."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(path), "qwen2")
    for add, value in [
        (writer.add_context_length, 64), (writer.add_embedding_length, dim),
        (writer.add_block_count, 1), (writer.add_feed_forward_length, 32),
        (writer.add_head_count, 2), (writer.add_head_count_kv, 1),
        (writer.add_rope_freq_base, 10000.0), (writer.add_layer_norm_rms_eps, 1e-6),
        (writer.add_file_type, 0), (writer.add_tokenizer_model, "gpt2"),
        (writer.add_tokenizer_pre, "qwen2"), (writer.add_bos_token_id, vocab - 2),
        (writer.add_eos_token_id, vocab - 1), (writer.add_token_merges, ['! "']),
    ]:  # fmt: skip
        add(value)
    letters = [chr(code) for code in range(33, 33 + vocab - 3)]
    writer.add_token_list([*letters, '!"', "<|endoftext|>", "<|im_end|>"])
    writer.add_token_types([1] * (vocab - 2) + [3, 3])
    rng = np.random.default_rng(0)
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab, dim), "output_norm.weight": (dim,),
        "blk.0.attn_norm.weight": (dim,), "blk.0.ffn_norm.weight": (dim,),
        "blk.0.attn_q.weight": (dim, dim), "blk.0.attn_q.bias": (dim,),
        "blk.0.attn_k.weight": (8, dim), "blk.0.attn_k.bias": (8,),
        "blk.0.attn_v.weight": (8, dim), "blk.0.attn_v.bias": (8,),
        "blk.0.attn_output.weight": (dim, dim), "blk.0.ffn_gate.weight": (32, dim),
        "blk.0.ffn_up.weight": (32, dim), "blk.0.ffn_down.weight": (dim, 32),
    }  # fmt: skip
    if output:
        shapes["output.weight"] = (vocab, dim)
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.filterwarnings("ignore")  # transformers' own deprecation notes
@pytest.mark.parametrize("config_says_tied", [True, False])
@pytest.mark.parametrize("has_output", [False, True])
def test_a_converted_gguf_ties_lm_head_only_without_an_output_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_output: bool, config_says_tied: bool
) -> None:
    pytest.importorskip("transformers")
    safetensors = pytest.importorskip("safetensors.torch")
    from transformers import AutoConfig

    gguf_path = tmp_path / "tiny.gguf"
    _write_gguf(gguf_path, output=has_output)
    # What transformers guesses for the architecture's config must not decide the tying: the
    # bug of issue 20 was a GGUF without an output tensor whose config said "untied".
    original = AutoConfig.from_pretrained

    def config_guess(*args: Any, **kwargs: Any) -> Any:
        config = original(*args, **kwargs)
        config.tie_word_embeddings = config_says_tied
        return config

    monkeypatch.setattr(AutoConfig, "from_pretrained", config_guess)
    out = tmp_path / "out"
    out.mkdir()
    weights._convert(gguf_path, out)
    config = json.loads((out / "config.json").read_text())
    tensors = safetensors.load_file(str(out / "model.safetensors"))
    assert config["tie_word_embeddings"] is (not has_output)
    assert ("lm_head.weight" in tensors) is has_output
    if has_output:  # the file's own output layer, not the embedding
        assert not tensors["lm_head.weight"].equal(tensors["model.embed_tokens.weight"])
    shutil.rmtree(out)
