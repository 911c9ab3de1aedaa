"""Super-weight identification: planted weights in tiny models, and the real SmolLM2 proof."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from superlora.errors import SuperloraError
from superlora.identify import Coord, IdentifyConfig, scaled_weights
from superlora.identify.ablation import parse_coord
from superlora.identify.detect import find_candidates
from superlora.models import describe_architecture
from tiny import tiny_config, tiny_tokenizer

PROMPTS = ["the capital of france is paris", "a cheap pub near the restaurant", "the food is cheap", "name of the pub"]


def planted_model(family: str, plants: list[tuple[int, int, int, float]], seed: int = 0):
    """A tiny random model with super weights planted as (block, out, in, output size).

    Each plant makes MLP input channel ``in`` of ``block`` large for every token (through the
    up-projection's bias) and gives weight W[out, in] the value that turns it into an output
    spike of the requested size: a large weight fed by a large input channel, as in the paper.
    """
    config = tiny_config(family)
    if family == "llama":
        config.mlp_bias = True
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    arch = describe_architecture(model)
    with torch.no_grad():
        for block, out, inp, size in plants:
            mlp = arch.block(model, block).mlp
            if family == "llama":  # silu(gate) * up: make both ~10 for channel inp
                mlp.gate_proj.weight[inp].zero_()
                mlp.gate_proj.bias[inp] = 10.0
                mlp.up_proj.weight[inp].zero_()
                mlp.up_proj.bias[inp] = 10.0
                x = 10.0 * torch.nn.functional.silu(torch.tensor(10.0))
            else:  # gpt2: gelu(c_fc) with c_fc a Conv1D stored [in, out]
                mlp.c_fc.weight[:, inp].zero_()
                mlp.c_fc.bias[inp] = 10.0
                x = torch.nn.functional.gelu(torch.tensor(10.0), approximate="tanh")
            weight = arch.mlp_out(model, block).weight
            weight[arch.stored_index(out, inp)] = float(size / x)
    return model, arch


def detect(model, arch, **overrides):
    cfg = IdentifyConfig(prompts=PROMPTS, **overrides)
    found, first_round = find_candidates(
        model,
        arch,
        tiny_tokenizer(),
        cfg.prompts,
        cfg.abs_threshold,
        cfg.median_ratio,
        cfg.min_recurrence,
        cfg.max_count,
    )
    return found, first_round


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_detects_exactly_the_planted_weight(family):
    model, arch = planted_model(family, [(1, 7, 21, 800.0)])
    found, _ = detect(model, arch)
    assert [sw.coord for sw in found] == [Coord(1, 7, 21)]
    sw = found[0]
    assert sw.param_name == arch.mlp_out_param_name(1)
    expected_stored = (21, 7) if family == "gpt2" else (7, 21)  # Conv1D stores W transposed
    assert sw.stored_index == expected_stored
    assert sw.value == pytest.approx(float(arch.mlp_out(model, 1).weight.detach()[expected_stored]))
    assert sw.output_abs == pytest.approx(800.0, rel=0.05)
    assert sw.recurrence == 1.0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_nothing_planted_finds_nothing(family):
    model, arch = planted_model(family, [])
    found, first_round = detect(model, arch)
    assert found == []
    assert max(s.max_out for spikes in first_round for s in spikes) < 100  # and it did look


def test_masked_weight_surfaces_after_zeroing():
    # Both in block 1: the first spike is the block's maximum and hides the second.
    model, arch = planted_model("llama", [(1, 7, 21, 3000.0), (1, 12, 40, 900.0)])
    found, first_round = detect(model, arch)
    assert all(s.out_channel == 7 for spikes in first_round for s in spikes if s.block == 1)  # masked in round 0
    assert [sw.coord for sw in found] == [Coord(1, 7, 21), Coord(1, 12, 40)]
    assert [sw.round for sw in found] == [0, 1]


def test_max_count_caps_the_loop():
    model, arch = planted_model("llama", [(1, 7, 21, 3000.0), (1, 12, 40, 900.0)])
    found, _ = detect(model, arch, max_count=1)
    assert [sw.coord for sw in found] == [Coord(1, 7, 21)]


def test_thresholds_are_respected():
    model, arch = planted_model("llama", [(1, 7, 21, 800.0)])
    assert detect(model, arch, abs_threshold=1000.0)[0] == []


def test_scaled_weights_restores_exactly():
    model, arch = planted_model("gpt2", [(1, 7, 21, 800.0)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with scaled_weights(model, arch, [Coord(1, 7, 21), Coord(0, 3, 4)], 0.0):
        assert float(arch.mlp_out(model, 1).weight.detach()[21, 7]) == 0.0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_parse_coord_checks_ranges():
    arch = planted_model("llama", [])[1]
    assert parse_coord("2:5:60", arch) == Coord(2, 5, 60)
    with pytest.raises(SuperloraError, match="block 3 out of range"):
        parse_coord("3:5:60", arch)
    with pytest.raises(SuperloraError, match="BLOCK:OUT:IN"):
        parse_coord("two:5", arch)


def _cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "superlora", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_end_to_end_on_planted_model(tmp_path):
    model, _ = planted_model("llama", [(1, 7, 21, 800.0)])
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    out = tmp_path / "report"
    result = _cli(
        "identify", "--model", str(tmp_path / "m"), "--out", str(out), *sum((["--prompt", p] for p in PROMPTS), [])
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "superweights.json").read_text())
    coords = [r["coordinate"] for r in report["super_weights"] + report["rejected_candidates"]]
    assert coords == ["1:7:21"]
    record = (report["super_weights"] + report["rejected_candidates"])[0]
    for key in ("ppl_zeroed", "ppl_ratio", "random_control", "row_control", "stored_index", "token_position"):
        assert key in record
    assert (out / "activations.png").stat().st_size > 1000
    assert "1:7:21" in result.stdout or "   21 " in result.stdout  # the table lists it


def test_cli_ablate_saves_scaled_copy(tmp_path):
    model, _ = planted_model("gpt2", [(1, 7, 21, 800.0)])
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    result = _cli(
        "identify",
        "--model",
        str(tmp_path / "m"),
        "--ablate",
        "1:7:21",
        "--scale",
        "2",
        "--out",
        str(tmp_path / "ablated"),
    )
    assert result.returncode == 0, result.stderr
    copy = AutoModelForCausalLM.from_pretrained(tmp_path / "ablated")
    original = model.transformer.h[1].mlp.c_proj.weight[21, 7]
    assert torch.allclose(copy.transformer.h[1].mlp.c_proj.weight[21, 7], 2 * original)
    assert torch.equal(copy.transformer.h[0].mlp.c_proj.weight, model.transformer.h[0].mlp.c_proj.weight)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-alias-or-path"], "cannot load 'no-such-alias-or-path'"),
        (["--prompt", "  "], "prompts must be a non-empty list"),
        (["max_cout=3"], "did you mean 'max_count'"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, tmp_path):
    result = _cli("identify", *args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("superlora: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "x").exists()


def test_cli_architecture_without_mlp_projection(tmp_path):
    from transformers import MambaConfig

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(MambaConfig(num_hidden_layers=2, hidden_size=16, vocab_size=96)).save_pretrained(
        tmp_path / "mamba"
    )
    tiny_tokenizer().save_pretrained(tmp_path / "mamba")
    result = _cli("identify", "--model", str(tmp_path / "mamba"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "no MLP output projection" in result.stderr and "Traceback" not in result.stderr


def test_seed_entry_point_offline_suggests_smollm2(tmp_path):
    # no HF_HUB_OFFLINE: the unreachable Hub must be detected at once, not after minutes of retries
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://127.0.0.1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "super_weights_identification.main"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "openai-community/gpt2" in result.stderr and "smollm2-135m" in result.stderr
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    assert time.perf_counter() - started < 60


@pytest.mark.real
def test_real_smollm2_super_weight_is_proven(tmp_path):
    """The acceptance claim: zeroing the top super weight raises perplexity >= 3x; random < 5%."""
    result = _cli("identify", "--model", "smollm2-135m", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "superweights.json").read_text())
    top = report["super_weights"][0]
    assert top["parameter"].endswith("mlp.down_proj.weight")
    assert top["ppl_ratio"] >= 3.0
    assert abs(top["random_control"]["ppl_ratio"] - 1) < 0.05
    assert report["perplexity"]["ppl_same_count_random_zeroed"] / report["perplexity"]["ppl_base"] < 1.05
    assert (tmp_path / "residual_stream.png").is_file()
