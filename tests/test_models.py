"""Model resolution and architecture facts across families (tiny random configs)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from superlora.errors import SuperloraError
from superlora.models import describe_architecture, load_model
from superlora.models.arch import mlp_out_weight_llama_layout
from tiny import tiny_model

EXPECTED = {
    # family: (blocks_path, mlp_out_name, layout, attention, query_value, mlp_names)
    "gpt2": ("transformer.h", "mlp.c_proj", "in_out", "attn", ("c_attn",), ("mlp",)),
    "llama": ("model.layers", "mlp.down_proj", "out_in", "self_attn", ("q_proj", "v_proj"), ("mlp",)),
    "gemma3": ("model.layers", "mlp.down_proj", "out_in", "self_attn", ("q_proj", "v_proj"), ("mlp",)),
    "opt": ("model.decoder.layers", "fc2", "out_in", "self_attn", ("q_proj", "v_proj"), ("fc1", "fc2")),
    "phi": ("model.layers", "mlp.fc2", "out_in", "self_attn", ("q_proj", "v_proj"), ("mlp",)),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_architecture_facts(family):
    model = tiny_model(family)
    facts = describe_architecture(model)
    blocks_path, mlp_out, layout, attention, qv, mlp_names = EXPECTED[family]
    assert facts.blocks_path == blocks_path
    assert facts.num_blocks == model.config.num_hidden_layers
    assert facts.mlp_out_name == mlp_out
    assert facts.mlp_out_layout == layout
    assert facts.attention_name == attention
    assert facts.query_value == qv
    assert facts.mlp_names == mlp_names
    # the module the facts point at is the one in the model, in every block
    for i in range(facts.num_blocks):
        assert facts.mlp_out(model, i) is model.get_submodule(f"{blocks_path}.{i}.{mlp_out}")
    assert facts.mlp_out_features == 32  # the residual stream width of every tiny config
    assert facts.mlp_in_features == (128 if family == "gpt2" else 64)


def test_gpt2_conv1d_layout_is_transposed():
    model = tiny_model("gpt2")
    facts = describe_architecture(model)
    proj = facts.mlp_out(model, 1)
    assert isinstance(proj, Conv1D)
    assert tuple(proj.weight.shape) == (facts.mlp_in_features, facts.mlp_out_features)  # stored [in, out]
    assert facts.stored_index(out_channel=5, in_channel=70) == (70, 5)
    llama_view = mlp_out_weight_llama_layout(facts, model, 1)
    assert llama_view[5, 70] == proj.weight[70, 5]
    # the view's meaning: output channel 5 of the projection reads weight column 70 of the input
    x = torch.zeros(1, facts.mlp_in_features)
    x[0, 70] = 1.0
    out = proj(x) - proj(torch.zeros_like(x))
    assert torch.allclose(out[0, 5], llama_view[5, 70])


def test_llama_layout_index_is_identity():
    facts = describe_architecture(tiny_model("llama"))
    assert facts.stored_index(5, 70) == (5, 70)


def test_unknown_architecture_names_what_was_looked_for():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(4, 4)
            self.ffn = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))

    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])

    with pytest.raises(SuperloraError, match=r"no MLP output projection.*mlp\.down_proj.*mlp\.c_proj"):
        describe_architecture(Weird())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_load_model_from_folder(tiny_model_dir, family):
    folder = tiny_model_dir(family)
    loaded = load_model(str(folder))
    assert loaded.arch.blocks_path == EXPECTED[family][0]
    assert loaded.source == str(folder)
    assert loaded.tokenizer.pad_token is not None
    reference = tiny_model(family)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, reference(ids).logits, atol=1e-6)


def test_load_model_missing_path_and_bad_reference(tmp_path):
    with pytest.raises(SuperloraError, match="GGUF file not found"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(SuperloraError, match="not an alias"):
        load_model("not a/valid//ref")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SuperloraError, match="cannot load model from folder"):
        load_model(str(empty))


def test_hub_id_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    start = time.perf_counter()
    with pytest.raises(SuperloraError) as err:
        load_model("openai-community/gpt2")
    message = str(err.value)
    assert "\n" not in message
    assert "smollm2-135m" in message and "Hub is unreachable" in message
    assert time.perf_counter() - start < 30


def _cli(*args, env_extra=None, tmp_path=None):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "superlora", *args], capture_output=True, text=True, env=env)


def test_cli_offline_hub_model_exits_nonzero_without_traceback(tmp_path):
    result = _cli("models", "info", "openai-community/gpt2", env_extra={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("superlora: error:")]
    assert len(lines) == 1 and "openai-community/gpt2" in lines[0]


def test_cli_help_for_every_verb():
    from superlora.cli import VERBS

    top = _cli("--help")
    assert top.returncode == 0 and "examples:" in top.stdout
    for verb in VERBS:
        result = _cli(verb, "--help")
        assert result.returncode == 0, verb
        assert "examples:" in result.stdout, f"{verb} --help has no examples"


def test_models_list_shows_both_aliases(tmp_path):
    result = _cli("models", "list", env_extra={"SUPERLORA_CACHE": str(tmp_path)})
    assert result.returncode == 0
    assert "smollm2-135m" in result.stdout and "gemma3-270m" in result.stdout
    assert str(tmp_path) in result.stdout


@pytest.mark.real
def test_real_smollm2_generates_english_and_reloads_fast():
    load_model("smollm2-135m")  # first use pulls and caches (about 30 s on a fresh machine)
    start = time.perf_counter()
    loaded = load_model("smollm2-135m")
    reload_seconds = time.perf_counter() - start
    assert reload_seconds < 5, f"second load took {reload_seconds:.1f} s"
    assert loaded.arch.num_blocks == 30 and loaded.arch.mlp_out_name == "mlp.down_proj"
    tok = loaded.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    out = loaded.model.generate(**ids, max_new_tokens=10, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in text, text


def test_ci_runs_the_readme_test_command():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    command = "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q"
    assert command in (repo / "README.md").read_text()
    assert command in (repo / ".ci" / "run").read_text().splitlines()
