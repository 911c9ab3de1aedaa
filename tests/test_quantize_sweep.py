"""``superlora quantize``: block-wise 4-bit rounding, keeping super weights out of the scales, and the verb's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import E2E_DIR
from superlora.cli import main
from superlora.quantization.blockwise import nf4, quantized, rtn

DATA = E2E_DIR.parent


def test_rtn_rounds_each_block_to_16_levels_between_its_extremes():
    torch.manual_seed(0)
    weight = torch.randn(8, 64)
    out = rtn(weight, block=32)
    for block, rounded in zip(weight.view(-1, 32), out.view(-1, 32), strict=True):
        step = (block.max() - block.min()) / 15
        assert rounded.unique().numel() <= 16
        assert (rounded - block).abs().max() <= step / 2 + 1e-6
        torch.testing.assert_close(rounded.min(), block.min())
        torch.testing.assert_close(rounded.max(), block.max())


def test_a_huge_weight_ruins_its_block_unless_it_is_kept():
    """The super-weight paper's point: one value 100x the others stretches the block's scale."""
    torch.manual_seed(0)
    weight = torch.randn(4, 256) * 0.02
    weight[1, 7] = 3.0
    plain = quantized(weight, "rtn", 256)
    kept = quantized(weight, "rtn", 256, keep=[(1, 7)])
    assert kept[1, 7] == weight[1, 7]  # exact
    others = torch.ones_like(weight, dtype=torch.bool)
    others[1, 7] = False
    block = slice(256, 512)  # the flattened block holding the huge value
    err_plain = (plain - weight).reshape(-1)[block][others.reshape(-1)[block]].abs().mean()
    err_kept = (kept - weight).reshape(-1)[block][others.reshape(-1)[block]].abs().mean()
    assert err_kept < err_plain / 5, (err_kept, err_plain)


def test_nf4_is_what_bitsandbytes_layers_compute_with():
    pytest.importorskip("bitsandbytes")
    from superlora.models.quantize import dequantized_weight, quantized_layer

    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 64, bias=False)
    layer = quantized_layer(linear, "nf4", torch.float32)
    # the layer also stores its block scales in 8 bits (compress_statistics): ~1e-5 apart, levels far coarser
    torch.testing.assert_close(nf4(linear.weight.data, 64), dequantized_weight(layer), rtol=0, atol=1e-4)


@pytest.fixture
def shared_data() -> Path:
    if not (DATA / "gsm8k").is_dir() or not (DATA / "dialogsum").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


def test_quantize_writes_table_plot_and_json_and_keeping_restores_a_planted_weight(
    tiny_model_dir, shared_data, tmp_path, capsys
):
    from superlora.models import load_model

    folder = tiny_model_dir("llama")
    loaded = load_model(str(folder))
    down = loaded.model.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        down[5, 7] = 40 * down.abs().max()  # a planted super weight
    loaded.model.save_pretrained(folder)
    report = tmp_path / "sw.json"
    report.write_text(json.dumps({"super_weights": [{"coordinate": "1:5:7", "proven": True}]}))
    out = tmp_path / "q"
    args = ["quantize", str(folder), "--keep-superweights", "--superweights", str(report), "--block", "16,64"]
    assert main([*args, "--data", str(shared_data), "--passages", "2", "--out", str(out)]) == 0
    result = json.loads((out / "quantize.json").read_text())
    points = {(r["block"], r["keep"]) for r in result["records"]}
    assert points == {(b, k) for b in (16, 64) for k in ("none", "superweights")}
    assert all(r["ppl"] > 0 for r in result["records"]) and result["ppl_fp32"] > 0
    assert result["passages"] == {"e2e": 2, "gsm8k": 2, "dialogsum": 2}
    assert (out / "ppl_vs_block.png").stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert "| 64 |" in table and "keep superweights: 1:5:7" in table
    assert table.splitlines()[-1] in capsys.readouterr().out  # printed as written
    again = main([*args, "--data", str(shared_data), "--passages", "1", "--out", str(out)])
    assert again == 0  # its own earlier output is replaced


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--block", "64,abc"], "--block"),
        (["--method", "nf4", "--block", "8192"], "4096"),
        (["--keep", "1:2"], "BLOCK:OUT:IN"),
        (["--keep-superweights", "--superweights", "/nonexistent/sw.json"], "no identify report"),
    ],
)
def test_bad_quantize_input_is_one_line_before_the_model_loads(extra, needle, tmp_path, capsys):
    assert main(["quantize", "no-such-model", "--out", str(tmp_path / "q"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "q").exists()


def test_quantize_refuses_an_out_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["quantize", "smollm2-135m", "--out", str(mine)]) == 2
    assert "not written by" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"


def test_an_unknown_quantize_method_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "smollm2-135m", "--method", "gptq"])
    assert exc.value.code == 2 and "invalid choice: 'gptq'" in capsys.readouterr().err


def test_clipping_cuts_a_super_weight_unless_it_is_kept_and_sharpens_every_other_block():
    """Min-max RTN keeps a block's extremes exact; the paper's clipping gives finer scales but needs the SW kept."""
    torch.manual_seed(0)
    weight = torch.randn(16, 256) * 0.02
    weight[3, 9] = 1.0  # ~50 standard deviations
    assert quantized(weight, "rtn", 64)[3, 9] == weight[3, 9]  # plain min-max: the extreme is a level
    clipped = quantized(weight, "rtn", 64, clip=4.0)
    assert clipped[3, 9] < 0.2  # clipped to 4 sigma: the super weight is gone
    kept = quantized(weight, "rtn", 64, keep=[(3, 9)], clip=4.0)
    assert kept[3, 9] == weight[3, 9]
    assert (kept - weight).abs().mean() < (quantized(weight, "rtn", 64) - weight).abs().mean()


def test_a_non_positive_clip_is_one_line(tmp_path, capsys):
    assert main(["quantize", "smollm2-135m", "--clip", "0", "--out", str(tmp_path / "q")]) == 2
    assert "--clip" in capsys.readouterr().err


def test_nf4_rounding_error_grows_with_the_block_size():
    """Larger blocks share one scale among more values: never finer (bitsandbytes' CPU kernel broke this)."""
    torch.manual_seed(0)
    weight = torch.distributions.StudentT(3.0).sample((192, 576)) * 0.05  # heavy tails, like real weights
    errors = [float((nf4(weight, block) - weight).abs().mean()) for block in (64, 128, 256, 1024, 4096)]
    assert errors == sorted(errors), errors
