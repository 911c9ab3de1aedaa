"""identify on encoders (BERT-like): the architecture facts, a planted super weight proven by the distortion of the
encoder's output, and the real all-MiniLM-L6-v2, whose MLP spikes do not pass the proof."""

from __future__ import annotations

import json

import pytest
import torch

from superlora.cli import main
from tiny import tiny_model, tiny_tokenizer

PLANT = (1, 7, 21)  # block, out channel, in channel


def planted_bert(folder):
    """A tiny BERT whose block-1 MLP makes a ~800 spike in residual channel 7 through one weight, W[7, 21]."""
    model = tiny_model("bert")
    block, out, inp = PLANT
    with torch.no_grad():
        layer = model.encoder.layer[block]
        layer.intermediate.dense.weight[inp].zero_()
        layer.intermediate.dense.bias[inp] = 10.0  # gelu(10) = 10 for every token
        layer.output.dense.weight[out, inp] = 80.0
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_a_planted_encoder_super_weight_is_found_and_proven_by_distortion(tmp_path, capsys):
    folder = planted_bert(tmp_path / "bert")
    out = tmp_path / "report"
    assert main(["identify", "--model", str(folder), "--out", str(out), "--no-plots"]) == 0
    report = json.loads((out / "superweights.json").read_text())
    assert report["architecture"]["mlp_out_name"] == "output.dense"
    assert [w["coordinate"] for w in report["super_weights"]] == ["1:7:21"]
    proof = report["super_weights"][0]
    assert proof["distortion"] >= 0.1 > proof["random_control"]["distortion"]
    assert report["perplexity"]["metric"] == "distortion"
    assert "mean cosine distance" in capsys.readouterr().out


def test_an_encoder_without_a_super_weight_says_so(tmp_path, capsys):
    folder = tmp_path / "bert"
    tiny_model("bert").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    out = tmp_path / "report"
    assert main(["identify", "--model", str(folder), "--out", str(out), "--no-plots"]) == 0
    assert json.loads((out / "superweights.json").read_text())["super_weights"] == []
    assert "no super weight found by this method" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["distilbert", "mpnet"])
def test_other_encoders_have_their_mlp_output_and_query_value_found(family):
    from superlora.models.arch import describe_architecture

    arch = describe_architecture(tiny_model(family))
    expected = {"distilbert": ("ffn.lin2", ("q_lin", "v_lin")), "mpnet": ("output.dense", ("q", "v"))}[family]
    assert (arch.mlp_out_name, arch.query_value) == expected and arch.num_blocks == 3
